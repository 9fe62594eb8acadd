"""Each list query shape uses an index on a large table (EXPLAIN on the real server).

The rows come from ``load_many`` (INSERT ... SELECT doublings, in a database of
their own). The default suite loads 131,072 rows; the ``slow`` variant loads
1,048,576 (measured ~100 s on the 2-core CI machine, over the ~60 s a default test may take).
Each query is captured as ``list_executions`` sends it (statement and bound
parameters, from the engine's ``before_cursor_execute``), then EXPLAINed with the
same parameters: every row of the plan that reads ``report_executions`` must
name a ``key`` and must not be a full scan (``type`` ``ALL``).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from exectrack.consumer.db import migrate
from exectrack.consumer.db.engine import create_engine
from exectrack.consumer.read.queries import (
    DEFAULT_SORT,
    ExecutionFilter,
    list_executions,
    stuck_executions,
)
from exectrack.consumer.settings import DatabaseSettings
from exectrack.producer.events import ExecutionStatus, ReportType, TriggerType
from tests.conftest import MakeDatabase
from tests.support.reads import load_many

NOW = datetime.now(UTC)
FROM, TO = NOW - timedelta(days=40), NOW - timedelta(days=30)  # ~1,000 of 100,000 rows
S = ExecutionStatus
SHAPES: dict[str, tuple[ExecutionFilter, str]] = {
    "default sort": (ExecutionFilter(), DEFAULT_SORT),
    "newest event": (ExecutionFilter(), "last_event_at"),
    "by status, default sort": (ExecutionFilter(status=[S.FAILED]), DEFAULT_SORT),
    "by several statuses, default sort": (
        ExecutionFilter(status=[S.FAILED, S.TIMEOUT]),
        DEFAULT_SORT,
    ),
    "by status": (ExecutionFilter(status=[S.FAILED]), "last_event_at"),
    "by several statuses": (ExecutionFilter(status=[S.FAILED, S.TIMEOUT]), "last_event_at"),
    "by report": (ExecutionFilter(report_id=["rep-07"]), "last_event_at"),
    "by report, created": (ExecutionFilter(report_id=["rep-07"]), "created_at"),
    "by time range": (ExecutionFilter(created_from=FROM, created_to=TO), "created_at"),
    "by start range": (ExecutionFilter(started_from=FROM, started_to=TO), "start_time"),
    "by end range": (ExecutionFilter(ended_from=FROM, ended_to=TO), "end_time"),
    "by end range, newest event": (ExecutionFilter(ended_from=FROM), "last_event_at"),
    "stuck": (ExecutionFilter(stuck_for_s=3600), "last_event_at"),
    "failed by last event": (
        ExecutionFilter(status=[S.FAILED, S.TIMEOUT], last_event_from=FROM),
        "last_event_at",
    ),
    "by duration": (ExecutionFilter(), "duration_ms"),
    "by trigger": (ExecutionFilter(trigger_type=[TriggerType.WEBHOOK]), "created_at"),
    "by user": (ExecutionFilter(started_by=3), "created_at"),
    "by report type": (ExecutionFilter(report_type=ReportType.COST_ALLOCATION), "last_event_at"),
}


async def plans(engine: AsyncEngine, flt: ExecutionFilter, sort: Any) -> list[list[dict[str, Any]]]:
    """EXPLAIN of the first and the second page's statements, as sent."""
    sent: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, params: Any, *rest: Any) -> None:
        if "FROM report_executions" in statement:  # not the report type's lookup
            sent.append((statement, params))

    event.listen(engine.sync_engine, "before_cursor_execute", capture)
    try:
        first = await list_executions(engine, flt, sort=sort, limit=50)
        assert first.next_cursor is not None, "the shape must select more than a page"
        await list_executions(engine, flt, sort=sort, limit=50, cursor=first.next_cursor)
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", capture)
    assert len(sent) == 2
    found = []
    async with engine.connect() as conn:
        for statement, params in sent:
            result = await conn.exec_driver_sql("EXPLAIN " + statement, params)
            found.append([dict(row._mapping) for row in result])
    return found


async def check_shapes(engine: AsyncEngine) -> dict[str, list[list[dict[str, Any]]]]:
    seen = {}
    for name, (flt, sort) in SHAPES.items():
        seen[name] = await plans(engine, flt, sort)
        for plan in seen[name]:
            for row in plan:
                if row["table"] in ("report_executions",):
                    assert row["key"] is not None, (name, plan)
                    assert row["type"] != "ALL", (name, plan)
    stuck = await stuck_executions(engine, older_than_s=3600, limit=10)
    assert len(stuck) == 10
    return seen


async def load_and_check(
    new_database: MakeDatabase, rows: int
) -> dict[str, list[list[dict[str, Any]]]]:
    url = await new_database()
    await migrate.upgrade(url)
    engine = create_engine(DatabaseSettings(), url=url)
    try:
        started = time.monotonic()
        count = await load_many(engine, rows, NOW)
        print(f"{count} rows loaded in {time.monotonic() - started:.1f} s")  # shown by -rA
        return await check_shapes(engine)
    finally:
        await engine.dispose()


async def test_every_list_shape_uses_an_index(new_database: MakeDatabase) -> None:
    seen = await load_and_check(new_database, 100_000)
    # the orders the indexes were added for are read in index order, no sort
    first_page = {name: plans[0] for name, plans in seen.items()}
    for name in ("default sort", "newest event", "by report", "by duration"):
        extra = " ".join(str(row["Extra"]) for row in first_page[name])
        assert "filesort" not in extra, (name, first_page[name])


@pytest.mark.slow
async def test_every_list_shape_uses_an_index_on_a_million_rows(new_database: MakeDatabase) -> None:
    await load_and_check(new_database, 1_000_000)
