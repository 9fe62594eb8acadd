"""Writing a folded batch: one transaction, a handful of bulk statements, no per-event trips.

The pattern for every table is *lock, merge, write*:

1. ``SELECT ... FOR UPDATE`` the rows the batch touches (by unique key, in key
   order). Under READ COMMITTED this locks existing rows only, no gaps.
2. Merge in Python (exectrack.consumer.ingest.fold): stored state + the batch's state.
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

Every statement is bounded by rows (``CHUNK``) and by bytes: the connection's
``max_allowed_packet`` (exectrack.consumer.db.packet). A row that cannot fit one
statement is refused as ``RowTooLarge`` naming its key.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Table, select
from sqlalchemy.dialects.mysql import insert as mysql_insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from exectrack.consumer.db import fastsql, packet
from exectrack.consumer.db.models import PurgedExecution, Report, ReportExecution, User
from exectrack.consumer.errors import ConcurrentInsert, ConnectionLost, PoisonBatch, StorageError
from exectrack.consumer.ingest.anomalies import report_conflicts
from exectrack.consumer.ingest.fold import ExecutionFold, OutOfRange
from exectrack.consumer.retention.policy import RetentionPolicy
from exectrack.producer.events import (
    ReportCategory,
    ReportDefinedEvent,
    ReportType,
    definition_digest,
)

USERS: Table = User.__table__  # type: ignore[assignment]
REPORTS: Table = Report.__table__  # type: ignore[assignment]
EXECUTIONS: Table = ReportExecution.__table__  # type: ignore[assignment]
TOMBSTONES: Table = PurgedExecution.__table__  # type: ignore[assignment]
CHUNK = packet.MAX_ROWS  # rows per statement; bytes are bounded too (exectrack.consumer.db.packet)
# bytes of a Core statement's own text around its values, at most (the reports
# upsert, the longest, is ~700)
CORE_TEXT = 2048
DUPLICATE_KEY = 1062
# Server error codes worth a retry: the database is busy, read-only for a
# failover, shutting down, out of space, or the connection broke. Also a
# database that is misconfigured rather than refusing rows: unknown database,
# missing table or column (migrations not applied), access denied. Retrying
# those until an operator fixes them loses nothing; dead-lettering every batch
# would. Client-side codes (2000-2999: can't connect, server gone, lost
# connection) are always retried. Any other server error is about the rows
# themselves: isolate them; among them 1153 (a packet over max_allowed_packet)
# and 1301 (a value over it, MySQL's JSON): retrying the same rows cannot help.
RETRIABLE_CODES = frozenset({
    1021, 1037, 1038, 1040, 1041, 1053, 1114, 1158, 1159, 1160, 1161, 1203, 1205,
    1213, 1226, 1290, 1317, 1792, 1836, 1927, 3024,
    1044, 1045, 1049, 1054, 1142, 1143, 1146, 1227,  # misconfigured: schema, privileges
})  # fmt: skip
# The connection dropped mid-statement (CR_SERVER_GONE_ERROR, CR_SERVER_LOST,
# CR_SERVER_LOST_EXTENDED): an outage, or a statement the server hangs up on;
# the writer probes the server to tell which (exectrack.consumer.ingest.writer).
CONNECTION_LOST_CODES = frozenset({2006, 2013, 2055})


EXECUTION_COLUMNS = tuple(c.name for c in EXECUTIONS.columns if c.name != "id")
"""Every column of ``report_executions`` but ``id`` (the auto-increment surrogate): what a
row holds, written by the fold and compared by verify (exectrack.consumer.replay.verify)."""
DEFINITION_COLUMNS = (
    "name", "description", "report_type", "category", "provider", "query_config",
    "scheduling_config", "notification_config", "parameters_schema", "is_active",
    "is_public", "created_by", "last_modified_by", "version",
)  # fmt: skip

T = TypeVar("T")


@dataclass(frozen=True)
class WriteResult:
    """What ``write_batch`` did: rows written, definitions applied, placeholders created.

    ``executions_written``: ``report_executions`` rows inserted or updated;
    ``reports_defined``: ``reports`` rows a definition set; ``placeholders``:
    ``reports`` rows created for reports named before their definition
    (CONTRACT.md, "Invalid input": foreign keys never cost an event).
    """

    executions_written: int
    reports_defined: int
    placeholders: int
    executions_skipped_purged: int = 0  # had a tombstone: purged, never written again
    # (execution_id, event id) of each event id seen with two contents (ingest.fold)
    conflicts: tuple[tuple[str, str], ...] = ()
    # (execution_id, (field, event id, sent, stored)) of each out-of-range data time
    out_of_range: tuple[tuple[str, OutOfRange], ...] = ()


def _literal_bytes(value: Any) -> int:
    """At least the bytes of ``value`` as a literal in the driver's statement text.

    Exact for text up to the quoting of ``%`` (counted twice); JSON is measured as
    SQLAlchemy's JSON type serializes it by default (``json.dumps``).
    """
    if value is None:
        return 4
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, dict | list):
        value = json.dumps(value)
    if isinstance(value, str):
        return packet.utf8_len(fastsql.quoting(False)(value))
    return 32  # numbers, booleans, times


def key_runs(keys: Sequence[T], limit: int) -> Iterator[Sequence[T]]:
    """``keys`` in runs whose ``IN (...)`` list keeps a statement under ``limit`` bytes."""
    names = [str(k) for k in keys]
    for run in packet.runs([*map(_literal_bytes, keys)], names, CORE_TEXT, limit):
        yield keys[run]


def _row_runs(
    rows: Sequence[Mapping[str, Any]], key: str, limit: int
) -> Iterator[Sequence[Mapping[str, Any]]]:
    """``rows`` in runs whose ``VALUES`` list keeps a statement under ``limit`` bytes."""
    sizes = [sum(_literal_bytes(v) + 2 for v in row.values()) + 2 for row in rows]
    for run in packet.runs(sizes, [str(r[key]) for r in rows], CORE_TEXT, limit):
        yield rows[run]


def mysql_error_code(driver_error: BaseException | None) -> int | None:
    """The MySQL/MariaDB error number (e.g. 1062, 2013) of a driver (pymysql) error:
    the first of its ``args`` when it is an int; None otherwise. The one place the
    code is read; pass a SQLAlchemy ``DBAPIError``'s ``.orig``, not the wrapper."""
    args = getattr(driver_error, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def classify(exc: BaseException) -> StorageError | PoisonBatch:
    """Map a driver/SQLAlchemy error to retry (StorageError) or isolate (PoisonBatch).

    Decided by the MySQL error code, not the exception class: pymysql reports
    many row-level refusals (e.g. a trigger's SIGNAL, 1644) as OperationalError.
    """
    if isinstance(exc, StorageError | PoisonBatch):
        return exc
    code = mysql_error_code(getattr(exc, "orig", None))
    message = str(getattr(exc, "orig", None) or exc)  # the server's words, not the SQL
    error: StorageError | PoisonBatch
    if code == DUPLICATE_KEY:
        error = ConcurrentInsert(message)
    elif code in CONNECTION_LOST_CODES:
        error = ConnectionLost(f"database connection lost: {message}")
    elif code is not None and (code in RETRIABLE_CODES or 2000 <= code < 3000):
        error = StorageError(f"database unavailable or busy: {message}")
    elif code is None and isinstance(exc, DBAPIError | OSError | TimeoutError):
        error = StorageError(f"database unreachable: {message}")  # no server answer at all
    else:
        error = PoisonBatch(f"{type(exc).__name__}: {message}")
    error.__cause__ = exc
    return error


async def _ensure_rows(
    conn: AsyncConnection,
    table: Table,
    key: str,
    rows: list[dict[str, Any]],
    *,
    limit: int | None = None,
) -> int:
    """Insert placeholder rows that do not exist yet; never touch (or lock) existing ones.

    A plain consistent read finds the missing keys first, so consumers that all
    reference the same popular report do not serialize on its row lock; the
    insert of the missing ones is a no-op upsert in case another writer wins
    the race. Returns how many were missing.
    """
    if not rows:
        return 0
    limit = await packet.statement_limit(conn, limit)
    wanted = {r[key]: r for r in rows}
    existing: set[Any] = set()
    for part in key_runs(sorted(wanted), limit):
        query = select(table.c[key]).where(table.c[key].in_(part))
        existing.update((await conn.execute(query)).scalars())
    missing = [wanted[k] for k in sorted(wanted) if k not in existing]
    for rows_part in _row_runs(missing, key, limit):
        stmt = mysql_insert(table).values(list(rows_part))
        await conn.execute(stmt.on_duplicate_key_update({key: table.c[key]}))
    return len(missing)


async def _insert(
    conn: AsyncConnection, table: Table, key: str, rows: list[dict[str, Any]], limit: int
) -> None:
    for part in _row_runs(rows, key, limit):
        await conn.execute(table.insert().values(list(part)))


async def _overwrite(
    conn: AsyncConnection,
    table: Table,
    key: str,
    rows: list[dict[str, Any]],
    columns: Iterable[str],
    limit: int,
) -> None:
    """Bulk update of rows this transaction holds locked: INSERT .. ON DUPLICATE KEY UPDATE."""
    columns = list(columns)
    for part in _row_runs(rows, key, limit):
        stmt = mysql_insert(table).values(list(part))
        await conn.execute(stmt.on_duplicate_key_update({c: stmt.inserted[c] for c in columns}))


async def _lock(
    conn: AsyncConnection,
    table: Table,
    key: str,
    ids: Iterable[str],
    columns: Sequence[str],
    limit: int,
) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    cols = [table.c[c] for c in columns]
    for part in key_runs(sorted(ids), limit):
        query = select(*cols).where(table.c[key].in_(part)).order_by(table.c[key]).with_for_update()
        for row in (await conn.execute(query)).mappings():
            found[row[key]] = dict(row)
    return found


def _definition_row(event: ReportDefinedEvent) -> dict[str, Any]:
    data = event.data
    row = {c: getattr(data, c) for c in DEFINITION_COLUMNS}
    row.update(report_id=data.report_id, defined_at=event.time, definition_event_id=event.id)
    return row


def _newer(event: ReportDefinedEvent, row: Mapping[str, Any] | None) -> tuple[bool, bool]:
    """(the event's definition beats the stored one, they conflict: one id, two contents).

    Order key (version, time, id, definition digest); the stored row keeps the
    first three, its digest is computed from its columns, only on a tie.
    """
    if row is None or row["defined_at"] is None:  # no row, or a placeholder
        return True, False
    key = event.order_key
    stored = (row["version"], row["defined_at"], row["definition_event_id"])
    if key[:3] != stored:
        return key[:3] > stored, False
    digest = definition_digest(row)
    return key[3] > digest, key[3] != digest


async def write_reports(
    conn: AsyncConnection,
    definitions: Mapping[str, ReportDefinedEvent],
    referenced: Iterable[str],
    limit: int,
) -> tuple[dict[str, tuple[ReportType | None, ReportCategory | None]], int, int]:
    """Apply report definitions (greatest (version, time, id, digest) wins) and placeholders.

    Only reports defined in this batch are locked; reports merely referenced
    by executions are read without locks. Returns each touched report's
    (report_type, category) after the write, and the counts of definitions
    applied and placeholders created.
    """
    stored = await _lock(
        conn, REPORTS, "report_id", definitions,
        ["report_id", *DEFINITION_COLUMNS, "defined_at", "definition_event_id"],
        limit,
    )  # fmt: skip
    kinds = {rid: (row["report_type"], row["category"]) for rid, row in stored.items()}
    fresh: list[dict[str, Any]] = []
    replace: list[dict[str, Any]] = []
    for rid, event in definitions.items():
        row = stored.get(rid)
        newer, conflict = _newer(event, row)
        if conflict:
            report_conflicts([(rid, event.id)], key="report_id")
        if not newer:
            continue
        (fresh if row is None else replace).append(_definition_row(event))
        kinds[rid] = (event.data.report_type, event.data.category)
    await _insert(conn, REPORTS, "report_id", fresh, limit)
    await _overwrite(
        conn, REPORTS, "report_id", replace,
        [*DEFINITION_COLUMNS, "defined_at", "definition_event_id"], limit,
    )  # fmt: skip
    others = sorted(set(referenced) - kinds.keys())
    columns = (REPORTS.c.report_id, REPORTS.c.report_type, REPORTS.c.category)
    for part in key_runs(others, limit):
        for rid, report_type, category in await conn.execute(
            select(*columns).where(REPORTS.c.report_id.in_(part))
        ):
            kinds[rid] = (report_type, category)
    missing = [rid for rid in others if rid not in kinds]
    created = await _ensure_rows(
        conn, REPORTS, "report_id", [{"report_id": r, "name": r} for r in missing], limit=limit
    )
    kinds.update(dict.fromkeys(missing, (None, None)))
    return kinds, len(fresh) + len(replace), created


async def write_batch(
    conn: AsyncConnection,
    executions: Mapping[str, ExecutionFold],
    definitions: Mapping[str, ReportDefinedEvent],
    policy: RetentionPolicy,
    *,
    max_statement_bytes: int | None = None,
) -> WriteResult:
    """Merge one batch into the database inside the caller's transaction.

    Every fold is written whole, whatever its ``retention_until``: the batch is a
    partial fold, and a later event may still move that value (CONTRACT.md,
    "The fold" and "Retention"). Only a tombstone (``purged_executions``) stops
    an execution; rows past retention go when the purge (or a replay's final
    sweep) runs.

    ``max_statement_bytes`` replaces the connection's statement limit (its
    ``max_allowed_packet``, exectrack.consumer.db.packet).

    Raises:
        RowTooLarge: a row that cannot fit one statement; anything the driver raises.
    """
    limit = await packet.statement_limit(conn, max_statement_bytes)
    # placeholders for every user and report an event names, tombstoned executions
    # included, not only a fold's winners: the tables then depend on the set of
    # events, not on batch boundaries (tests/integration/test_fold_stateful.py)
    users: set[int | None] = set().union(*(f.users for f in executions.values()))
    for event in definitions.values():
        users |= {event.data.created_by, event.data.last_modified_by}
    users.discard(None)
    await _ensure_rows(conn, USERS, "id", [{"id": u} for u in users], limit=limit)

    stored: dict[str, dict[str, Any]] = {}
    for locked in await fastsql.lock_rows(conn, EXECUTION_COLUMNS, sorted(executions), limit=limit):
        stored[locked["execution_id"]] = locked
    # executions without a row that the purge deleted: never again (CONTRACT.md)
    absent = sorted(eid for eid in executions if eid not in stored)
    purged = await fastsql.tombstoned(conn, absent, limit=limit)
    merged: dict[str, ExecutionFold] = {}
    for eid, fold in executions.items():
        row = stored.get(eid)
        if eid in purged:
            continue
        if row is None:
            merged[eid] = fold
        else:  # a new state object: the caller's folds stay as they were (retries)
            merged[eid] = ExecutionFold.from_row(row)
            merged[eid].merge(fold)
    named = set().union(*(f.reports for f in executions.values()))
    kinds, defined, placeholders = await write_reports(
        conn, definitions, named | {f.value("report_id") for f in merged.values()}, limit
    )

    fresh: list[dict[str, Any]] = []
    replace: list[dict[str, Any]] = []
    for eid, fold in merged.items():
        report_id = fold.value("report_id")
        report_type, category = kinds[report_id]
        period = policy.period(
            fold.status, report_type=report_type, category=category,
            report_id=report_id, execution_id=eid,
        )  # fmt: skip
        (replace if eid in stored else fresh).append(fold.to_row(period))
    await fastsql.write_rows(conn, EXECUTION_COLUMNS, fresh, overwrite=False, limit=limit)
    await fastsql.write_rows(conn, EXECUTION_COLUMNS, replace, overwrite=True, limit=limit)
    conflicts = tuple((eid, i) for eid, fold in merged.items() for i in sorted(fold.conflicts))
    ranged = tuple((eid, o) for eid, fold in merged.items() for o in sorted(fold.out_of_range))
    return WriteResult(
        len(fresh) + len(replace), defined, placeholders, len(purged), conflicts, ranged
    )
