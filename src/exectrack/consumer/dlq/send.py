"""Sending dead letters: fit what the DLQ accepts, retry the transient, drop the rest explicitly.

A dead letter that cannot be sent must neither stop the partition (an exception
out of the loop exits the process, and the restart meets the same record: a
crash loop) nor vanish. ``DeadLetterQueue.send`` decides per letter, by
aiokafka's error classes and their ``retriable`` flag:

=================================================  ==========================================
what happens                                       decision
=================================================  ==========================================
record over the limit (min of the producer's       shrunk before sending (``letter.fit``),
``max_request_size`` and the DLQ topic's           header ``exectrack.dlq.truncated``,
``max.message.bytes``, read at start)              ``exectrack_dead_letters_truncated_total``
``MessageSizeTooLargeError``,                      the limit is read again, the letter is sent
``RecordListTooLargeError`` from the broker        alone, shrunk to it; refused again: dropped
                                                   (cause ``too_large``)
``KafkaTimeoutError`` or ``retriable`` = True      transient: retried with capped exponential
(connection lost, not leader, leader not           backoff for as long as ``keep_going()``;
available, request timed out, not enough           the offsets are not committed meanwhile
replicas, storage error)                           (``errors.Stopped`` when told to stop)
``UnknownTopicOrPartitionError``: the topic is     retried while the topic is missing for less
missing (the broker does not auto-create:          than ``missing_grace_s``, then dropped
deploy/local sets auto.create.topics.enable=false) (cause ``topic_missing``); the topic is
                                                   probed again every ``PROBE_EVERY_S``: once
                                                   it exists, letters flow again
``InvalidTopicError`` (a name the broker refuses)  dropped (cause ``topic_invalid``)
``TopicAuthorizationFailedError``,                 dropped (cause ``unauthorized``); tried
``ClusterAuthorizationFailedError``                again with the next letter (an ACL can be
                                                   granted at run time)
any other non-retriable ``KafkaError`` (policy     dropped (cause ``refused``, the error's
violation, corrupt or invalid record, e.g. a       class in the log line)
null key on a compacted DLQ topic: INVALID_RECORD,
which aiokafka 0.14 reports as ``UnknownError``)
=================================================  ==========================================

Before any drop, a letter refused inside a batch with others is sent again
alone, after the topic is described again (``exectrack.consumer.dlq._topic``): the broker
refuses a whole batch for one record in it, which must not take the others.

A drop is one JSON log line at error level (``dead_letter_dropped``: cause,
error, the dead letter's reason and its source topic, partition and offset)
and ``exectrack_dead_letters_dropped_total{cause}``; the record itself stays in
the source topic until its retention, where that line finds it. The offset is
then committed: the partition flows (docs/design.md, "Dead letters").

The producer is not idempotent, on purpose: after the broker refuses one batch
of an idempotent producer (e.g. MESSAGE_TOO_LARGE), aiokafka 0.14 keeps the
partition's sequence number and every later send to that partition fails with
``OutOfOrderSequenceNumber`` (measured on Kafka 4.1). A duplicate dead letter
after a retry is harmless (the same happens when the consumer stops between
the send and the offset commit); aiokafka keeps one request in flight per
partition, so order is kept. Its ``max_batch_size`` is at most the limit, so
letters sent together never form a batch the topic refuses.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    InvalidTopicError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    TopicAuthorizationFailedError,
    UnknownTopicOrPartitionError,
)

from exectrack.consumer import metrics
from exectrack.consumer.dlq._topic import PROBE_EVERY_S, Topic
from exectrack.consumer.dlq.letter import DeadLetter, Shrunk
from exectrack.consumer.errors import Stopped
from exectrack.consumer.retry import Backoff
from exectrack.producer.settings import KafkaSettings

log = structlog.get_logger(__name__)

MAX_REQUEST_SIZE = 1024 * 1024
"""The DLQ producer's ``max_request_size``: Kafka's default ``message.max.bytes``."""
MAX_BATCH_SIZE = 16 * 1024  # aiokafka's default; lowered to the limit when that is smaller

Cause = Literal["too_large", "topic_missing", "topic_invalid", "unauthorized", "refused"]
Decision = Literal[
    "retry", "too_large", "topic_missing", "topic_invalid", "unauthorized", "refused"
]


def classify(exc: BaseException) -> Decision:
    """What to do with a dead letter whose send raised ``exc`` (module doc's table).

    Raises:
        ``exc`` itself when it is not a ``KafkaError`` (a bug, not the broker).
    """
    if isinstance(exc, MessageSizeTooLargeError | RecordListTooLargeError):
        return "too_large"
    if isinstance(exc, UnknownTopicOrPartitionError):
        return "topic_missing"
    if isinstance(exc, InvalidTopicError):
        return "topic_invalid"
    if isinstance(exc, TopicAuthorizationFailedError | ClusterAuthorizationFailedError):
        return "unauthorized"
    if isinstance(exc, KafkaTimeoutError) or getattr(exc, "retriable", False):
        return "retry"
    if isinstance(exc, KafkaError):
        return "refused"
    raise exc


@dataclass
class Delivery:
    """What ``DeadLetterQueue.send`` did: letters acknowledged, and letters dropped with why."""

    sent: list[DeadLetter] = field(default_factory=list)
    dropped: list[tuple[DeadLetter, Cause]] = field(default_factory=list)


class DeadLetterQueue:
    """The dead-letter topic: ``start()``, ``send(letters, keep_going)``, ``stop()``.

    Arguments:
        kafka: connection settings; ``kafka.dlq_topic`` is the topic.
        identity: ``exectrack.dlq.consumer`` header (``letter.consumer_identity``).
        client_id: overrides ``kafka.client_id`` (replay uses its own).
        max_request_size: the producer's, in bytes; one side of ``limit``.
        request_timeout_ms: how long aiokafka retries a batch itself before the
            failure reaches ``send`` (and ``keep_going()`` is asked again).
        missing_grace_s: how long a missing topic is waited for before letters are dropped.
        retry_initial_s, retry_max_s: backoff of transient failures (doubling, +-20% jitter:
            exectrack.consumer.retry.Backoff).
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        identity: str,
        *,
        client_id: str | None = None,
        max_request_size: int = MAX_REQUEST_SIZE,
        request_timeout_ms: int = 15_000,
        missing_grace_s: float = 60.0,
        retry_initial_s: float = 0.2,
        retry_max_s: float = 10.0,
    ) -> None:
        self.kafka = kafka
        self.topic_name = kafka.dlq_topic
        self.identity = identity
        self.client_id = client_id
        self.max_request_size = max_request_size
        self.request_timeout_ms = request_timeout_ms
        self.missing_grace_s = missing_grace_s
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.topic = Topic(kafka.dlq_topic)
        self.producer: AIOKafkaProducer | None = None

    def _client_kwargs(self) -> dict[str, Any]:
        kwargs = self.kafka.client_kwargs()  # at start, not in __init__: TLS files are read here
        return {**kwargs, "client_id": self.client_id} if self.client_id else kwargs

    @property
    def limit(self) -> int:
        """Bytes of a one-record batch the DLQ accepts: min(max_request_size, max.message.bytes)."""
        topic_max = self.topic.max_message_bytes
        return self.max_request_size if topic_max is None else min(self.max_request_size, topic_max)

    async def start(self) -> None:
        """Describe the topic (its ``max.message.bytes``; missing or invalid is logged), start.

        Raises:
            aiokafka.errors.KafkaError: the producer could not reach the cluster
                (``AIOKafkaProducer.start``).
        """
        await self.probe()
        if self.topic.status == "unknown":  # e.g. no DescribeConfigs ACL: sends will tell
            log.warning(
                "dlq_topic_undescribed",
                dlq_topic=self.topic_name,
                detail=self.topic.detail,
                limit=self.limit,
                hint="grant DESCRIBE_CONFIGS on the topic so its max.message.bytes is used",
            )
        if self.topic.status in ("missing", "invalid"):
            log.warning(
                f"dlq_topic_{self.topic.status}",
                dlq_topic=self.topic_name,
                detail=self.topic.detail,
                hint="create it (EXECTRACK_CREATE_TOPICS=true does at start) or fix "
                "EXECTRACK_KAFKA__DLQ_TOPIC; meanwhile dead letters are dropped "
                "(exectrack_dead_letters_dropped_total)",
            )
        self.producer = AIOKafkaProducer(
            acks="all",
            enable_idempotence=False,  # module doc: a refused batch must not poison the producer
            max_request_size=self.max_request_size,
            request_timeout_ms=self.request_timeout_ms,
            max_batch_size=max(1024, min(MAX_BATCH_SIZE, self.limit)),
            **self._client_kwargs(),
        )
        await self.producer.start()

    async def stop(self) -> None:
        """Flush and close the producer (letters in flight are sent first)."""
        if self.producer is not None:
            await self.producer.stop()

    async def probe(self) -> None:
        """Describe the topic again (``dlq._topic``): exists? its ``max.message.bytes``?"""
        await self.topic.describe(self._client_kwargs())

    # ------------------------------------------------------------ sending
    async def send(
        self, letters: Sequence[DeadLetter], keep_going: Callable[[], bool] = lambda: True
    ) -> Delivery:
        """Send every letter (pipelined), or drop it explicitly; return which was which.

        Returns when every letter is acknowledged (``acks=all``) or dropped.

        Args:
            letters: in the order they were fetched.
            keep_going: asked between retries; False stops retrying (the
                service is stopping or lost the partitions).

        Raises:
            ``exectrack.consumer.errors.Stopped``: a transient failure persisted and
            ``keep_going()`` turned false; nothing may be committed past these
            letters (the next owner of the partition sends them again).
            RuntimeError: ``start()`` has not run.
        """
        if self.producer is None:
            raise RuntimeError("DeadLetterQueue.start() has not run")
        delivery, pending = Delivery(), list(letters)
        alone, retries = False, 0  # alone: one letter per batch
        while pending:
            cause = await self._usable(keep_going)
            if cause is not None:
                for letter in pending:
                    self._drop(delivery, letter, cause, self.topic.detail)
                break
            outcomes = await self._attempt(pending, delivery, alone=alone)
            pending, transient, was_alone, missing = [], [], alone, ""
            for letter, exc in outcomes:
                decision = classify(exc)
                if decision == "topic_missing":  # _usable() waits for it, then drops
                    missing = f"{type(exc).__name__}: {exc}"
                    pending.append(letter)
                elif decision == "retry":
                    transient.append(f"{type(exc).__name__}: {exc}")
                    pending.append(letter)
                elif not was_alone:  # the broker refuses a whole batch for one record in it:
                    alone = True  # again, one per batch, shrunk to the limit read again
                    pending.append(letter)
                else:
                    self._drop(delivery, letter, decision, f"{type(exc).__name__}: {exc}")
            if missing or (alone and pending):
                await self.probe()  # gone? or its max.message.bytes lowered?
            if missing and self.topic.status == "ok":  # metadata lag, not a missing topic
                transient.append(missing)
            elif missing and self.topic.status == "unknown":  # cannot describe: trust the send
                self.topic.status, self.topic.detail = "missing", missing
                self.topic.missing_since = self.topic.missing_since or time.monotonic()
            if transient:
                if not keep_going():
                    raise Stopped(transient[0])
                metrics.DEAD_LETTER_RETRIES.inc()
                retries += 1
                backoff = Backoff(self.retry_initial_s, self.retry_max_s)
                log.warning(
                    "dlq_retry",
                    dlq_topic=self.topic_name,
                    letters=len(pending),
                    error=transient[0],
                    retry_in_s=round(backoff.delay(retries), 2),
                )
                await asyncio.sleep(backoff.wait(retries))
        return delivery

    async def _usable(self, keep_going: Callable[[], bool]) -> Cause | None:
        """None when letters may be sent, else why they are dropped (missing too long, invalid)."""
        topic = self.topic
        while topic.status in ("missing", "invalid"):
            if time.monotonic() - topic.checked_at >= PROBE_EVERY_S:
                await self.probe()
                continue
            if topic.status == "invalid":
                return "topic_invalid"
            since = topic.missing_since or time.monotonic()
            if time.monotonic() - since >= self.missing_grace_s:
                return "topic_missing"
            if not keep_going():
                raise Stopped(f"dead-letter topic {self.topic_name!r} is missing")
            log.warning(
                "dlq_topic_missing",
                dlq_topic=self.topic_name,
                detail=topic.detail,
                drop_in_s=round(self.missing_grace_s - (time.monotonic() - since), 1),
            )
            await asyncio.sleep(min(PROBE_EVERY_S, self.missing_grace_s))
        return None

    async def _attempt(
        self, letters: list[DeadLetter], delivery: Delivery, *, alone: bool
    ) -> list[tuple[DeadLetter, BaseException]]:
        """Send ``letters`` (one at a time when ``alone``); the sent ones go to ``delivery``."""
        assert self.producer is not None  # noqa: S101 - send() checked it
        failed: list[tuple[DeadLetter, BaseException]] = []
        queued: list[tuple[DeadLetter, Shrunk, Any]] = []
        for letter in letters:
            message = letter.message(self.identity, self.limit)
            if message is None:
                self._drop(
                    delivery,
                    letter,
                    "too_large",
                    f"even without key, value and original headers over {self.limit} bytes",
                )
                continue
            try:
                future = await self.producer.send(
                    self.topic_name, value=message.value, key=message.key, headers=message.headers
                )
            except KafkaError as exc:
                failed.append((letter, exc))
                continue
            queued.append((letter, message, future))
            if alone:
                failed += await self._settle(queued, delivery)
                queued = []
        return failed + await self._settle(queued, delivery)

    async def _settle(
        self, queued: list[tuple[DeadLetter, Shrunk, Any]], delivery: Delivery
    ) -> list[tuple[DeadLetter, BaseException]]:
        results = await asyncio.gather(*(f for *_, f in queued), return_exceptions=True)
        failed = []
        for (letter, message, _), result in zip(queued, results, strict=True):
            if isinstance(result, BaseException):
                failed.append((letter, result))
            else:
                delivery.sent.append(letter)
                self._note_cuts(letter, message)
        return failed

    def _note_cuts(self, letter: DeadLetter, message: Shrunk) -> None:
        if message.cuts:
            metrics.DEAD_LETTERS_TRUNCATED.inc()
            log.warning(
                "dead_letter_truncated",
                limit=self.limit,
                cuts=list(message.cuts),
                reason=letter.reason,
                **letter.source,
            )

    def _drop(self, delivery: Delivery, letter: DeadLetter, cause: Cause, error: str) -> None:
        delivery.dropped.append((letter, cause))
        metrics.DEAD_LETTERS_DROPPED.labels(cause=cause).inc()
        log.error(
            "dead_letter_dropped",
            cause=cause,
            error=error[:500],
            dlq_topic=self.topic_name,
            reason=letter.reason,
            **letter.source,
        )
