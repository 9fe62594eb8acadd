"""Publish events to Kafka with aiokafka: acknowledged, idempotent, batched.

::

    async with Publisher(settings) as pub:
        delivery = await pub.publish(event)          # waits for the broker's ack
        future = await pub.send(event)               # queued; await future for the ack
        batches = await pub.send_many(records)       # pre-serialized, one batch per partition

Every message is sent with ``acks="all"`` and an idempotent producer, so the
retries aiokafka makes on a retriable broker error (leader moved, broker
restarting) never duplicate nor reorder a message within its partition. The
key is the event's key (``execution_id``; ``report_id`` for report
definitions): the default partitioner (murmur2, like the Java client) then puts
every event of one execution on one partition. Values are structured-mode
CloudEvents (``to_json``) with a ``content-type`` header.

Failures surface as ``PublishError`` (``retriable`` copied from the aiokafka
error, which stays the ``__cause__``): raised by ``publish``, set on the
futures of ``send``/``send_raw``/``send_many``, and raised again by
``flush()`` for any message that failed since the previous flush, so a
fire-and-forget sender still learns about it. ``stop()`` waits for every
pending message (nothing queued is dropped) and logs what failed. After a
failed batch the next send starts a new idempotent producer, so sending the
batch again works (aiokafka alone would refuse that partition for good).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from collections.abc import Iterable, Sequence
from functools import partial
from types import TracebackType
from typing import Any, ClassVar, Protocol, Self

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.codec import has_lz4, has_snappy, has_zstd
from aiokafka.errors import KafkaError

from exectrack.producer._kafka import (
    Delivery,
    Headers,
    Partitioner,
    RawRecord,
    SentBatch,
    flush_error,
    publish_error,
    settle,
)
from exectrack.producer.admin import ensure_topics
from exectrack.producer.errors import PublishError, StartFailed
from exectrack.producer.events import Event, kafka_headers, to_json
from exectrack.producer.settings import (
    DEFAULT_SOURCE,
    KafkaSettings,
    ProducerSettings,
    PublisherSettings,
)

__all__ = [
    "Delivery",
    "Headers",
    "Partitioner",
    "Publisher",
    "RawRecord",
    "SentBatch",
    "ensure_topics",
    "publish_error",
]

log = structlog.get_logger(__name__)


class CaptureTarget(Protocol):
    """Where a captured ``Publisher`` sends: ``exectrack.producer.testing.InMemoryPublisher``."""

    async def flush(self) -> None:
        """``Publisher.flush``."""

    async def publish(self, event: Event, /) -> Delivery:
        """``Publisher.publish``."""

    async def send(self, event: Event, /) -> asyncio.Future[Delivery]:
        """``Publisher.send``."""

    async def publish_raw(
        self, key: bytes | None, value: bytes, headers: Headers = ..., /
    ) -> Delivery:
        """``Publisher.publish_raw``."""

    async def send_raw(
        self, key: bytes | None, value: bytes, headers: Headers = ..., /
    ) -> asyncio.Future[Delivery]:
        """``Publisher.send_raw``."""

    async def send_many(self, records: Iterable[RawRecord], /) -> list[SentBatch]:
        """``Publisher.send_many``."""


class Capture:
    """One active ``exectrack.producer.testing.captured_events``: the target and who is bound to it.

    Private machinery of ``captured_events``; services never see it. The
    active captures form one process-wide stack (every task, every thread):
    ``Publisher.start()`` binds the instance to the innermost capture active at
    that moment, and the capture's exit unbinds every instance it bound.
    """

    _stack: ClassVar[list[Capture]] = []
    _lock = threading.Lock()

    def __init__(self, target: CaptureTarget) -> None:
        self.target = target
        self.bound: weakref.WeakSet[Publisher] = weakref.WeakSet()

    def __enter__(self) -> Self:
        with Capture._lock:
            Capture._stack.append(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        with Capture._lock:
            Capture._stack.remove(self)  # not necessarily the last: tasks may end in any order
            for publisher in list(self.bound):
                if publisher._capture is self:  # not rebound to another capture since
                    publisher._capture = publisher._captured = None
            self.bound = weakref.WeakSet()

    @classmethod
    def bind(cls, publisher: Publisher) -> Capture | None:
        """Bind ``publisher`` to the innermost active capture and return it (None: no capture)."""
        with cls._lock:
            if not cls._stack:
                return None
            capture = cls._stack[-1]
            capture.bound.add(publisher)
            return capture


_NEEDS_CRAMJAM = {"zstd": has_zstd, "lz4": has_lz4, "snappy": has_snappy}


class StartStop:
    """An async context manager over ``start()`` (on entry) and ``stop()`` (on exit, always).

    Shared by ``Publisher`` and ``testing.InMemoryPublisher``; an error inside the
    block propagates after ``stop()``.
    """

    async def start(self) -> None:
        """Get ready to publish (the subclass says how)."""
        raise NotImplementedError

    async def stop(self) -> None:
        """Stop publishing (the subclass says how)."""
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


class Publisher(StartStop):
    """An ``AIOKafkaProducer`` that speaks events; an async context manager.

    ``settings`` is a ``KafkaSettings`` (or a whole ``ProducerSettings``; by
    default read from the environment). ``topic`` overrides the settings'
    topic; ``source`` is the CloudEvents source that ``exectrack.producer.tracking``
    stamps on the events it builds.
    """

    def __init__(
        self,
        settings: KafkaSettings | ProducerSettings | None = None,
        *,
        topic: str | None = None,
        source: str | None = None,
        options: PublisherSettings | None = None,
    ) -> None:
        if settings is None or isinstance(settings, ProducerSettings):
            whole = settings or ProducerSettings()
            settings, source, options = (
                whole.kafka,
                source or whole.source,
                options or whole.publisher,
            )
        self.settings = settings
        self.topic = topic or settings.topic
        self.source = source or DEFAULT_SOURCE
        self.options = options or PublisherSettings()
        self.partitioner = Partitioner()
        self._producer: AIOKafkaProducer | None = None
        self._pending: set[asyncio.Future[Delivery]] = set()
        self._failures: list[PublishError] = []
        self._stale = False  # a batch failed: its partition's sequence has a gap
        self._retired: set[asyncio.Task[None]] = set()
        self._capture: Capture | None = None  # exectrack.producer.testing.captured_events
        self._captured: CaptureTarget | None = None  # its target, where every send goes

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Connect to the cluster (idempotent).

        Raises ``StartFailed`` (a ``PublishError``) when no broker of
        ``settings.bootstrap_servers`` answers within aiokafka's bootstrap
        (each attempt bounded by ``request_timeout_ms``) or the cluster refuses
        the client: one line naming the servers and the cause, retriable when
        the cause is. ``async with Publisher()`` raises the same on enter.
        """
        if self._producer is None and self._captured is None:
            self._capture = Capture.bind(self)  # a test captures events: no network at all
            if self._capture is not None:
                self._captured = self._capture.target
            else:
                self._producer = await self._new_producer()

    async def _new_producer(self) -> AIOKafkaProducer:
        kwargs = self.settings.client_kwargs() | self.options.producer_kwargs()
        codec = kwargs["compression_type"]
        if codec in _NEEDS_CRAMJAM and not _NEEDS_CRAMJAM[codec]():
            log.warning("compression needs the cramjam package; using gzip", wanted=codec)
            kwargs["compression_type"] = "gzip"
        producer = AIOKafkaProducer(partitioner=self.partitioner, **kwargs)
        try:
            await producer.start()
        except (KafkaError, OSError) as exc:
            failure: BaseException = exc
        else:
            return producer
        # outside the except block: nothing here is chained to the failure as its context
        with contextlib.suppress(Exception):
            await producer.stop()
        raise start_failed(self.settings.bootstrap_servers, failure)

    async def _ready(self) -> AIOKafkaProducer:
        """The producer to send with; a new one after a batch failed.

        aiokafka numbers batches per partition for idempotence and counts a
        failed batch as sent, so after any failure the broker refuses every
        later batch of that partition (OutOfOrderSequenceNumber) and aiokafka
        never recovers. A new producer gets a new producer id and starts
        numbering afresh, as the Java client does by bumping its epoch.
        """
        if self._producer is None:
            raise RuntimeError("Publisher is not started: use `async with Publisher(...)`")
        if self._stale:
            fresh = await self._new_producer()
            old, self._producer, self._stale = self._producer, fresh, False
            task = asyncio.create_task(old.stop())  # its batches settle on their own
            self._retired.add(task)
            task.add_done_callback(self._retired.discard)
            log.warning("a batch failed: restarted the idempotent producer", topic=self.topic)
        return self._producer

    async def flush(self) -> None:
        """Wait until every message sent so far is acknowledged or failed.

        Raises ``PublishError`` when any of them failed since the last flush
        (``publish`` failures excepted: ``publish`` raised them already).
        """
        if self._captured is not None:
            await self._captured.flush()
            return
        if self._producer is not None:
            await self._producer.flush()
        if self._pending:
            await asyncio.wait(list(self._pending))
        failures, self._failures = self._failures, []
        if failures:
            raise flush_error(failures)

    async def stop(self) -> None:
        """Flush (nothing queued is dropped), then close the connections.

        Messages that failed since the last ``flush()`` are logged
        (``messages failed``), not raised: call ``flush()`` first to handle them.
        """
        self._capture = self._captured = None  # captured: the capture owns the messages
        producer, self._producer = self._producer, None
        if producer is None:
            return
        try:
            await producer.flush()
            if self._pending:
                await asyncio.wait(list(self._pending))
        finally:
            await producer.stop()
            if self._retired:
                await asyncio.wait(list(self._retired))
        if self._failures:
            log.error("messages failed", count=len(self._failures), first=str(self._failures[0]))
            self._failures = []

    # ------------------------------------------------------------ sending
    async def publish(self, event: Event) -> Delivery:
        """Send one event and wait for the broker's acknowledgement (``acks="all"``).

        Args:
            event: an ``ExecutionEvent`` or ``ReportDefinedEvent``; its ``key``
                is the Kafka key, ``to_json(event)`` the value.

        Returns:
            Where the broker stored it: topic, partition, offset, timestamp (ms).

        Raises:
            PublishError: the broker did not store it (``retriable`` as aiokafka
                says, the aiokafka error as ``__cause__``).
            RuntimeError: the publisher is not started.
        """
        if self._captured is not None:
            return await self._captured.publish(event)
        future = await self.send(event)
        try:
            return await future
        except PublishError as exc:
            self._forget(exc)
            raise

    async def send(self, event: Event) -> asyncio.Future[Delivery]:
        """Queue one event; the returned future resolves when the broker acknowledges it.

        Returns:
            A future of the ``Delivery``; it raises ``PublishError`` when the
            broker did not store the event (``flush()`` raises it again).

        Raises:
            PublishError: aiokafka refused to queue it (e.g. larger than
                ``max_request_size``).
            RuntimeError: the publisher is not started.
        """
        if self._captured is not None:
            return await self._captured.send(event)
        return await self.send_raw(event.key, to_json(event), kafka_headers(event))

    async def publish_raw(self, key: bytes | None, value: bytes, headers: Headers = ()) -> Delivery:
        """``publish`` for pre-serialized bytes (which are not validated: see ``send_raw``).

        Raises:
            PublishError: not stored (as ``publish``).
            RuntimeError: the publisher is not started.
        """
        if self._captured is not None:
            return await self._captured.publish_raw(key, value, headers)
        future = await self.send_raw(key, value, headers)
        try:
            return await future
        except PublishError as exc:
            self._forget(exc)
            raise

    async def send_raw(
        self, key: bytes | None, value: bytes, headers: Headers = ()
    ) -> asyncio.Future[Delivery]:
        """Queue pre-serialized bytes as they are: nothing is validated.

        For the simulator and for tests that publish deliberately invalid
        messages; services publish events with ``publish``/``send``.

        Raises:
            PublishError: aiokafka refused to queue it (the future's failures are
                as for ``send``).
            RuntimeError: the publisher is not started.
        """
        if self._captured is not None:
            return await self._captured.send_raw(key, value, headers)
        producer = await self._ready()
        try:
            inner = await producer.send(self.topic, value, key=key, headers=list(headers))
        except KafkaError as exc:
            raise publish_error(exc) from exc
        return self._track(inner, producer)

    async def send_many(self, records: Iterable[RawRecord]) -> list[SentBatch]:
        """Queue pre-serialized records as whole batches, one or more per partition.

        The fast path (the simulator's): records are grouped by partition in
        their order and appended to aiokafka batch builders in C, so a message
        costs no future nor coroutine of its own. Waits while a partition
        already has a batch queued (back-pressure), at most
        ``request_timeout_ms``. Broker trouble is never raised here: every
        record ends up in one returned ``SentBatch``, whose future fails when
        the batch could not even be queued.
        """
        if self._captured is not None:
            return await self._captured.send_many(records)
        groups: dict[int, list[RawRecord]] = {}
        sent: list[SentBatch] = []
        try:
            producer = await self._ready()
            partitions = sorted(await producer.partitions_for(self.topic))
        except KafkaError as exc:
            return [SentBatch(-1, list(records), self._failed(publish_error(exc)))]
        except PublishError as exc:
            return [SentBatch(-1, list(records), self._failed(exc))]
        for record in records:
            groups.setdefault(self.partitioner(record.key, partitions, None), []).append(record)
        error: PublishError | None = None
        for partition, group in groups.items():
            start = 0
            builder = producer.create_batch()
            for index, record in enumerate(group):
                if error is not None:
                    break
                appended = builder.append(
                    key=record.key, value=record.value, timestamp=None, headers=record.headers
                )
                if appended is None:  # full: an empty builder always takes one record
                    batch = await self._submit(producer, builder, partition, group[start:index])
                    sent.append(batch)
                    error = _queue_error(batch)
                    builder, start = producer.create_batch(), index
                    builder.append(
                        key=record.key, value=record.value, timestamp=None, headers=record.headers
                    )
            if error is None:
                batch = await self._submit(producer, builder, partition, group[start:])
                error = _queue_error(batch)
            else:  # the broker is not taking batches: fail the rest at once
                batch = SentBatch(partition, group[start:], self._failed(error))
            sent.append(batch)
        return sent

    # ------------------------------------------------------------ internals
    async def _submit(
        self, producer: AIOKafkaProducer, builder: Any, partition: int, records: Sequence[RawRecord]
    ) -> SentBatch:
        builder.close()  # no linger: the batch is complete
        try:
            inner = await producer.send_batch(builder, self.topic, partition=partition)
        except KafkaError as exc:  # not queued: no sequence number was used
            return SentBatch(partition, records, self._failed(publish_error(exc)))
        return SentBatch(partition, records, self._track(inner, producer))

    def _failed(self, error: PublishError) -> asyncio.Future[Delivery]:
        """A future for records that never reached aiokafka's queue."""
        future: asyncio.Future[Delivery] = asyncio.get_running_loop().create_future()
        future.set_exception(error)
        future.exception()  # retrieved: flush() reports it
        self._failures.append(error)
        return future

    def _track(
        self, inner: asyncio.Future[Any], producer: AIOKafkaProducer
    ) -> asyncio.Future[Delivery]:
        outer: asyncio.Future[Delivery] = asyncio.get_running_loop().create_future()
        inner.add_done_callback(partial(settle, outer))
        self._pending.add(outer)
        outer.add_done_callback(partial(self._done, producer))
        return outer

    def _done(self, producer: AIOKafkaProducer, future: asyncio.Future[Delivery]) -> None:
        self._pending.discard(future)
        if not future.cancelled() and isinstance(exc := future.exception(), PublishError):
            self._failures.append(exc)
            if producer is self._producer:
                self._stale = True

    def _forget(self, exc: PublishError) -> None:
        """``publish`` raised it: ``flush`` need not raise it again."""
        self._failures = [failure for failure in self._failures if failure is not exc]


def start_failed(bootstrap_servers: str, exc: BaseException) -> StartFailed:
    """The one exception ``start`` raises: ``StartFailed`` with ``exc`` as ``__cause__``.

    ``__suppress_context__`` is set, so a traceback shows the aiokafka error
    as the direct cause and nothing that was being handled when it happened.
    """
    name, text = type(exc).__name__, str(exc)
    reason = text if text.startswith(name) else f"{name}: {text}".rstrip(": ")
    if isinstance(exc, KafkaError):
        retriable = publish_error(exc).retriable
    else:  # an OSError: a refused or timed-out connection may work later, a bad file will not
        retriable = isinstance(exc, ConnectionError | TimeoutError)
    error = StartFailed(bootstrap_servers, reason, retriable=retriable)
    error.__cause__ = exc  # also sets __suppress_context__
    return error


def _queue_error(batch: SentBatch) -> PublishError | None:
    future = batch.future
    if future.done() and not future.cancelled():
        error = future.exception()
        return error if isinstance(error, PublishError) else None
    return None
