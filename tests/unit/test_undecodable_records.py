"""Records aiokafka cannot decode: the lenient second read of consumer.kafka, no broker.

Batches are built with aiokafka's own pure-Python builder, then bytes are
changed the way a foreign client or a corrupted log would (a header name that
is not UTF-8, a negative header count or name length, a record length that
runs past the batch, a CRC that does not match). Each is read through the
fetcher classes exectrack.consumer.kafka installs, as ``getmany`` does, and decoded by
exectrack.consumer.ingest.decode.Decoder: the valid records around the bad one are returned
and decoded as events, the bad one is dead-lettered ``undecodable_record``.
"""

from __future__ import annotations

import struct
from typing import Any

import orjson
import pytest
from aiokafka.errors import CorruptRecordException
from aiokafka.record.default_records import DefaultRecordBase, _DefaultRecordBatchBuilderPy
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.record.util import calc_crc32c
from aiokafka.structs import TopicPartition

from exectrack.consumer.ingest.decode import UNDECODABLE_RECORD, Decoder
from exectrack.consumer.kafka import UNDECODABLE_HEADER, _KeptRecords, _LenientPartitionRecords
from exectrack.consumer.metrics import RECORDS_UNREADABLE

TP = TopicPartition("events", 0)
CT = ("content-type", b"application/cloudevents+json")


class RawName(str):
    """A header name whose bytes are not UTF-8 (aiokafka's builder calls ``.encode``)."""

    def encode(self, *args: Any, **kwargs: Any) -> bytes:
        return b"x-trace-\xff\xfe"


def event(execution_id: str) -> bytes:
    return orjson.dumps(
        {
            "specversion": "1.0", "id": f"{execution_id}-1", "source": "/unit",
            "subject": execution_id,
            "type": "exectrack.execution.started", "time": "2026-01-01T12:00:00Z",
            "data": {"execution_id": execution_id, "report_id": "r-1"},
        }
    )  # fmt: skip


def batch(records: list[tuple[bytes, bytes, list[Any]]], base_offset: int = 0) -> bytearray:
    """One uncompressed v2 batch of (key, value, headers), offsets base_offset, +1, ..."""
    builder = _DefaultRecordBatchBuilderPy(2, 0, 0, -1, -1, -1, 1 << 20)
    for delta, (key, value, headers) in enumerate(records):
        builder.append(delta, timestamp=1_000 + delta, key=key, value=value, headers=headers)
    buffer: bytearray = builder.build()
    struct.pack_into(">q", buffer, 0, base_offset)
    return buffer


def fix_crc(buffer: bytearray) -> bytearray:
    crc = calc_crc32c(bytes(buffer[DefaultRecordBase.ATTRIBUTES_OFFSET :]))
    struct.pack_into(">I", buffer, DefaultRecordBase.CRC_OFFSET, crc)
    return buffer


def three(middle: tuple[bytes, bytes, list[Any]], base_offset: int = 0) -> bytearray:
    """valid, ``middle``, valid: keys exec-a, the middle's, exec-c."""
    return batch(
        [(b"exec-a", event("exec-a"), [CT]), middle, (b"exec-c", event("exec-c"), [CT])],
        base_offset,
    )


def fetch(data: bytes) -> list[Any]:
    """What getmany returns for a partition whose fetch response holds ``data``."""
    records = _LenientPartitionRecords(
        TP, _KeptRecords(data), None, 0, None, None, True, "read_committed"
    )
    return list(records)


def decode(records: list[Any]) -> Decoder:
    decoder = Decoder()
    decoder.add(TP, records)
    return decoder


def test_aiokafka_alone_raises_on_a_header_name_that_is_not_utf8() -> None:
    """The fault itself (what the lenient read is for): if aiokafka ever reads it, this fails."""
    data = bytes(three((b"exec-b", event("exec-b"), [CT, (RawName("x"), b"v")])))
    batch_ = MemoryRecords(data).next_batch()
    assert batch_ is not None
    with pytest.raises((UnicodeDecodeError, CorruptRecordException)):
        list(batch_)


def test_header_name_not_utf8_in_the_middle_is_read_leniently_and_dead_lettered() -> None:
    data = bytes(three((b"exec-b", event("exec-b"), [CT, (RawName("x"), b"v")])))
    records = fetch(data)
    assert [r.offset for r in records] == [0, 1, 2]
    assert records[0].headers == records[2].headers == (CT,)
    name, cause = records[1].headers[1][0], records[1].headers[-1]
    assert name == "x-trace-\\xff\\xfe"
    assert cause[0] == UNDECODABLE_HEADER
    assert b"header name 'x-trace-\\\\xff\\\\xfe' is not UTF-8" in cause[1]
    decoder = decode(records)
    assert [f.execution_id for f in decoder.facts] == ["exec-a", "exec-c"]
    [dead] = decoder.dead
    assert (dead.offset, dead.reason, dead.key, dead.value) == (
        1, UNDECODABLE_RECORD, b"exec-b", event("exec-b"),
    )  # fmt: skip
    assert "is not UTF-8" in dead.error
    assert decoder.offsets[TP] == 3
    assert list(dead.headers[:2]) == [CT, ("x-trace-\\xff\\xfe", b"v")]


def test_valid_header_names_are_not_marked() -> None:
    records = fetch(bytes(three((b"exec-b", event("exec-b"), [CT, ("x-trace-é", b"v")]))))
    assert all(r.headers[-1][0] != UNDECODABLE_HEADER for r in records)
    assert len(decode(records).facts) == 3


@pytest.mark.parametrize(
    ("headers", "patch", "cause"),
    [
        ([], lambda at: [(at, 0x01)], "header count -1 is negative"),  # varint -1
        ([("h", b"v")], lambda at: [(at + 1, 0x01)], "a header name has a negative length"),
        ([], lambda at: [(at, 0x02)], "runs past the record"),  # 1 header, no bytes
    ],
    ids=["negative-header-count", "negative-header-name-length", "truncated-header"],
)
def test_record_fields_that_cannot_be_read_are_dead_lettered_alone(
    headers: list[Any], patch: Any, cause: str
) -> None:
    data = three((b"exec-b", b"BAD", headers))
    at = data.find(b"BAD") + 3  # the header count, right after the value
    for position, byte in patch(at):
        data[position] = byte
    records = fetch(bytes(fix_crc(data)))
    assert [r.offset for r in records] == [0, 1, 2]
    decoder = decode(records)
    assert [f.execution_id for f in decoder.facts] == ["exec-a", "exec-c"]
    [dead] = decoder.dead
    assert (dead.offset, dead.reason, dead.key, dead.value) == (
        1,
        UNDECODABLE_RECORD,
        b"exec-b",
        b"BAD",
    )
    assert cause in dead.error


def test_a_batch_whose_crc_does_not_match_is_dead_lettered_and_the_next_batch_applied() -> None:
    bad = batch([(b"exec-a", event("exec-a"), [CT]), (b"exec-b", event("exec-b"), [CT])])
    bad[-10] ^= 0x01  # a byte of exec-b's last header changes; the CRC no longer matches
    good = fix_crc(batch([(b"exec-c", event("exec-c"), [CT])], base_offset=2))
    decoder = decode(fetch(bytes(bad + good)))
    assert [f.execution_id for f in decoder.facts] == ["exec-c"]
    assert [(d.offset, d.reason) for d in decoder.dead] == [
        (0, UNDECODABLE_RECORD),
        (1, UNDECODABLE_RECORD),
    ]
    assert all("CRC does not match" in d.error for d in decoder.dead)
    assert decoder.offsets[TP] == 3


def test_a_record_length_past_the_batch_skips_the_rest_with_a_metric() -> None:
    data = three((b"exec-b", b"BAD", []))
    # before the key: length, attributes, timestamp delta, offset delta, key length
    start = data.find(b"exec-b") - 5
    assert data[start] == 2 * 15  # the middle record's length varint: 15 bytes
    data[start] = 0x01  # -1: no boundary of the records after it
    data = fix_crc(data)
    good = fix_crc(batch([(b"exec-d", event("exec-d"), [CT])], base_offset=3))
    counter = RECORDS_UNREADABLE.labels(TP.topic, str(TP.partition))
    before = counter._value.get()
    records = fetch(bytes(data + good))
    assert [r.offset for r in records] == [0, 3]
    assert counter._value.get() - before == 2  # offsets 1 and 2
    assert [f.execution_id for f in decode(records).facts] == ["exec-a", "exec-d"]


def test_a_compressed_payload_the_codec_refuses_is_skipped_with_a_metric() -> None:
    builder = _DefaultRecordBatchBuilderPy(2, DefaultRecordBase.CODEC_GZIP, 0, -1, -1, -1, 1 << 20)
    for delta, name in enumerate(("exec-a", "exec-b")):
        builder.append(delta, timestamp=1_000, key=name.encode(), value=event(name), headers=[CT])
    bad: bytearray = builder.build()
    bad[-12:-4] = b"\x00" * 8  # inside the deflate stream: gzip refuses it
    good = fix_crc(batch([(b"exec-c", event("exec-c"), [CT])], base_offset=2))
    counter = RECORDS_UNREADABLE.labels(TP.topic, str(TP.partition))
    before = counter._value.get()
    records = fetch(bytes(fix_crc(bad) + good))
    assert [r.offset for r in records] == [2]
    assert counter._value.get() - before == 2  # offsets 0 and 1
    assert [f.execution_id for f in decode(records).facts] == ["exec-c"]
