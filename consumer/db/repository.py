"""Writing a folded batch: one transaction, a handful of bulk statements, no per-event trips.

The pattern for every table is *lock, merge, write*:

1. ``SELECT ... FOR UPDATE`` the rows the batch touches (by unique key, in key
   order). Under READ COMMITTED this locks existing rows only, no gaps.
2. Merge in Python (consumer.fold): stored state + the batch's state.
3. Write with explicit multi-row statements: rows that existed (and that we now
   hold locked) with ``INSERT ... ON DUPLICATE KEY UPDATE`` of every column;
   rows that did not exist with a plain ``INSERT``. If another writer (a
   consumer that briefly owned the same partition during a rebalance, a zombie)
   inserted one meanwhile, that plain INSERT fails with a duplicate key, the
   transaction rolls back and the batch is redone (``ConcurrentInsert``), now
   finding the row and merging into it. Nothing is ever overwritten with a
   state that did not include what was stored.

Placeholders (users, reports named by events before they are defined) are
``INSERT ... ON DUPLICATE KEY UPDATE key = key``: they never change a row, so
they need no lock.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Table, select
from sqlalchemy.dialects.mysql import insert as mysql_insert
from sqlalchemy.exc import (
    DBAPIError,
    IntegrityError,
    InterfaceError,
    OperationalError,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from consumer.db.models import Report, ReportExecution, User
from consumer.errors import ConcurrentInsert, PoisonBatch, StorageError
from consumer.fold import ExecutionFold
from consumer.retention import RetentionPolicy
from producer.events import ReportCategory, ReportDefinedEvent, ReportType

USERS: Table = User.__table__  # type: ignore[assignment]
REPORTS: Table = Report.__table__  # type: ignore[assignment]
EXECUTIONS: Table = ReportExecution.__table__  # type: ignore[assignment]
CHUNK = 1000  # rows per statement: keeps statements well under max_allowed_packet
DUPLICATE_KEY = 1062
# MySQL error codes worth a retry: lock wait timeout, deadlock, server gone,
# lost connection, too many connections, read-only (failover), query interrupted.
RETRIABLE_CODES = frozenset({1205, 1213, 2002, 2003, 2006, 2013, 1040, 1290, 1317, 1927})

EXECUTION_COLUMNS = [c.name for c in EXECUTIONS.columns if c.name != "id"]
DEFINITION_COLUMNS = (
    "name", "description", "report_type", "category", "provider", "query_config",
    "scheduling_config", "notification_config", "parameters_schema", "is_active",
    "is_public", "created_by", "last_modified_by", "version",
)  # fmt: skip

T = TypeVar("T")


@dataclass(frozen=True)
class WriteResult:
    executions_written: int
    executions_skipped_expired: int
    reports_defined: int
    placeholders: int


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def classify(exc: BaseException) -> StorageError | PoisonBatch:
    """Map a driver/SQLAlchemy error to retry (StorageError) or isolate (PoisonBatch)."""
    if isinstance(exc, StorageError | PoisonBatch):
        return exc
    code = None
    if isinstance(exc, DBAPIError) and exc.orig is not None and exc.orig.args:
        first = exc.orig.args[0]
        code = first if isinstance(first, int) else None
    if isinstance(exc, IntegrityError) and code == DUPLICATE_KEY:
        error: StorageError | PoisonBatch = ConcurrentInsert(str(exc.orig))
    elif isinstance(exc, OperationalError | InterfaceError) or code in RETRIABLE_CODES:
        error = StorageError(f"database unavailable or busy: {exc}")
    elif isinstance(exc, DBAPIError) and exc.connection_invalidated:
        error = StorageError(f"connection lost: {exc.orig}")
    elif isinstance(exc, OSError | TimeoutError | ConnectionError):
        error = StorageError(f"database unreachable: {exc}")
    else:
        error = PoisonBatch(f"{type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error


async def _upsert_placeholders(
    conn: AsyncConnection, table: Table, key: str, rows: list[dict[str, Any]]
) -> None:
    for part in chunks(sorted(rows, key=lambda r: r[key])):
        stmt = mysql_insert(table).values(list(part))
        await conn.execute(stmt.on_duplicate_key_update({key: table.c[key]}))


async def _insert(conn: AsyncConnection, table: Table, rows: list[dict[str, Any]]) -> None:
    for part in chunks(rows):
        await conn.execute(table.insert().values(list(part)))


async def _overwrite(
    conn: AsyncConnection, table: Table, rows: list[dict[str, Any]], columns: Iterable[str]
) -> None:
    """Bulk update of rows this transaction holds locked: INSERT .. ON DUPLICATE KEY UPDATE."""
    columns = list(columns)
    for part in chunks(rows):
        stmt = mysql_insert(table).values(list(part))
        await conn.execute(stmt.on_duplicate_key_update({c: stmt.inserted[c] for c in columns}))


async def _lock(
    conn: AsyncConnection, table: Table, key: str, ids: Iterable[str], columns: Sequence[str]
) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    cols = [table.c[c] for c in columns]
    for part in chunks(sorted(ids)):
        query = select(*cols).where(table.c[key].in_(part)).order_by(table.c[key]).with_for_update()
        for row in (await conn.execute(query)).mappings():
            found[row[key]] = dict(row)
    return found


def _definition_row(event: ReportDefinedEvent) -> dict[str, Any]:
    data = event.data
    row = {c: getattr(data, c) for c in DEFINITION_COLUMNS}
    row.update(report_id=data.report_id, defined_at=event.time, definition_event_id=event.id)
    return row


def _stored_key(row: Mapping[str, Any]) -> tuple[int, datetime, str] | None:
    if row["defined_at"] is None:
        return None
    return (row["version"], row["defined_at"], row["definition_event_id"])


async def write_reports(
    conn: AsyncConnection, definitions: Mapping[str, ReportDefinedEvent], referenced: Iterable[str]
) -> tuple[dict[str, tuple[ReportType | None, ReportCategory | None]], int, int]:
    """Apply report definitions (greatest (version, time, id) wins) and placeholders.

    Returns each touched report's (report_type, category) after the write, and
    the counts of definitions applied and placeholders created.
    """
    touched = set(definitions) | set(referenced)
    stored = await _lock(
        conn, REPORTS, "report_id", touched,
        ["report_id", "report_type", "category", "version", "defined_at", "definition_event_id"],
    )  # fmt: skip
    kinds = {rid: (row["report_type"], row["category"]) for rid, row in stored.items()}
    fresh: list[dict[str, Any]] = []
    replace: list[dict[str, Any]] = []
    for rid, event in definitions.items():
        row = stored.get(rid)
        current = None if row is None else _stored_key(row)
        if current is not None and event.order_key <= current:
            continue
        (fresh if row is None else replace).append(_definition_row(event))
        kinds[rid] = (event.data.report_type, event.data.category)
    columns = [*DEFINITION_COLUMNS, "defined_at", "definition_event_id"]
    await _insert(conn, REPORTS, fresh)
    await _overwrite(conn, REPORTS, replace, columns)
    missing = sorted(touched - kinds.keys())
    await _upsert_placeholders(
        conn, REPORTS, "report_id", [{"report_id": r, "name": r} for r in missing]
    )
    for rid in missing:
        kinds[rid] = (None, None)
    return kinds, len(fresh) + len(replace), len(missing)


async def write_batch(
    conn: AsyncConnection,
    executions: Mapping[str, ExecutionFold],
    definitions: Mapping[str, ReportDefinedEvent],
    policy: RetentionPolicy,
    *,
    now: datetime,
) -> WriteResult:
    """Merge one batch into the database inside the caller's transaction."""
    users = {f.value("started_by") for f in executions.values()}
    for event in definitions.values():
        users |= {event.data.created_by, event.data.last_modified_by}
    users.discard(None)
    await _upsert_placeholders(conn, USERS, "id", [{"id": u} for u in users])

    stored = await _lock(conn, EXECUTIONS, "execution_id", executions, EXECUTION_COLUMNS)
    merged: dict[str, ExecutionFold] = {}
    for eid, fold in executions.items():
        row = stored.get(eid)
        if row is None:
            merged[eid] = fold
        else:  # a new state object: the caller's folds stay as they were (retries)
            merged[eid] = ExecutionFold.from_row(row)
            merged[eid].merge(fold)
    kinds, defined, placeholders = await write_reports(
        conn, definitions, {f.value("report_id") for f in merged.values()}
    )

    fresh: list[dict[str, Any]] = []
    replace: list[dict[str, Any]] = []
    expired = 0
    for eid, fold in merged.items():
        report_id = fold.value("report_id")
        report_type, category = kinds[report_id]
        period = policy.period(
            fold.status, report_type=report_type, category=category,
            report_id=report_id, execution_id=eid,
        )  # fmt: skip
        row = fold.to_row(period)
        if eid in stored:
            replace.append(row)
        elif row["retention_until"] is not None and row["retention_until"] <= now:
            expired += 1  # already past retention: a replay must not resurrect it
        else:
            fresh.append(row)
    await _insert(conn, EXECUTIONS, fresh)
    await _overwrite(conn, EXECUTIONS, replace, EXECUTION_COLUMNS)
    return WriteResult(len(fresh) + len(replace), expired, defined, placeholders)
