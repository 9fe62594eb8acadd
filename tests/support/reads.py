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

from sqlalchemy import insert, text
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
            within(row["last_event_at"], flt.last_event_from, flt.last_event_to),
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


def expected_stats(
    rows: Sequence[dict[str, Any]], since: datetime, until: datetime
) -> dict[str, dict[str, Any]]:
    """What ``report_stats`` must return for ``rows`` created in ``[since, until)``, by report."""
    out: dict[str, dict[str, Any]] = {}
    names = {r["report_id"]: r["name"] for r in REPORT_ROWS}
    for row in rows:
        if not since <= row["created_at"] < until:
            continue
        stats = out.setdefault(
            row["report_id"], {"counts": dict.fromkeys(S, 0), "d": [], "r": 0, "n": 0}
        )
        stats["counts"][row["status"]] += 1
        stats["r"] += row["records_processed"] or 0
        stats["n"] += row["records_processed"] is not None
        if row["duration_ms"] is not None:
            stats["d"].append(row["duration_ms"])
    result = {}
    for rid, stats in out.items():
        counts, durations = stats["counts"], stats["d"]
        terminal = sum(counts[s] for s in TERMINAL_STATUSES)
        result[rid] = {
            "report_id": rid, "name": names[rid], "counts": counts,
            "total": sum(counts.values()),
            "success_rate": counts[S.COMPLETED] / terminal if terminal else None,
            "duration_p50_ms": nearest_rank(durations, 50) if durations else None,
            "duration_p95_ms": nearest_rank(durations, 95) if durations else None,
            "duration_max_ms": max(durations) if durations else None,
            "records_processed": stats["r"], "records_reported": stats["n"],
        }  # fmt: skip
    return result


def nearest_rank(values: Sequence[int], percent: int) -> int:
    """The nearest-rank percentile: the ``ceil(percent/100 * n)``-th smallest (1-based)."""
    ordered_values = sorted(values)
    rank = math.ceil(Fraction(percent, 100) * len(ordered_values))
    return ordered_values[max(rank, 1) - 1]


STATUS_MIX = (
    [S.COMPLETED] * 80 + [S.FAILED] * 8 + [S.CANCELLED] * 2 + [S.TIMEOUT] * 2
    + [S.RUNNING] * 4 + [S.PENDING] * 4
)  # fmt: skip
REPORTS_MANY = 50
SEED_ROWS = 1024


async def load_many(engine: AsyncEngine, rows: int, now: datetime) -> int:
    """Fill an empty, migrated database with at least ``rows`` executions; return how many.

    ``SEED_ROWS`` rows from Python (statuses in ``STATUS_MIX``'s proportions),
    then copies of them by ``INSERT ... SELECT`` (``_COPY``): each copy gets a
    new execution_id, a report among ``REPORTS_MANY`` and times moved back by an
    amount derived from its id (spread over a year before ``now``), so values
    stay varied. Ends with ``ANALYZE TABLE`` so the optimizer's statistics
    describe the rows.
    """
    year = 365 * 86400
    async with engine.begin() as conn:
        await conn.execute(insert(USERS), [{"id": i, "username": f"u{i}"} for i in range(1, 11)])
        await conn.execute(insert(REPORTS), [
            {"report_id": f"rep-{i:02d}", "name": f"Report {i}",
             "report_type": ("vpc_inventory", "security_group_audit", "cost_allocation")[i % 3],
             "category": ("infrastructure", "security", "cost", "compliance")[i % 4]}
            for i in range(REPORTS_MANY)
        ])  # fmt: skip
        seeded = []
        for i in range(SEED_ROWS):
            status = STATUS_MIX[(i * 37) % len(STATUS_MIX)]
            created = now - timedelta(seconds=(i * 7919) % year)
            started = None if status == S.PENDING else created + timedelta(seconds=2)
            ended = started + timedelta(seconds=30 + i % 600) if (
                started is not None and status in TERMINAL_STATUSES
            ) else None  # fmt: skip
            seeded.append({
                "execution_id": f"m{i}", "report_id": f"rep-{i % REPORTS_MANY:02d}",
                "status": status, "trigger_type": list(TriggerType)[i % 4],
                "started_by": 1 + i % 10, "start_time": started, "end_time": ended,
                "duration_ms": None if ended is None else (30 + i % 600) * 1000,
                "records_processed": i % 1000, "created_at": created,
                "last_event_at": ended or started or created, "fold_keys": {"k": [], "f": {}},
            })  # fmt: skip
        await conn.execute(insert(EXECUTIONS), seeded)
    copies = -(-rows // SEED_ROWS)  # the seed rows and copies 1 .. copies - 1
    async with engine.begin() as conn:
        for statement in _PREPARE:
            await conn.execute(text(statement))
        numbers = 1
        while numbers < copies:  # 1, 2, 4 ...: the numbers table doubles
            await conn.execute(text(_DOUBLE_NUMBERS), {"c": numbers})
            numbers *= 2
    for low in range(1, copies, 128):  # about 130,000 rows a statement
        async with engine.begin() as conn:
            values = {"low": low, "high": min(low + 127, copies - 1)}
            await conn.execute(text(_COPY), {**values, "reports": REPORTS_MANY, "year": year})
    async with engine.begin() as conn:
        await conn.execute(text("DROP TABLE load_seed, load_numbers"))
        await conn.exec_driver_sql("ANALYZE TABLE report_executions")
    return copies * SEED_ROWS


# The seed rows copied into a table of their own, and the numbers 1, 2, ... 2^k
# (INSERT ... SELECT doubling): the copies are INSERT ... SELECT from their cross
# product, never from report_executions itself (MariaDB would stage such a
# self-referencing INSERT in a temporary table on disk).
_PREPARE = (
    "CREATE TABLE load_seed AS SELECT * FROM report_executions",
    "CREATE TABLE load_numbers (n INT PRIMARY KEY)",
    "INSERT INTO load_numbers VALUES (1)",
)
_DOUBLE_NUMBERS = "INSERT INTO load_numbers SELECT n + :c FROM load_numbers"
# copy k of a seed row: a new execution_id and report, times moved back by up to a
# year (a function of id and k), so values stay varied
_COPY = """
INSERT INTO report_executions (execution_id, report_id, status, trigger_type, started_by,
    start_time, end_time, duration_ms, records_processed, created_at, last_event_at, fold_keys)
SELECT CONCAT(s.execution_id, '.', k.n), CONCAT('rep-', LPAD((s.id * 31 + k.n) % :reports, 2, '0')),
    s.status, s.trigger_type, s.started_by,
    s.start_time - INTERVAL ((s.id * 104729 + k.n * 7919) % :year) SECOND,
    s.end_time - INTERVAL ((s.id * 104729 + k.n * 7919) % :year) SECOND,
    s.duration_ms + (s.id * k.n) % 1000, s.records_processed,
    s.created_at - INTERVAL ((s.id * 104729 + k.n * 7919) % :year) SECOND,
    s.last_event_at - INTERVAL ((s.id * 104729 + k.n * 7919) % :year) SECOND, s.fold_keys
FROM load_seed AS s CROSS JOIN load_numbers AS k
WHERE k.n BETWEEN :low AND :high
"""
