"""An in-memory publisher for the tests of services that emit events: no Kafka needed.

::

    from exectrack.producer.testing import InMemoryPublisher
    from exectrack.producer.tracking import track

    async def test_report_emits_its_lifecycle():
        async with InMemoryPublisher() as pub:
            execution_id = await run_my_report(pub)    # calls track(pub, ...)
        assert pub.types_for(execution_id) == [PENDING, STARTED, COMPLETED]

It has the ``Publisher`` interface (``publish``, ``send``, ``publish_raw``,
``send_raw``, ``send_many``, ``flush``, ``start``, ``stop``, ``async with``)
and checks every message the way the consumer will: it encodes the event as
the real publisher does and parses it back with ``parse_event``, so an event
the consumer would dead-letter fails the service's test with the same
``InvalidEvent`` reason. Raw messages (``send_raw``) are stored as sent;
those that are not valid events land in ``dead_letters`` with their reason.
``fail_next`` makes the next sends fail, to test what a service does when
the broker is away.

When the service builds its own ``Publisher`` (or ``SyncPublisher``) and the
test cannot pass one in, ``captured_events`` swaps it for an
``InMemoryPublisher`` from the outside, as faststream's ``TestKafkaBroker``
does::

    from exectrack.producer.testing import captured_events

    async def test_report_emits_its_lifecycle():
        with captured_events() as pub:
            execution_id = await my_service.run_report()  # does `async with Publisher()`
        assert pub.types_for(execution_id) == [PENDING, STARTED, COMPLETED]

or, with ``pytest_plugins = ["exectrack.producer.pytest_plugin"]`` in the
``conftest.py``, the fixture ``exectrack_events`` (the same, one per test).

Inside the ``with`` block, every ``exectrack.producer.publisher.Publisher`` that is
started (``start()``, ``async with``, or through ``SyncPublisher``, which
wraps one) opens no connection at all: it is bound to the capture's
``InMemoryPublisher`` and its ``publish``/``send``/``publish_raw``/
``send_raw``/``send_many``/``flush`` go there (the events keep the service's
``source``; they are stored under the in-memory publisher's ``topic``). It
does not matter how the service imported ``Publisher``: the switch is in
``Publisher.start()`` itself. Rules:

- Only a ``start()`` inside the block is captured. A ``Publisher`` started
  before it (connected to Kafka) stays real; one started inside stays bound
  until its ``stop()`` or the end of the block, whichever comes first. After
  the block (left normally or by an exception), bound publishers are unbound
  and count as stopped (``publish`` raises ``RuntimeError: not started``),
  and a new ``start()`` connects to Kafka again.
- The captures active at one time form one process-wide stack, shared by
  every task and thread (the ``SyncPublisher`` loop thread too): a
  ``start()`` binds to the innermost (most recently entered) capture still
  active. Nested blocks: the inner one receives what starts inside it, the
  outer one receives again after the inner ends. Concurrent captures in
  several tasks: a ``start()`` binds to the one entered last, whichever task
  it runs in, so tests that run services concurrently share one capture
  rather than open one each.
- ``publisher`` (an ``InMemoryPublisher`` you built, e.g. with another
  ``topic`` or after ``fail_next``) is used instead of a new one; it is
  started on enter and stopped on exit either way.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from exectrack.producer._kafka import Partitioner, flush_error
from exectrack.producer.errors import InvalidEvent, InvalidReason, PublishError
from exectrack.producer.events import (
    Event,
    EventType,
    ExecutionEvent,
    kafka_headers,
    parse_event,
    to_json,
)
from exectrack.producer.publisher import (
    Capture,
    Delivery,
    Headers,
    RawRecord,
    SentBatch,
    StartStop,
)
from exectrack.producer.settings import DEFAULT_PARTITIONS, DEFAULT_TOPIC

__all__ = ["InMemoryPublisher", "StoredMessage", "captured_events"]


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A message as the broker would have stored it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    timestamp_ms: int


class InMemoryPublisher(StartStop):
    """Stores what it is sent; ``events`` holds the valid ones, parsed back."""

    def __init__(
        self,
        *,
        topic: str = DEFAULT_TOPIC,
        source: str = "/services/test",
        partitions: int = DEFAULT_PARTITIONS,
    ) -> None:
        self.topic = topic
        self.source = source
        self.partitions = list(range(partitions))
        self.messages: list[StoredMessage] = []
        """Every message, valid or not, in the order sent."""
        self.events: list[Event] = []
        """The valid messages, parsed as the consumer would parse them."""
        self.dead_letters: list[tuple[StoredMessage, InvalidEvent]] = []
        """The messages the consumer would dead-letter, with why."""
        self.started = False
        self._partitioner = Partitioner()
        self._offsets = dict.fromkeys(self.partitions, 0)
        self._fail: list[PublishError] = []
        self._failures: list[PublishError] = []

    # ------------------------------------------------------------ inspection
    def events_for(self, execution_id: str) -> list[ExecutionEvent]:
        """The valid execution events of one execution, in the order sent."""
        return [
            e
            for e in self.events
            if isinstance(e, ExecutionEvent) and e.data.execution_id == execution_id
        ]

    def types_for(self, execution_id: str) -> list[EventType]:
        """The types of ``events_for(execution_id)``, in the order sent."""
        return [EventType(e.type) for e in self.events_for(execution_id)]

    def clear(self) -> None:
        """Forget every stored message (``messages``, ``events``, ``dead_letters``)."""
        self.messages.clear()
        self.events.clear()
        self.dead_letters.clear()

    def fail_next(self, count: int = 1, *, retriable: bool = True) -> None:
        """Make the next ``count`` sends fail with ``PublishError`` (the broker is away)."""
        self._fail.extend(
            PublishError("injected failure", retriable=retriable) for _ in range(count)
        )

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Accept messages (no connection)."""
        self.started = True

    async def stop(self) -> None:
        """Refuse messages from now on; forget failures not yet flushed (as ``Publisher``)."""
        self.started = False
        self._failures.clear()

    async def flush(self) -> None:
        """Raise the failures of ``send*`` since the last flush, as ``Publisher.flush`` does.

        Raises:
            PublishError: some futures failed (``fail_next``) since the last flush.
        """
        failures, self._failures = self._failures, []
        if failures:
            raise flush_error(failures)

    # ------------------------------------------------------------ sending
    async def publish(self, event: Event) -> Delivery:
        """Validate like the consumer, then store; raises ``InvalidEvent`` or ``PublishError``."""
        value, headers = to_json(event), kafka_headers(event)
        parsed = parse_event(value, headers, event.key)  # InvalidEvent, as the consumer would
        if parsed != event:
            detail = "the event does not survive to_json/parse_event unchanged (model_construct?)"
            raise InvalidEvent(InvalidReason.INVALID_FIELD, detail)
        self._maybe_fail()
        return self._store(event.key, value, headers)

    async def send(self, event: Event) -> asyncio.Future[Delivery]:
        """``publish``, with a ``PublishError`` set on the returned future instead of raised.

        Raises:
            InvalidEvent: the consumer would dead-letter the event.
        """
        try:
            outcome: Delivery | PublishError = await self.publish(event)
        except PublishError as exc:
            outcome = exc
        return self._resolved(outcome)

    async def publish_raw(self, key: bytes | None, value: bytes, headers: Headers = ()) -> Delivery:
        """Store the bytes as sent; an invalid event lands in ``dead_letters``, not raised.

        Raises:
            PublishError: ``fail_next`` asked for it.
            RuntimeError: not started.
        """
        self._maybe_fail()
        return self._store(key, value, headers)

    async def send_raw(
        self, key: bytes | None, value: bytes, headers: Headers = ()
    ) -> asyncio.Future[Delivery]:
        """``publish_raw``, with a ``PublishError`` set on the returned future instead of raised."""
        try:
            outcome: Delivery | PublishError = await self.publish_raw(key, value, headers)
        except PublishError as exc:
            outcome = exc
        return self._resolved(outcome)

    async def send_many(self, records: Iterable[RawRecord]) -> list[SentBatch]:
        """Store records as one batch per partition, as ``Publisher.send_many`` does.

        A pending ``fail_next`` failure fails a whole batch (nothing of it is
        stored): its ``SentBatch.future`` raises ``PublishError``.
        """
        groups: dict[int, list[RawRecord]] = {}
        for record in records:
            partition = self._partitioner(record.key, self.partitions, None)
            groups.setdefault(partition, []).append(record)
        sent = []
        for partition, group in groups.items():
            if self._fail:
                first: Delivery | PublishError = self._fail.pop(0)
            else:
                first = self._store(group[0].key, group[0].value, group[0].headers)
                for record in group[1:]:
                    self._store(record.key, record.value, record.headers)
            sent.append(SentBatch(partition, group, self._resolved(first)))
        return sent

    # ------------------------------------------------------------ internals
    def _maybe_fail(self) -> None:
        if self._fail:
            raise self._fail.pop(0)

    def _resolved(self, outcome: Delivery | PublishError) -> asyncio.Future[Delivery]:
        future: asyncio.Future[Delivery] = asyncio.get_running_loop().create_future()
        if isinstance(outcome, PublishError):
            future.set_exception(outcome)
            future.exception()  # retrieved: flush() reports it
            self._failures.append(outcome)
        else:
            future.set_result(outcome)
        return future

    def _store(self, key: bytes | None, value: bytes, headers: Headers) -> Delivery:
        if not self.started:
            raise RuntimeError("InMemoryPublisher is not started: use `async with` or start()")
        partition = self._partitioner(key, self.partitions, None)
        offset = self._offsets[partition]
        self._offsets[partition] = offset + 1
        now = time.time_ns() // 1_000_000
        stored = StoredMessage(self.topic, partition, offset, key, value, list(headers), now)
        self.messages.append(stored)
        try:
            self.events.append(parse_event(value, headers, key))
        except InvalidEvent as exc:
            self.dead_letters.append((stored, exc))
        return Delivery(self.topic, partition, offset, now)


@contextmanager
def captured_events(publisher: InMemoryPublisher | None = None) -> Iterator[InMemoryPublisher]:
    """Capture every ``Publisher`` started inside the block into one ``InMemoryPublisher``.

    Yields the ``InMemoryPublisher`` (``publisher``, or a new one with the
    default topic), started; stops it and restores the real ``Publisher`` on
    exit, also when the block raises. No network is used by a captured
    publisher. Binding, nesting and tasks: this module's docstring. The idea
    and the name of the pattern come from faststream's ``TestKafkaBroker``.
    """
    memory = publisher if publisher is not None else InMemoryPublisher()
    memory.started = True  # what start() does, without needing a running loop
    try:
        with Capture(memory):
            yield memory
    finally:
        memory.started = False
        memory._failures.clear()  # what stop() does
