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

from datetime import datetime

from pydantic import BaseModel, Field

from exectrack.consumer.errors import DeadLetterTopicMissing
from exectrack.producer.settings import KafkaSettings

__all__ = ["DeadLetterTopicMissing", "DeadLetterView", "HeaderView", "latest_dead_letters"]

VALUE_PREVIEW_CHARS = 500
"""``DeadLetterView.value_preview`` holds at most this many characters of the value."""


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


async def latest_dead_letters(
    kafka: KafkaSettings, *, limit: int = 50, reason: str | None = None
) -> list[DeadLetterView]:
    """The latest ``limit`` dead letters of ``kafka.dlq_topic``, newest first.

    Arguments:
        kafka: where the broker is and the dead-letter topic's name
            (``EXECTRACK_KAFKA__DLQ_TOPIC``).
        limit: at most this many (1..1000).
        reason: only dead letters whose ``exectrack.dlq.reason`` is this.

    Returns:
        Newest first by Kafka timestamp (then partition, offset). Empty when the
        topic holds none.

    Raises:
        ValueError: ``limit`` out of range (the message names ``limit``).
        DeadLetterTopicMissing: the topic does not exist (a ``LookupError``).
        KafkaError: the broker cannot be reached or refused the reads.
    """
    raise NotImplementedError
