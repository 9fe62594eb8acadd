"""Known executions for the read side's HTTP tests, written through the real fold and writer.

``SEED`` says what each execution is; tests compute what they expect from it,
independently of the queries under test.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from exectrack.consumer.ingest.fold import fold_events
from exectrack.consumer.ingest.writer import BatchWriter
from exectrack.consumer.retention.policy import RetentionPolicy
from exectrack.producer.events import EventType, ExecutionEvent, execution_event


@dataclass(frozen=True)
class Run:
    """One execution: its id, report, final status, and when (minutes before now) it began."""

    execution_id: str
    report_id: str
    status: str
    began_min_ago: float
    duration_s: float | None = None
    trigger: str = "scheduled"
    records: int | None = None
    error: dict[str, Any] | None = field(default=None)


SEED: tuple[Run, ...] = (
    Run("exe-a1", "daily-costs", "completed", 180, 42.0, records=1200),
    Run("exe-a2", "daily-costs", "completed", 120, 61.0, records=1300),
    Run("exe-a3", "daily-costs", "failed", 90, 12.0, "manual",
        error={"message": "quota exceeded on the billing API", "code": "QUOTA"}),
    Run("exe-a4", "daily-costs", "running", 3, records=250),
    Run("exe-b1", "vpc-inventory", "completed", 150, 300.0, "api", records=88),
    Run("exe-b2", "vpc-inventory", "timeout", 100, 900.0),
    Run("exe-b3", "vpc-inventory", "pending", 60),  # silent for an hour: stuck
    Run("exe-c1", "iam-audit", "cancelled", 30, 5.0, "webhook"),
)  # fmt: skip

TERMINAL_EVENT = {
    "completed": EventType.COMPLETED,
    "failed": EventType.FAILED,
    "timeout": EventType.TIMED_OUT,
    "cancelled": EventType.CANCELLED,
}


def events_of(run: Run, now: datetime) -> list[ExecutionEvent]:
    """The lifecycle events that leave ``run``'s row as described."""
    t0 = now - timedelta(minutes=run.began_min_ago)
    common = {"execution_id": run.execution_id, "report_id": run.report_id, "source": "/tests"}
    events = [
        execution_event(
            EventType.PENDING, **common, id=f"{run.execution_id}-0", sequence=0, time=t0,
            trigger_type=run.trigger, started_by=7,
        )
    ]  # fmt: skip
    if run.status == "pending":
        return events
    start = t0 + timedelta(seconds=1)
    events.append(
        execution_event(
            EventType.STARTED, **common, id=f"{run.execution_id}-1", sequence=1, time=start,
            start_time=start, execution_parameters={"region": "eu-west-1"},
        )
    )  # fmt: skip
    if run.status == "running":
        events.append(
            execution_event(
                EventType.PROGRESS, **common, id=f"{run.execution_id}-2", sequence=2,
                time=start + timedelta(seconds=5), records_processed=run.records,
            )
        )  # fmt: skip
        return events
    assert run.duration_s is not None
    end = start + timedelta(seconds=run.duration_s)
    fields: dict[str, Any] = {"end_time": end, "duration_ms": int(run.duration_s * 1000)}
    if run.records is not None:
        fields["records_processed"] = run.records
    if run.error is not None:
        fields["error_details"] = run.error
    events.append(
        execution_event(
            TERMINAL_EVENT[run.status], **common, id=f"{run.execution_id}-9", sequence=9,
            time=end, **fields,
        )
    )  # fmt: skip
    return events


async def write_runs(engine: AsyncEngine, runs: tuple[Run, ...], now: datetime) -> None:
    """Fold ``runs``' events and write them through the consumer's writer."""
    events = [e for run in runs for e in events_of(run, now)]
    await BatchWriter(engine, RetentionPolicy()).write(fold_events(events), {})


async def seed(engine: AsyncEngine) -> datetime:
    """Write ``SEED`` relative to now; returns that now (UTC)."""
    now = datetime.now(UTC).replace(microsecond=0)
    await write_runs(engine, SEED, now)
    return now


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


HOSTILE_IDS: tuple[str, ...] = (
    "zz/../one-only",  # a spoof: the browser resolved it to /executions/one-only
    "a/b/../c",
    "a/b",
    "/leading",
    "trailing/",
    "..",
    ".",
    "%",
    "%2F",
    "100%25",
    "?x=1",
    "#top",
    "a?b#c&d=e",
    "r&next=//evil.example",
    "a+b=c;d",
    "team/daily costs",
    "<script>alert(1)</script>",
    "\"quoted\" 'single'",
    "café/日本語/😀",
    "bidi\u202egnp.exe",  # a right-to-left override: shows as "bidiexe.png" when obeyed
    "\u200fmarks\u2067iso\u2069\u200e",
    "rows",
)
"""Ids the contract accepts (1..255 characters, no edge white space) that a URL must carry
whole: separators, dot segments, percent signs, markup, non-ASCII, bidi controls."""
DECOYS: tuple[Run, ...] = (
    Run("one-only", "one-only", "completed", 20, 1.0),
    Run("c", "c", "completed", 20, 1.0),
    Run("a", "a", "completed", 20, 1.0),
)
"""The executions a mis-resolved hostile id would open instead."""


def hostile_runs() -> tuple[Run, ...]:
    """One failed execution per ``HOSTILE_IDS`` id, its report id the same string, and
    ``DECOYS``. Failed with an end time and a duration, so every view lists them."""
    hostile = tuple(
        Run(x, x, "failed", 10, 2.0, error={"message": {"code": 7, "what": x}, "code": "X"})
        for x in HOSTILE_IDS
    )
    return hostile + DECOYS


def failed_without_end_time(execution_id: str, now: datetime) -> list[ExecutionEvent]:
    """``pending`` then ``failed`` a minute ago with error details and no ``end_time``
    (the contract allows it; the fold leaves ``end_time`` NULL)."""
    common = {"execution_id": execution_id, "report_id": "daily-costs", "source": "/tests"}
    return [
        execution_event(EventType.PENDING, **common, id=f"{execution_id}-0", sequence=0,
                        time=now - timedelta(minutes=5)),
        execution_event(EventType.FAILED, **common, id=f"{execution_id}-9", sequence=9,
                        time=now - timedelta(minutes=1), error_details={"message": "no end"}),
    ]  # fmt: skip


def huge_duration(now: datetime) -> list[ExecutionEvent]:
    """Execution ``exe-huge`` of report ``huge``: ``pending`` 9 minutes ago, then
    ``completed`` a minute ago with ``duration_ms`` = 2**63 - 1 (the largest BIGINT)."""
    common = {"execution_id": "exe-huge", "report_id": "huge", "source": "/tests"}
    return [
        execution_event(EventType.PENDING, **common, id="h0", sequence=0,
                        time=now - timedelta(minutes=9)),
        execution_event(EventType.COMPLETED, **common, id="h9", sequence=9,
                        time=now - timedelta(minutes=1), end_time=now - timedelta(minutes=1),
                        duration_ms=2**63 - 1),
    ]  # fmt: skip


async def write_events(engine: AsyncEngine, events: list[ExecutionEvent]) -> None:
    """Fold ``events`` and write them through the consumer's writer."""
    await BatchWriter(engine, RetentionPolicy()).write(fold_events(events), {})
