"""The fold's promises on the real broker and database (issue #13, items 5-9).

Each test publishes the exact input of the issue, consumes it with the real
consumer and asserts the row's values (docs/reliability/fold-contract.md).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from exectrack.consumer.replay.rebuild import ReplayOptions, replay
from exectrack.consumer.replay.verify import verify
from exectrack.consumer.service import ConsumerService
from exectrack.consumer.settings import DatabaseSettings
from exectrack.producer.events import (
    MAX_TIME,
    CloudProvider,
    EventType,
    ExecutionEvent,
    ReportCategory,
    ReportDefinedEvent,
    ReportType,
    execution_event,
    kafka_headers,
    report_defined_event,
    to_binary,
    to_json,
)
from tests.conftest import MakeDatabase, Topics
from tests.support.kafka import publish, read_all
from tests.support.service import consumer_settings, run_until, table

Message = tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]


def message(event: ExecutionEvent) -> Message:
    return event.key, to_json(event), kafka_headers(event)


def definition(event: ReportDefinedEvent) -> Message:
    return event.key, to_json(event), kafka_headers(event)


async def consume(topics: Topics, database_url: str, db: AsyncEngine, records: int) -> None:
    """Run the consumer of the test's group until it has committed ``records`` more."""
    await run_until(ConsumerService(consumer_settings(topics, database_url), engine=db), records)


# ------------------------------------------------------- 5: partial folds
def pending_then_completed(execution_id: str, now: datetime) -> list[ExecutionEvent]:
    """Issue #13 item 5: a pending already past retention, a completed held a year."""
    common: dict[str, Any] = {"execution_id": execution_id, "report_id": "r-5", "source": "/t"}
    pending = execution_event(
        EventType.PENDING, **common, id=f"{execution_id}-p", sequence=0,
        time=now - timedelta(days=2), trigger_type="api", started_by=5,
        retention_until=now - timedelta(days=1),
    )  # fmt: skip
    completed = execution_event(
        EventType.COMPLETED, **common, id=f"{execution_id}-c", sequence=2,
        time=now - timedelta(hours=1), retention_until=now + timedelta(days=365),
    )  # fmt: skip
    return [pending, completed]


async def test_row_does_not_depend_on_batch_boundaries(
    db: AsyncEngine, database_url: str, topics: Topics, new_database: MakeDatabase
) -> None:
    """A: pending consumed alone, completed in a later batch; B: both in one batch.
    Both rows are the fold of the set, and a replay of the topic verifies clean."""
    now = datetime.now(UTC).replace(microsecond=0)
    a_pending, a_completed = pending_then_completed("exec-A", now)
    b_events = pending_then_completed("exec-B", now)

    await publish(topics.bootstrap, topics.topic, [message(a_pending)])
    await consume(topics, database_url, db, 1)  # A's pending alone: a partial fold, past retention
    alone = await table(db)
    assert alone["exec-A"]["retention_until"] == now - timedelta(days=1)  # written, not skipped

    await publish(topics.bootstrap, topics.topic, [message(a_completed), *map(message, b_events)])
    await consume(topics, database_url, db, 3)
    rows = await table(db)
    for eid in ("exec-A", "exec-B"):
        row = rows[eid]
        assert row["status"] == "completed", eid
        assert (row["trigger_type"], row["started_by"]) == ("api", 5), eid
        assert row["created_at"] == now - timedelta(days=2), eid
        assert row["last_event_at"] == now - timedelta(hours=1), eid
        assert row["retention_until"] == now + timedelta(days=365), eid
    assert {k: v for k, v in rows["exec-A"].items() if k != "execution_id"} == {
        k: v for k, v in rows["exec-B"].items() if k != "execution_id"
    }

    target = await new_database()
    summary = await replay(consumer_settings(topics, database_url), ReplayOptions(target))
    assert (summary.executions, summary.skipped_expired) == (2, 0)
    report = await verify(DatabaseSettings(), database_url, target)
    assert report.ok, report.render()
    executions, _ = report.tables
    assert (executions.equal, dict(executions.ignored)) == (2, {})


# ------------------------------------------------------- 6: conflicting duplicates
def conflicts_counted() -> float:
    return REGISTRY.get_sample_value("exectrack_event_id_conflicts_total") or 0.0


def progress_twins(now: datetime) -> tuple[ExecutionEvent, ExecutionEvent]:
    """Issue #13 item 6: one id, sequence and time; records 10, or 20 and a location."""
    same: dict[str, Any] = {
        "execution_id": "exec-twin", "report_id": "r-6", "source": "/t", "id": "twin-1",
        "sequence": 1, "time": now - timedelta(minutes=5),
    }  # fmt: skip
    small = execution_event(EventType.PROGRESS, **same, records_processed=10)
    large = execution_event(
        EventType.PROGRESS, **same, records_processed=20, output_location="s3://out/twin"
    )
    return small, large


async def test_conflicting_duplicates_give_the_same_row_in_either_order(
    db: AsyncEngine, database_url: str, topics: Topics
) -> None:
    """In one batch or two, in either order: the same row, the greater digest's
    records_processed, and each conflict counted."""
    now = datetime.now(UTC).replace(microsecond=0)
    small, large = progress_twins(now)
    winner = max(small, large, key=lambda e: e.digest)
    rows = []
    for first, second, together in ((small, large, True), (large, small, True),
                                    (small, large, False), (large, small, False)):  # fmt: skip
        async with db.begin() as conn:
            await conn.execute(text("TRUNCATE TABLE report_executions"))
        before = conflicts_counted()
        if together:
            await publish(topics.bootstrap, topics.topic, [message(first), message(second)])
            await consume(topics, database_url, db, 2)
        else:
            for event in (first, second):
                await publish(topics.bootstrap, topics.topic, [message(event)])
                await consume(topics, database_url, db, 1)
        assert conflicts_counted() == before + 1
        rows.append((await table(db))["exec-twin"])
    assert all(row == rows[0] for row in rows[1:]), rows
    assert rows[0]["records_processed"] == winner.data.records_processed
    assert rows[0]["output_location"] == "s3://out/twin"  # the only event carrying it
    assert rows[0]["status"] == "running"


# ------------------------------------------------------- 7: binding mode detection
async def test_structured_message_with_ce_headers_is_read_as_structured(
    db: AsyncEngine, database_url: str, topics: Topics
) -> None:
    """content-type application/cloudevents+json, the whole event as the value, and a
    ce_specversion header too: structured, applied. The same with +avro: dead-lettered
    as unsupported_format."""
    event = execution_event(
        EventType.STARTED, execution_id="exec-7", report_id="r-7", source="/t", id="e7-1",
        sequence=1, time=datetime.now(UTC) - timedelta(minutes=1), records_processed=7,
    )  # fmt: skip
    ce_headers = [(k, v) for k, v in to_binary(event)[0] if k.startswith("ce_")]
    assert ("ce_specversion", b"1.0") in ce_headers
    structured = [("content-type", b"application/cloudevents+json; charset=utf-8"), *ce_headers]
    avro = [("content-type", b"application/cloudevents+avro"), ("ce_specversion", b"1.0")]
    sent = await publish(
        topics.bootstrap, topics.topic,
        [(event.key, to_json(event), structured), (b"exec-7b", to_json(event), avro)],
    )  # fmt: skip
    await consume(topics, database_url, db, 2)
    row = (await table(db))["exec-7"]
    assert (row["status"], row["records_processed"]) == ("running", 7)
    dead = await read_all(topics.bootstrap, topics.dlq)
    assert len(dead) == 1
    headers = dict(dead[0].headers)
    assert headers["exectrack.dlq.reason"] == b"unsupported_format"
    assert int(headers["exectrack.dlq.offset"]) == sent[1].offset
    assert b"application/cloudevents+avro" in headers["exectrack.dlq.error"]


# ------------------------------------------------------- 8: times outside the columns
def fields_out_of_range(field: str) -> float:
    labels = {"field": field}
    return REGISTRY.get_sample_value("exectrack_fields_out_of_range_total", labels) or 0.0


async def test_retention_until_beyond_2038_keeps_the_terminal_status(
    db: AsyncEngine, database_url: str, topics: Topics
) -> None:
    """A completed event with retention_until 2050-01-01T00:00:00Z (a 25-year hold):
    applied, completed, held until the column's end (MAX_TIME), counted."""
    now = datetime.now(UTC).replace(microsecond=0)
    common: dict[str, Any] = {"execution_id": "exec-8", "report_id": "r-8", "source": "/t"}
    started = execution_event(
        EventType.STARTED, **common, id="e8-1", sequence=1, time=now - timedelta(minutes=2)
    )
    raw = orjson.loads(to_json(started))
    raw.update(id="e8-2", type="exectrack.execution.completed", time=now.isoformat())
    raw["data"].update(sequence=2, retention_until="2050-01-01T00:00:00Z")
    before = fields_out_of_range("retention_until")
    sent = await publish(
        topics.bootstrap, topics.topic,
        [message(started), (b"exec-8", orjson.dumps(raw), kafka_headers(started))],
    )  # fmt: skip
    assert len(sent) == 2
    await consume(topics, database_url, db, 2)
    row = (await table(db))["exec-8"]
    assert (row["status"], row["retention_until"]) == ("completed", MAX_TIME)
    assert fields_out_of_range("retention_until") == before + 1
    assert await read_all(topics.bootstrap, topics.dlq, timeout_s=2) == []


# ------------------------------------------------------- 9: unformatted error text
async def test_dead_letter_error_text_is_formatted(
    db: AsyncEngine, database_url: str, topics: Topics
) -> None:
    """An event whose subject differs from data.execution_id: the exectrack.dlq.error
    header names both values (it was the template ``subject {subject!r} ...``)."""
    event = execution_event(
        EventType.STARTED, execution_id="exec-9", report_id="r-9", source="/t", id="e9-1"
    )
    raw = orjson.loads(to_json(event))
    raw["subject"] = "exec-9-other"
    await publish(topics.bootstrap, topics.topic, [(b"exec-9", orjson.dumps(raw), [])])
    await consume(topics, database_url, db, 1)
    (dead,) = await read_all(topics.bootstrap, topics.dlq)
    headers = dict(dead.headers)
    assert headers["exectrack.dlq.reason"] == b"key_mismatch"
    expected = b"subject 'exec-9-other' should equal data.execution_id 'exec-9'"
    assert headers["exectrack.dlq.error"] == expected


async def test_conflicting_report_definitions_give_the_same_row_in_either_order(
    db: AsyncEngine, database_url: str, topics: Topics
) -> None:
    """The same kind for report definitions: one id, version and time, two names.
    In one batch or two, either order: the greater definition digest's row; each
    conflict counted; the same definition re-delivered is no conflict (the digest of
    the stored row equals the event's)."""
    same: dict[str, Any] = {
        "source": "/t", "report_id": "rep-6", "version": 2, "id": "def-6",
        "report_type": ReportType.VPC_INVENTORY, "category": ReportCategory.SECURITY,
        "provider": CloudProvider.AWS, "time": datetime.now(UTC).replace(microsecond=0),
        "query_config": {"regions": ["eu-west-1"], "deep": {"x": None, "n": 1.5}},
        "created_by": 3,
    }  # fmt: skip
    one = report_defined_event(name="VPC weekly", **same)
    two = report_defined_event(name="VPC weekly (v2)", description="other", **same)
    winner = max(one, two, key=lambda e: e.order_key)
    names = []
    for first, second, together in ((one, two, True), (two, one, True),
                                    (one, two, False), (two, one, False)):  # fmt: skip
        async with db.begin() as conn:
            await conn.execute(text("DELETE FROM reports"))
        before = conflicts_counted()
        batches = [[first, second]] if together else [[first], [second], [second]]
        for batch in batches:
            await publish(topics.bootstrap, topics.topic, [definition(e) for e in batch])
            await consume(topics, database_url, db, len(batch))
        # apart: the second against the stored first, then the second once more: a
        # conflict again only if it lost (the stored winner's digest, recomputed
        # from its columns, equals its event's: no false conflict)
        expected = 1 if together else 1 + (second is not winner)
        assert conflicts_counted() == before + expected, (together, first.data.name)
        async with db.connect() as conn:
            found = await conn.execute(text("SELECT name, description FROM reports"))
            names.append(tuple(found.one()))
    assert names == [(winner.data.name, winner.data.description)] * 4
