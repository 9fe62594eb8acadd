"""Scenario 5: the purge and the reaper run in loops while the stream flows.

Three populations on one topic, consumed by one consumer process:

- E (expiring): complete lifecycles whose terminal event carries an explicit
  ``retention_until`` 5..20 s after they are loaded; they expire while the
  stream flows, and the purge loop deletes them under the consumer's writes.
- R (stale): executions left pending/running three hours ago; the reaper loop
  (window 1 h) publishes ``timed_out`` for them. Half of them get their real
  ``completed`` (with a sequence, so it outranks the reaper's event) after the
  reaper has run: those end ``completed``, the others ``timeout``.
- S: a simulated stream (times from two hours ago, so its in-flight executions
  are stale too: the reaper races the stream's own terminal events).

The expected table is the oracle fold of every valid event on the topic,
including the reaper's (read back from the topic), minus the rows whose
``retention_until`` had passed when the last purge ran: computed from the
events alone, without the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from exectrack.consumer.retention.policy import RetentionPolicy
from exectrack.consumer.retention.purge import purge
from exectrack.consumer.retention.reap import REAPER_SOURCE, reap
from exectrack.producer.events import (
    EventType,
    ExecutionEvent,
    execution_event,
    parse_event,
    to_json,
)
from exectrack.producer.settings import KafkaSettings
from exectrack.producer.simulate import SimMessage
from tests.conftest import Topics
from tests.faults.conftest import pick
from tests.support.expect import expected_rows
from tests.support.faults import (
    Figures,
    Spawn,
    assert_converged,
    drained,
    publish_in_chunks,
    publish_stream,
    stream,
)
from tests.support.kafka import Sent, read_all
from tests.support.service import table

pytestmark = pytest.mark.integration
SOURCE = "/services/retention-fault"
HEADERS = [("content-type", b"application/cloudevents+json")]
REAP_AFTER_S = 3600.0
REPORT = "report-retention"


def message(event: ExecutionEvent) -> SimMessage:
    return SimMessage(event.data.execution_id.encode(), to_json(event), HEADERS, event, None)


def lifecycle(at: datetime, count: int, *, close: bool, **terminal: Any) -> list[ExecutionEvent]:
    eid = str(uuid.uuid4())
    kinds = [EventType.PENDING, EventType.STARTED, EventType.COMPLETED][:count]
    events = []
    for seq, kind in enumerate(kinds):
        extra = terminal if kind is EventType.COMPLETED and close else {}
        when = at + timedelta(seconds=seq)
        events.append(
            execution_event(
                kind,
                execution_id=eid,
                report_id=REPORT,
                source=SOURCE,
                sequence=seq,
                time=when,
                **extra,
            )
        )
    return events


async def loop(job: Callable[[], Awaitable[Any]], every_s: float, runs: list[Any]) -> None:
    while True:
        runs.append(await job())
        await asyncio.sleep(every_s)


async def test_purge_and_reap_concurrent_with_the_stream(
    db: AsyncEngine, topics: Topics, spawn: Spawn, figures: Figures
) -> None:
    rng = random.Random(105)
    now = datetime.now(UTC).replace(microsecond=0)
    ago_10m, ago_3h = now - timedelta(minutes=10), now - timedelta(hours=3)
    expiring = [
        lifecycle(ago_10m, 3, close=True, end_time=ago_10m + timedelta(seconds=2),
                  retention_until=now + timedelta(seconds=rng.uniform(5, 20)))
        for _ in range(pick(200, 2000))
    ]  # fmt: skip
    stale = [lifecycle(ago_3h, 2, close=False) for _ in range(pick(100, 1000))]
    ended = ago_3h + timedelta(seconds=2)
    closers = [
        execution_event(EventType.COMPLETED, execution_id=s[0].data.execution_id,
                        report_id=REPORT, source=SOURCE, sequence=2, time=ended, end_time=ended)
        for s in stale[::2]
    ]  # fmt: skip
    preload = [message(e) for lifecycle_ in expiring + stale for e in lifecycle_]
    sent = await publish_stream(topics, preload)
    spawn()
    await drained(topics)
    loaded = await table(db)
    assert all(e[0].data.execution_id in loaded for e in expiring)

    policy = RetentionPolicy()
    kafka = KafkaSettings(bootstrap_servers=topics.bootstrap, topic=topics.topic,
                          dlq_topic=topics.dlq)  # fmt: skip
    purges: list[Any] = []
    reaps: list[Any] = []
    jobs = [
        asyncio.create_task(loop(lambda: purge(db, policy), 0.5, purges)),
        asyncio.create_task(loop(lambda: reap(db, kafka, after_s=REAP_AFTER_S), 1.0, reaps)),
    ]
    try:
        simulated = stream(pick(3000, 20000), seed=105)
        publisher = asyncio.create_task(
            publish_in_chunks(topics, simulated, chunks=pick(20, 60), pause_s=1.0)
        )
        async with asyncio.timeout(60):  # the reaper has closed R before the real ends come
            while sum(r.published for r in reaps) < len(stale):
                await asyncio.sleep(0.2)
        closing = [message(e) for e in closers]
        sent += await publish_stream(topics, closing)
        sent += await publisher
        latest = max(e[-1].data.retention_until for e in expiring if e[-1].data.retention_until)
        await asyncio.sleep(max(0.0, (latest - datetime.now(UTC)).total_seconds() + 1))
    finally:
        for job in jobs:
            job.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await job
    await drained(topics)
    final = await purge(db, policy)
    purges.append(final)

    messages = preload + closing + simulated
    reaped = [r for r in await read_all(topics.bootstrap, topics.topic)
              if dict(r.headers or ()).get("ce_source") == REAPER_SOURCE.encode()
              or b'"source":"' + REAPER_SOURCE.encode() + b'"' in (r.value or b"")]  # fmt: skip
    for record in reaped:
        event = parse_event(record.value, record.headers, record.key)
        assert isinstance(event, ExecutionEvent)
        messages.append(SimMessage(record.key, record.value, list(record.headers), event, None))
        sent.append(Sent(record.key, record.value, list(record.headers), record.partition,
                         record.offset))  # fmt: skip
    expected = expected_rows(messages, final.now, policy)
    figures.counts = await assert_converged(db, topics, messages, sent, expected=expected)

    rows = await table(db)
    assert not any(e[0].data.execution_id in rows for e in expiring), "an expired row survived"
    closed = {e.data.execution_id for e in closers}
    for s in stale:
        eid = s[0].data.execution_id
        assert rows[eid]["status"] == ("completed" if eid in closed else "timeout"), eid
    purged = sum(p.deleted for p in purges)
    assert purged == len(expiring)
    figures.faults = [
        f"purge every 0.5 s ({len(purges)} runs)",
        f"reap every 1 s, window {REAP_AFTER_S:.0f} s ({len(reaps)} runs)",
    ]
    figures.counts |= {"purged": purged, "reaper_events": len(reaped),
                       "stale_closed_by_reaper": len(stale) - len(closed),
                       "stale_closed_by_late_terminal": len(closed)}  # fmt: skip
