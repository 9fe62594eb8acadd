"""bench.peer's pure parts: the row-shaped record, its JsonConverter schema, the comparison."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from bench.peer import (
    COLUMNS,
    MICRO_TIMESTAMP,
    ROW_COLUMNS,
    TUNED,
    comparable,
    connect_schema,
    connector_properties,
    differing_columns,
    flat_payload,
    flat_record,
    lifecycle_rows,
    micros,
    with_schema,
    wrong_rows,
)
from exectrack.consumer.db.repository import EXECUTION_COLUMNS
from exectrack.consumer.ingest.fold import fold_events
from exectrack.consumer.retention.policy import RetentionPolicy
from exectrack.producer.events import EventType, ExecutionEvent, execution_event

T0 = datetime(2026, 11, 1, 12, 0, 0, 123456, tzinfo=UTC)
POLICY = RetentionPolicy()


def ev(type_: EventType, n: int, **fields: Any) -> ExecutionEvent:
    return execution_event(
        type_, execution_id="e-1", report_id="r-1", source="/tests", id=f"id-{n}",
        sequence=n, time=T0 + timedelta(seconds=n), **fields,
    )  # fmt: skip


LIFECYCLE = [
    ev(EventType.PENDING, 0, trigger_type="manual", started_by=7,
       execution_parameters={"regions": ["eu-west-1"], "deep": True}),
    ev(EventType.STARTED, 1, start_time=T0 + timedelta(seconds=1)),
    ev(EventType.PROGRESS, 2, records_processed=10),
    ev(EventType.COMPLETED, 3, end_time=T0 + timedelta(seconds=3), records_processed=25,
       result_summary={"findings": 2}),
]  # fmt: skip


def test_the_schema_has_the_tables_columns_but_exectracks_bookkeeping() -> None:
    schema = connect_schema()
    assert schema["type"] == "struct"
    assert schema["optional"] is False
    names = [field["field"] for field in schema["fields"]]
    assert names == list(ROW_COLUMNS)
    assert set(names) == set(EXECUTION_COLUMNS) - {"fold_keys"}
    by_name = {field["field"]: field for field in schema["fields"]}
    for name in ("start_time", "end_time", "retention_until", "created_at", "last_event_at"):
        assert by_name[name]["type"] == "int64"
        assert by_name[name]["name"] == MICRO_TIMESTAMP
    for name in ("execution_parameters", "result_summary", "error_details"):
        assert by_name[name] == {"field": name, "type": "string", "optional": True}  # not Json
    assert [f["field"] for f in schema["fields"] if not f["optional"]] == [
        "execution_id", "report_id", "status", "created_at", "last_event_at",
    ]  # fmt: skip
    assert len(COLUMNS) == len(ROW_COLUMNS)


def test_each_event_gets_the_row_as_its_lifecycle_stands_after_it() -> None:
    shuffled = [LIFECYCLE[3], LIFECYCLE[1], LIFECYCLE[0], LIFECYCLE[2], LIFECYCLE[3]]
    rows, final = lifecycle_rows(shuffled, POLICY)
    assert list(rows) == ["id-0", "id-1", "id-2", "id-3"]  # lifecycle order, duplicate once
    pending, started, progress, completed = rows.values()
    assert (pending["status"], pending["start_time"], pending["trigger_type"]) == (
        "pending", None, "manual",
    )  # fmt: skip
    assert (started["status"], started["start_time"]) == ("running", T0 + timedelta(seconds=1))
    assert started["trigger_type"] == "manual"  # carried over from the pending event
    assert (progress["records_processed"], progress["end_time"]) == (10, None)
    assert completed is final
    assert completed["status"] == "completed"
    assert completed["records_processed"] == 25
    assert completed["duration_ms"] == 2000  # derived from start_time and end_time
    assert completed["created_at"] == T0
    assert completed["last_event_at"] == T0 + timedelta(seconds=3)
    # the final row is the fold's, whatever the order the events travelled in
    fold = fold_events(LIFECYCLE)["e-1"]
    expected = fold.to_row(POLICY.period(fold.status))
    assert comparable(final) == comparable(expected)
    assert final["retention_until"] == expected["retention_until"] is not None


def test_a_row_flattens_to_a_jsonconverter_message() -> None:
    _, final = lifecycle_rows(LIFECYCLE, POLICY)
    message = orjson.loads(flat_record(final))
    assert message["schema"] == connect_schema()
    payload = message["payload"]
    assert payload == flat_payload(final)
    assert list(payload) == list(ROW_COLUMNS)
    assert payload["execution_id"] == "e-1"
    assert payload["status"] == "completed"
    assert payload["trigger_type"] == "manual"
    assert payload["started_by"] == 7
    assert payload["created_at"] == micros(T0) == 1_793_534_400_123_456
    assert payload["end_time"] == micros(T0) + 3_000_000
    assert orjson.loads(payload["execution_parameters"]) == {"regions": ["eu-west-1"], "deep": True}
    assert orjson.loads(payload["result_summary"]) == {"findings": 2}
    assert payload["error_details"] is None
    assert payload["output_location"] is None


def test_rows_compare_alike_whichever_table_they_come_from() -> None:
    _, final = lifecycle_rows(LIFECYCLE, POLICY)
    # as a peer's table reads back: naive UTC times, JSON as text, keys reordered
    read_back = {
        **final,
        "created_at": T0.replace(tzinfo=None),
        "execution_parameters": '{"deep": true, "regions": ["eu-west-1"]}',
        "result_summary": '{"findings":2}',
    }
    assert comparable(read_back) == comparable(final)
    expected = {"e-1": comparable(final), "e-2": comparable(final)}
    late = comparable({**final, "status": "running"})
    assert wrong_rows(expected, {"e-1": comparable(final)}) == (0, 1)
    assert wrong_rows(expected, {"e-1": late, "e-2": comparable(final)}) == (1, 0)
    assert wrong_rows(expected, {**expected, "e-3": late}) == (1, 0)  # an extra row is wrong


def test_the_sink_upserts_by_execution_id_tuned_or_not() -> None:
    url = "mysql+aiomysql://u:p@127.0.0.1:3307/db1"
    defaults = connector_properties("n", "t", url, tuned=False)
    tuned = connector_properties("n", "t", url, tuned=True)
    assert defaults["connection.url"] == "jdbc:mariadb://127.0.0.1:3307/db1"
    assert (defaults["insert.mode"], defaults["primary.key.fields"]) == ("upsert", "execution_id")
    assert defaults["collection.name.format"] == "report_executions"
    assert not set(TUNED) & set(defaults)
    assert tuned == {**defaults, **TUNED}
    assert int(tuned["consumer.override.max.poll.records"]) >= int(tuned["batch.size"])


def test_the_wrong_rows_say_which_columns_differ() -> None:
    rows, final = lifecycle_rows(LIFECYCLE, POLICY)
    expected = {"e-1": comparable(final)}
    assert differing_columns(expected, {"e-1": comparable(final)}) == {}
    late = comparable(rows["id-2"])  # the progress event's row, arrived last
    assert differing_columns(expected, {"e-1": late}) == {
        "status": 1, "end_time": 1, "duration_ms": 1, "records_processed": 1,
        "result_summary": 1, "retention_until": 1, "last_event_at": 1,
    }  # fmt: skip


def test_the_payload_travels_without_the_schema_until_published() -> None:
    _, final = lifecycle_rows(LIFECYCLE, POLICY)
    assert with_schema(orjson.dumps(flat_payload(final))) == flat_record(final)
