"""Scenario 6: poison and hostile input on one partition, between valid events.

Invalid UTF-8, a ~10 MiB value (the test topic allows it; the consumer refuses
it as too_large and its dead-letter copy is truncated), JSON nested 100,000
deep, times before 1970 and after 2038, a key that names another execution:
each is dead-lettered with its reason. A count of 2**70 is a valid integer
(read exactly since docs/reliability/found-by-users.md, "JSON fields"; it was
read as a float and dead-lettered invalid_field): applied, the count not stored. SQL-looking strings
in every text field of a VALID event are stored verbatim. All of it is keyed
like one execution, so it lands on that execution's partition, and the valid
events published after the poison must be applied (the partition keeps flowing).
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from exectrack.consumer.service import ConsumerService
from exectrack.producer.events import (
    CloudProvider,
    EventType,
    ExecutionEvent,
    ReportCategory,
    ReportType,
    execution_event,
    parse_event,
    report_defined_event,
    to_json,
)
from exectrack.producer.simulate import SimMessage
from tests.conftest import Topics
from tests.stack import Services
from tests.support.expect import dead_lettered, expected_rows, invalid_offsets
from tests.support.faults import Figures, assert_converged
from tests.support.kafka import Sent, read_all, wait_for_leaders
from tests.support.service import consumer_settings, run_until, table

pytestmark = pytest.mark.integration
SOURCE = "/services/hostile"
HEADERS = [("content-type", b"application/cloudevents+json")]
BIG = 10 * 1024 * 1024
SQL = "x'); DROP TABLE report_executions; -- \" OR 1=1 /* \\ ` ; SELECT SLEEP(10)#"


@pytest.fixture
async def big_topics(stack: Services) -> Any:
    """A topic that accepts ~10 MiB messages (the DLQ keeps the broker default)."""
    suffix = uuid.uuid4().hex[:10]
    made = Topics(stack.kafka_bootstrap, f"exectrack-poison-{suffix}",
                  f"exectrack-poison-{suffix}.dlq", f"exectrack-poison-{suffix}", 3)  # fmt: skip
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(made.topic, 3, 1, topic_configs={"max.message.bytes": str(BIG * 2)}),
                NewTopic(made.dlq, 1, 1),
            ]
        )
        await wait_for_leaders(stack.kafka_bootstrap, [made.topic, made.dlq])
        yield made
        await admin.delete_topics([made.topic, made.dlq])
    finally:
        await admin.close()


def valid(event: ExecutionEvent) -> SimMessage:
    return SimMessage(event.data.execution_id.encode(), to_json(event), HEADERS, event, None)


def hostile(key: str, value: bytes, reason: str) -> SimMessage:
    return SimMessage(key.encode(), value, HEADERS, None, reason)


def huge_count(key: str, value: bytes) -> SimMessage:
    """A valid event whose count the column cannot hold: applied, the count not carried."""
    event = parse_event(value)
    assert isinstance(event, ExecutionEvent)
    return SimMessage(key.encode(), value, HEADERS, event, None)


def edited(event: ExecutionEvent, **changes: Any) -> bytes:
    wire = orjson.loads(to_json(event))
    for path, value in changes.items():
        *parents, name = path.split("__")
        target = wire
        for parent in parents:
            target = target[parent]
        target[name] = value
    return json.dumps(wire).encode()  # stdlib: orjson refuses 2**70


def poison_stream() -> list[SimMessage]:
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    eid, rid = str(uuid.uuid4()), "report-poison"

    def event(kind: EventType, seq: int, **fields: Any) -> ExecutionEvent:
        at = now + timedelta(seconds=seq)
        return execution_event(
            kind, execution_id=eid, report_id=rid, source=SOURCE, sequence=seq, time=at, **fields
        )

    pending = event(EventType.PENDING, 0, trigger_type="api")
    probe = event(EventType.PROGRESS, 1)
    sql_id = SQL + eid[:8]
    sql = execution_event(
        EventType.COMPLETED, execution_id=sql_id, report_id=SQL, source="/" + SQL,
        sequence=3, time=now, id=SQL + "-id", trigger_type="manual", started_by=7,
        start_time=now - timedelta(seconds=5), end_time=now, records_processed=1,
        execution_parameters={SQL: SQL, "nested": [SQL, {"k": SQL}]},
        result_summary={"summary": SQL}, error_details={"error": SQL}, output_location=SQL,
    )  # fmt: skip
    deep = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
    return [
        valid(pending),
        hostile(eid, b"\xff\xfe\x80 not utf-8 \xc3\x28", "not_utf8"),
        hostile(eid, b'{"pad": "' + b"x" * BIG + b'"}', "too_large"),
        hostile(eid, deep, "not_json"),
        hostile(eid, edited(probe, time="1900-01-01T00:00:00Z"), "time_out_of_range"),
        hostile(eid, edited(probe, time="3000-01-01T00:00:00Z"), "time_out_of_range"),
        # a data time outside 1970..2038 no longer refuses the event (docs/events.md);
        # one with no UTC value at all still does
        hostile(
            eid, edited(probe, data__end_time="0001-01-01T00:00:00+01:00"), "time_out_of_range"
        ),
        huge_count(eid, edited(probe, data__records_processed=2**70)),
        hostile(eid, edited(probe, data__duration_ms=-1), "invalid_field"),
        hostile(eid, to_json(sql), "key_mismatch"),  # another execution's event, keyed eid
        valid(event(EventType.STARTED, 1, started_by=3)),
        valid(event(EventType.COMPLETED, 2, records_processed=42, end_time=now)),
        valid(sql),  # hostile text, valid event: stored verbatim, on its own key
    ]


async def publish_big(topics: Topics, messages: list[SimMessage]) -> list[Sent]:
    producer = AIOKafkaProducer(bootstrap_servers=topics.bootstrap, acks="all",
                                max_request_size=BIG * 2)  # fmt: skip
    await producer.start()
    try:
        sent = []
        for m in messages:  # one at a time: the order on the partition is the list's
            meta = await (await producer.send(topics.topic, m.value, m.key, headers=m.headers))
            sent.append(Sent(m.key, m.value, m.headers, meta.partition, meta.offset))
    finally:
        await producer.stop()
    return sent


async def test_poison_is_dead_lettered_and_the_partition_keeps_flowing(
    db: AsyncEngine, database_url: str, big_topics: Topics, figures: Figures
) -> None:
    messages = poison_stream()
    report = report_defined_event(source=SOURCE, report_id=SQL, version=1, name=SQL,
                                  description=SQL, report_type=ReportType("vpc_inventory"),
                                  category=ReportCategory("security"),
                                  provider=CloudProvider("aws"))  # fmt: skip
    messages.append(SimMessage(SQL.encode(), to_json(report), HEADERS, report, None))
    sent = await publish_big(big_topics, messages)
    poisoned = {s.partition for s, m in zip(sent, messages, strict=True) if m.invalid_reason}
    assert len(poisoned) == 1, "the poison is meant to share one partition"
    service = ConsumerService(consumer_settings(big_topics, database_url), engine=db)
    await run_until(service, len(messages), timeout_s=60)

    dlq = await read_all(big_topics.bootstrap, big_topics.dlq)
    assert dead_lettered(dlq) == invalid_offsets(sent, messages)
    (large,) = [r for r in dlq if dict(r.headers)["exectrack.dlq.reason"] == b"too_large"]
    assert dict(large.headers)["exectrack.dlq.truncated"].startswith(b"true")
    assert len(large.value) < 1024 * 1024
    figures.counts = await assert_converged(db, big_topics, messages, sent)
    rows = await table(db)
    eid = messages[0].key.decode()
    assert rows[eid]["status"] == "completed"  # the events after the poison were applied
    assert rows[eid]["records_processed"] == 42
    sql_row = rows[SQL + eid[:8]]
    assert sql_row["report_id"] == SQL
    assert sql_row["output_location"] == SQL
    assert sql_row["execution_parameters"] == {SQL: SQL, "nested": [SQL, {"k": SQL}]}
    async with db.connect() as conn:
        name, description = (
            await conn.execute(
                text("SELECT name, description FROM reports WHERE report_id = :r"), {"r": SQL}
            )
        ).one()
        tables = {r[0] for r in await conn.execute(text("SHOW TABLES"))}
    assert (name, description) == (SQL, SQL)
    assert "report_executions" in tables
    assert expected_rows(messages, None).keys() == rows.keys()
    figures.faults = sorted({m.invalid_reason or "" for m in messages} - {""})
    figures.notes["dlq_truncated_bytes"] = len(large.value)
