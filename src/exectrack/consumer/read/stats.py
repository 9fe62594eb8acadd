"""Per-report statistics and duration series: nearest-rank percentiles by window functions.

Part of the read side's queries (exectrack.consumer.read.queries re-exports
everything here). Portable to MySQL 8.0 and MariaDB 10.11: ``ROW_NUMBER()`` and
``COUNT(*) OVER (PARTITION BY ...)`` rank the durations, and the nearest-rank
percentile is picked by ``CASE``; ``PERCENTILE_CONT`` exists only in MariaDB.

Nearest rank: of n values sorted ascending, the p-th percentile is the value at
1-based rank ``ceil(p * n)``, computed as ``(n * percent + 99) DIV 100`` (exact
integer arithmetic). It is always one of the values, never interpolated
(docs/read/queries.md, "Percentiles").
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import (
    ColumnElement,
    Select,
    Subquery,
    bindparam,
    case,
    func,
    literal_column,
    select,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from exectrack.consumer.db.repository import EXECUTIONS as E
from exectrack.consumer.db.repository import REPORTS as R
from exectrack.consumer.db.types import UtcTimestamp
from exectrack.consumer.errors import BadQuery
from exectrack.producer.events import TERMINAL_STATUSES, ExecutionStatus

__all__ = ["MAX_BUCKETS", "DurationBucket", "ReportStats", "duration_series", "report_stats"]

MAX_BUCKETS = 10_000
"""The most buckets ``duration_series`` computes in one call."""


class ReportStats(BaseModel):
    """One report's executions created in a window (``report_stats``).

    ``counts``: executions by status (every status present, 0 included);
    ``total``: their sum; ``success_rate``: completed / terminal (completed,
    failed, cancelled, timeout), None when none is terminal; duration
    percentiles and maximum over the executions with a ``duration_ms`` (any
    status), nearest-rank (``percentile``), None when none has one;
    ``records_processed``: the sum (NULLs count 0); ``records_reported``: how many
    executions reported a ``records_processed`` (0: the sum means "none said").
    """

    model_config = ConfigDict(frozen=True)

    report_id: str
    name: str | None
    counts: dict[ExecutionStatus, int]
    total: int
    success_rate: float | None
    duration_p50_ms: int | None
    duration_p95_ms: int | None
    duration_max_ms: int | None
    records_processed: int
    records_reported: int = 0


class DurationBucket(BaseModel):
    """One bucket of ``duration_series``: ``[start, start + bucket_s)`` by ``end_time``.

    ``count``: executions that ended in it with a ``duration_ms``; ``p50_ms``/
    ``p95_ms``: nearest-rank percentiles of their durations (milliseconds).
    """

    model_config = ConfigDict(frozen=True)

    start: datetime
    count: int
    p50_ms: int
    p95_ms: int


def _window(since: datetime, until: datetime) -> None:
    for name, value in (("since", since), ("until", until)):
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise BadQuery(name, f"{value!r} is not an aware datetime")
    if until <= since:
        raise BadQuery("until", f"{until.isoformat()} is not after since ({since.isoformat()})")


def _nearest_rank(percent: int, n: ColumnElement[int]) -> ColumnElement[int]:
    """``ceil(percent / 100 * n)`` in integer arithmetic (exact: no float rounding)."""
    return (n * percent + 99).self_group().op("DIV")(100)


def _percentiles(ranked: Subquery, group: ColumnElement[Any]) -> Select[Any]:
    """p50, p95, max and count of ``ranked.c.d`` per ``group`` (``ranked``: d, rn, n)."""
    d, rn, n = ranked.c.d, ranked.c.rn, ranked.c.n
    return select(
        group,
        func.count().label("count"),
        func.max(case((rn == _nearest_rank(50, n), d))).label("p50"),
        func.max(case((rn == _nearest_rank(95, n), d))).label("p95"),
        func.max(d).label("max"),
    ).group_by(group)


async def report_stats(
    engine: AsyncEngine,
    *,
    since: datetime,
    until: datetime,
    report_id: str | None = None,
) -> list[ReportStats]:
    """Statistics per report of the executions created in ``[since, until)``.

    "Created" is ``created_at``, the execution's first event time. One
    ``ReportStats`` per report with at least one such execution (only
    ``report_id`` when given), ordered by ``report_id``.

    Percentiles are nearest-rank: of the n durations sorted ascending, the p-th
    percentile is the value at 1-based rank ``ceil(p * n)`` (p50: ``ceil(n/2)``,
    p95: ``ceil(0.95 n)``); always one of the values, never interpolated.
    Computed with ``ROW_NUMBER()``/``COUNT(*) OVER (PARTITION BY report_id)``
    (MySQL 8.0 and MariaDB 10.11; ``PERCENTILE_CONT`` is MariaDB's only).

    Raises:
        BadQuery: ``since``/``until`` naive, or ``until <= since``.
    """
    _window(since, until)
    where = [E.c.created_at >= since, E.c.created_at < until]
    if report_id is not None:
        where.append(E.c.report_id == report_id)
    counts = (
        select(
            E.c.report_id,
            E.c.status,
            func.count().label("n"),
            func.coalesce(func.sum(E.c.records_processed), 0).label("records"),
            func.count(E.c.records_processed).label("reported"),
        )
        .where(*where)
        .group_by(E.c.report_id, E.c.status)
    )
    ranked = (
        select(
            E.c.report_id.label("g"),
            E.c.duration_ms.label("d"),
            func.row_number()
            .over(partition_by=E.c.report_id, order_by=E.c.duration_ms)
            .label("rn"),
            func.count().over(partition_by=E.c.report_id).label("n"),
        )
        .where(*where, E.c.duration_ms.is_not(None))
        .subquery()
    )
    async with engine.connect() as conn:
        count_rows = (await conn.execute(counts)).all()
        durations = {r.g: r for r in (await conn.execute(_percentiles(ranked, ranked.c.g))).all()}
        ids = sorted({r.report_id for r in count_rows})
        names: dict[str, str] = {}
        if ids:
            query = select(R.c.report_id, R.c.name).where(R.c.report_id.in_(ids))
            names = {row.report_id: row.name for row in (await conn.execute(query)).all()}
    return [_stats(rid, count_rows, durations.get(rid), names.get(rid)) for rid in ids]


def _stats(report_id: str, count_rows: Sequence[Any], dur: Any, name: str | None) -> ReportStats:
    counts = dict.fromkeys(ExecutionStatus, 0)
    records = reported = 0
    for row in count_rows:
        if row.report_id == report_id:
            counts[ExecutionStatus(row.status)] = int(row.n)
            records += int(row.records)
            reported += int(row.reported)
    terminal = sum(counts[s] for s in TERMINAL_STATUSES)
    return ReportStats(
        report_id=report_id,
        name=name,
        counts=counts,
        total=sum(counts.values()),
        success_rate=counts[ExecutionStatus.COMPLETED] / terminal if terminal else None,
        duration_p50_ms=None if dur is None else int(dur.p50),
        duration_p95_ms=None if dur is None else int(dur.p95),
        duration_max_ms=None if dur is None else int(dur.max),
        records_processed=records,
        records_reported=reported,
    )


async def duration_series(
    engine: AsyncEngine,
    report_id: str,
    *,
    since: datetime,
    until: datetime,
    bucket_s: int,
) -> list[DurationBucket]:
    """Durations of ``report_id``'s executions that ended in ``[since, until)``, per bucket.

    Bucket k is ``[since + k*bucket_s, since + (k+1)*bucket_s)`` by ``end_time``
    (the last may reach past ``until``; only rows before ``until`` count). Only
    buckets with at least one execution with a ``duration_ms`` are returned, in
    time order. p50/p95 are nearest-rank (as ``report_stats``), per bucket.

    Raises:
        BadQuery: ``bucket_s`` not an integer >= 1, naive times, ``until <= since``,
            or more than ``MAX_BUCKETS`` buckets.
    """
    _window(since, until)
    if isinstance(bucket_s, bool) or not isinstance(bucket_s, int) or bucket_s < 1:
        raise BadQuery("bucket_s", f"{bucket_s!r} is not an integer number of seconds >= 1")
    if (until - since) / timedelta(seconds=bucket_s) > MAX_BUCKETS:
        raise BadQuery("bucket_s", f"{bucket_s}s makes more than {MAX_BUCKETS} buckets")
    start = bindparam("since", since, type_=UtcTimestamp())
    offset: ColumnElement[int] = func.timestampdiff(
        literal_column("MICROSECOND"), start, E.c.end_time
    )
    bucket = offset.self_group().op("DIV")(bucket_s * 1_000_000)
    ranked = (
        select(
            bucket.label("g"),
            E.c.duration_ms.label("d"),
            func.row_number().over(partition_by=bucket, order_by=E.c.duration_ms).label("rn"),
            func.count().over(partition_by=bucket).label("n"),
        )
        .where(
            E.c.report_id == report_id,
            E.c.end_time >= since,
            E.c.end_time < until,
            E.c.duration_ms.is_not(None),
        )
        .subquery()
    )
    query = _percentiles(ranked, ranked.c.g).order_by(ranked.c.g)
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return [
        DurationBucket(
            start=since + int(r.g) * timedelta(seconds=bucket_s),
            count=int(r.count),
            p50_ms=int(r.p50),
            p95_ms=int(r.p95),
        )
        for r in rows
    ]
