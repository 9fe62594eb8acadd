"""Dead letters: the original record plus headers saying why, where from and when.

The key, value and headers are kept byte for byte when the dead-letter record
fits what the dead-letter topic accepts; otherwise ``DeadLetter.message`` shrinks
them to fit (``fit``, below) and says so in a header. Sending, retrying and the
explicit drop of a letter that cannot be sent at all live in
``exectrack.consumer.dlq.send``. Headers (all UTF-8):

===========================  ==================================================
exectrack.dlq.reason         InvalidReason code, ``db_refused`` or ``undecodable_record``
exectrack.dlq.error          human-readable detail (<= 1000 chars)
exectrack.dlq.topic          source topic
exectrack.dlq.partition      source partition
exectrack.dlq.offset         source offset
exectrack.dlq.timestamp      source record timestamp (ms since epoch)
exectrack.dlq.consumer       host name and group of the consumer
exectrack.dlq.at             when it was dead-lettered (RFC 3339, UTC)
exectrack.dlq.truncated      only if something was cut: ``true`` then, for
                             each cut part, ``; PART=ORIGINAL/KEPT`` (bytes;
                             PART is ``key``, ``value``, ``header:NAME`` or,
                             last resort, ``error``: exectrack.dlq.error cut
                             to 80 characters), ``; headers_dropped=N`` when
                             the original headers had to go entirely, and
                             ``; header_names_cut=N`` (names over 256 chars)
===========================  ==================================================

Shrinking (``fit``): the size that counts is the record batch of one record, as
aiokafka estimates it (``DefaultRecordBatchBuilder.estimate_size_in_bytes``, an
upper bound of what the broker compares with the topic's ``max.message.bytes``
and the producer with its ``max_request_size``). Our ``exectrack.dlq.*`` headers
are kept whole (they say why and where from; the record itself stays in the
source topic until its retention, so partition and offset find it). The key,
the value and each original header value then share what is left by water
filling: parts smaller than an equal share are kept whole, the larger ones are
cut to one common length, so a 2,000,000-byte key is cut and the small valid
event beside it is not. If the original headers' names alone do not fit, the
original headers are dropped; if our own headers still do not fit, their
error text is cut to 80 characters. Past that, ``DeadLetter.message`` returns
None: the letter cannot be carried, which ``exectrack.consumer.dlq.send`` turns into an
explicit, logged, counted drop.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka.record.default_records import DefaultRecordBatchBuilder

HEADER_PREFIX = "exectrack.dlq."
TRUNCATED = HEADER_PREFIX + "truncated"
ERROR_CHARS = 1000  # exectrack.dlq.error is cut to this many characters
ERROR_MIN_CHARS = 80  # ... and to this many when the letter does not fit otherwise
HEADER_NAME_CHARS = 256  # an original header's name is cut to this when shrinking

Headers = list[tuple[str, bytes]]


def record_bytes(
    key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]]
) -> int:
    """Upper bound of the bytes of a record batch holding this one record.

    Returns:
        int, bytes: aiokafka's estimate (batch header + maximum record overhead +
        key, value and headers), which its producer compares with
        ``max_request_size`` and which bounds what the broker compares with the
        topic's ``max.message.bytes`` (uncompressed batch).
    """
    return int(DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, list(headers)))


@dataclass(frozen=True)
class Shrunk:
    """A dead-letter record that fits: what to send, and what was cut (empty if nothing)."""

    key: bytes | None
    value: bytes | None
    headers: Headers
    cuts: tuple[str, ...] = ()


def water_fill(sizes: Sequence[int], budget: int) -> int:
    """The largest cap c such that ``sum(min(s, c) for s in sizes) <= budget``.

    Parts at or below c stay whole; the others are cut to c. Returns the largest
    size when everything fits, 0 when the budget is zero or negative.
    """
    remaining = max(budget, 0)
    if sum(sizes) <= remaining:
        return max(sizes, default=0)
    ordered = sorted(sizes)
    for i, size in enumerate(ordered):
        share = remaining // (len(ordered) - i)
        if size > share:
            return share
        remaining -= size
    return ordered[-1]  # unreachable: the sum exceeded the budget


def _marker(cuts: Sequence[str]) -> tuple[str, bytes]:
    return TRUNCATED, "; ".join(["true", *cuts]).encode()


def fit(
    key: bytes | None,
    value: bytes | None,
    original: Sequence[tuple[str, bytes]],
    ours: Sequence[tuple[str, bytes]],
    limit: int,
    extra: tuple[str, ...] = (),
) -> Shrunk | None:
    """Key, value and headers of a dead letter that fits in ``limit`` bytes (see module doc).

    Arguments:
        key, value: the source record's key and value (None stays None).
        original: the source record's headers, ``exectrack.dlq.*`` ones removed.
        ours: the ``exectrack.dlq.*`` headers; always kept whole.
        limit: bytes of a one-record batch the dead-letter topic accepts, i.e.
            min(producer ``max_request_size``, topic ``max.message.bytes``).
        extra: cuts made before (listed first in the ``truncated`` header).

    Returns:
        ``Shrunk`` (with ``cuts`` describing what was cut, also in the
        ``exectrack.dlq.truncated`` header), or None if even the record without
        key, value and original headers is over ``limit``.
    """
    whole = [*original, *ours]
    if not extra and record_bytes(key, value, whole) <= limit:
        return Shrunk(key, value, whole)
    shrunk = _fit_parts(key, value, list(original), ours, limit, extra)
    if shrunk is None and original:  # the original headers' names alone are too many
        dropped = (*extra, f"headers_dropped={len(original)}")
        shrunk = _fit_parts(key, value, [], ours, limit, dropped)
    return shrunk


def _fit_parts(
    key: bytes | None,
    value: bytes | None,
    original: Headers,
    ours: Sequence[tuple[str, bytes]],
    limit: int,
    extra: tuple[str, ...] = (),
) -> Shrunk | None:
    names = [name[:HEADER_NAME_CHARS] for name, _ in original]
    long_names = sum(len(name) > HEADER_NAME_CHARS for name, _ in original)
    if long_names:
        extra = (*extra, f"header_names_cut={long_names}")
    labels = ["key", "value", *(f"header:{name}" for name in names)]
    parts: list[bytes | None] = [key, value, *(v for _, v in original)]
    sizes = [len(p) if p is not None else 0 for p in parts]
    # the marker is sized with every part listed as cut at its original length: an
    # upper bound of its real length (a kept length has no more digits)
    every = [f"{label}={size}/{size}" for label, size in zip(labels, sizes, strict=True)]
    worst = _marker([*extra, *every])
    skeleton = [*((n, b"") for n in names), *ours, worst]
    fixed = record_bytes(None if key is None else b"", None if value is None else b"", skeleton)
    budget = limit - fixed - 5 * len(parts)  # a length varint grows by <= 5 bytes per part
    for _ in range(8):  # the estimate is exact up to varints: converges in one or two turns
        if budget < 0:
            return None
        cap = water_fill(sizes, budget)
        kept = [None if p is None else p[:cap] for p in parts]
        cuts = (
            *extra,
            *(
                f"{label}={size}/{cap}"
                for label, size in zip(labels, sizes, strict=True)
                if size > cap
            ),
        )
        headers = [*zip(names, (k or b"" for k in kept[2:]), strict=True), *ours, _marker(cuts)]
        over = record_bytes(kept[0], kept[1], headers) - limit
        if over <= 0:
            return Shrunk(kept[0], kept[1], headers, cuts)
        budget -= over
    return None


@dataclass(frozen=True)
class KafkaRecordBytes:
    """A Kafka record's place and bytes, as fetched: the fields a dead letter carries.

    ``topic``, ``partition``, ``offset``: where the record is; ``timestamp``: its
    Kafka timestamp (ms since the epoch); ``key``, ``value``, ``headers``: its
    bytes, every header in record order (a null header value as ``b""``).
    Shared by ``DeadLetter`` (on its way to the dead-letter topic) and
    ``browse.DeadLetterRecord`` (read back from it).
    """

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]

    @staticmethod
    def fields_of(record: Any) -> dict[str, Any]:
        """The seven fields of an aiokafka ``ConsumerRecord`` (or alike); null headers as b""."""
        return {
            "topic": record.topic,
            "partition": record.partition,
            "offset": record.offset,
            "timestamp": record.timestamp,
            "key": record.key,
            "value": record.value,
            "headers": tuple((k, v if v is not None else b"") for k, v in (record.headers or ())),
        }


@dataclass(frozen=True)
class DeadLetter(KafkaRecordBytes):
    """One record that goes to the dead-letter topic, and why (CONTRACT.md, "Invalid input").

    The record's fields as ``KafkaRecordBytes`` (where it is in the source
    topic, its bytes as fetched), then ``reason``: an ``InvalidReason`` code,
    ``db_refused`` or ``undecodable_record``; ``error``: the human-readable detail.
    """

    reason: str
    error: str

    @classmethod
    def of(cls, record: Any, reason: str, error: str) -> DeadLetter:
        """The letter for ``record`` (an aiokafka ``ConsumerRecord``, or alike)."""
        return cls(**cls.fields_of(record), reason=reason, error=error)

    @property
    def source(self) -> dict[str, Any]:
        """Where the record is: source topic, partition, offset (for log lines)."""
        return {"topic": self.topic, "partition": self.partition, "offset": self.offset}

    def ours(
        self, consumer_id: str, now: datetime | None = None, error_chars: int = ERROR_CHARS
    ) -> Headers:
        """The ``exectrack.dlq.*`` headers (module doc), in a fixed order."""
        fields = {
            "reason": self.reason,
            "error": self.error[:error_chars],
            "topic": self.topic,
            "partition": str(self.partition),
            "offset": str(self.offset),
            "timestamp": str(self.timestamp),
            "consumer": consumer_id,
            "at": (now or datetime.now(UTC)).isoformat(),
        }
        return [(HEADER_PREFIX + k, v.encode("utf-8", "replace")) for k, v in fields.items()]

    def message(self, consumer_id: str, limit: int, now: datetime | None = None) -> Shrunk | None:
        """The dead-letter record shrunk to ``limit`` bytes (``fit``), or None if it cannot be.

        Last resort before None: ``exectrack.dlq.error`` cut to ``ERROR_MIN_CHARS``
        (said in the ``truncated`` header as ``error=ORIGINAL/KEPT``, in bytes).
        """
        now = now or datetime.now(UTC)
        original = [h for h in self.headers if not h[0].startswith(HEADER_PREFIX)]
        shrunk = fit(self.key, self.value, original, self.ours(consumer_id, now), limit)
        error = self.error[:ERROR_CHARS].encode("utf-8", "replace")
        short = self.error[:ERROR_MIN_CHARS].encode("utf-8", "replace")
        if shrunk is None and len(short) < len(error):
            ours = self.ours(consumer_id, now, ERROR_MIN_CHARS)
            cut = (f"error={len(error)}/{len(short)}",)
            shrunk = fit(self.key, self.value, original, ours, limit, cut)
        return shrunk


def consumer_identity(group_id: str) -> str:
    """``host/group``: the ``exectrack.dlq.consumer`` header's value."""
    return f"{socket.gethostname()}/{group_id}"
