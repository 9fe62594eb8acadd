"""Known rows for the read side's tests, and an independent Python oracle of the queries.

``seed`` inserts users, reports and executions with chosen values (direct
INSERTs: the fold is tested elsewhere; here the values must be exactly known,
ties and NULLs included). ``selected``/``ordered``/``nearest_rank`` compute what
the queries must return, without SQL.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from datetime import datetime, timedelta
from fractions import Fraction
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from exectrack.consumer.db.repository import EXECUTIONS, REPORTS, USERS
from exectrack.consumer.read.queries import ExecutionFilter
from exectrack.producer.events import TERMINAL_STATUSES, ExecutionStatus, TriggerType

S = ExecutionStatus
REPORT_ROWS: list[dict[str, Any]] = [
    {"report_id": "r-a", "name": "VPC inventory", "report_type": "vpc_inventory",
     "category": "infrastructure"},
    {"report_id": "r-b", "name": "SG audit", "report_type": "security_group_audit",
     "category": "security"},
    {"report_id": "r-c", "name": "VPC cost", "report_type": "vpc_inventory", "category": "cost"},
    {"report_id": "r-d", "name": "r-d", "report_type": None, "category": None},  # placeholder
]  # fmt: skip
STUCK_FOR_S = 3600.0
# the seeded rows sit far from the stuck boundary (now - STUCK_FOR_S): the test's
# clock and the query's differ by the test's run time
_MARGIN = timedelta(minutes=20)


def dataset(now: datetime, count: int = 240, seed: int = 15) -> list[dict[str, Any]]:
    """``count`` execution rows (without ``id``), deterministic for a ``seed``.

    Times fall on whole hours/minutes of the last ~3 days, so sort values tie
    often; start/end times and durations are NULL where an execution has none,
    and at random elsewhere, so NULLs meet every sort.
    """
    rng = random.Random(seed)
    base = (now - timedelta(days=3)).replace(minute=0, second=0, microsecond=0)
    rows = []
    statuses = [S.COMPLETED] * 5 + [S.FAILED] * 2 + [S.PENDING, S.RUNNING, S.RUNNING]
    statuses += [S.CANCELLED, S.TIMEOUT]
    for i in range(count):
        status = rng.choice(statuses)
        recent = i % 11 == 0  # some of everything inside the last hour: not stuck
        created = now - timedelta(minutes=rng.randrange(1, 30)) if recent else (
            base + timedelta(hours=rng.randrange(0, 60))
        )  # fmt: skip
        created = created.replace(second=0, microsecond=0)
        last = created + timedelta(seconds=rng.choice([0, 0, 60, 600, 1.5]))
        if abs(last - (now - timedelta(seconds=STUCK_FOR_S))) < _MARGIN:
            last -= 2 * _MARGIN
            created = min(created, last)
        start = None if status == S.PENDING or rng.random() < 0.1 else created
        duration = rng.choice([None, 1000, 1000, 2500, rng.randrange(1, 100_000)])
        terminal = status in TERMINAL_STATUSES
        rows.append({
            "execution_id": f"x{i:03d}",
            "report_id": rng.choice(REPORT_ROWS)["report_id"],
            "status": status,
            "trigger_type": rng.choice([None, *TriggerType]),
            "started_by": rng.choice([None, 1, 2, 3]),
            "start_time": start,
            "end_time": start + timedelta(minutes=rng.randrange(1, 9))
            if terminal and start is not None else None,
            "duration_ms": duration if terminal else None,
            "records_processed": rng.choice([None, 0, 10, 250]),
            "created_at": created,
            "last_event_at": last,
            "fold_keys": {"k": [], "f": {}},
        })  # fmt: skip
    return rows


async def seed(engine: AsyncEngine, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Insert the users 1..3, ``REPORT_ROWS`` and ``rows``; return the rows with their ``id``."""
    async with engine.begin() as conn:
        await conn.execute(insert(USERS), [{"id": i, "username": f"u{i}"} for i in (1, 2, 3)])
        await conn.execute(insert(REPORTS), REPORT_ROWS)
        await conn.execute(insert(EXECUTIONS), list(rows))
        ids = dict(
            (await conn.execute(EXECUTIONS.select().with_only_columns(
                EXECUTIONS.c.execution_id, EXECUTIONS.c.id
            ))).all()
        )  # fmt: skip
    return [{**row, "id": ids[row["execution_id"]]} for row in rows]


def selected(
    rows: Sequence[dict[str, Any]], flt: ExecutionFilter, now: datetime
) -> list[dict[str, Any]]:
    """The rows ``flt`` selects, by Python comparisons (half-open ranges, AND of criteria)."""
    kinds = {r["report_id"]: r for r in REPORT_ROWS}

    def within(value: datetime | None, low: datetime | None, high: datetime | None) -> bool:
        if low is None and high is None:
            return True
        return value is not None and (low is None or value >= low) and (
            high is None or value < high
        )  # fmt: skip

    def keep(row: dict[str, Any]) -> bool:
        report = kinds[row["report_id"]]
        checks = [
            not flt.status or row["status"] in flt.status,
            not flt.report_id or row["report_id"] in flt.report_id,
            not flt.trigger_type or row["trigger_type"] in flt.trigger_type,
            flt.started_by is None or row["started_by"] == flt.started_by,
            flt.report_type is None or report["report_type"] == flt.report_type,
            flt.category is None or report["category"] == flt.category,
            within(row["created_at"], flt.created_from, flt.created_to),
            within(row["start_time"], flt.started_from, flt.started_to),
            within(row["end_time"], flt.ended_from, flt.ended_to),
            flt.stuck_for_s is None or (
                row["status"] in (S.PENDING, S.RUNNING)
                and row["last_event_at"] < now - timedelta(seconds=flt.stuck_for_s)
            ),
        ]  # fmt: skip
        return all(checks)

    return [row for row in rows if keep(row)]


def ordered(rows: Sequence[dict[str, Any]], sort: str, descending: bool) -> list[str]:
    """execution_ids in ``ORDER BY sort, id`` (both DESC if ``descending``), NULL the smallest."""
    key = [(row[sort] is not None, row[sort] or 0, row["id"]) for row in rows]
    pairs = sorted(zip(key, rows, strict=True), key=lambda p: p[0], reverse=descending)
    return [row["execution_id"] for _, row in pairs]


def nearest_rank(values: Sequence[int], percent: int) -> int:
    """The nearest-rank percentile: the ``ceil(percent/100 * n)``-th smallest (1-based)."""
    ordered_values = sorted(values)
    rank = math.ceil(Fraction(percent, 100) * len(ordered_values))
    return ordered_values[max(rank, 1) - 1]
