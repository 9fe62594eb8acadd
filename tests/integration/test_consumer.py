"""The consumer on the real broker and database: fold, placeholders, dead letters, offsets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from exectrack.consumer.retention.policy import RetentionPolicy
from exectrack.consumer.service import ConsumerService
from exectrack.producer.events import (
    CloudProvider,
    EventType,
    ExecutionEvent,
    ReportCategory,
    ReportType,
    kafka_headers,
    report_defined_event,
    to_json,
)
from exectrack.producer.events import execution_event as make
from tests.conftest import Topics
from tests.support.kafka import committed_lag, publish, read_all
from tests.support.oracle import expected_row
from tests.support.service import consumer_settings, run_until, table

T0 = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)


def ev(type_: EventType, execution: str, n: int, **fields: Any) -> ExecutionEvent:
    fields.setdefault("report_id", "vpc-weekly")
    return make(
        type_, execution_id=execution, source="/tests", id=f"{execution}-{n}",
        time=T0 + timedelta(seconds=n), **fields,
    )  # fmt: skip


def message(event: Any) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    return event.key, to_json(event), kafka_headers(event)


async def test_lifecycle_out_of_order_with_duplicates_and_poison(
    db: AsyncEngine, database_url: str, topics: Topics
) -> None:
    e1 = [
        ev(EventType.PENDING, "e1", 0, sequence=0, trigger_type="manual", started_by=11),
        ev(EventType.STARTED, "e1", 1, sequence=1, start_time=T0 + timedelta(seconds=1)),
        ev(EventType.PROGRESS, "e1", 2, sequence=2, records_processed=10),
        ev(EventType.COMPLETED, "e1", 3, sequence=3, end_time=T0 + timedelta(seconds=3),
           records_processed=20, result_summary={"vpcs": 4}),
    ]  # fmt: skip
    e2 = [
        ev(EventType.PENDING, "e2", 0, report_id="subnets", trigger_type="api"),
        ev(EventType.FAILED, "e2", 5, report_id="subnets", error_details={"type": "Boom"}),
    ]
    definition = report_defined_event(
        source="/tests", report_id="vpc-weekly", version=2, name="VPC inventory (weekly)",
        report_type=ReportType.VPC_INVENTORY, category=ReportCategory.INFRASTRUCTURE,
        provider=CloudProvider.AWS,
        time=T0, id="def-2", created_by=5,
    )  # fmt: skip
    stream = [
        message(e1[3]),
        message(e1[2]),
        message(e2[1]),  # terminal events first
        (b"e1", b"{not json", []),  # poison
        message(e1[0]),
        message(e1[3]),  # a duplicate
        message(definition),
        (b"other-key", to_json(e1[1]), kafka_headers(e1[1])),  # key mismatch: poison
        message(e1[1]),
        message(e2[0]),
    ]
    sent = await publish(topics.bootstrap, topics.topic, stream)

    service = ConsumerService(consumer_settings(topics, database_url), engine=db)
    totals = await run_until(service, len(stream))
    assert (totals.records, totals.dead_lettered) == (len(stream), 2)

    rows = await table(db)
    period = RetentionPolicy().default
    for eid, events in (("e1", e1), ("e2", e2)):
        status = expected_row(events, None)["status"]
        assert rows[eid] == expected_row(events, period.get(status))
    assert rows["e1"]["status"] == "completed"
    assert rows["e1"]["trigger_type"] == "manual"
    assert rows["e1"]["duration_ms"] == 2000

    async with db.connect() as conn:
        reports = (await conn.execute(text(
            "SELECT report_id, name, report_type, version, created_by, defined_at IS NULL "
            "FROM reports ORDER BY report_id"
        ))).all()  # fmt: skip
        users = (await conn.execute(text("SELECT id, username FROM users ORDER BY id"))).all()
    assert reports == [
        ("subnets", "subnets", None, 1, None, 1),  # placeholder
        ("vpc-weekly", "VPC inventory (weekly)", "vpc_inventory", 2, 5, 0),
    ]
    assert users == [(5, None), (11, None)]  # placeholders for unknown user ids

    dead = await read_all(topics.bootstrap, topics.dlq)
    by_offset = {int(dict(r.headers)["exectrack.dlq.offset"]): dict(r.headers) for r in dead}
    poison = {s.offset: s for s in sent if s.value == b"{not json" or s.key == b"other-key"}
    assert set(by_offset) == set(poison)
    reasons = sorted(h["exectrack.dlq.reason"].decode() for h in by_offset.values())
    assert reasons == ["key_mismatch", "not_json"]
    for record in dead:
        headers = dict(record.headers)
        assert headers["exectrack.dlq.topic"].decode() == topics.topic
        original = poison[int(headers["exectrack.dlq.offset"])]
        assert int(headers["exectrack.dlq.partition"]) == original.partition
        assert record.value == original.value
        assert record.key == original.key
    assert await committed_lag(topics.bootstrap, topics.topic, topics.group_id) == 0


async def test_replaying_the_same_records_changes_nothing(
    db: AsyncEngine, database_url: str, topics: Topics
) -> None:
    events = [ev(EventType.STARTED, "x", 1), ev(EventType.COMPLETED, "x", 2, records_processed=3)]
    await publish(topics.bootstrap, topics.topic, [message(e) for e in events])
    settings = consumer_settings(topics, database_url)
    await run_until(ConsumerService(settings, engine=db), 2)
    first = await table(db)
    # a second group re-reads the whole topic: same rows
    again = settings.model_copy(update={"group_id": topics.group_id + "-again"})
    await run_until(ConsumerService(again, engine=db), 2)
    assert await table(db) == first
