"""The purge on the real database: exactly the expired rows, in chunks, holds kept,
one run at a time, and a consumer writing the whole time."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from exectrack.consumer.db.repository import EXECUTIONS, REPORTS
from exectrack.consumer.retention.policy import RetentionPolicy
from exectrack.consumer.retention.purge import NamedLock, PurgeOptions, lock_name, purge
from exectrack.consumer.service import ConsumerService
from tests.conftest import Topics
from tests.support.expect import expected_rows
from tests.support.faults import publish_stream, stream
from tests.support.service import consumer_settings, run_until, table

CONSUMER = Path(sys.executable).parent / "exectrack-consumer"
NOW = datetime.now(UTC).replace(microsecond=0)


async def add_report(db: AsyncEngine, report_id: str, report_type: str | None = None) -> None:
    async with db.begin() as conn:
        await conn.execute(
            insert(REPORTS).values(report_id=report_id, name=report_id, report_type=report_type)
        )


async def add_rows(
    db: AsyncEngine, prefix: str, count: int, *, report_id: str, status: str = "completed",
    until: datetime | None = NOW - timedelta(days=1),
) -> list[str]:  # fmt: skip
    """``count`` executions written straight into the table (not through the fold)."""
    ids = [f"{prefix}-{i:06d}" for i in range(count)]
    rows = [
        {
            "execution_id": eid,
            "report_id": report_id,
            "status": status,
            "retention_until": None if until is None else until - timedelta(seconds=i % 977),
            "created_at": NOW - timedelta(days=200),
            "last_event_at": NOW - timedelta(days=200),
            "fold_keys": {"k": [[2, -1, 0, eid]], "f": {"status": 0, "report_id": 0}},
        }
        for i, eid in enumerate(ids)
    ]
    async with db.begin() as conn:
        for start in range(0, len(rows), 2000):
            await conn.execute(insert(EXECUTIONS), rows[start : start + 2000])
    return ids


async def execution_ids(db: AsyncEngine) -> set[str]:
    async with db.connect() as conn:
        return set((await conn.execute(select(EXECUTIONS.c.execution_id))).scalars())


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_purge_deletes_exactly_the_expired_rows_in_chunks(db: AsyncEngine) -> None:
    await add_report(db, "r-vpc", "vpc_inventory")
    await add_report(db, "r-held")
    await add_report(db, "r-placeholder")
    normal = await add_rows(db, "old", 2345, report_id="r-vpc")
    undefined = await add_rows(db, "undef", 300, report_id="r-placeholder", status="failed")
    held_report = await add_rows(db, "heldrep", 40, report_id="r-held")
    future = await add_rows(db, "future", 100, report_id="r-vpc", until=NOW + timedelta(days=3))
    running = await add_rows(db, "running", 50, report_id="r-vpc", status="running", until=None)
    held = set(normal[::500])  # 5 executions on hold, spread along the index
    policy = RetentionPolicy(hold_reports=frozenset({"r-held"}), hold_executions=frozenset(held))
    kept = held | set(held_report) | set(future) | set(running)

    dry = await purge(db, policy, PurgeOptions(dry_run=True))
    assert (dry.outcome, dry.deleted, dry.expired, dry.held) == ("dry_run", 0, 2640, 45)
    assert dry.would_delete == {"vpc_inventory/completed": 2340, "(undefined)/failed": 300}
    assert len(await execution_ids(db)) == 2835  # nothing deleted

    deleted_before = metric("exectrack_purge_rows_deleted_total")
    runs_before = metric("exectrack_purge_runs_total", outcome="success")
    summary = await purge(db, policy, PurgeOptions(chunk_size=1000))
    assert (summary.outcome, summary.deleted, summary.chunks) == ("success", 2640, 3)
    assert await execution_ids(db) == kept
    assert not set(undefined) & await execution_ids(db)
    assert metric("exectrack_purge_rows_deleted_total") - deleted_before == 2640
    assert metric("exectrack_purge_runs_total", outcome="success") - runs_before == 1
    assert metric("exectrack_purge_last_success_timestamp_seconds") >= NOW.timestamp()
    assert "deleted 2640 rows in 3 chunks" in summary.render()

    again = await purge(db, policy, PurgeOptions(chunk_size=1000))
    assert (again.deleted, again.chunks) == (0, 0)
    # lifting the holds: the rows whose retention_until has passed go next time
    lifted = await purge(db, RetentionPolicy(), PurgeOptions(chunk_size=1000))
    assert (lifted.deleted, lifted.chunks) == (45, 1)
    assert await execution_ids(db) == set(future) | set(running)


async def test_max_rows_and_one_purge_at_a_time(db: AsyncEngine) -> None:
    await add_report(db, "r")
    await add_rows(db, "old", 250, report_id="r")
    capped = await purge(db, RetentionPolicy(), PurgeOptions(chunk_size=100, max_rows=150))
    assert (capped.deleted, capped.chunks) == (150, 2)

    lock = NamedLock(db, lock_name(db, "purge"))  # a purge elsewhere (CronJob, replica)
    assert await lock.acquire()
    try:
        busy = await purge(db, RetentionPolicy())
        assert (busy.outcome, busy.deleted) == ("busy", 0)
    finally:
        await lock.release()
    assert len(await execution_ids(db)) == 100


async def test_purge_command(db: AsyncEngine, database_url: str) -> None:
    await add_report(db, "r", "custom")
    await add_rows(db, "old", 120, report_id="r")
    env = {**os.environ, "EXECTRACK_DATABASE__URL": database_url, "EXECTRACK_LOG_LEVEL": "error"}

    async def run(*args: str) -> Any:
        proc = await asyncio.create_subprocess_exec(
            str(CONSUMER), "purge", *args, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        return out.decode()

    assert "120 rows past retention would be deleted" in await run("--dry-run")
    assert "  custom/completed: 120" in await run("--dry-run")
    result = json.loads(await run("--json", "--chunk-size", "50", "--pause-ms", "1"))
    assert (result["deleted"], result["chunks"], result["outcome"]) == (120, 3, "success")
    assert result["rows_per_s"] > 0
    assert await execution_ids(db) == set()


async def test_purge_while_the_consumer_writes(
    db: AsyncEngine, database_url: str, topics: Topics
) -> None:
    """A consumer folds a live stream into the table while the purge removes 6000
    expired rows: both are right at the end, and the purge ran in its chunks."""
    await add_report(db, "r-old", "vpc_inventory")
    expired = set(await add_rows(db, "expired", 6000, report_id="r-old"))
    messages = stream(1500, seed=11)
    await publish_stream(topics, messages)
    service = ConsumerService(
        consumer_settings(topics, database_url, batch_max_records=200), engine=db
    )
    consuming = asyncio.create_task(run_until(service, len(messages)))
    async with asyncio.timeout(60):
        while service.totals.batches == 0:
            await asyncio.sleep(0.01)
    at_start = service.totals.records
    summary = await purge(db, RetentionPolicy(), PurgeOptions(chunk_size=250, pause_ms=20))
    at_end = service.totals.records
    await consuming
    assert 0 < at_start < len(messages), "the purge did not start while the consumer was busy"
    assert at_end > at_start, "the consumer made no progress while the purge ran"
    assert (summary.deleted, summary.chunks) == (6000, 24)

    rows = await table(db)
    assert not expired & rows.keys()
    expected = expected_rows(messages, None)
    assert rows.keys() == expected.keys()
    wrong = [eid for eid in expected if rows[eid] != expected[eid]]
    assert not wrong, f"{len(wrong)} wrong rows, e.g. {rows[wrong[0]]} != {expected[wrong[0]]}"
