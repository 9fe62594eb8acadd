"""Execution metrics on the real broker and database (docs/read/metrics.md).

One stream, in four steps, through the real consumer service (in process):

1. executions of three reports with every trigger and fate, duplicates among them,
   written in small batches (most executions straddle several);
2. late records: a progress and duplicate terminal events of executions already
   terminal, executions that finish only now, and the pending event (with the
   trigger) of an execution whose terminal event came first;
3. a restart that re-reads every record (the group's offsets set back to 0, as
   after a crash before the Kafka commit);
4. a replay of the topic into another database.

Then the writer alone: transactions rolled back (two writers racing on the same
rows, rows the database refuses) count nothing; their retries and halves count
each execution once.

After each step ``exectrack_executions_terminal_total`` equals the terminal
executions by (report, status, trigger) computed from the plan of the stream
(and agrees with a COUNT of the table), and the duration histogram's count and
sum per report equal the plan's: never a second count for an execution. The
gauges equal a COUNT of pending/running rows and of the stuck ones.

The report ids are unique to each run, so the process-wide registry's series of
this test are its own.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from exectrack.consumer.db.engine import create_engine
from exectrack.consumer.ingest.fold import fold_events
from exectrack.consumer.ingest.writer import BatchWriter
from exectrack.consumer.kafka import reader
from exectrack.consumer.read.gauges import ExecutionGauges
from exectrack.consumer.replay.rebuild import ReplayOptions, replay
from exectrack.consumer.retention.policy import RetentionPolicy
from exectrack.consumer.service import ConsumerService, run_service
from exectrack.consumer.settings import DatabaseSettings, Settings
from exectrack.producer.events import EventType, ExecutionEvent, kafka_headers, to_json
from exectrack.producer.events import execution_event as make
from tests.conftest import MakeDatabase, Topics
from tests.support.kafka import partitions_of, publish
from tests.support.service import consumer_settings, rows_of, run_until

TRIGGERS = ("manual", "scheduled", "api", "webhook", None)
TERMINAL_TYPE = {
    "completed": EventType.COMPLETED,
    "failed": EventType.FAILED,
    "cancelled": EventType.CANCELLED,
    "timeout": EventType.TIMED_OUT,
}
# fate of execution i: FATES[i % 9]; "late" finishes (completed) only in step 2
FATES = (
    "completed", "completed", "failed", "cancelled", "timeout", "running", "pending",
    "completed", "late",
)  # fmt: skip
STUCK_AFTER_S = 900.0
Key = tuple[str, str, str]  # report_id, status, trigger_type label


@dataclass
class Plan:
    """The stream, and what the metrics must say, computed from the stream itself."""

    reports: tuple[str, ...]
    now: datetime
    first: list[ExecutionEvent] = field(default_factory=list)
    late: list[ExecutionEvent] = field(default_factory=list)
    terminal: Counter[Key] = field(default_factory=Counter)  # after step 2
    terminal_first: Counter[Key] = field(default_factory=Counter)  # after step 1
    durations: dict[str, list[float]] = field(default_factory=dict)  # report -> seconds
    durations_first: dict[str, list[float]] = field(default_factory=dict)


def ev(
    type_: EventType, eid: str, seq: int, report: str, when: datetime, tag: str = "", **f: Any
) -> Any:
    return make(
        type_, execution_id=eid, report_id=report, source="/tests/metrics",
        id=f"{eid}-{seq}-{type_.value.rsplit('.', 1)[1]}{tag}", sequence=seq, time=when, **f,
    )  # fmt: skip


def plan_stream(executions: int = 54) -> Plan:
    run = uuid.uuid4().hex[:8]
    now = datetime.now(UTC).replace(microsecond=0)
    plan = Plan(reports=tuple(f"metrics-{run}-{n}" for n in range(3)), now=now)
    base = now - timedelta(minutes=50)
    for i in range(executions):
        eid, report = f"m-{run}-{i:03d}", plan.reports[i % 3]
        trigger, fate = TRIGGERS[i % 5], FATES[i % 9]
        # open executions: every other one recent (not stuck); the others, and every
        # execution that finishes, start 50 to 23.5 minutes ago
        recent = fate in ("running", "pending") and i % 2
        t0 = now - timedelta(minutes=2) if recent else base + timedelta(seconds=30 * i)
        pending = {"trigger_type": trigger} if trigger else {}
        events = [ev(EventType.PENDING, eid, 0, report, t0, **pending)]
        started = t0 + timedelta(seconds=5)
        if fate != "pending" and fate != "cancelled":
            events.append(ev(EventType.STARTED, eid, 1, report, started, start_time=started))
            progress = started + timedelta(seconds=1)
            events.append(ev(EventType.PROGRESS, eid, 2, report, progress, records_processed=i))
        ended = started + timedelta(seconds=61 * (i % 12 + 1))
        if fate in TERMINAL_TYPE or fate == "late":
            status = "completed" if fate == "late" else fate
            explicit: dict[str, Any] = {"duration_ms": 4242 * i} if i % 9 == 7 else {}
            end: dict[str, Any] = {"end_time": ended} if fate != "cancelled" else {}
            final = ev(TERMINAL_TYPE[status], eid, 3, report, ended, **end, **explicit)
            # a cancelled execution never started: no duration, no observation
            seconds = (
                4242 * i / 1000 if explicit else None if fate == "cancelled"
                else (ended - started).total_seconds()
            )  # fmt: skip
            key = (report, status, trigger or "unknown")
            plan.terminal[key] += 1
            if seconds is not None:
                plan.durations.setdefault(report, []).append(seconds)
            if fate == "late":
                plan.late.append(final)  # finishes in step 2
            else:
                events.append(final)
                plan.terminal_first[key] += 1
                if seconds is not None:
                    plan.durations_first.setdefault(report, []).append(seconds)
                # late records of a terminal execution: a progress and the terminal again
                late_progress = ev(
                    EventType.PROGRESS, eid, 2, report, ended, tag="-late", records_processed=1
                )
                plan.late += [late_progress, final]
        plan.first += events + events[-1:] * int(i % 4 == 0)  # duplicates in the stream
    # terminal before its pending: counted with the trigger the row had then (none);
    # the pending, with its trigger, comes in step 2 and changes the row, not the count
    eid, report = f"m-{run}-reordered", plan.reports[0]
    t0 = now - timedelta(minutes=20)
    plan.first.append(ev(EventType.FAILED, eid, 3, report, t0 + timedelta(minutes=1)))
    plan.late.append(ev(EventType.PENDING, eid, 0, report, t0, trigger_type="api"))
    for counts in (plan.terminal, plan.terminal_first):
        counts[(report, "failed", "unknown")] += 1
    return plan


def message(event: ExecutionEvent) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    return event.key, to_json(event), kafka_headers(event)


def terminal_series(reports: Iterable[str]) -> Counter[Key]:
    """exectrack_executions_terminal_total of ``reports``, from the process registry."""
    found: Counter[Key] = Counter()
    wanted = set(reports)
    for family in REGISTRY.collect():
        if family.name != "exectrack_executions_terminal":
            continue
        for s in family.samples:
            if s.name.endswith("_total") and s.labels["report_id"] in wanted:
                key = (s.labels["report_id"], s.labels["status"], s.labels["trigger_type"])
                found[key] += int(s.value)
    return +found  # without zeros


def histogram(report: str) -> tuple[float, float]:
    """(count, sum) of exectrack_execution_duration_seconds for ``report``."""
    labels = {"report_id": report}
    count = REGISTRY.get_sample_value("exectrack_execution_duration_seconds_count", labels)
    total = REGISTRY.get_sample_value("exectrack_execution_duration_seconds_sum", labels)
    return count or 0.0, total or 0.0


def assert_metrics(plan: Plan, terminal: Counter[Key], durations: dict[str, list[float]]) -> None:
    assert terminal_series(plan.reports) == terminal
    for report in plan.reports:
        count, total = histogram(report)
        assert count == len(durations.get(report, []))
        assert abs(total - sum(durations.get(report, []))) < 1e-6


async def table_terminal(engine: AsyncEngine, reports: tuple[str, ...]) -> Counter[Key]:
    """Terminal rows by (report, status, trigger), counted by the database."""
    query = text(
        "SELECT report_id, status, COALESCE(trigger_type, 'unknown'), COUNT(*) "
        "FROM report_executions WHERE status NOT IN ('pending', 'running') "
        "GROUP BY report_id, status, trigger_type"
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return Counter({(r, s, t): n for r, s, t, n in rows if r in reports})


async def rewind_group(topics: Topics) -> None:
    """Set the group's committed offsets back to 0 on every partition (the group is empty)."""
    partitions = await partitions_of(topics.bootstrap, topics.topic)
    consumer = reader(
        bootstrap_servers=topics.bootstrap, group_id=topics.group_id, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.commit(dict.fromkeys(partitions, 0))
    finally:
        await consumer.stop()


async def test_terminal_executions_counted_once_through_late_events_restart_and_replay(
    db: AsyncEngine, database_url: str, topics: Topics, new_database: MakeDatabase
) -> None:
    plan = plan_stream()
    settings = consumer_settings(topics, database_url, batch_max_records=13)

    # 1. the stream, with duplicates, in small batches
    await publish(topics.bootstrap, topics.topic, map(message, plan.first))
    await run_until(ConsumerService(settings, engine=db), len(plan.first))
    assert_metrics(plan, plan.terminal_first, plan.durations_first)
    assert await table_terminal(db, plan.reports) == plan.terminal_first

    # 2. late records after terminal, late finishes, a pending after its terminal event
    await publish(topics.bootstrap, topics.topic, map(message, plan.late))
    await run_until(ConsumerService(settings, engine=db), len(plan.late))
    assert_metrics(plan, plan.terminal, plan.durations)
    reordered = (plan.reports[0], "failed", "api")  # the row has its trigger now
    in_table = await table_terminal(db, plan.reports)
    assert in_table - plan.terminal == Counter({reordered: 1})
    assert plan.terminal - in_table == Counter({(plan.reports[0], "failed", "unknown"): 1})
    assert sum(plan.terminal.values()) == 43  # 54 executions: 36 terminal + 6 late + 1

    # 3. a restart that re-reads every record it had not committed (here: all of them)
    await rewind_group(topics)
    everything = len(plan.first) + len(plan.late)
    totals = await run_until(ConsumerService(settings, engine=db), everything)
    assert totals.written > 0  # the rows were merged again, and nothing counted
    assert_metrics(plan, plan.terminal, plan.durations)

    # 4. a replay into another database rebuilds the terminal rows, counts none
    target = await new_database()
    summary = await replay(settings, ReplayOptions(target))
    assert summary.events_read == everything
    rebuilt = await rows_of(target)
    assert sum(r["status"] not in ("pending", "running") for r in rebuilt.values()) == 43
    assert_metrics(plan, plan.terminal, plan.durations)


async def expected_gauges(engine: AsyncEngine, now: datetime) -> tuple[dict[str, int], int]:
    """Pending/running rows and the stuck ones, counted from the rows in Python."""
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT status, last_event_at FROM report_executions"))
        found = rows.all()
    cutoff = now - timedelta(seconds=STUCK_AFTER_S)
    active = Counter(str(s) for s, _ in found if s in ("pending", "running"))
    stuck = sum(s in ("pending", "running") and t.replace(tzinfo=UTC) < cutoff for s, t in found)
    return dict(active), stuck


def gauge(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


async def test_gauges_match_the_table_from_the_service_task(
    db: AsyncEngine, database_url: str, topics: Topics
) -> None:
    plan = plan_stream()
    await publish(topics.bootstrap, topics.topic, map(message, plan.first))
    settings = consumer_settings(topics, database_url, batch_max_records=500)
    await run_until(ConsumerService(settings, engine=db), len(plan.first))

    active, stuck = await expected_gauges(db, datetime.now(UTC))
    # 54 executions: 6 running, 6 pending (3 of each recent) and 6 "late" still running
    assert active == {"running": 12, "pending": 6}
    assert stuck == 12  # of the 18 open, those quiet for 23 to 50 minutes
    counts = await ExecutionGauges(settings, engine=db).refresh()
    assert (counts.active, counts.stuck) == (active, stuck)
    assert gauge("exectrack_executions_active", status="running") == 12
    assert gauge("exectrack_executions_stuck") == stuck

    # the task inside the consume service sets them on its interval
    async with db.begin() as conn:  # two stuck executions finish behind its back
        await conn.execute(
            text(
                "UPDATE report_executions SET status = 'failed' WHERE status = 'running' "
                "AND last_event_at < :cutoff ORDER BY id LIMIT 2"
            ),
            {"cutoff": datetime.now(UTC) - timedelta(seconds=STUCK_AFTER_S)},
        )
    active, stuck = await expected_gauges(db, datetime.now(UTC))
    assert (active["running"], stuck) == (10, 10)
    stop = asyncio.Event()
    live: Settings = settings.model_copy(update={"execution_gauges_interval_s": 0.2})
    before = gauge("exectrack_execution_gauges_timestamp_seconds") or 0.0
    service = asyncio.create_task(run_service(live, stop=stop))
    try:
        async with asyncio.timeout(30):
            while (gauge("exectrack_execution_gauges_timestamp_seconds") or 0.0) <= before:
                assert not service.done(), service.result()
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(service, timeout=30)
    assert gauge("exectrack_executions_active", status="running") == 10
    assert gauge("exectrack_executions_active", status="pending") == 6
    assert gauge("exectrack_executions_stuck") == 10


def lifecycle(eid: str, report: str, t0: datetime) -> list[ExecutionEvent]:
    """Pending, started, progress, completed; the terminal event carries its duration
    (as ``exectrack.producer.tracking`` sends it), so it is known at the first terminal
    write whichever events that write holds."""
    started, ended = t0 + timedelta(seconds=1), t0 + timedelta(seconds=10)
    return [
        ev(EventType.PENDING, eid, 0, report, t0, trigger_type="scheduled"),
        ev(EventType.STARTED, eid, 1, report, started, start_time=started),
        ev(EventType.PROGRESS, eid, 2, report, started, records_processed=5),
        ev(EventType.COMPLETED, eid, 3, report, ended, end_time=ended, duration_ms=9000),
    ]


async def test_racing_writers_count_each_execution_once(db: AsyncEngine, database_url: str) -> None:
    """Two writers (a rebalance's old and new owner) write overlapping halves of the same
    executions at once: a plain INSERT that meets the other's row rolls its transaction
    back (ConcurrentInsert) and the retry merges. Both count; each execution once."""
    report = f"metrics-race-{uuid.uuid4().hex[:8]}"
    t0 = datetime.now(UTC) - timedelta(hours=1)
    other = create_engine(DatabaseSettings(), url=database_url)
    writers = [
        BatchWriter(engine, RetentionPolicy(), retry_initial_s=0.01, count_terminal=True)
        for engine in (db, other)
    ]
    attempts, executions = 0, 0
    try:
        for round_ in range(12):
            halves: list[list[ExecutionEvent]] = [[], []]
            for i in range(40):
                events = lifecycle(f"race-{report}-{round_}-{i}", report, t0)
                executions += 1
                for n, event in enumerate(events):  # the terminal event to one or both
                    if (n + i) % 3 != 1:
                        halves[0].append(event)
                    if (n + i) % 3 != 0:
                        halves[1].append(event)
            outcomes = await asyncio.gather(
                *(w.write(fold_events(h), {}) for w, h in zip(writers, halves, strict=True))
            )
            attempts += sum(o.attempts for o in outcomes)
    finally:
        await other.dispose()
    assert attempts > 24, "no transaction was rolled back: the test did not test the race"
    assert terminal_series([report]) == Counter({(report, "completed", "scheduled"): executions})
    assert histogram(report) == (executions, 9.0 * executions)


@pytest.mark.usefixtures("refusing_trigger")
async def test_refused_rows_and_rolled_back_halves_count_nothing(db: AsyncEngine) -> None:
    """A batch with a row the database refuses is bisected: the transactions holding the
    refused row roll back, the others commit. The committed executions count once, the
    refused one never."""
    report = f"metrics-refused-{uuid.uuid4().hex[:8]}"
    t0 = datetime.now(UTC) - timedelta(hours=1)
    ids = [f"ok-{report}-{i}" for i in range(9)] + [f"poison-{report}"]
    events = [e for eid in ids for e in lifecycle(eid, report, t0)]
    writer = BatchWriter(db, RetentionPolicy(), retry_initial_s=0.01, count_terminal=True)
    outcome = await writer.write(fold_events(events), {})
    assert outcome.poisoned_executions == [f"poison-{report}"]
    assert outcome.attempts > 2  # the whole batch and halves with the poison were rolled back
    assert terminal_series([report]) == Counter({(report, "completed", "scheduled"): 9})
    assert histogram(report) == (9, 81.0)
