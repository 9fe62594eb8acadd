"""JSON fields the contract accepts but a column cannot hold as sent.

Depth: MariaDB 10.11's JSON_VALID (the CHECK of its JSON columns) holds 31
nested arrays/objects and refuses 32 (measured; MySQL 8.0: 100), so a field
nested deeper than MAX_JSON_DEPTH is not carried (NULL), counted and logged,
and the event's status and other fields still count (docs/events.md, "Values
outside the columns' range"). Integers beyond 64 bits: read, digested, written
exactly (orjson alone reads them as floats, and cannot write them).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from exectrack.consumer.db import fastsql
from exectrack.consumer.ingest.anomalies import report_out_of_range
from exectrack.consumer.ingest.decode import storable_definition
from exectrack.consumer.ingest.fold import fold_events, storable
from exectrack.producer.events import (
    MAX_JSON_DEPTH,
    CloudProvider,
    EventType,
    ExecutionEvent,
    InvalidEvent,
    ReportCategory,
    ReportDefinedEvent,
    ReportType,
    definition_digest,
    dumps_json,
    execution_event,
    json_depth,
    loads_json,
    parse_event,
    report_defined_event,
    to_binary,
    to_json,
)

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
BIG = 123456789012345678901234567890


def nested(depth: int) -> dict[str, Any]:
    """An object ``depth`` levels deep: {"a": {"a": ... {"leaf": 1}}}."""
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def arrays(depth: int) -> list[Any]:
    """``depth`` nested arrays, the innermost empty: [[...[]...]]."""
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


def ev(type_: EventType, n: int, **fields: Any) -> ExecutionEvent:
    return execution_event(
        type_, execution_id="e-1", report_id="r-1", source="/tests", id=f"id-{n}",
        time=T0 + timedelta(seconds=n), **fields,
    )  # fmt: skip


def samples(field: str) -> float:
    labels = {"field": field}
    return REGISTRY.get_sample_value("exectrack_fields_out_of_range_total", labels) or 0.0


# ----------------------------------------------------------------- depth
def test_depth_counts_nested_arrays_and_objects_as_mariadb_does() -> None:
    assert MAX_JSON_DEPTH == 31
    shapes: list[Any] = [1, "s", {}, [], {"a": 1}, [[]], {"a": [{}]}]
    assert [json_depth(v) for v in shapes] == [
        0, 0, 1, 1, 1, 2, 3,
    ]  # fmt: skip
    assert [json_depth(nested(d)) for d in (31, 32, 33)] == [31, 32, 33]
    assert [json_depth(arrays(d)) for d in (31, 32)] == [31, 32]
    # the early exit: stops at the first container beyond the limit
    assert json_depth(nested(200), MAX_JSON_DEPTH) == MAX_JSON_DEPTH + 1
    assert json_depth(nested(31), MAX_JSON_DEPTH) == 31
    wide = {"a": [nested(3), nested(30), {"b": 1}], "c": nested(2)}
    assert json_depth(wide) == 32


@pytest.mark.parametrize("field", ["execution_parameters", "result_summary", "error_details"])
@pytest.mark.parametrize(("depth", "kept"), [(30, True), (31, True), (32, False), (33, False)])
def test_storable_keeps_31_deep_and_drops_32(field: str, depth: int, kept: bool) -> None:
    for value in (nested(depth), {"list": arrays(depth - 1)}):
        assert json_depth(value) == depth
        assert storable(field, value) is (value if kept else None)


def test_json_field_too_deep_is_not_carried_and_the_status_counts() -> None:
    """A completed event with result_summary 32 deep: completed, records kept, the
    earlier in-range summary wins, the deep one is recorded out of range."""
    started = ev(EventType.STARTED, 1, sequence=1, result_summary={"partial": True})
    done = ev(EventType.COMPLETED, 2, sequence=2, records_processed=5,
              result_summary=nested(32), execution_parameters=nested(31),
              error_details=nested(33))  # fmt: skip
    fold = fold_events([done, started])["e-1"]
    row = fold.to_row(None)
    assert (row["status"], row["records_processed"]) == ("completed", 5)
    assert row["result_summary"] == {"partial": True}
    assert row["execution_parameters"] == nested(31)
    assert row["error_details"] is None
    assert fold.out_of_range == {
        ("result_summary", done.id, "JSON nested 32 deep (limit 31)", None),
        ("error_details", done.id, "JSON nested 33 deep (limit 31)", None),
    }
    alone = fold_events([done])["e-1"].to_row(None)
    assert (alone["status"], alone["result_summary"]) == ("completed", None)


def test_json_field_out_of_range_is_counted_and_logged() -> None:
    done = ev(EventType.COMPLETED, 2, result_summary=nested(32))
    (found,) = fold_events([done])["e-1"].out_of_range
    before = samples("result_summary")
    with capture_logs() as logs:
        report_out_of_range([("e-1", found)])
    assert samples("result_summary") == before + 1
    assert logs == [
        {
            "event": "field_out_of_range",
            "execution_id": "e-1",
            "id": done.id,
            "field": "result_summary",
            "sent": "JSON nested 32 deep (limit 31)",
            "stored": None,
            "log_level": "warning",
        }
    ]


def definition(**fields: Any) -> ReportDefinedEvent:
    return report_defined_event(
        source="/tests", report_id="rep-1", version=1, name="n", report_type=ReportType.CUSTOM,
        category=ReportCategory.CUSTOM, provider=CloudProvider.AWS, time=T0, id="d-1", **fields,
    )  # fmt: skip


def test_report_definition_json_fields_follow_the_same_rule() -> None:
    event = definition(
        query_config=nested(32),
        scheduling_config=nested(31),
        notification_config={"x": arrays(32)},
        parameters_schema={"p": 1},
    )
    before = samples("query_config"), samples("notification_config")
    with capture_logs() as logs:
        kept = storable_definition(event)
    data = kept.data
    assert (data.query_config, data.notification_config) == (None, None)
    assert (data.scheduling_config, data.parameters_schema) == (nested(31), {"p": 1})
    assert (data.name, data.report_type, kept.id, kept.time) == ("n", "custom", "d-1", T0)
    assert (samples("query_config"), samples("notification_config")) == (
        before[0] + 1,
        before[1] + 1,
    )
    assert sorted((line["report_id"], line["field"], line["sent"]) for line in logs) == [
        ("rep-1", "notification_config", "JSON nested 33 deep (limit 31)"),
        ("rep-1", "query_config", "JSON nested 32 deep (limit 31)"),
    ]
    # its order key's digest is the stored row's (redelivery is no conflict)
    assert kept.order_key[3] == definition_digest(data.__dict__)
    assert kept.order_key[3] != event.order_key[3]
    fitting = definition(query_config=nested(31))
    assert storable_definition(fitting) is fitting


# ----------------------------------------------------------------- integers beyond 64 bits
def raw_started(parameters: bytes) -> bytes:
    event = ev(EventType.STARTED, 1, execution_parameters={"p": 0})
    return to_json(event).replace(b'{"p":0}', parameters)


@pytest.mark.parametrize(
    "number",
    [BIG, -BIG, 2**64, 2**64 - 1, -(2**63) - 1, -(2**63), 10**400],
)
def test_integers_of_any_size_are_read_digested_and_written_exactly(number: int) -> None:
    text = str(number).encode()
    event = parse_event(raw_started(b'{"n":' + text + b',"f":1.5e300}'))
    assert isinstance(event, ExecutionEvent)
    assert event.data.execution_parameters == {"n": number, "f": 1.5e300}
    assert type(event.data.execution_parameters["n"]) is int
    assert b'"n":' + text + b"," in to_json(event)
    headers, value = to_binary(event)
    assert parse_event(value, headers) == event
    assert parse_event(to_json(event)).digest == event.digest
    # the SQL literal fastsql writes, and the stored text read back
    (literal,) = fastsql.render_each(
        ("execution_parameters",), [{"execution_parameters": {"n": number}}]
    )
    assert literal == '(\'{"n":' + str(number) + "}')"
    assert fastsql.from_db("execution_parameters", '{"n": ' + str(number) + "}") == {"n": number}


def test_two_events_differing_only_in_a_big_integer_have_two_digests() -> None:
    one = parse_event(raw_started(b'{"account":123456789012345678901234567890}'))
    two = parse_event(raw_started(b'{"account":123456789012345678901234567891}'))
    assert one.id == two.id
    assert one.digest != two.digest
    assert one.order_key != two.order_key


def test_a_big_integer_in_a_report_definition_is_exact_and_digested() -> None:
    one, two = definition(query_config={"n": BIG}), definition(query_config={"n": BIG + 1})
    assert one.data.query_config == {"n": BIG}
    assert one.order_key[3] != two.order_key[3]
    assert definition_digest({**one.data.__dict__}) == one.order_key[3]


def test_big_integer_counts_are_accepted_and_not_carried() -> None:
    """A count of 2**70 is an integer (it was a float to orjson and refused):
    accepted, beyond BIGINT, so not carried, like any count over BIGINT."""
    raw = raw_started(b'{"p":0}').replace(
        b'"execution_parameters"', b'"duration_ms":' + str(2**70).encode() + b',"x"'
    )
    event = parse_event(raw)
    assert isinstance(event, ExecutionEvent)
    assert event.data.duration_ms == 2**70
    fold = fold_events([event])["e-1"]
    assert fold.value("duration_ms") is None
    assert ("duration_ms", event.id, 2**70, None) in fold.out_of_range


def test_exact_json_helpers_agree_with_orjson_elsewhere() -> None:
    values: list[Any] = [
        {"f": 1e30, "g": 0.1, "s": "é\u2028", "n": None, "b": True},
        [2**63 - 1, -(2**63), 2**64 - 1],
        "12345678901234567890 in a string",
    ]
    for value in values:
        assert dumps_json(value) == orjson.dumps(value)
        assert loads_json(orjson.dumps(value)) == value
    # a long digit run that is not an integer is read the same both ways
    assert loads_json(b'{"id":"run-12345678901234567890123","t":0.12345678901234567890}') == {
        "id": "run-12345678901234567890123",
        "t": 0.12345678901234568,
    }
    # what orjson refuses stays refused (the stdlib only re-reads accepted documents)
    for bad in (b'{"n":NaN,"d":12345678901234567890123}', b"[1e400,12345678901234567890123]"):
        with pytest.raises(orjson.JSONDecodeError):
            loads_json(bad)
    with pytest.raises(InvalidEvent):
        parse_event(raw_started(b'{"n":Infinity,"m":12345678901234567890123}'))
    assert (
        dumps_json({"n": [BIG]}, option=orjson.OPT_SORT_KEYS)
        == b'{"n":[' + str(BIG).encode() + b"]}"
    )
    with pytest.raises(TypeError):
        dumps_json({1, 2})
    with pytest.raises(orjson.JSONDecodeError):  # a str with a lone surrogate, as orjson
        loads_json('{"s": "\ud800"}')
    assert loads_json('{"n": ' + str(BIG) + "}") == {"n": BIG}  # str, as the driver gives
