"""The dlq commands' small parsers and the redrive selection (pure logic)."""

from __future__ import annotations

import pytest

from exectrack.consumer.dlq.browse import DeadLetterRecord
from exectrack.consumer.dlq.cli import hexdump, parse_location, parse_offsets, table
from exectrack.consumer.dlq.redrive import Selection


def letter(
    offset: int, reason: str | None = "not_json", key: bytes | None = b"e-1"
) -> DeadLetterRecord:
    headers = (("x", b"1"),) + ((("exectrack.dlq.reason", reason.encode()),) if reason else ())
    return DeadLetterRecord("t.dlq", 0, offset, 0, key, b"{}", headers)


def test_locations() -> None:
    assert parse_location("events.dlq:3:17") == ("events.dlq", 3, 17)
    assert parse_location("3:17") == (None, 3, 17)
    for bad in ("17", "a:b:c", "t:-1:2", "t:1:", ""):
        with pytest.raises(ValueError, match="TOPIC:PARTITION:OFFSET"):
            parse_location(bad)


def test_offset_ranges() -> None:
    assert parse_offsets("5") == [(5, 5)]
    assert parse_offsets("5-9, 12-") == [(5, 9), (12, None)]
    for bad in ("x", "9-5", "-3", "1-2-3"):
        with pytest.raises(ValueError, match=r"is not OFFSET|ends before"):
            parse_offsets(bad)


def test_selection_needs_every_criterion() -> None:
    chosen = Selection(offsets=((5, 9), (20, None)), reasons=frozenset({"not_json"}))
    assert [o for o in (4, 5, 9, 10, 20, 99) if chosen.matches(letter(o))] == [5, 9, 20, 99]
    assert not chosen.matches(letter(6, reason="db_refused"))
    assert not chosen.matches(letter(6, reason=None))
    by_key = Selection(keys=frozenset({"e-1"}))
    assert by_key.matches(letter(1))
    assert not by_key.matches(letter(1, key=b"e-2"))
    assert not by_key.matches(letter(1, key=None))
    assert chosen.ranges([0, 2]) == {0: (5, 2**63 - 1), 2: (5, 2**63 - 1)}
    assert Selection(offsets=((5, 9), (2, 3))).ranges([1]) == {1: (2, 10)}


def test_original_headers_drop_only_ours() -> None:
    record = DeadLetterRecord(
        "t.dlq", 0, 1, 0, b"k", b"v",
        (("ce_id", b"1"), ("exectrack.dlq.reason", b"r"), ("x-exectrack.dlq", b"2")),
    )  # fmt: skip
    assert record.original_headers == [("ce_id", b"1"), ("x-exectrack.dlq", b"2")]
    assert record.reason == "r"
    assert record.view().headers[1].value == "r"


def test_hexdump_and_table() -> None:
    assert hexdump(b"\x00AB" * 6).splitlines() == [
        "00000000  00 41 42 00 41 42 00 41 42 00 41 42 00 41 42 00  .AB.AB.AB.AB.AB.",
        "00000010  41 42                                            AB",
    ]
    assert (
        table([["1", "long value", "z"]], ["A", "B", "C"]) == "A  B           C\n1  long value  z"
    )
