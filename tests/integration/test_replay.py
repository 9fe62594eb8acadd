"""Replay on the real broker and database: rebuild from the topic, verify against the live table.

The live table is made by the real consumer (in process) from a simulated
stream (duplicates, reordering, 1% invalid); replays rebuild it into fresh
databases with different interleavings, and ``verify`` must find no
difference, while it must find the ones planted on purpose.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy import delete, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from exectrack.consumer.db.engine import create_engine
from exectrack.consumer.db.repository import EXECUTIONS, REPORTS
from exectrack.consumer.replay.rebuild import Replay, ReplayError, ReplayOptions, replay
from exectrack.consumer.replay.verify import verify
from exectrack.consumer.retention.policy import RetentionPolicy
from exectrack.consumer.service import ConsumerService
from exectrack.consumer.settings import DatabaseSettings
from exectrack.producer.events import ExecutionEvent, ExecutionStatus
from exectrack.producer.simulate import SimConfig, SimMessage, generate
from tests.conftest import MakeDatabase, Topics
from tests.support.expect import expected_rows
from tests.support.kafka import publish, read_all
from tests.support.service import consumer_settings, rows_of, run_until, table

CONSUMER = Path(sys.executable).parent / "exectrack-consumer"


def stream(executions: int, seed: int, start: datetime | None = None) -> list[SimMessage]:
    config = SimConfig(
        executions=executions, seed=seed,
        start=start or datetime.now(UTC) - timedelta(hours=2),  # recent: nothing expired
        duplicate_ratio=0.01, reorder_ratio=0.3, invalid_ratio=0.01,
    )  # fmt: skip
    return list(generate(config))


async def publish_stream(topics: Topics, messages: list[SimMessage]) -> None:
    await publish(topics.bootstrap, topics.topic, [(m.key, m.value, m.headers) for m in messages])


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``exectrack-consumer ARGS`` (call through asyncio.to_thread)."""
    return subprocess.run(
        [str(CONSUMER), *args], env=env, capture_output=True, text=True, check=False
    )


def invalid(messages: list[SimMessage]) -> int:
    return sum(m.invalid_reason is not None for m in messages)


async def group_offsets(topics: Topics) -> dict[Any, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=topics.bootstrap)
    await admin.start()
    try:
        found = await admin.list_consumer_group_offsets(topics.group_id)
    finally:
        await admin.close()
    return {tp: meta.offset for tp, meta in found.items()}


async def tombstones_of(url: str) -> set[str]:
    engine = create_engine(DatabaseSettings(), url=url)
    try:
        async with engine.connect() as conn:
            found = await conn.execute(text("SELECT execution_id FROM purged_executions"))
            return set(found.scalars())
    finally:
        await engine.dispose()


async def plant_differences(url: str) -> str:
    """Delete one execution, change two columns of another, add a third, rename a
    report. Returns the deleted execution's id."""
    e = EXECUTIONS.c
    engine = create_engine(DatabaseSettings(), url=url)
    try:
        async with engine.begin() as conn:
            first = select(e.execution_id).order_by(e.execution_id).limit(3)
            gone, changed, copied = (await conn.execute(first)).scalars().all()
            copy = select(EXECUTIONS).where(e.execution_id == copied)
            row = dict((await conn.execute(copy)).mappings().one())
            await conn.execute(delete(EXECUTIONS).where(e.execution_id == gone))
            await conn.execute(
                update(EXECUTIONS)
                .where(e.execution_id == changed)
                .values(status=ExecutionStatus.RUNNING, records_processed=-1)
            )
            del row["id"]
            await conn.execute(insert(EXECUTIONS).values(row | {"execution_id": "zz-extra"}))
            report_id = (await conn.execute(select(REPORTS.c.report_id).limit(1))).scalar_one()
            rename = update(REPORTS).where(REPORTS.c.report_id == report_id)
            await conn.execute(rename.values(name="renamed"))
    finally:
        await engine.dispose()
    return str(gone)


async def test_replay_rebuilds_the_live_table_in_any_interleaving(
    db: AsyncEngine, database_url: str, topics: Topics, new_database: MakeDatabase
) -> None:
    messages = stream(1500, seed=11)
    await publish_stream(topics, messages)
    live = ConsumerService(
        consumer_settings(topics, database_url, batch_max_records=500), engine=db
    )
    await run_until(live, len(messages))
    live_rows = await table(db)
    assert live_rows == expected_rows(messages, None)

    target = await new_database()
    summary = await replay(consumer_settings(topics, database_url), ReplayOptions(target))
    assert summary.mode == "rebuild"
    assert summary.events_read == len(messages)
    assert summary.invalid == invalid(messages) > 0
    assert summary.applied == len(messages) - summary.invalid
    assert (summary.refused, summary.dead_lettered, summary.skipped_expired) == (0, 0, 0)
    assert summary.executions == len(live_rows)
    report = await verify(DatabaseSettings(), database_url, target)
    assert report.ok, report.render()
    executions, reports = report.tables
    assert executions.equal == len(live_rows)
    assert reports.equal > 0
    assert not executions.ignored

    # Another interleaving: one partition at a time, last partition first, small batches.
    other = await new_database()
    settings = consumer_settings(topics, database_url, batch_max_records=97)
    reverse = ReplayOptions(other, partitions=tuple(range(11, -1, -1)), sequential=True)
    summary = await replay(settings, reverse)
    assert summary.events_read == len(messages)
    assert summary.batches > len(messages) / 97
    report = await verify(DatabaseSettings(), database_url, other)
    assert report.ok, report.render()
    assert report.tables[0].equal == len(live_rows)


async def test_replay_does_not_resurrect_expired_executions(
    topics: Topics, database_url: str, new_database: MakeDatabase
) -> None:
    old = stream(300, seed=21, start=datetime(2025, 6, 1, tzinfo=UTC))  # > 180 days ago
    recent = stream(300, seed=22)
    messages = old + recent
    await publish_stream(topics, messages)
    old_ids = {m.event.data.execution_id for m in old if isinstance(m.event, ExecutionEvent)}
    expected = expected_rows(messages, datetime.now(UTC))
    assert not old_ids & expected.keys(), "the old stream should be past retention entirely"
    assert len(expected) == 300

    target = await new_database()
    # small batches: most executions straddle batches, late duplicates land after the end
    settings = consumer_settings(topics, database_url, batch_max_records=50)
    summary = await replay(settings, ReplayOptions(target))
    assert summary.skipped_expired == len(old_ids)
    rows = await rows_of(target)
    assert not old_ids & rows.keys()
    assert rows == expected

    # the final sweep left a tombstone for each, as the purge does
    assert await tombstones_of(target) == old_ids

    # A merge into the same (now non-empty) database resurrects nothing either: the
    # tombstones stop every fold of the old executions before it is written.
    with pytest.raises(ReplayError, match="already holds executions"):
        await replay(settings, ReplayOptions(target))
    summary = await replay(settings, ReplayOptions(target, merge=True))
    assert summary.mode == "merge"
    assert summary.skipped_expired == 0
    assert summary.skipped_purged >= len(old_ids)  # once per batch an execution is in
    assert await rows_of(target) == expected

    # Executions on hold are never swept, even with an explicit retention_until past
    # (report-0005 has some in this stream).
    events = [m.event for m in old if isinstance(m.event, ExecutionEvent)]
    held = {e.data.execution_id for e in events if e.data.report_id == "report-0005"}
    assert held
    settings = settings.model_copy(
        update={"retention": RetentionPolicy(hold_reports=frozenset({"report-0005"}))}
    )
    target = await new_database()
    summary = await replay(settings, ReplayOptions(target))
    assert summary.skipped_expired == len(old_ids) - len(held)
    assert (await rows_of(target)).keys() & old_ids == held


async def test_replay_reads_to_the_captured_end_and_leaves_the_group_alone(
    db: AsyncEngine, database_url: str, topics: Topics, new_database: MakeDatabase
) -> None:
    first, second, late = stream(200, seed=31), stream(200, seed=32), stream(50, seed=33)
    await publish_stream(topics, first)
    live = ConsumerService(
        consumer_settings(topics, database_url, batch_max_records=200), engine=db
    )
    await run_until(live, len(first))
    await publish_stream(topics, second)  # the live group is now behind
    before = await group_offsets(topics)
    assert sum(before.values()) == len(first)
    dlq_before = len(await read_all(topics.bootstrap, topics.dlq))

    target = await new_database()
    settings = consumer_settings(topics, database_url, batch_max_records=100)
    async with Replay(settings, ReplayOptions(target, dead_letter=True)) as job:
        await job.prepare_target()
        plan = await job.plan()
        await publish_stream(topics, late)  # after the ends were captured: not replayed
        summary = await job.run(plan)
    assert summary.events_read == plan.events == len(first) + len(second)
    assert summary.dead_lettered == summary.invalid == invalid(first) + invalid(second)
    assert await group_offsets(topics) == before
    dead = (await read_all(topics.bootstrap, topics.dlq))[dlq_before:]
    assert len(dead) == summary.dead_lettered
    assert all(dict(r.headers)["exectrack.dlq.consumer"].endswith(b"/replay") for r in dead)
    assert await rows_of(target) == expected_rows(first + second, datetime.now(UTC))

    # --from-time: nothing at or after a time in the future
    tomorrow = datetime.now(UTC) + timedelta(days=1)
    async with Replay(settings, ReplayOptions(target, from_time=tomorrow)) as job:
        plan = await job.plan()
    assert plan.events == 0


async def test_verify_reports_missing_extra_and_changed_rows(
    topics: Topics, database_url: str, new_database: MakeDatabase
) -> None:
    messages = stream(200, seed=41)
    await publish_stream(topics, messages)
    live, rebuilt = await new_database(), await new_database()
    env = {
        **os.environ,
        "EXECTRACK_KAFKA__BOOTSTRAP_SERVERS": topics.bootstrap,
        "EXECTRACK_KAFKA__TOPIC": topics.topic,
        "EXECTRACK_DATABASE__URL": live,
    }
    # the command line: replay into "live", then into "rebuilt" with --verify
    done = await asyncio.to_thread(cli, env, "replay", "--no-progress", "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["events_read"] == len(messages)
    assert sum(summary["end_offsets"].values()) == len(messages)  # a fresh topic: from 0
    done = await asyncio.to_thread(
        cli, env, "replay", "--no-progress", "--target-url", rebuilt, "--verify"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK: no differences" in done.stdout

    gone = await plant_differences(rebuilt)

    report = await verify(DatabaseSettings(), live, rebuilt, max_shown=2)
    assert not report.ok
    executions, reports = report.tables
    assert (executions.missing, executions.extra, executions.differing) == (1, 1, 1)
    assert executions.columns == {"status": 1, "records_processed": 1}
    assert (reports.missing, reports.extra, reports.differing) == (0, 0, 1)
    assert reports.columns == {"name": 1}
    assert report.differences == 4
    text = report.render()
    assert "... and 1 more differences" in text  # two shown of three
    assert f"missing  {gone}" in text

    done = await asyncio.to_thread(cli, env, "verify", "--live-url", live, "--rebuilt-url", rebuilt)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAILED: 4 differences" in done.stdout
    assert "records_processed: live=" in done.stdout
    assert "rebuilt=-1" in done.stdout
