"""Reading the dead-letter topic: its latest dead letters, or one by partition and offset.

For operators (``exectrack-consumer dlq list|show|redrive``) and the read-side
HTTP API. The dead-letter topic is read with a plain assigned reader
(``exectrack.consumer.kafka.reader``: ``read_committed``, no consumer group, no
offset commits), so browsing never moves anyone's offsets. The latest records
are found per partition from its high watermark (for a ``read_committed``
reader: the last stable offset) backwards, in windows, down to the log start.

What a dead letter carries is described in ``exectrack.consumer.dlq.letter``:
the original key, value and headers, plus the ``exectrack.dlq.*`` headers
(reason, error, source topic/partition/offset/timestamp, consumer, at,
truncated).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import UnknownTopicOrPartitionError, for_code
from pydantic import BaseModel, Field

from exectrack.consumer.dlq.letter import HEADER_PREFIX, TRUNCATED, KafkaRecordBytes
from exectrack.consumer.errors import BadQuery, DeadLetterTopicMissing
from exectrack.consumer.kafka import reader
from exectrack.producer.settings import KafkaSettings

__all__ = [
    "DeadLetterRecord",
    "DeadLetterTopicMissing",
    "DeadLetterView",
    "HeaderView",
    "latest_dead_letters",
    "read_dead_letters",
]

VALUE_PREVIEW_CHARS = 500
"""``DeadLetterView.value_preview`` holds at most this many characters of the value."""
MAX_LIMIT = 1000
"""``latest_dead_letters`` returns at most this many."""
SCAN_LIMIT = 100_000
"""``latest_dead_letters`` reads at most this many records a call (a rare ``reason``
in a long topic): what it found by then is returned."""
FIRST_WINDOW = 64  # offsets read back per partition in the first round; doubles each round


class HeaderView(BaseModel):
    """One Kafka header: ``name``, and ``value`` decoded as UTF-8 (invalid bytes as U+FFFD)."""

    name: str
    value: str


class DeadLetterView(BaseModel):
    """One record of the dead-letter topic, as an operator reads it.

    Where it is: ``topic``, ``partition``, ``offset`` (of the dead-letter
    topic), ``timestamp`` (its Kafka timestamp, aware UTC: when it was
    dead-lettered). Why: ``reason`` (``exectrack.dlq.reason``: an
    ``InvalidReason`` code, ``db_refused`` or ``undecodable_record``; None if the
    record carries no such header, i.e. was not written by exectrack) and
    ``detail`` (``exectrack.dlq.error``). Where from: ``source_topic``,
    ``source_partition``, ``source_offset`` (``exectrack.dlq.topic``/``partition``/
    ``offset``: the original record, which stays in the events topic until its
    retention). ``key`` (UTF-8 text, the execution id; None: no key),
    ``headers`` (all of them, original and ``exectrack.dlq.*``, in record
    order), ``value_bytes`` (size of the value as stored; None: a null value),
    ``value_preview`` (the first ``VALUE_PREVIEW_CHARS`` characters, UTF-8 with
    invalid bytes replaced), ``truncated`` (``exectrack.dlq.truncated`` when the
    dead letter had to be shrunk: then key, value or headers are not the
    original bytes).
    """

    topic: str
    partition: int = Field(ge=0)
    offset: int = Field(ge=0)
    timestamp: datetime
    key: str | None
    reason: str | None
    detail: str | None
    source_topic: str | None
    source_partition: int | None
    source_offset: int | None
    dead_lettered_at: datetime | None = None
    consumer: str | None = None
    truncated: str | None = None
    headers: list[HeaderView]
    value_bytes: int | None
    value_preview: str | None


def _text(raw: bytes | None) -> str | None:
    return None if raw is None else raw.decode("utf-8", "replace")


def _int(raw: str | None) -> int | None:
    try:
        return None if raw is None else int(raw)
    except ValueError:
        return None


def _time(raw: str | None) -> datetime | None:
    try:
        return None if raw is None else datetime.fromisoformat(raw)
    except ValueError:
        return None


@dataclass(frozen=True)
class DeadLetterRecord(KafkaRecordBytes):
    """One record of the dead-letter topic, bytes as stored (fields as ``KafkaRecordBytes``)."""

    @classmethod
    def of(cls, record: Any) -> DeadLetterRecord:
        """From an aiokafka ``ConsumerRecord`` (or alike)."""
        return cls(**cls.fields_of(record))

    def header(self, name: str) -> str | None:
        """The last header ``name`` as UTF-8 text (invalid bytes replaced); None if absent."""
        for key, value in reversed(self.headers):
            if key == name:
                return value.decode("utf-8", "replace")
        return None

    @property
    def reason(self) -> str | None:
        """``exectrack.dlq.reason``; None on a record exectrack did not dead-letter."""
        return self.header(HEADER_PREFIX + "reason")

    @property
    def truncated(self) -> str | None:
        """``exectrack.dlq.truncated``: set when key, value or headers were cut to fit."""
        return self.header(TRUNCATED)

    @property
    def original_headers(self) -> list[tuple[str, bytes]]:
        """The source record's headers: every header but the ``exectrack.dlq.*`` ones.

        ``exectrack.consumer.dlq.letter`` adds only ``exectrack.dlq.*`` headers, after
        dropping any the source record carried, so what is left is the source's,
        in its order (unless ``truncated`` says they were cut or dropped).
        """
        return [(k, v) for k, v in self.headers if not k.startswith(HEADER_PREFIX)]

    def view(self) -> DeadLetterView:
        """The ``DeadLetterView`` of this record."""
        value = self.value
        # a UTF-8 character is at most 4 bytes: this many bytes hold the preview
        preview = None if value is None else _text(value[: VALUE_PREVIEW_CHARS * 4])
        return DeadLetterView(
            topic=self.topic,
            partition=self.partition,
            offset=self.offset,
            timestamp=datetime.fromtimestamp(self.timestamp / 1000, UTC),
            key=_text(self.key),
            reason=self.reason,
            detail=self.header(HEADER_PREFIX + "error"),
            source_topic=self.header(HEADER_PREFIX + "topic"),
            source_partition=_int(self.header(HEADER_PREFIX + "partition")),
            source_offset=_int(self.header(HEADER_PREFIX + "offset")),
            dead_lettered_at=_time(self.header(HEADER_PREFIX + "at")),
            consumer=self.header(HEADER_PREFIX + "consumer"),
            truncated=self.truncated,
            headers=[
                HeaderView(name=k, value=v.decode("utf-8", "replace")) for k, v in self.headers
            ],
            value_bytes=None if value is None else len(value),
            value_preview=None if preview is None else preview[:VALUE_PREVIEW_CHARS],
        )


async def partitions_of(kafka: KafkaSettings, topic: str) -> list[int]:
    """The partitions of ``topic`` (sorted), by the admin API's DescribeTopics.

    Raises:
        DeadLetterTopicMissing: no such topic.
        KafkaError: any other error the broker answers (authorization...).
    """
    admin = AIOKafkaAdminClient(**kafka.client_kwargs())
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    error = for_code(described["error_code"]) if described["error_code"] else None
    if error is UnknownTopicOrPartitionError or (error is None and not described["partitions"]):
        raise DeadLetterTopicMissing(
            f"the dead-letter topic {topic!r} does not exist (EXECTRACK_KAFKA__DLQ_TOPIC)"
        )
    if error is not None:
        raise error(f"describe topic {topic!r}")
    return sorted(p["partition"] for p in described["partitions"])


class _Reader:
    """One assigned ``read_committed`` reader of one topic: no group, no commits."""

    def __init__(self, kafka: KafkaSettings, topic: str, timeout_s: float) -> None:
        self.topic, self.timeout_s = topic, timeout_s
        self.consumer: AIOKafkaConsumer = reader(
            group_id=None, enable_auto_commit=False, **kafka.client_kwargs()
        )

    async def __aenter__(self) -> _Reader:
        await self.consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()

    async def bounds(self, partitions: list[int]) -> dict[int, tuple[int, int]]:
        """Per partition: (log start offset, end offset = last stable offset)."""
        tps = [TopicPartition(self.topic, p) for p in partitions]
        begin = await self.consumer.beginning_offsets(tps)
        end = await self.consumer.end_offsets(tps)
        return {tp.partition: (begin[tp], end[tp]) for tp in tps}

    async def read(self, windows: Mapping[int, tuple[int, int]]) -> dict[int, list[Any]]:
        """The records at offsets ``[start, stop)`` of each partition, in offset order.

        Raises:
            TimeoutError: the windows were not read within ``timeout_s``.
        """
        todo = {
            TopicPartition(self.topic, p): (start, stop)
            for p, (start, stop) in windows.items()
            if start < stop
        }
        found: dict[int, list[Any]] = {p: [] for p in windows}
        if not todo:
            return found
        self.consumer.assign(list(todo))
        for tp, (start, _) in todo.items():
            self.consumer.seek(tp, start)
        async with asyncio.timeout(self.timeout_s):
            while todo:
                fetched = await self.consumer.getmany(*todo, timeout_ms=500)
                for tp, records in fetched.items():
                    stop = todo[tp][1] if tp in todo else -1
                    found[tp.partition] += [r for r in records if r.offset < stop]
                for tp in list(todo):
                    if await self.consumer.position(tp) >= todo[tp][1]:
                        self.consumer.pause(tp)
                        del todo[tp]
        return found


async def latest_dead_letters(
    kafka: KafkaSettings,
    *,
    limit: int = 50,
    reason: str | None = None,
    scan_limit: int = SCAN_LIMIT,
    timeout_s: float = 30.0,
) -> list[DeadLetterView]:
    """The latest ``limit`` dead letters of ``kafka.dlq_topic``, newest first.

    Each partition is read from its end offset backwards, in windows that double
    (64 offsets, 128, ...), until it gave ``limit`` matching letters or reached
    its log start; the partitions' letters are then merged by timestamp. A
    partition's letters are in offset order, which is their timestamp order:
    the consumer stamps them when it sends them.

    Arguments:
        kafka: where the broker is and the dead-letter topic's name
            (``EXECTRACK_KAFKA__DLQ_TOPIC``).
        limit: at most this many (1..``MAX_LIMIT``).
        reason: only dead letters whose ``exectrack.dlq.reason`` is this.
        scan_limit: read at most this many records in all (then return what was
            found: with a rare ``reason``, fewer than ``limit``).
        timeout_s: the whole read, in seconds.

    Returns:
        Newest first by Kafka timestamp (then partition, offset). Empty when the
        topic holds none.

    Raises:
        BadQuery: ``limit`` out of range (a ``ValueError``; ``argument`` is ``"limit"``).
        DeadLetterTopicMissing: the topic does not exist (a ``LookupError``).
        TimeoutError: not read within ``timeout_s``.
        KafkaError: the broker cannot be reached or refused the reads.
    """
    found = await latest_records(
        kafka, limit=limit, scan_limit=scan_limit, timeout_s=timeout_s,
        match=None if reason is None else (lambda r: r.reason == reason),
    )  # fmt: skip
    return [record.view() for record in found]


async def latest_records(
    kafka: KafkaSettings,
    *,
    limit: int = 50,
    match: Callable[[DeadLetterRecord], bool] | None = None,
    partitions: list[int] | None = None,
    scan_limit: int = SCAN_LIMIT,
    timeout_s: float = 30.0,
) -> list[DeadLetterRecord]:
    """``latest_dead_letters`` as ``DeadLetterRecord`` (bytes), for any ``match``.

    ``partitions``: only these (default: all of the topic's).

    Raises:
        As ``latest_dead_letters``; ``BadQuery`` (``"partition"``) also for a partition the
        topic lacks.
    """
    if not 1 <= limit <= MAX_LIMIT:
        raise BadQuery("limit", f"must be between 1 and {MAX_LIMIT}, not {limit}")
    topic = kafka.dlq_topic
    known = await partitions_of(kafka, topic)
    wanted = _check_partitions(topic, known, partitions)
    async with _Reader(kafka, topic, timeout_s) as source:
        bounds = await source.bounds(wanted)
        upper = {p: end for p, (_, end) in bounds.items()}
        kept: dict[int, list[DeadLetterRecord]] = {p: [] for p in wanted}
        window, scanned = FIRST_WINDOW, 0
        while scanned < scan_limit:
            todo = [p for p in wanted if len(kept[p]) < limit and upper[p] > bounds[p][0]]
            if not todo:
                break
            size = min(window, max(1, (scan_limit - scanned) // len(todo)))
            windows = {p: (max(bounds[p][0], upper[p] - size), upper[p]) for p in todo}
            read = await source.read(windows)
            for p, records in read.items():
                scanned += len(records)
                letters = [DeadLetterRecord.of(r) for r in records]
                kept[p] = [r for r in letters if match is None or match(r)] + kept[p]
                kept[p] = kept[p][-limit:]
                upper[p] = windows[p][0]
            window *= 2
    merged = [r for p in wanted for r in kept[p]]
    merged.sort(key=lambda r: (r.timestamp, r.partition, r.offset), reverse=True)
    return merged[:limit]


def _check_partitions(topic: str, known: list[int], partitions: list[int] | None) -> list[int]:
    if partitions is None:
        return known
    unknown = sorted(set(partitions) - set(known))
    if unknown:
        raise BadQuery("partition", f"{unknown} not in topic {topic!r} (it has {len(known)})")
    return sorted(set(partitions))


async def read_dead_letters(
    kafka: KafkaSettings,
    ranges: Mapping[int, tuple[int, int]],
    *,
    timeout_s: float = 30.0,
) -> list[DeadLetterRecord]:
    """The records of ``kafka.dlq_topic`` at offsets ``[start, stop)`` of each partition.

    Arguments:
        ranges: partition -> (start, stop); clipped to what the partition holds
            (log start to end offset), so offsets deleted by retention or not
            yet written are simply absent.

    Returns:
        In partition, then offset order.

    Raises:
        BadQuery: a partition the topic lacks (``argument`` ``"partition"``).
        DeadLetterTopicMissing, TimeoutError, KafkaError: as ``latest_dead_letters``.
    """
    topic = kafka.dlq_topic
    wanted = _check_partitions(topic, await partitions_of(kafka, topic), list(ranges))
    async with _Reader(kafka, topic, timeout_s) as source:
        bounds = await source.bounds(wanted)
        windows = {
            p: (max(ranges[p][0], bounds[p][0]), min(ranges[p][1], bounds[p][1])) for p in wanted
        }
        read = await source.read(windows)
    return [DeadLetterRecord.of(r) for p in wanted for r in read[p]]
