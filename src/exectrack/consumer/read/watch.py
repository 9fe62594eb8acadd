"""A live view of the table for people: counts by status and the latest executions.

Optionally of the executions an ``ExecutionFilter`` selects (exectrack.consumer.read.queries).
"""

from __future__ import annotations

import asyncio
from typing import Any

from rich.console import Group
from rich.live import Live
from rich.table import Table
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from exectrack.consumer.db.repository import EXECUTIONS
from exectrack.consumer.read.queries import ExecutionFilter, filter_query, resolve_reports

NO_FILTER = ExecutionFilter()


async def snapshot(
    engine: AsyncEngine, latest: int = 8, flt: ExecutionFilter = NO_FILTER
) -> tuple[dict[str, int], list[Any]]:
    """Read what the view shows, in one connection: the executions ``flt`` selects.

    Returns:
        ``(counts, recent)``: those rows of ``report_executions`` per status, and
        the ``latest`` of them by ``last_event_at`` (newest first, then ``id``) as
        rows of (execution_id, report_id, status, records_processed, duration_ms,
        last_event_at).
    """
    e = EXECUTIONS.c
    async with engine.connect() as conn:
        resolved = await resolve_reports(conn, flt)
        if resolved is None:
            return {}, []
        flt = resolved
        by_status = filter_query(select(e.status, func.count()), flt).group_by(e.status)
        counts: dict[Any, Any] = dict((await conn.execute(by_status)).all())
        columns = (e.execution_id, e.report_id, e.status, e.records_processed, e.duration_ms)
        newest = filter_query(select(*columns, e.last_event_at), flt)
        newest = newest.order_by(e.last_event_at.desc(), e.id.desc()).limit(latest)
        recent = (await conn.execute(newest)).all()
    return {str(k): int(v) for k, v in counts.items()}, list(recent)


def render(counts: dict[str, int], recent: list[Any]) -> Group:
    """Two rich tables from ``snapshot``'s result: counts by status, then the latest events."""
    summary = Table(title=f"report_executions: {sum(counts.values())} rows")
    for status in counts:
        summary.add_column(status, justify="right")
    summary.add_row(*(str(n) for n in counts.values()))
    latest = Table(title="latest events")
    for name in (
        "execution_id",
        "report_id",
        "status",
        "records",
        "duration_ms",
        "last event (UTC)",
    ):
        latest.add_column(name)
    for row in recent:
        latest.add_row(
            *(str(v) if v is not None else "" for v in row[:5]), row[5].strftime("%H:%M:%S.%f")
        )
    return Group(summary, latest)


async def watch(
    engine: AsyncEngine,
    *,
    interval_s: float,
    duration_s: float | None,
    until_idle_s: float | None,
    flt: ExecutionFilter = NO_FILTER,
) -> dict[str, int]:
    """Refresh until ``duration_s`` passed, or the table stopped changing for
    ``until_idle_s`` (after the first row), or cancellation; return the last counts.

    Only the executions ``flt`` selects are counted and shown (as
    ``exectrack-consumer list`` with the same options)."""
    loop = asyncio.get_running_loop()
    ends = None if duration_s is None else loop.time() + duration_s
    counts: dict[str, int] = {}
    last_change, last_seen = loop.time(), None
    with Live(refresh_per_second=4) as live:
        while ends is None or loop.time() < ends:
            counts, recent = await snapshot(engine, flt=flt)
            live.update(render(counts, recent))
            seen = (tuple(counts.items()), tuple(recent[:1]))
            if seen != last_seen:
                last_seen, last_change = seen, loop.time()
            elif until_idle_s is not None and counts and loop.time() - last_change >= until_idle_s:
                break
            await asyncio.sleep(interval_s)
    return counts
