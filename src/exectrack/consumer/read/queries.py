"""The read side's queries: list, detail, statistics, duration series, stuck executions.

Every function takes an ``AsyncEngine`` first and returns pydantic v2 models (the
HTTP API serves them as they are). Portable to MySQL 8.0 and MariaDB 10.11:
window functions yes, ``PERCENTILE_CONT`` no (MariaDB only); every value reaches
SQL as a bound parameter. Bad arguments raise ``BadQuery`` (a ``ValueError``,
exectrack.consumer.errors) whose ``argument`` names the argument; a cursor this
module did not issue raises ``BadCursor`` (``argument == "cursor"``).

Times are aware datetimes; every range is half-open ``[from, to)``.
``report_stats`` and ``duration_series`` (nearest-rank percentiles) live in
exectrack.consumer.read.stats and are re-exported here: docs/read/queries.md.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal, get_args

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, computed_field
from sqlalchemy import Column, ColumnElement, Select, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from exectrack.consumer.db.repository import EXECUTIONS as E
from exectrack.consumer.db.repository import REPORTS as R
from exectrack.consumer.errors import BadQuery
from exectrack.consumer.ingest.fold import decode_keys
from exectrack.consumer.read import cursor as _cursor
from exectrack.consumer.read.stats import (
    MAX_BUCKETS,
    DurationBucket,
    ReportStats,
    duration_series,
    report_stats,
)
from exectrack.producer.events import ExecutionStatus, ReportCategory, ReportType, TriggerType

__all__ = [
    "DEFAULT_SORT",
    "MAX_BUCKETS",
    "MAX_LIMIT",
    "MAX_SECONDS",
    "MAX_USER_ID",
    "MAX_WINDOW_S",
    "SORT_DESCRIPTION",
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
    "filter_query",
    "get_execution",
    "list_executions",
    "report_stats",
    "resolve_reports",
    "stuck_executions",
]

SortKey = Literal["last_event_at", "created_at", "start_time", "end_time", "duration_ms"]
SORT_KEYS: tuple[str, ...] = get_args(SortKey)
DEFAULT_SORT: SortKey = "created_at"
"""The default order of every list (API, CLI, web page): ``created_at`` (issue #15, break 4).

Keyset pages are exact only over a key that does not change while someone pages:
``created_at`` is the execution's earliest event time, written when its row is
first inserted and never moved by later events (only by an event stamped EARLIER
than every event seen, arriving late: a producer whose events arrive out of
order). ``last_event_at`` changes with every event, ``start_time``/``end_time``/
``duration_ms`` when the events that carry them land.
"""
SORT_DESCRIPTION = (
    "Sort key (ties by id, the same direction). created_at (the default: the first "
    "event's time) does not change as events land, so following next_cursor lists every "
    "row exactly once. last_event_at changes with every event, and start_time, end_time "
    "and duration_ms when the events carrying them land: pages over those keys may skip a "
    "row (it moved to a page already read) or repeat one (it moved to a page not yet read) "
    "while events land; use them to look, created_at to walk every row."
)
"""``sort``'s description in the OpenAPI document and the CLI's ``--sort`` help."""
MAX_LIMIT = 500
"""The largest page ``list_executions`` and ``stuck_executions`` return."""
STUCK_STATUSES = (ExecutionStatus.PENDING, ExecutionStatus.RUNNING)
_MAX_SECONDS = 100 * 366 * 86400  # a window longer than the TIMESTAMP range is a mistake
MAX_SECONDS = _MAX_SECONDS
"""The largest number of seconds a read-side parameter takes (100 years): beyond, a mistake."""
MAX_USER_ID = 2**31 - 1
"""``started_by`` is a ``users.id`` (``INT``): the API and the pages take 1..this."""
MAX_WINDOW_S = _MAX_SECONDS
"""The longest ``stuck_for_s``, in seconds (100 years): a longer window is a mistake."""


class ExecutionFilter(BaseModel):
    """Which executions a list holds: every given criterion must hold (AND).

    A list criterion holds when the row's value is one of the list (an empty list:
    no criterion). ``report_type``/``category`` are the report's (``reports``).
    Time ranges are half-open, ``[x_from, x_to)``, on ``created_at`` (the
    execution's first event time), ``start_time``, ``end_time`` and
    ``last_event_at`` (the latest event's time: when a failure was recorded, also
    for a ``failed`` event without ``end_time``; the ``(status, last_event_at)``
    index serves it); an execution without a start/end time never matches a
    start/end range.
    ``stuck_for_s``: pending or running with no event for longer than this many
    seconds (``last_event_at < now - stuck_for_s``, now by this process's clock).
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
    last_event_from: AwareDatetime | None = None
    last_event_to: AwareDatetime | None = None
    stuck_for_s: float | None = Field(default=None, gt=0, lt=_MAX_SECONDS, allow_inf_nan=False)


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


_SUMMARY = tuple(E.c[name] for name in ExecutionSummary.model_fields)


async def list_executions(
    engine: AsyncEngine,
    flt: ExecutionFilter,
    *,
    sort: SortKey = DEFAULT_SORT,
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
            last row's sort value and ``id``, exectrack.consumer.read.cursor), or
            None for the first page. A cursor only continues the sort and
            direction that issued it.

    Returns the page and ``next_cursor`` (None when this page is the last).
    Concatenated pages hold every selected row exactly once while the rows' sort
    values do not change: always for the default ``created_at`` (``DEFAULT_SORT``
    says when it could), not for ``last_event_at`` and the others, whose rows move
    as events land (a row moved before the cursor is skipped, one moved after it
    is listed twice; ``SORT_DESCRIPTION``).

    Raises:
        BadQuery: ``sort`` or ``limit`` out of domain (``argument`` names it).
        BadCursor: ``cursor`` malformed or issued for another sort/direction.
    """
    if sort not in SORT_KEYS:
        raise BadQuery("sort", f"{sort!r} is not one of {', '.join(SORT_KEYS)}")
    _check_limit(limit)
    col: Column[Any] = E.c[sort]
    after = None
    if cursor is not None:
        value, last_id = _cursor.decode(cursor, sort, descending, is_time=sort != "duration_ms")
        nullable = bool(col.nullable)
        after = _cursor.after(col, E.c.id, value, last_id, descending=descending, nullable=nullable)
    order = (col.desc(), E.c.id.desc()) if descending else (col.asc(), E.c.id.asc())
    async with engine.connect() as conn:
        resolved = await resolve_reports(conn, flt)
        if resolved is None:
            return ExecutionPage(items=[], next_cursor=None)
        query = filter_query(select(*_SUMMARY), resolved)
        if after is not None:
            query = query.where(after)
        rows = (await conn.execute(query.order_by(*order).limit(limit + 1))).mappings().all()
    items = [ExecutionSummary.model_validate(dict(row)) for row in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last = items[-1]
        next_cursor = _cursor.encode(sort, descending, getattr(last, sort), last.id)
    return ExecutionPage(items=items, next_cursor=next_cursor)


def _check_limit(limit: int) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise BadQuery("limit", f"{limit!r} is not an integer in 1..{MAX_LIMIT}")


async def resolve_reports(conn: AsyncConnection, flt: ExecutionFilter) -> ExecutionFilter | None:
    """``flt`` with its report type/category turned into the list of their report_ids.

    None when no report matches (the listing is empty). On 1,000,000 rows the
    list is ~300 times faster than a join or an ``IN (SELECT ...)``: both make
    MariaDB read ``reports`` first and sort every execution of the matching
    reports, where ``report_id IN (...)`` lets it read an ordered index and stop
    after a page (docs/read/queries.md, "Indexes and EXPLAIN").
    """
    if flt.report_type is None and flt.category is None:
        return flt
    query = select(R.c.report_id)
    if flt.report_type is not None:
        query = query.where(R.c.report_type == flt.report_type)
    if flt.category is not None:
        query = query.where(R.c.category == flt.category)
    if flt.report_id:
        query = query.where(R.c.report_id.in_(flt.report_id))
    ids = sorted(row.report_id for row in (await conn.execute(query)).all())
    if not ids:
        return None
    return flt.model_copy(update={"report_id": ids, "report_type": None, "category": None})


def filter_query(query: Select[Any], flt: ExecutionFilter) -> Select[Any]:
    """``query`` (a SELECT from ``report_executions``) with ``flt``'s criteria in its WHERE.

    A report type or category becomes ``report_id IN (SELECT ...)``: correct,
    but slow on large tables; callers resolve them first (``resolve_reports``).
    Every value is a bound parameter. Used by ``list_executions`` and by the
    watch view (exectrack.consumer.read.watch).
    """
    clauses: list[ColumnElement[bool]] = []
    if flt.status:
        clauses.append(E.c.status.in_(flt.status))
    if flt.report_id:
        clauses.append(E.c.report_id.in_(flt.report_id))
    if flt.trigger_type:
        clauses.append(E.c.trigger_type.in_(flt.trigger_type))
    if flt.started_by is not None:
        clauses.append(E.c.started_by == flt.started_by)
    for col, low, high in (
        (E.c.created_at, flt.created_from, flt.created_to),
        (E.c.start_time, flt.started_from, flt.started_to),
        (E.c.end_time, flt.ended_from, flt.ended_to),
        (E.c.last_event_at, flt.last_event_from, flt.last_event_to),
    ):
        if low is not None:
            clauses.append(col >= low)
        if high is not None:
            clauses.append(col < high)
    if flt.stuck_for_s is not None:
        clauses.append(E.c.status.in_(STUCK_STATUSES))
        clauses.append(E.c.last_event_at < _now() - timedelta(seconds=flt.stuck_for_s))
    if flt.report_type is not None or flt.category is not None:
        reports = select(R.c.report_id)
        if flt.report_type is not None:
            reports = reports.where(R.c.report_type == flt.report_type)
        if flt.category is not None:
            reports = reports.where(R.c.category == flt.category)
        clauses.append(E.c.report_id.in_(reports))
    return query.where(*clauses)


def _now() -> datetime:
    return datetime.now(UTC)


async def get_execution(engine: AsyncEngine, execution_id: str) -> ExecutionDetail | None:
    """The execution ``execution_id`` (exact, byte-wise match) with its provenance, or None.

    ``provenance`` is ``fold_keys`` decoded (exectrack.consumer.ingest.fold.decode_keys),
    by field name in alphabetical order.
    """
    async with engine.connect() as conn:
        query = select(E).where(E.c.execution_id == execution_id)
        row = (await conn.execute(query)).mappings().first()
    if row is None:
        return None
    values = dict(row)
    keys = decode_keys(values.pop("fold_keys"))
    values["provenance"] = {
        name: FieldSource(event_id=k[3], rank=k[0], sequence=k[1], time=k[2])
        for name, k in sorted(keys.items())
    }
    return ExecutionDetail.model_validate(values)


async def stuck_executions(
    engine: AsyncEngine, *, older_than_s: float, limit: int = 50
) -> list[ExecutionSummary]:
    """Pending or running executions with no event for more than ``older_than_s`` seconds.

    The longest silent first (``last_event_at`` ascending, then ``id``), at most
    ``limit`` (1..``MAX_LIMIT``). Same rows as ``list_executions`` with
    ``ExecutionFilter(stuck_for_s=older_than_s)`` sorted ascending.

    Raises:
        BadQuery: ``older_than_s`` not > 0 or ``limit`` out of 1..``MAX_LIMIT``.
    """
    if isinstance(older_than_s, bool) or not (
        isinstance(older_than_s, int | float) and 0 < older_than_s < MAX_WINDOW_S
    ):
        raise BadQuery("older_than_s", f"{older_than_s!r} is not a number of seconds > 0")
    flt = ExecutionFilter(stuck_for_s=older_than_s)
    page = await list_executions(engine, flt, sort="last_event_at", descending=False, limit=limit)
    return page.items
