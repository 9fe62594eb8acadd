"""Retention through the real consumer: type/category overrides, reapply (policy change,
late report definition), the in-consumer schedule, and replay after a purge."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from exectrack.consumer.retention.jobs import start_retention_jobs
from exectrack.consumer.retention.policy import RetentionPolicy
from exectrack.consumer.retention.purge import PurgeOptions, purge
from exectrack.consumer.retention.reapply import reapply
from exectrack.consumer.service import ConsumerService
from exectrack.consumer.settings import Settings
from exectrack.producer.events import (
    CloudProvider,
    EventType,
    ReportCategory,
    ReportType,
    kafka_headers,
    report_defined_event,
    to_json,
)
from exectrack.producer.events import execution_event as make
from tests.conftest import Topics
from tests.support.kafka import publish
from tests.support.service import consumer_settings, run_until, table


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


CONSUMER = Path(sys.executable).parent / "exectrack-consumer"
D = timedelta(days=1)
POLICY = RetentionPolicy.model_validate(
    {
        "default": {"completed": "30d"},
        "report_types": {"vpc_inventory": {"completed": "7d"}},
        "categories": {"security": {"completed": "1d"}},
    }
)


def definition(report_id: str, report_type: ReportType, category: ReportCategory) -> Any:
    return report_defined_event(
        source="/tests", report_id=report_id, version=1, name=report_id,
        report_type=report_type, category=category, provider=CloudProvider.AWS,
    )  # fmt: skip


def lifecycle(eid: str, report_id: str, end: datetime, final: EventType, **extra: Any) -> list[Any]:
    common = {"execution_id": eid, "report_id": report_id, "source": "/tests"}
    return [
        make(EventType.PENDING, **common, sequence=0, time=end - timedelta(minutes=5)),
        make(EventType.STARTED, **common, sequence=1, time=end - timedelta(minutes=4)),
        make(final, **common, sequence=2, time=end, end_time=end, **extra),
    ]


async def send(topics: Topics, events: list[Any]) -> int:
    await publish(
        topics.bootstrap, topics.topic, [(e.key, to_json(e), kafka_headers(e)) for e in events]
    )
    return len(events)


def settings_for(topics: Topics, database_url: str, **overrides: Any) -> Settings:
    return consumer_settings(topics, database_url, **overrides)


async def consume(settings: Settings, db: AsyncEngine, records: int) -> Any:
    return await run_until(ConsumerService(settings, engine=db), records)


async def test_overrides_reapply_and_a_late_definition(
    db: AsyncEngine, database_url: str, topics: Topics
) -> None:
    settings = settings_for(topics, database_url, retention=POLICY)
    end = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    explicit = end + 3 * D
    defs = [
        definition("r-vpc", ReportType.VPC_INVENTORY, ReportCategory.SECURITY),
        definition("r-sec", ReportType.CUSTOM, ReportCategory.SECURITY),
        definition("r-dns", ReportType.DNS_INVENTORY, ReportCategory.OPERATIONS),
    ]
    await consume(settings, db, await send(topics, defs))  # definitions first
    events = (
        lifecycle("e-vpc", "r-vpc", end, EventType.COMPLETED)
        + lifecycle("e-sec", "r-sec", end, EventType.COMPLETED)
        + lifecycle("e-dns", "r-dns", end, EventType.COMPLETED)
        + lifecycle("e-dns-failed", "r-dns", end, EventType.FAILED)
        + lifecycle("e-explicit", "r-vpc", end, EventType.COMPLETED, retention_until=explicit)
        + lifecycle("e-late", "r-late", end, EventType.COMPLETED)  # report not defined yet
    )
    await consume(settings, db, await send(topics, events))
    until = {eid: row["retention_until"] for eid, row in (await table(db)).items()}
    assert until == {
        "e-vpc": end + 7 * D,  # report_type beats category
        "e-sec": end + D,  # category
        "e-dns": end + 30 * D,  # default from the policy
        "e-dns-failed": end + 180 * D,  # built-in default for a status the policy left out
        "e-explicit": explicit,  # carried by the event
        "e-late": end + 30 * D,  # placeholder report: default
    }

    # the definition arrives after its executions: the row keeps its period ...
    await consume(
        settings, db, await send(topics, [definition("r-late", ReportType.VPC_INVENTORY,
                                                     ReportCategory.COST)])
    )  # fmt: skip
    assert (await table(db))["e-late"]["retention_until"] == end + 30 * D
    # ... until the scheduled job (or `retention reapply --report r-late`) fixes it
    idle = start_retention_jobs(settings)
    assert idle.tasks == []  # off by default
    await idle.stop()
    reaps = metric("exectrack_reap_runs_total", outcome="success")
    purges = metric("exectrack_purge_runs_total", outcome="success")
    scheduled = settings.model_copy(update={"purge_interval_s": 0.1, "reap_interval_s": 0.1})
    jobs = start_retention_jobs(scheduled)  # its own engine, as inside the consumer
    try:
        async with asyncio.timeout(30):
            while (await table(db))["e-late"]["retention_until"] != end + 7 * D:
                await asyncio.sleep(0.1)
            while metric("exectrack_reap_runs_total", outcome="success") == reaps:
                await asyncio.sleep(0.1)
    finally:
        await jobs.stop()
    assert metric("exectrack_purge_runs_total", outcome="success") > purges
    assert len(await table(db)) == 6  # nothing was due for the purge, nothing stale

    # a policy change, applied to the stored rows: exactly what the fold would write
    changed = POLICY.model_copy(
        update={"report_types": {ReportType.VPC_INVENTORY: {"completed": 14 * D}}}
    )
    dry = await reapply(db, changed, dry_run=True)
    assert (dry.scanned, dry.changed, dry.now_expired) == (6, 2, 0)
    assert (await table(db))["e-vpc"]["retention_until"] == end + 7 * D  # dry: untouched
    done = await reapply(db, changed, batch_size=4)
    assert (done.scanned, done.changed, done.batches) == (6, 2, 2)
    until = {eid: row["retention_until"] for eid, row in (await table(db)).items()}
    assert until["e-vpc"] == until["e-late"] == end + 14 * D
    assert until["e-explicit"] == explicit  # an explicit value is never recomputed
    assert (await reapply(db, changed)).changed == 0

    # the command, for one report, with a hold (held rows no longer expire)
    env = {**os.environ, "EXECTRACK_DATABASE__URL": database_url, "EXECTRACK_LOG_LEVEL": "error",
           "EXECTRACK_RETENTION": json.dumps({"hold_reports": ["r-dns"]})}  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        str(CONSUMER), "retention", "reapply", "--report", "r-dns", "--json", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    result = json.loads(out)
    assert (result["scanned"], result["changed"], result["now_kept"]) == (2, 2, 2)
    rows = await table(db)
    assert rows["e-dns"]["retention_until"] is None
    assert rows["e-dns-failed"]["retention_until"] is None


async def test_replay_after_a_purge_does_not_resurrect(
    db: AsyncEngine, database_url: str, topics: Topics
) -> None:
    """Consume, let some executions expire, purge, then consume the whole topic again
    with a fresh consumer group into the SAME database: the purged stay purged."""
    policy = RetentionPolicy.model_validate({"default": {"cancelled": "3s"}})
    settings = settings_for(topics, database_url, retention=policy, batch_max_records=5000)
    now = datetime.now(UTC)
    events: list[Any] = []
    for i in range(20):
        events += lifecycle(f"short-{i}", "r-1", now, EventType.CANCELLED)
        events += lifecycle(f"long-{i}", "r-1", now, EventType.COMPLETED)
    total = await send(topics, events)
    await consume(settings, db, total)
    before = await table(db)
    assert len(before) == 40

    await asyncio.sleep(
        max(0.0, (now + timedelta(seconds=3.2) - datetime.now(UTC)).total_seconds())
    )
    summary = await purge(db, policy)
    assert summary.deleted == 20
    survivors = await table(db)
    assert survivors == {eid: row for eid, row in before.items() if eid.startswith("long-")}

    replay = settings.model_copy(update={"group_id": f"replay-{uuid.uuid4().hex[:8]}"})
    totals = await consume(replay, db, total)
    assert totals.records == total
    # the purge's tombstones stop every fold of the purged executions, in whatever
    # batch their events fall: nothing comes back, not even until the next purge
    assert await table(db) == survivors
    await purge(db, policy)
    assert await table(db) == survivors

    # A LATE non-terminal event for a purged execution: its tombstone (written by the
    # purge with the DELETE) keeps it purged, though nothing else remembers it.
    async with db.connect() as conn:
        found = await conn.execute(text("SELECT execution_id FROM purged_executions"))
        stones = set(found.scalars())
    assert stones == {f"short-{i}" for i in range(20)}
    late = make(EventType.PROGRESS, execution_id="short-0", report_id="r-1", source="/tests",
                sequence=1, time=now, records_processed=1)  # fmt: skip
    await consume(settings, db, await send(topics, [late]))
    assert await table(db) == survivors

    # Tombstones expire: past EXECTRACK_TOMBSTONE_TTL_S the purge deletes them, and the
    # same late event then makes a fresh row (running, no retention) again.
    aged = await purge(db, policy, PurgeOptions(tombstone_ttl_s=0.0))
    assert aged.tombstones_expired == 20
    await consume(settings, db, await send(topics, [late]))
    row = (await table(db))["short-0"]
    assert (row["status"], row["retention_until"]) == ("running", None)
