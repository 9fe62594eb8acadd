"""The read side's queries: list, detail, statistics, duration series, stuck executions.

Every function takes an ``AsyncEngine`` first and returns pydantic v2 models (the
HTTP API serves them as they are). Portable to MySQL 8.0 and MariaDB 10.11:
window functions yes, ``PERCENTILE_CONT`` no (MariaDB only); every value reaches
SQL as a bound parameter. Bad arguments raise ``BadQuery`` (a ``ValueError``,
exectrack.consumer.errors) whose ``argument`` names the argument; a cursor this
module did not issue raises ``BadCursor`` (``argument == "cursor"``).

Times are aware datetimes; every range is half-open ``[from, to)``.
Percentiles are nearest-rank (``percentile``): docs/read/queries.md.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, get_args

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, computed_field
from sqlalchemy.ext.asyncio import AsyncEngine

from exectrack.producer.events import ExecutionStatus, ReportCategory, ReportType, TriggerType

__all__ = [
    "MAX_LIMIT",
    "SORT_KEYS",
    "DurationBucket",
    "ExecutionDetail",
    "ExecutionFilter",
    "ExecutionPage",
    "ExecutionSummary",
    "FieldSource",
    "ReportStats",
    "SortKey",
    "duration_series",
    "get_execution",
    "list_executions",
    "report_stats",
    "stuck_executions",
]

SortKey = Literal["last_event_at", "created_at", "start_time", "end_time", "duration_ms"]
SORT_KEYS: tuple[str, ...] = get_args(SortKey)
MAX_LIMIT = 500
"""The largest page ``list_executions`` and ``stuck_executions`` return."""
STUCK_STATUSES = (ExecutionStatus.PENDING, ExecutionStatus.RUNNING)


class ExecutionFilter(BaseModel):
    """Which executions a list holds: every given criterion must hold (AND).

    A list criterion holds when the row's value is one of the list (an empty list:
    no criterion). ``report_type``/``category`` are the report's (``reports``).
    Time ranges are half-open, ``[x_from, x_to)``, on ``created_at`` (the
    execution's first event time), ``start_time`` and ``end_time``; an execution
    without a start/end time never matches a start/end range.
    ``stuck_for_s``: pending or running with no event for longer than this many
    seconds (``last_event_at < now - stuck_for_s``, the database's clock).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    status: list[ExecutionStatus] = Field(default_factory=list)
    report_id: list[str] = Field(default_factory=list)
    report_type: ReportType | None = None
    category: ReportCategory | None = None
    trigger_type: list[TriggerType] = Field(default_factory=list)
    started_by: int | None = None
    created_from: AwareDatetime | None = None
    created_to: AwareDatetime | None = None
    started_from: AwareDatetime | None = None
    started_to: AwareDatetime | None = None
    ended_from: AwareDatetime | None = None
    ended_to: AwareDatetime | None = None
    stuck_for_s: float | None = Field(default=None, gt=0)


class ExecutionSummary(BaseModel):
    """One row of a list: the columns people scan (``report_executions``, docs/schema.md).

    Times are aware UTC; ``duration_ms`` in milliseconds; None where no event said.
    """

    model_config = ConfigDict(frozen=True)

    id: int
    execution_id: str
    report_id: str
    status: ExecutionStatus
    trigger_type: TriggerType | None
    started_by: int | None
    start_time: datetime | None
    end_time: datetime | None
    duration_ms: int | None
    records_processed: int | None
    created_at: datetime
    last_event_at: datetime


class ExecutionPage(BaseModel):
    """A page of ``list_executions``: its rows, and the cursor of the next page (None: the end)."""

    model_config = ConfigDict(frozen=True)

    items: list[ExecutionSummary]
    next_cursor: str | None


class FieldSource(BaseModel):
    """The event that supplied a field's value: its order key (CONTRACT.md, "The fold").

    ``rank``: 0 pending, 1 started/progress, 2 terminal (``stage`` says it in words);
    ``sequence``: the event's ``data.sequence`` (-1 when it had none); ``time``:
    the event's ``time``.
    """

    model_config = ConfigDict(frozen=True)

    event_id: str
    rank: int
    sequence: int
    time: datetime

    @computed_field  # type: ignore[prop-decorator]
    @property
    def stage(self) -> str:
        """``pending``, ``running`` or ``terminal``: the kind of event ``rank`` stands for."""
        return ("pending", "running", "terminal")[self.rank] if 0 <= self.rank <= 2 else "?"


class ExecutionDetail(ExecutionSummary):
    """Every column of an execution, and which event supplied each field (``provenance``).

    ``provenance`` maps a field name (and ``status``) to its ``FieldSource``,
    decoded from ``fold_keys``: what ``exectrack-consumer status ID`` shows.
    """

    output_size_bytes: int | None
    execution_parameters: dict[str, Any] | None
    result_summary: dict[str, Any] | None
    error_details: dict[str, Any] | None
    output_location: str | None
    retention_until: datetime | None
    provenance: dict[str, FieldSource]


class ReportStats(BaseModel):
    """One report's executions created in a window (``report_stats``).

    ``counts``: executions by status (every status present, 0 included);
    ``total``: their sum; ``success_rate``: completed / terminal (completed,
    failed, cancelled, timeout), None when none is terminal; duration
    percentiles and maximum over the executions with a ``duration_ms`` (any
    status), nearest-rank (``percentile``), None when none has one;
    ``records_processed``: the sum (NULLs count 0).
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


async def list_executions(
    engine: AsyncEngine,
    flt: ExecutionFilter,
    *,
    sort: SortKey = "last_event_at",
    descending: bool = True,
    limit: int = 50,
    cursor: str | None = None,
) -> ExecutionPage:
    """A page of the executions ``flt`` selects, in ``sort`` order, keyset-paginated.

    Arguments:
        sort: one of ``SORT_KEYS``; ties (and NULLs: a row without a start/end
            time or duration) are ordered by ``id``, the same direction, so the
            order is total and pages are stable under ties. NULLs come first
            ascending and last descending (MySQL's order of NULL).
        descending: newest (largest) first when true.
        limit: rows a page, 1..``MAX_LIMIT``.
        cursor: the ``next_cursor`` of the page before (opaque, base64url of the
            last row's sort value and ``id``), or None for the first page. A
            cursor only continues the sort and direction that issued it.

    Returns the page and ``next_cursor`` (None when this page is the last).
    Concatenated pages hold every selected row exactly once while the rows do not
    change; a row whose sort value changes between two pages may move.

    Raises:
        BadQuery: ``sort`` or ``limit`` out of domain (``argument`` names it).
        BadCursor: ``cursor`` malformed or issued for another sort/direction.
    """
    raise NotImplementedError


async def get_execution(engine: AsyncEngine, execution_id: str) -> ExecutionDetail | None:
    """The execution ``execution_id`` (exact, byte-wise match) with its provenance, or None."""
    raise NotImplementedError


async def report_stats(
    engine: AsyncEngine,
    *,
    since: datetime,
    until: datetime,
    report_id: str | None = None,
) -> list[ReportStats]:
    """Statistics per report of the executions created in ``[since, until)``.

    One ``ReportStats`` per report with at least one such execution (only
    ``report_id`` when given), ordered by ``report_id``. Percentiles are
    nearest-rank: of the n durations sorted ascending, the p-th percentile is
    the value at 1-based rank ``ceil(p * n)`` (p50: ``ceil(n/2)``, p95:
    ``ceil(0.95 n)``); always one of the values, never interpolated.

    Raises:
        BadQuery: ``since``/``until`` naive, or ``until <= since``.
    """
    raise NotImplementedError


async def duration_series(
    engine: AsyncEngine,
    report_id: str,
    *,
    since: datetime,
    until: datetime,
    bucket_s: int,
) -> list[DurationBucket]:
    """Durations of ``report_id``'s executions that ended in ``[since, until)``, per bucket.

    Buckets are ``bucket_s`` seconds from ``since`` (the last may end after
    ``until``; only rows before ``until`` count); only buckets with at least one
    execution with a ``duration_ms`` are returned, in time order. p50/p95 are
    nearest-rank (as ``report_stats``).

    Raises:
        BadQuery: ``bucket_s`` < 1, naive times, ``until <= since``, or more than
            10,000 buckets.
    """
    raise NotImplementedError


async def stuck_executions(
    engine: AsyncEngine, *, older_than_s: float, limit: int = 50
) -> list[ExecutionSummary]:
    """Pending or running executions with no event for more than ``older_than_s`` seconds.

    The longest silent first (``last_event_at`` ascending, then ``id``), at most
    ``limit`` (1..``MAX_LIMIT``). Same rows as ``list_executions`` with
    ``ExecutionFilter(stuck_for_s=older_than_s)`` sorted ascending.

    Raises:
        BadQuery: ``older_than_s`` <= 0 or ``limit`` out of 1..``MAX_LIMIT``.
    """
    raise NotImplementedError
