"""The reaper through the real broker and consumer: timed_out on the topic and in the
table, twice is harmless, and a worker's late terminal event with a sequence wins."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from exectrack.consumer.retention.reap import REAPER_SOURCE, reap
from exectrack.consumer.service import ConsumerService
from exectrack.producer.events import EventType, ExecutionEvent, kafka_headers, parse_event, to_json
from exectrack.producer.events import execution_event as make
from exectrack.producer.settings import KafkaSettings
from tests.conftest import Topics
from tests.support.kafka import publish, read_all
from tests.support.service import consumer_settings, run_until, table

CONSUMER = Path(sys.executable).parent / "exectrack-consumer"
NOW = datetime.now(UTC)
OLD = NOW - timedelta(hours=7)
WINDOW_S = 6 * 3600


def ev(type_: EventType, execution: str, at: datetime, n: int, **fields: Any) -> ExecutionEvent:
    return make(
        type_, execution_id=execution, report_id="r-1", source="/services/worker",
        id=f"{execution}-{n}", time=at, **fields,
    )  # fmt: skip


async def send(topics: Topics, events: list[ExecutionEvent]) -> None:
    await publish(
        topics.bootstrap, topics.topic, [(e.key, to_json(e), kafka_headers(e)) for e in events]
    )


async def consume(topics: Topics, database_url: str, db: AsyncEngine, records: int) -> None:
    """The consumer group picks up where it left off, until ``records`` more are committed."""
    await run_until(ConsumerService(consumer_settings(topics, database_url), engine=db), records)


async def test_reaper_closes_stale_executions_and_the_worker_still_wins(
    db: AsyncEngine, database_url: str, topics: Topics
) -> None:
    first = [
        ev(EventType.PENDING, "stale-run", OLD, 0, sequence=0, trigger_type="scheduled"),
        ev(EventType.STARTED, "stale-run", OLD + timedelta(seconds=1), 1, sequence=1,
           start_time=OLD + timedelta(seconds=1)),
        ev(EventType.PENDING, "stale-pending", OLD, 0),
        ev(EventType.STARTED, "recent", NOW - timedelta(minutes=10), 0, sequence=0),
        ev(EventType.COMPLETED, "finished", OLD, 0, end_time=OLD),
    ]  # fmt: skip
    await send(topics, first)
    await consume(topics, database_url, db, len(first))
    kafka = KafkaSettings(bootstrap_servers=topics.bootstrap, topic=topics.topic)

    # --dry-run lists, publishes nothing
    env = {**os.environ, "EXECTRACK_DATABASE__URL": database_url, "EXECTRACK_LOG_LEVEL": "error",
           "EXECTRACK_KAFKA__BOOTSTRAP_SERVERS": topics.bootstrap,
           "EXECTRACK_KAFKA__TOPIC": topics.topic}  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        str(CONSUMER), "reap", "--dry-run", "--json", "--after", "6h", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    dry = json.loads(out)
    assert (dry["outcome"], dry["found"], dry["published"]) == ("dry_run", 2, 0)
    assert sorted(s["execution_id"] for s in dry["stale"]) == ["stale-pending", "stale-run"]
    assert len(await read_all(topics.bootstrap, topics.topic)) == len(first)

    # reaping twice before the consumer applied the first run: harmless
    summaries = [await reap(db, kafka, after_s=WINDOW_S) for _ in range(2)]
    assert [(s.outcome, s.found, s.published) for s in summaries] == [("success", 2, 2)] * 2
    records = [
        (r, parse_event(r.value, r.headers, r.key))
        for r in await read_all(topics.bootstrap, topics.topic)
    ]
    reaped = [e for _, e in records if e.source == REAPER_SOURCE]
    assert len(records) == len(first) + 4
    assert len(reaped) == 4
    for record, event in records:
        if event.source != REAPER_SOURCE:
            continue
        assert isinstance(event, ExecutionEvent)
        assert record.key == event.data.execution_id.encode()
        assert (event.type, event.source, event.data.sequence) == (
            EventType.TIMED_OUT, REAPER_SOURCE, None,
        )  # fmt: skip
        assert event.data.end_time == event.time >= NOW
        assert event.data.error_details is not None
        assert event.data.error_details["reaper"] == socket.gethostname()
        # 7 h = 25,200 s before NOW (set at import), plus however long the suite ran since
        silent = re.fullmatch(r"no event for (\d+) s", event.data.error_details["reason"])
        assert silent is not None
        assert 25_200 <= int(silent.group(1)) < 25_200 + 3_600

    await consume(topics, database_url, db, 4)
    rows = await table(db)
    assert {eid: row["status"] for eid, row in rows.items()} == {
        "stale-run": "timeout", "stale-pending": "timeout", "recent": "running",
        "finished": "completed",
    }  # fmt: skip
    last_reap = max(e.time for e in reaped if e.subject == "stale-run")
    run = rows["stale-run"]
    assert run["end_time"] == last_reap  # the later of the two reaper events
    assert run["retention_until"] == last_reap + timedelta(days=90)  # timeout's default
    assert run["trigger_type"] == "scheduled"
    assert (await reap(db, kafka, after_s=WINDOW_S)).found == 0  # closed: nothing more

    # the worker's real completion arrives late (its clock is earlier than the reaper's)
    done_at = OLD + timedelta(hours=2)
    late = [
        ev(EventType.COMPLETED, "stale-run", done_at, 2, sequence=2, end_time=done_at,
           records_processed=42),
        ev(EventType.PROGRESS, "stale-pending", NOW, 1, records_processed=1),  # rank 1: loses
    ]  # fmt: skip
    await send(topics, late)
    await consume(topics, database_url, db, len(late))
    rows = await table(db)
    run = rows["stale-run"]
    assert (run["status"], run["end_time"], run["records_processed"]) == (
        "completed", done_at, 42,
    )  # fmt: skip
    assert run["retention_until"] == done_at + timedelta(days=90)
    assert run["error_details"] is not None  # the reaper's stays: the completion carried none
    assert rows["stale-pending"]["status"] == "timeout"
