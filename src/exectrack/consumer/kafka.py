"""The one place an ``AIOKafkaConsumer`` is built: every reader of the topic reads committed.

CONTRACT.md, Transport: "Only committed records count: an event inside an aborted
Kafka transaction never happened (readers use ``read_committed``)". A transactional
producer (aiokafka ``transactional_id``, a Java or librdkafka client with
exactly-once on) writes its records to the log before it decides; an aborted
transaction's records stay in the log, followed by an abort marker. A consumer
with Kafka's default ``isolation_level=read_uncommitted`` returns them like any
other record, so the fold would apply them and the dead-letter path would
dead-letter the invalid ones. With ``read_committed`` (KIP-98) the broker returns
records only up to the partition's last stable offset (LSO: the first offset of
its oldest undecided transaction) and the client drops aborted batches and the
transaction markers.

So the consume loop, replay, the benchmarks and the test helpers all get their
consumer from :func:`reader`; tests/unit/test_kafka_readers.py fails if any
``AIOKafkaConsumer(...)`` is built anywhere else in the code base.

Consequences, written down in docs/design.md ("Transactions"):

- an open transaction holds its partition at the LSO: records after it, even
  non-transactional ones, are not returned until the transaction commits or
  aborts (at the latest when the broker aborts it after the producer's
  ``transaction.timeout.ms``); ``exectrack_transaction_held_records`` shows it;
- ``end_offsets`` of a read_committed consumer are LSOs, so "the end" of a
  partition (replay's plan, the tests' drain checks) is what can be read.

Records the Kafka client cannot decode (docs/reliability/found-by-users.md,
"Records the client cannot decode"). aiokafka parses a fetched record batch
inside ``getmany`` and raises on hostile bytes: ``UnicodeDecodeError`` for a
header name that is not UTF-8 (the protocol says UTF-8, the broker and the
Java client accept any bytes: Java's ``Utils.utf8`` replaces malformed input
with U+FFFD), ``CorruptRecordException`` for a batch whose CRC does not match
(``check_crcs``), a negative header count or name length, a record whose
length disagrees with its fields, bytes left after the last record. Raised
there, the error ends the consume loop and, since nothing was committed, does
so again at every restart on the same offset: a crash and a blocked partition.

:func:`reader` therefore installs, once per process, two subclasses in
aiokafka's fetcher module (``MemoryRecords`` keeps the fetched bytes of a
partition, ``PartitionRecords`` catches a parse error). The fast path is
aiokafka's own (its C parser when built); only when it raises is the rest of
that partition's fetched data parsed again by :class:`_LenientBatch` (pure
Python, from the first offset not yet returned), which never raises:

- a record with a header name that is not UTF-8 is returned with the name
  decoded ``backslashreplace`` (``x-trace-\\xff``: readable, and encodable
  again for the dead-letter topic);
- a record whose fields cannot be read (negative counts or lengths, truncated
  fields, bytes left over) is returned with what was read before the fault;
- every record of a batch whose CRC does not match is returned as read;

each of them with a last header ``exectrack.dlq.undecodable`` naming the
cause, which ``exectrack.consumer.ingest.decode.Decoder`` dead-letters as ``undecodable_record``
(the header itself is dropped from the dead letter like every
``exectrack.dlq.*`` one; its text becomes ``exectrack.dlq.error``). Records
around it, in the same batch or not, are returned as usual and applied. Only
bytes with no record boundary at all (a record length that runs past the
batch, a compressed payload the codec refuses) are skipped: logged
``records_unreadable`` with topic, partition and offsets, and counted in
``exectrack_records_unreadable_total``. A codec that is not installed
(``UnsupportedCodecError``) is a configuration error and still raised.
"""

from __future__ import annotations

from typing import Any, Final

import aiokafka.consumer.fetcher as fetcher
import structlog
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import UnsupportedCodecError
from aiokafka.record.default_records import _DefaultRecordBatchPy, _DefaultRecordPy
from aiokafka.record.memory_records import _MemoryRecordsPy
from aiokafka.record.util import decode_varint_py

from exectrack.consumer.metrics import RECORDS_UNREADABLE

__all__ = ["ISOLATION_LEVEL", "UNDECODABLE_HEADER", "reader"]

ISOLATION_LEVEL: Final = "read_committed"
UNDECODABLE_HEADER: Final = "exectrack.dlq.undecodable"

log = structlog.get_logger(__name__)


def reader(**options: Any) -> AIOKafkaConsumer:
    """An ``AIOKafkaConsumer`` that reads only committed records.

    Arguments:
        options: any ``AIOKafkaConsumer`` keyword argument (``bootstrap_servers``,
            ``group_id``, ``enable_auto_commit``, the ``KafkaSettings.client_kwargs()``
            ...) except ``isolation_level``.

    Also installs the lenient second read of undecodable records in aiokafka's
    fetcher (module doc, :func:`install`).

    Returns:
        The consumer, not started (``await consumer.start()``, as aiokafka's own).

    Raises:
        TypeError: ``isolation_level`` was passed: it is not a caller's choice.
    """
    if "isolation_level" in options:
        raise TypeError(
            "isolation_level is always read_committed (CONTRACT.md, Transport): "
            "an aborted transaction's records never happened"
        )
    install()
    return AIOKafkaConsumer(isolation_level=ISOLATION_LEVEL, **options)


def _bytes(body: bytes, pos: int) -> tuple[bytes | None, int]:
    """A protocol NULLABLE_BYTES field (varint length, -1 = null) at ``pos``."""
    size, pos = decode_varint_py(body, pos)
    if size < 0:
        return None, pos
    if pos + size > len(body):
        raise ValueError(f"a field of {size} bytes runs past the record")
    return bytes(body[pos : pos + size]), pos + size


class _LenientBatch(_DefaultRecordBatchPy):  # type: ignore[misc]
    """aiokafka's pure-Python v2 batch, reading every record it can and never raising.

    Same record fields as aiokafka (KIP-98 record format, Kafka protocol
    guide "Record"); differences are in the module doc.
    """

    def __init__(self, buffer: memoryview, tp: Any) -> None:
        super().__init__(buffer)
        self._tp = tp
        self._crc_ok = super().validate_crc()

    def validate_crc(self) -> bool:
        return True  # a mismatch is told per record, in __next__

    def _skip(self, offset: int, why: object) -> None:
        """Nothing more of this batch can be read: log it; the fetch goes on after it."""
        last = self.next_offset - 1
        log.error(
            "records_unreadable", topic=self._tp.topic, partition=self._tp.partition,
            first_offset=offset, last_offset=last, error=str(why)[:500],
        )  # fmt: skip
        RECORDS_UNREADABLE.labels(self._tp.topic, str(self._tp.partition)).inc(
            max(1, last - offset + 1)
        )
        self._next_record_index = self._num_records
        self._buffer, self._pos = bytearray(), 0

    def __iter__(self) -> _LenientBatch:
        try:
            self._maybe_uncompress()
        except UnsupportedCodecError:
            raise
        except Exception as exc:  # the codec refused the payload
            self._decompressed = True
            self._skip(self.base_offset, f"compressed payload unreadable: {exc!r}")
        return self

    def __next__(self) -> _DefaultRecordPy:
        index, buffer = self._next_record_index, self._buffer
        if index >= self._num_records or self._pos >= len(buffer):
            raise StopIteration
        self._next_record_index += 1
        try:
            length, start = decode_varint_py(buffer, self._pos)
        except IndexError as exc:
            length, start = -1, 0
            why: object = exc
        else:
            why = f"record length {length} runs past the batch"
        if length < 0 or start + length > len(buffer):
            self._skip(self.base_offset + index, why)
            raise StopIteration
        self._pos = start + length
        return self._record(bytes(buffer[start : start + length]), index)

    def _record(self, body: bytes, index: int) -> _DefaultRecordPy:
        causes = [] if self._crc_ok else ["the batch's CRC does not match its bytes"]
        offset, timestamp = self.base_offset + index, self.first_timestamp
        key = value = None
        headers: list[tuple[str, bytes | None]] = []
        try:
            _, pos = decode_varint_py(body, 0)  # attributes
            delta, pos = decode_varint_py(body, pos)
            timestamp = self.max_timestamp if self.timestamp_type else timestamp + delta
            delta, pos = decode_varint_py(body, pos)
            offset = self.base_offset + delta
            key, pos = _bytes(body, pos)
            value, pos = _bytes(body, pos)
            count, pos = decode_varint_py(body, pos)
            if count < 0:
                raise ValueError(f"header count {count} is negative")
            for _ in range(count):
                raw, pos = _bytes(body, pos)
                if raw is None:
                    raise ValueError("a header name has a negative length")
                try:
                    name = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    name = raw.decode("utf-8", "backslashreplace")
                    causes.append(f"header name {name!r} is not UTF-8 ({exc.reason})")
                header_value, pos = _bytes(body, pos)
                headers.append((name, header_value))
            if pos != len(body):
                raise ValueError(f"{len(body) - pos} bytes left after the headers")
        except ValueError as exc:
            causes.append(f"record fields unreadable: {exc}")
        except IndexError:  # a varint cut by the end of the record
            causes.append("record fields unreadable: a field runs past the record")
        if causes:
            headers.append((UNDECODABLE_HEADER, "; ".join(causes).encode("utf-8", "replace")))
        return _DefaultRecordPy(offset, timestamp, self.timestamp_type, key, value, headers)


class _LenientRecords(_MemoryRecordsPy):  # type: ignore[misc]
    """The batches of one fetched partition from offset ``resume`` on, v2 ones lenient."""

    def __init__(self, data: bytes, tp: Any, resume: int) -> None:
        self._tp, self._resume = tp, resume
        super().__init__(data)

    def next_batch(self, *_: Any) -> Any:
        while (batch := super().next_batch()) is not None:
            if batch.next_offset <= self._resume:
                continue  # returned already, by the fast path
            if batch.magic < 2:
                return batch
            return _LenientBatch(self._next_view, self._tp)
        return None

    def _cache_next(self, *args: Any) -> None:
        self._next_view = self._next_slice
        super()._cache_next(*args)


class _KeptRecords(fetcher.MemoryRecords):  # type: ignore[misc]
    """aiokafka's (C) MemoryRecords, keeping the fetched bytes for a lenient second read."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.data = data


class _LenientPartitionRecords(fetcher.PartitionRecords):  # type: ignore[misc]
    """aiokafka's PartitionRecords; on a parse error, the rest is read by _LenientRecords."""

    _records: Any
    _records_iterator: Any

    def __next__(self) -> Any:
        try:
            return next(self._records_iterator)
        except StopIteration:
            self._records_iterator = None
            raise
        except UnsupportedCodecError:
            raise
        except Exception as exc:
            if isinstance(self._records, _LenientRecords) or not hasattr(self._records, "data"):
                raise
            tp, offset = self._tp, self.next_fetch_offset
            log.warning(
                "undecodable_record", topic=tp.topic, partition=tp.partition,
                offset=offset, error=repr(exc)[:500],
            )  # fmt: skip
            self._records = _LenientRecords(self._records.data, tp, offset)
            self._check_crcs = False
            self._records_iterator = self._unpack_records()
            return next(self)


def install() -> None:
    """Make aiokafka's fetcher use the classes above (idempotent; see the module doc)."""
    fetcher.MemoryRecords = _KeptRecords
    fetcher.PartitionRecords = _LenientPartitionRecords
