"""The batch writer on the real database: concurrent writers, refused rows, retries."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from exectrack.consumer.db.engine import create_engine
from exectrack.consumer.ingest.fold import fold_events
from exectrack.consumer.ingest.writer import BatchWriter
from exectrack.consumer.retention.policy import RetentionPolicy
from exectrack.consumer.service import ConsumerService
from exectrack.consumer.settings import DatabaseSettings
from exectrack.producer.events import (
    EventType,
    ExecutionEvent,
    execution_event,
    kafka_headers,
    to_json,
)
from tests.conftest import Topics
from tests.support.kafka import publish, read_all
from tests.support.oracle import expected_row
from tests.support.service import consumer_settings, run_until, table

T0 = datetime(2026, 11, 2, tzinfo=UTC)
LIFECYCLE: list[tuple[EventType, dict[str, Any]]] = [
    (EventType.PENDING, {"trigger_type": "scheduled", "started_by": 3}),
    (EventType.STARTED, {"start_time": T0}),
    (EventType.PROGRESS, {"records_processed": 5}),
    (EventType.PROGRESS, {"records_processed": 9, "output_size_bytes": 100}),
    (EventType.COMPLETED, {"end_time": T0 + timedelta(seconds=9), "result_summary": {"ok": 1}}),
]


def lifecycle(execution_id: str) -> list[ExecutionEvent]:
    return [
        execution_event(
            type_,
            execution_id=execution_id,
            report_id="rep",
            source="/tests",
            id=f"{execution_id}-{n}",
            sequence=n,
            time=T0 + timedelta(seconds=n),
            **fields,
        )
        for n, (type_, fields) in enumerate(LIFECYCLE)
    ]


async def test_two_writers_on_the_same_executions_converge(
    db: AsyncEngine, database_url: str
) -> None:
    """Like two consumers briefly owning one partition: each writes a different subset
    of the same executions' events at the same time. Nothing written may be lost."""
    policy = RetentionPolicy()
    other = create_engine(DatabaseSettings(), url=database_url)
    writers = [
        BatchWriter(db, policy, retry_initial_s=0.01),
        BatchWriter(other, policy, retry_initial_s=0.01),
    ]
    rng = random.Random(7)
    all_events: dict[str, list[ExecutionEvent]] = {}
    attempts = 0
    try:
        for round_ in range(15):
            ids = [f"r{round_}-e{i}" for i in range(60)]
            halves: list[list[ExecutionEvent]] = [[], []]
            for eid in ids:
                events = lifecycle(eid)
                all_events[eid] = events
                for event in events:  # each event to one writer, some to both
                    pick = rng.random()
                    if pick < 0.45 or pick >= 0.9:
                        halves[0].append(event)
                    if pick >= 0.45:
                        halves[1].append(event)
            outcomes = await asyncio.gather(
                *(w.write(fold_events(h), {}) for w, h in zip(writers, halves, strict=True))
            )
            attempts += sum(o.attempts for o in outcomes)
    finally:
        await other.dispose()
    rows = await table(db)
    assert set(rows) == set(all_events)
    for eid, events in all_events.items():
        # every event went to at least one writer
        assert rows[eid] == expected_row(events, policy.default[rows[eid]["status"]]), eid
    # the writers really raced: some transactions met the other's insert and were redone
    assert attempts > 30, "no concurrent insert happened: the test did not test the race"


@pytest.mark.usefixtures("refusing_trigger")
async def test_rows_the_database_refuses_are_isolated_and_dead_lettered(
    db: AsyncEngine, database_url: str, topics: Topics
) -> None:
    ids = [f"ok-{i}" for i in range(7)] + ["poison-1"]
    events = [e for eid in ids for e in lifecycle(eid)]
    await publish(
        topics.bootstrap, topics.topic, [(e.key, to_json(e), kafka_headers(e)) for e in events]
    )
    totals = await run_until(
        ConsumerService(consumer_settings(topics, database_url), engine=db), len(events)
    )
    rows = await table(db)
    assert sorted(rows) == sorted(ids[:-1])  # everything else was written
    dead = await read_all(topics.bootstrap, topics.dlq)
    assert len(dead) == len(LIFECYCLE) == totals.dead_lettered  # all of poison-1's events
    assert {dict(r.headers)["exectrack.dlq.reason"] for r in dead} == {b"db_refused"}
    assert all(r.key == b"poison-1" for r in dead)
    assert b"refused by test trigger" in dict(dead[0].headers)["exectrack.dlq.error"]
