"""Inputs from public bug reports that break the event contract; no service needed.

Each test parses what a foreign producer sends and asserts what CONTRACT.md
(and docs/events.md where the contract is silent) says; each cites the public
report that inspired it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import orjson
import pytest
from aiokafka import AIOKafkaProducer, ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client import REGISTRY

from exectrack.consumer.ingest.decode import Decoder
from exectrack.consumer.service import ConsumerService
from exectrack.consumer.settings import Settings
from exectrack.producer.errors import InvalidEvent, InvalidReason
from exectrack.producer.events import parse_event
from exectrack.producer.settings import KafkaSettings, ProducerSettings

DATA = {"execution_id": "exec-1", "report_id": "r-1", "sequence": 1}
BINARY_ATTRIBUTES = [
    ("ce_specversion", b"1.0"),
    ("ce_id", b"e-1"),
    ("ce_source", b"/services/found-by-users"),
    ("ce_type", b"exectrack.execution.started"),
    ("ce_subject", b"exec-1"),
    ("ce_time", b"2026-01-01T12:00:00Z"),
]
STRUCTURED: list[tuple[str, bytes | None]] = [("content-type", b"application/cloudevents+json")]


def structured(time: str) -> bytes:
    return orjson.dumps(
        {
            "specversion": "1.0",
            "id": "e-1",
            "source": "/services/found-by-users",
            "type": "exectrack.execution.started",
            "subject": "exec-1",
            "time": time,
            "data": DATA,
        }
    )


# Inspired by golang/go#77072 "time: time.Parse(time.RFC3339,
# "1990-12-31T23:59:60Z") fails", ethlo/itu#4 "The grammar element time-second
# may have the value "60"" and time-rs/time#404 "Do a better job on leap second
# when parsing RFC 3339" (which maps :60 to the last instant of :59). CONTRACT.md:
# `time` is RFC 3339 with an offset; RFC 3339 section 5.6 allows second 60 and
# gives these two examples (section 5.8). Today the event is dead-lettered as
# `not_cloudevent` ("unexpected extra characters"): a valid event lost, under a
# reason that blames the envelope. Right: accepted, at a time within the leap
# second's minute, ordered before the next second.
@pytest.mark.parametrize("time", ["1990-12-31T23:59:60Z", "1990-12-31T15:59:60-08:00"])
def test_rfc3339_leap_second_is_a_valid_time(time: str) -> None:
    event = parse_event(structured(time), [("content-type", b"application/cloudevents+json")])
    assert datetime(1990, 12, 31, 23, 59, 59, tzinfo=UTC) <= event.time
    assert event.time < datetime(1991, 1, 1, tzinfo=UTC)


# Inspired by redpanda-data/connect#1478 "Kafka Inputs lose headers if multiple
# have the same key" and tchiotludo/akhq#1257 "Record header keys are unique"
# (KIP-82: Kafka headers are an ordered list, duplicate names allowed; a routing
# layer that appends a header leaves two). docs/events.md: the mode is decided by
# the FIRST `content-type` header. In binary mode the data's content type is
# read from the LAST one instead: with `application/json` first and a
# `text/plain` appended, a valid binary event is dead-lettered (`not_cloudevent:
# datacontenttype`), and with the two swapped an event whose first content-type
# is text/plain is accepted. One rule for both: the first header.
def test_binary_mode_reads_the_first_content_type_header_like_the_mode_decision() -> None:
    value = orjson.dumps(DATA)
    json_first = [
        *BINARY_ATTRIBUTES,
        ("content-type", b"application/json"),
        ("content-type", b"text/plain"),
    ]
    event = parse_event(value, json_first, b"exec-1")
    assert event.key == b"exec-1"

    text_first = [
        *BINARY_ATTRIBUTES,
        ("content-type", b"text/plain"),
        ("content-type", b"application/json"),
    ]
    with pytest.raises(InvalidEvent) as refused:
        parse_event(value, text_first, b"exec-1")
    assert refused.value.reason is InvalidReason.NOT_CLOUDEVENT


# Inspired by spring-cloud/spring-cloud-function#1401 "CloudEventMessageBuilder.
# setDataContentType() writes ce_datacontenttype header instead of content-type in
# Kafka binary mode" and cloudevents/sdk-java#67 "Kafka binary content type not
# set" (whose proposed fix copies ce_datacontenttype into content-type): real
# producers send BOTH headers, with the same value. Today the outcome depends on
# the headers' order: ce_datacontenttype first is applied, content-type first is
# dead-lettered `not_cloudevent` with "header ce_datacontenttype appears twice"
# (false: it appears once). A valid event lost over header order. Right: when
# the two agree the event is read, in either order.
@pytest.mark.parametrize("content_type_first", [True, False])
def test_agreeing_content_type_and_ce_datacontenttype_are_read_in_either_order(
    content_type_first: bool,
) -> None:
    both = [("content-type", b"application/json"), ("ce_datacontenttype", b"application/json")]
    headers = [*BINARY_ATTRIBUTES, *(both if content_type_first else both[::-1])]
    event = parse_event(orjson.dumps(DATA), headers, b"exec-1")
    assert event.key == b"exec-1"


# Same input, the two disagreeing: dead-lettering is right, but the reason must
# name the cause (two content types), not claim a header appears twice.
def test_conflicting_content_type_headers_are_named_truthfully() -> None:
    headers = [
        *BINARY_ATTRIBUTES,
        ("content-type", b"application/json"),
        ("ce_datacontenttype", b"text/plain"),
    ]
    with pytest.raises(InvalidEvent) as refused:
        parse_event(orjson.dumps(DATA), headers, b"exec-1")
    assert "appears twice" not in refused.value.detail
    assert "content-type" in refused.value.detail


# ---------------------------------------------------------------- the edges of the decisions
# docs/reliability/found-by-users.md, "Fixed: the envelope (helper envelope)".

LEAP = datetime(1990, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)


def reason_of(value: bytes, headers: Sequence[tuple[str, bytes | None]], key: bytes | None) -> str:
    try:
        parse_event(value, headers, key)
    except InvalidEvent as exc:
        return str(exc.reason)
    return "ok"


# Second 60 is the last representable instant of its minute, in any spelling
# RFC 3339 allows (fraction, lowercase, space, an offset that moves the minute).
@pytest.mark.parametrize(
    "time",
    [
        "1990-12-31T23:59:60Z",
        "1990-12-31T23:59:60.5Z",
        "1990-12-31t23:59:60.999999999z",
        "1990-12-31 23:59:60+00:00",
        "1991-01-01T00:29:60+00:30",
        "1991-01-01T05:44:60+05:45",
        "1990-12-31T15:59:60-08:00",
    ],
)
def test_leap_second_is_the_minutes_last_microsecond(time: str) -> None:
    assert parse_event(structured(time), STRUCTURED).time == LEAP


# Any month's end: the leap second table cannot be known ahead (2024-03 had none).
@pytest.mark.parametrize("time", ["2016-12-31T23:59:60Z", "1997-06-30T23:59:60Z",
                                  "2024-03-31T23:59:60Z", "2024-02-29T23:59:60Z"])  # fmt: skip
def test_leap_second_at_the_end_of_any_utc_month(time: str) -> None:
    expected = datetime.fromisoformat(time.replace(":60", ":59.999999"))
    assert parse_event(structured(time), STRUCTURED).time == expected


# RFC 3339 section 5.7: second 60 only at the end of a month, 23:59:60 UTC
# (shifted by the offset), as time-rs/time#406 (PR #412) tightened its parser.
# Anything else, and what was refused before, is refused.
@pytest.mark.parametrize(
    "time",
    [
        "1990-06-30T12:30:60Z",  # not the last minute of the day
        "2020-01-01T00:00:60Z",  # validatorjs/validator.js#2863: accepted there
        "2009-05-31 14:53:60Z",  # in validator.js's own list of valid times
        "1990-12-30T23:59:60Z",  # not the last day of the month
        "2023-02-28T12:00:60Z",
        "1990-12-31T23:59:60+01:00",  # 22:59:60 in UTC
        "1990-12-31T23:59:61Z",
        "1990-02-30T23:59:60Z",  # 30 February
        "1990-12-31T24:00:60Z",
        "1990-12-31T23:59:60+24:00",
        "1990-12-31T23:59:59+24:00",
        "1990-02-30T12:00:00Z",
    ],
)
def test_second_60_outside_a_leap_second_and_bad_dates_are_refused(time: str) -> None:
    with pytest.raises(InvalidEvent) as refused:
        parse_event(structured(time), STRUCTURED)
    assert refused.value.reason is InvalidReason.NOT_CLOUDEVENT


def test_leap_second_keeps_the_order_of_times() -> None:
    times = ["1990-12-31T23:59:59Z", "1990-12-31T23:59:59.999998Z", "1990-12-31T23:59:60Z",
             "1991-01-01T00:00:00Z"]  # fmt: skip
    parsed = [parse_event(structured(t), STRUCTURED).time for t in times]
    assert parsed == sorted(parsed)
    assert len(set(parsed)) == len(parsed)


def test_leap_second_in_data_times_and_in_binary_mode() -> None:
    data = {
        **DATA,
        "start_time": "1990-12-31T15:59:60-08:00",
        "retention_until": "2016-12-31T23:59:60Z",
    }
    headers = [(n, b"1990-12-31T23:59:60Z" if n == "ce_time" else v) for n, v in BINARY_ATTRIBUTES]
    event = parse_event(orjson.dumps(data), headers, b"exec-1")
    assert event.time == LEAP
    assert event.data.start_time == LEAP  # type: ignore[union-attr]
    assert event.data.retention_until == datetime(2016, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)  # type: ignore[union-attr]
    bad = {**DATA, "start_time": "1990-06-30T12:30:60Z"}
    with pytest.raises(InvalidEvent) as refused:
        parse_event(orjson.dumps(bad), headers, b"exec-1")
    assert refused.value.reason is InvalidReason.INVALID_FIELD
    assert "RFC 3339 section 5.7" in refused.value.detail


# One rule for repeated content-type headers: the first decides the mode AND the
# data's type, whatever follows (three headers, mixed case names).
def test_first_content_type_header_wins_for_mode_and_data() -> None:
    value = orjson.dumps(DATA)
    first_json = [
        *BINARY_ATTRIBUTES,
        ("Content-Type", b"application/json"),
        ("content-type", b"text/plain"),
        ("CONTENT-TYPE", b"application/xml"),
    ]
    assert reason_of(value, first_json, b"exec-1") == "ok"
    # a structured content-type appended after the binary one does not switch the mode
    appended = [*BINARY_ATTRIBUTES, ("content-type", b"application/json"),
                ("content-type", b"application/cloudevents+json")]  # fmt: skip
    assert reason_of(value, appended, b"exec-1") == "ok"
    # and the first structured one makes it structured, whatever follows
    structured_first = [("content-type", b"application/cloudevents+json"),
                        ("content-type", b"application/json"), *BINARY_ATTRIBUTES]  # fmt: skip
    assert reason_of(structured("2026-01-01T12:00:00Z"), structured_first, b"exec-1") == "ok"


# content-type and ce_datacontenttype: media types compared case-insensitively,
# parameters ignored; either order; disagreeing names both values.
@pytest.mark.parametrize(
    ("content_type", "declared", "expected"),
    [
        (b"application/json", b"Application/JSON; charset=utf-8", "ok"),
        (b"application/json;charset=UTF-8", b"application/json", "ok"),
        (None, b"application/json", "ok"),  # ce_datacontenttype alone
        (b"application/json", None, "ok"),  # content-type alone
        (None, b"text/plain", "not_cloudevent"),
        (b"text/plain", b"text/plain", "not_cloudevent"),  # agree, but data must be JSON
        (b"application/json", b"application/xml", "not_cloudevent"),
    ],
)
@pytest.mark.parametrize("content_type_first", [True, False])
def test_content_type_and_ce_datacontenttype(
    content_type: bytes | None, declared: bytes | None, expected: str, content_type_first: bool
) -> None:
    pair: list[tuple[str, bytes | None]] = []
    if content_type is not None:
        pair.append(("content-type", content_type))
    if declared is not None:
        pair.append(("ce_datacontenttype", declared))
    headers = [*BINARY_ATTRIBUTES, *(pair if content_type_first else pair[::-1])]
    assert reason_of(orjson.dumps(DATA), headers, b"exec-1") == expected


def test_disagreeing_content_types_name_both_values() -> None:
    headers = [*BINARY_ATTRIBUTES, ("ce_datacontenttype", b"text/plain; charset=latin1"),
               ("content-type", b"application/json")]  # fmt: skip
    with pytest.raises(InvalidEvent) as refused:
        parse_event(orjson.dumps(DATA), headers, b"exec-1")
    detail = refused.value.detail
    assert "'application/json'" in detail
    assert "'text/plain; charset=latin1'" in detail
    assert "ce_datacontenttype" in detail
    assert "twice" not in detail


# A missing key (null or empty) is accepted, a present one must agree; the
# consumer's decoder counts the valid events without a key, and only those.
def test_missing_keys_are_accepted_and_counted_by_the_decoder() -> None:
    value = structured("2026-01-01T12:00:00Z")
    assert parse_event(value, STRUCTURED, None).key == b"exec-1"
    assert parse_event(value, STRUCTURED, b"").key == b"exec-1"
    with pytest.raises(InvalidEvent) as refused:
        parse_event(value, STRUCTURED, b"exec-2")
    assert refused.value.reason is InvalidReason.KEY_MISMATCH

    def record(offset: int, key: bytes | None, value: bytes) -> ConsumerRecord[bytes, bytes]:
        return ConsumerRecord("t", 0, offset, 0, 0, key, value, None, 0, len(value), STRUCTURED)

    records = [
        record(0, None, value),
        record(1, b"", value),
        record(2, b"exec-1", value),
        record(3, None, b"{"),  # dead-lettered: not counted
    ]
    before = REGISTRY.get_sample_value("exectrack_events_without_key_total") or 0.0
    decoder = Decoder()
    decoder.add("tp", records)
    batch = decoder.batch()
    assert (batch.valid_events, len(batch.dead_letters)) == (3, 1)
    assert (REGISTRY.get_sample_value("exectrack_events_without_key_total") or 0.0) - before == 2


# EXECTRACK_KAFKA__METADATA_MAX_AGE_MS reaches every client: the consumer
# service's, the publisher's, the admin's (docs/operations.md, "Scaling").
async def test_metadata_max_age_reaches_the_kafka_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXECTRACK_KAFKA__METADATA_MAX_AGE_MS", "4321")
    settings = Settings()
    assert settings.kafka.metadata_max_age_ms == 4321
    assert ProducerSettings().kafka.client_kwargs()["metadata_max_age_ms"] == 4321
    consumer = ConsumerService(settings)._client()  # no I/O before start()
    producer = AIOKafkaProducer(**settings.kafka.client_kwargs())
    admin = AIOKafkaAdminClient(**settings.kafka.client_kwargs())
    try:
        assert consumer._client._metadata_max_age_ms == 4321
        assert producer.client._metadata_max_age_ms == 4321
        assert admin._client._metadata_max_age_ms == 4321
    finally:
        await consumer.stop()
        await producer.stop()
        await admin.close()
    assert KafkaSettings().client_kwargs()["metadata_max_age_ms"] == 300_000  # aiokafka's default
