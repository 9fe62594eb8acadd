"""Dead letters shrunk to what the dead-letter topic accepts (consumer.dlq.letter.fit), and the
send decision per aiokafka error (exectrack.consumer.dlq.send.classify). The broker side of both
is tests/faults/test_dlq.py."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    CorruptRecordException,
    InvalidTopicError,
    KafkaConnectionError,
    KafkaTimeoutError,
    LeaderNotAvailableError,
    MessageSizeTooLargeError,
    NotEnoughReplicasError,
    NotLeaderForPartitionError,
    PolicyViolationError,
    RecordListTooLargeError,
    RequestTimedOutError,
    TopicAuthorizationFailedError,
    UnknownError,
    UnknownTopicOrPartitionError,
)
from hypothesis import given
from hypothesis import strategies as st

from exectrack.consumer.dlq.letter import TRUNCATED, DeadLetter, record_bytes, water_fill
from exectrack.consumer.dlq.send import classify

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
MIB = 1024 * 1024


def letter(
    key: bytes | None, value: bytes | None, headers: tuple[tuple[str, bytes], ...] = ()
) -> DeadLetter:
    return DeadLetter(
        topic="report-execution-events",
        partition=7,
        offset=123456,
        timestamp=1_796_000_000_000,
        key=key,
        value=value,
        headers=headers,
        reason="key_mismatch",
        error="key 'x...' disagrees with data.execution_id 'e-1'",
    )


def ours_of(headers: list[tuple[str, bytes]]) -> dict[str, bytes]:
    return {k: v for k, v in headers if k.startswith("exectrack.dlq.")}


def test_a_letter_that_fits_is_kept_byte_for_byte() -> None:
    headers = (("content-type", b"application/cloudevents+json"), ("trace", b"abc"))
    dead = letter(b"e-1", b'{"id": "1"}', headers)
    shrunk = dead.message("host/group", MIB, NOW)
    assert shrunk is not None
    assert (shrunk.key, shrunk.value, shrunk.cuts) == (b"e-1", b'{"id": "1"}', ())
    assert shrunk.headers[:2] == list(headers)
    assert TRUNCATED not in dict(shrunk.headers)
    assert dict(shrunk.headers)["exectrack.dlq.offset"] == b"123456"


def test_the_issue_key_of_2_000_000_bytes_is_cut_and_the_event_kept_whole() -> None:
    """Issue #13 item 3: a 2,000,000-byte key beside a small valid event."""
    value = b'{"specversion": "1.0", "id": "x", "data": {"execution_id": "other"}}'
    headers = (("content-type", b"application/cloudevents+json"),)
    dead = letter(b"k" * 2_000_000, value, headers)
    shrunk = dead.message("host/group", MIB, NOW)
    assert shrunk is not None
    assert record_bytes(shrunk.key, shrunk.value, shrunk.headers) <= MIB
    assert shrunk.value == value  # the small parts stay whole
    assert shrunk.headers[0] == headers[0]
    assert shrunk.key is not None
    kept = len(shrunk.key)
    assert MIB - 2048 < kept < MIB  # only what must go
    assert shrunk.cuts == (f"key=2000000/{kept}",)
    assert dict(shrunk.headers)[TRUNCATED] == f"true; key=2000000/{kept}".encode()
    assert ours_of(shrunk.headers) == {
        **ours_of(dead.ours("host/group", NOW)),
        TRUNCATED: f"true; key=2000000/{kept}".encode(),
    }


def test_a_tiny_topic_limit_keeps_our_headers_and_cuts_the_rest_evenly() -> None:
    dead = letter(b"k" * 5000, b"v" * 5000, (("a", b"h" * 5000), ("b", b"small")))
    shrunk = dead.message("host/group", 1024, NOW)
    assert shrunk is not None
    assert record_bytes(shrunk.key, shrunk.value, shrunk.headers) <= 1024
    assert shrunk.key is not None
    assert shrunk.value is not None
    assert len(shrunk.key) == len(shrunk.value) == len(dict(shrunk.headers)["a"])  # one cap
    assert dict(shrunk.headers)["b"] == b"small"
    assert ours_of(shrunk.headers).items() >= ours_of(dead.ours("host/group", NOW)).items()
    cap = len(shrunk.key)
    assert shrunk.cuts == (f"key=5000/{cap}", f"value=5000/{cap}", f"header:a=5000/{cap}")


def test_headers_too_many_for_the_limit_are_dropped_and_said_so() -> None:
    headers = tuple((f"header-number-{i:06d}", b"x") for i in range(50_000))
    dead = letter(b"e-1", b"{}", headers)
    shrunk = dead.message("host/group", 64 * 1024, NOW)
    assert shrunk is not None
    assert record_bytes(shrunk.key, shrunk.value, shrunk.headers) <= 64 * 1024
    assert (shrunk.key, shrunk.value) == (b"e-1", b"{}")
    assert [k for k, _ in shrunk.headers if not k.startswith("exectrack.dlq.")] == []
    assert dict(shrunk.headers)[TRUNCATED] == b"true; headers_dropped=50000"


def test_long_header_names_are_cut_and_counted() -> None:
    dead = letter(None, b"v" * 3000, (("n" * 5000, b"x"),))
    shrunk = dead.message("host/group", 2048, NOW)
    assert shrunk is not None
    assert shrunk.key is None
    assert shrunk.headers[0] == ("n" * 256, b"x")
    assert "header_names_cut=1" in shrunk.cuts


def test_a_limit_below_our_own_headers_cannot_be_met() -> None:
    assert letter(b"k", b"v").message("host/group", 200, NOW) is None


def test_our_error_text_is_cut_last_when_nothing_else_is_left_to_cut() -> None:
    dead = DeadLetter("t", 0, 1, 0, b"k" * 900, b"v" * 900, (), "not_json", "e" * 1000)
    shrunk = dead.message("host/group", 1024, NOW)  # not dropped: the error shrinks
    assert shrunk is not None
    assert dict(shrunk.headers)["exectrack.dlq.error"] == b"e" * 80
    assert shrunk.cuts[0] == "error=1000/80"
    assert dict(shrunk.headers)[TRUNCATED].startswith(b"true; error=1000/80; key=900/")
    assert record_bytes(shrunk.key, shrunk.value, shrunk.headers) <= 1024


def test_the_original_exectrack_headers_are_replaced_not_doubled() -> None:
    dead = letter(b"k", b"v", (("exectrack.dlq.reason", b"old"), ("x", b"1")))
    shrunk = dead.message("host/group", MIB, NOW)
    assert shrunk is not None
    assert [v for k, v in shrunk.headers if k == "exectrack.dlq.reason"] == [b"key_mismatch"]


@given(
    st.lists(st.integers(0, 10_000), max_size=20),
    st.integers(-100, 100_000),
)
def test_water_fill_gives_the_largest_cap_within_the_budget(sizes: list[int], budget: int) -> None:
    cap = water_fill(sizes, budget)
    used = sum(min(s, cap) for s in sizes)
    if sum(sizes) <= max(budget, 0):
        assert cap == max(sizes, default=0)
    else:
        assert used <= max(budget, 0)
        assert sum(min(s, cap + 1) for s in sizes) > max(budget, 0)


parts = st.one_of(st.none(), st.binary(max_size=6000))


@given(
    key=parts,
    value=parts,
    headers=st.lists(st.tuples(st.text(max_size=300), st.binary(max_size=3000)), max_size=30),
    limit=st.integers(300, 20_000),
)
def test_whatever_fits_is_within_the_limit_and_keeps_prefixes(
    key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]], limit: int
) -> None:
    dead = letter(key, value, tuple(headers))
    shrunk = dead.message("host/group", limit, NOW)
    ours = dead.ours("host/group", NOW)
    if shrunk is None:  # only when our own headers (and the marker) cannot fit
        assert record_bytes(None, None, ours) > limit - 200
        return
    assert record_bytes(shrunk.key, shrunk.value, shrunk.headers) <= limit
    for original, kept in ((key, shrunk.key), (value, shrunk.value)):
        assert (kept is None) == (original is None)
        assert original is None or kept is None or original.startswith(kept)
    assert ours_of(shrunk.headers).items() >= dict(ours).items()
    assert (TRUNCATED in dict(shrunk.headers)) == bool(shrunk.cuts)


@pytest.mark.parametrize(
    ("error", "decision"),
    [
        (MessageSizeTooLargeError(), "too_large"),
        (RecordListTooLargeError(), "too_large"),
        (UnknownTopicOrPartitionError(), "topic_missing"),
        (InvalidTopicError(), "topic_invalid"),
        (TopicAuthorizationFailedError("t"), "unauthorized"),
        (ClusterAuthorizationFailedError(), "unauthorized"),
        (KafkaTimeoutError(), "retry"),
        (KafkaConnectionError(), "retry"),
        (NotLeaderForPartitionError(), "retry"),
        (LeaderNotAvailableError(), "retry"),
        (RequestTimedOutError(), "retry"),
        (NotEnoughReplicasError(), "retry"),
        (PolicyViolationError(), "refused"),
        (CorruptRecordException(), "refused"),
        (UnknownError(), "refused"),  # e.g. INVALID_RECORD (87): a null key, compacted DLQ
    ],
)
def test_each_kafka_error_has_one_decision(error: Exception, decision: str) -> None:
    assert classify(error) == decision


def test_a_bug_is_not_a_broker_decision() -> None:
    with pytest.raises(ZeroDivisionError):
        classify(ZeroDivisionError())
