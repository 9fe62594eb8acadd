"""Inputs from public bug reports that break the event contract; no service needed.

Each test parses what a foreign producer sends and asserts what CONTRACT.md
(and docs/events.md where the contract is silent) says; each cites the public
report that inspired it.
"""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from producer.errors import InvalidEvent, InvalidReason
from producer.events import parse_event

DATA = {"execution_id": "exec-1", "report_id": "r-1", "sequence": 1}
BINARY_ATTRIBUTES = [
    ("ce_specversion", b"1.0"),
    ("ce_id", b"e-1"),
    ("ce_source", b"/services/found-by-users"),
    ("ce_type", b"exectrack.execution.started"),
    ("ce_subject", b"exec-1"),
    ("ce_time", b"2026-01-01T12:00:00Z"),
]


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
