"""The purge: delete executions whose ``retention_until`` has passed, in short chunks.

Each chunk is two statements:

1. ``SELECT id, retention_until FROM report_executions WHERE retention_until <= :now
   AND <not on hold> AND (retention_until, id) > :cursor ORDER BY retention_until, id
   LIMIT :chunk``: a consistent read along ``ix_report_executions_retention_until``
   (InnoDB appends the primary key to a secondary index, so the order is the
   index's own; without holds the index covers the query). It takes no lock.
2. in its own transaction: ``SELECT id, execution_id ... WHERE id IN (...) AND
   retention_until <= :now FOR UPDATE`` (it locks exactly the rows it will
   delete, by primary key, for a few milliseconds, and re-checks the condition,
   so a row the consumer changed in between, a late event carrying a later
   ``retention_until``, is left alone), one multi-row ``INSERT`` of their
   tombstones into ``purged_executions`` (the consumer never writes those
   executions again: a late event cannot resurrect them), and
   ``DELETE FROM report_executions WHERE id IN (...)``.

Why not ``DELETE ... WHERE retention_until <= :now ORDER BY retention_until LIMIT n``
(a single-table form both MariaDB and MySQL 8.0 accept)? It is one statement
instead of two, but it locks every index record it walks, held rows included,
statement-based replication flags it unsafe (LIMIT), and it cannot tell us what
it skipped. The cursor also matters: each chunk starts after the last row seen
instead of at the start of the index, where the entries just deleted still sit,
delete-marked, until InnoDB's purge thread removes them; restarting there every
time makes a long purge quadratic.

``now`` is fixed when the run starts, so a run ends; rows that expire meanwhile
wait for the next one. Holds (``RetentionPolicy.hold_*``) are never deleted,
whatever their ``retention_until``. Only one purge runs at a time per database:
a MySQL named lock (``GET_LOCK``) is taken for the run, so the consumer's
schedule and a CronJob never overlap; a run that finds it taken ends at once
with outcome ``busy``. Deleting the row deletes everything the fold kept for
the execution (its state is the row: values and ``fold_keys``). At the end of
a run, tombstones older than ``tombstone_ttl_s`` (``EXECTRACK_TOMBSTONE_TTL_S``,
90 days) are deleted: keep it longer than events can arrive late (at most
the topic's retention).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import ColumnElement, delete, func, literal, or_, select, text
from sqlalchemy.dialects.mysql import insert as mysql_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from exectrack.consumer import metrics
from exectrack.consumer.db import keyset, packet
from exectrack.consumer.db.repository import EXECUTIONS, REPORTS, TOMBSTONES, classify, key_runs
from exectrack.consumer.retention.policy import RetentionPolicy
from exectrack.consumer.retry import JOB_ATTEMPTS, JOB_BACKOFF, retry
from exectrack.producer.errors import ExectrackError

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class PurgeOptions:
    """How one purge run goes: rows per DELETE transaction, pause between them (ms), a cap."""

    chunk_size: int = 1000
    pause_ms: int = 0  # sleep between chunks (gives the consumer's batches room)
    max_rows: int | None = None  # stop after this many deletions
    dry_run: bool = False
    # tombstones older than this are deleted at the end of a run (None: kept forever)
    tombstone_ttl_s: float | None = 90 * 86400.0


@dataclass
class PurgeSummary:
    """What one purge run did (or would do, ``dry_run``): rows, chunks, time in seconds."""

    now: datetime
    dry_run: bool
    outcome: str = "success"  # success | dry_run | busy | error
    deleted: int = 0
    chunks: int = 0  # DELETE transactions
    tombstones_expired: int = 0  # tombstones past EXECTRACK_TOMBSTONE_TTL_S, deleted
    retries: int = 0
    elapsed_s: float = 0.0
    expired: int = 0  # rows past retention and not held, at the start (dry run; progress)
    held: int = 0  # rows past retention kept by a hold (dry run)
    would_delete: dict[str, int] = field(default_factory=dict)  # "report_type/status" -> rows

    @property
    def rows_per_s(self) -> float:
        """Rows deleted per second of ``elapsed_s`` (0.0 before any time passed)."""
        return self.deleted / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        """The fields and ``rows_per_s``, JSON-ready (``now`` as RFC 3339): ``--json``."""
        return {**asdict(self), "now": self.now.isoformat(), "rows_per_s": self.rows_per_s}

    def render(self) -> str:
        """The summary for people: one line, or the dry run's counts per report type/status."""
        if self.outcome == "busy":
            return "purge: another purge holds the lock on this database; nothing done"
        if self.dry_run:
            lines = [
                f"purge --dry-run at {self.now.isoformat()}: {self.expired} rows past retention "
                f"would be deleted, {self.held} past retention but on hold are kept"
            ]
            lines += [f"  {k}: {n}" for k, n in sorted(self.would_delete.items())]
            return "\n".join(lines)
        return (
            f"purge: deleted {self.deleted} rows in {self.chunks} chunks, "
            f"{self.elapsed_s:.2f} s, {self.rows_per_s:.0f} rows/s"
            + (f", {self.retries} retries" if self.retries else "")
        )


def _holds(policy: RetentionPolicy, *, held: bool) -> list[ColumnElement[bool]]:
    """One clause per kind of hold the policy has: the rows it holds (``held``), or not."""
    c = EXECUTIONS.c
    kinds = ((c.execution_id, policy.hold_executions), (c.report_id, policy.hold_reports))
    return [
        column.in_(sorted(ids)) if held else column.not_in(sorted(ids))
        for column, ids in kinds
        if ids
    ]


def not_held(policy: RetentionPolicy) -> list[ColumnElement[bool]]:
    """Clauses (to AND) that leave out the executions ``policy`` holds: none without holds."""
    return _holds(policy, held=False)


def _held(policy: RetentionPolicy) -> ColumnElement[bool] | None:
    """The executions ``policy`` holds (None: it holds none)."""
    clauses = _holds(policy, held=True)
    return or_(*clauses) if clauses else None


def lock_name(engine: AsyncEngine, job: str) -> str:
    """A server-wide named lock per database and job (at most 64 characters)."""
    return f"exectrack.{job}.{engine.url.database or ''}"[:64]


class NamedLock:
    """``GET_LOCK(name, 0)`` on a connection of its own, for the length of a job."""

    def __init__(self, engine: AsyncEngine, name: str) -> None:
        self.engine, self.name = engine, name
        self.conn: AsyncConnection | None = None

    async def acquire(self) -> bool:
        """Try once, without waiting: True when this job now holds the lock.

        A named lock belongs to the session (MySQL reference manual, "Locking
        Functions": ``GET_LOCK``), so the connection stays open until ``release``.
        """
        self.conn = await self.engine.connect()
        got = (await self.conn.execute(text("SELECT GET_LOCK(:n, 0)"), {"n": self.name})).scalar()
        await self.conn.commit()  # a named lock outlives transactions; no read view kept open
        if got != 1:
            await self.release()
        return got == 1

    async def release(self) -> None:
        """``RELEASE_LOCK`` and close the connection (nothing to do when not held)."""
        conn, self.conn = self.conn, None
        if conn is None:
            return
        try:
            await conn.execute(text("SELECT RELEASE_LOCK(:n)"), {"n": self.name})
            await conn.commit()
        finally:
            await conn.close()


async def count_expired(
    engine: AsyncEngine, policy: RetentionPolicy, now: datetime
) -> tuple[int, int]:
    """(rows past retention and not held, rows past retention on hold)."""
    c = EXECUTIONS.c
    expired = c.retention_until <= now
    held = _held(policy)
    async with engine.connect() as conn:
        total = (await conn.execute(select(func.count()).where(expired))).scalar_one()
        kept = 0
        if held is not None:
            query = select(func.count()).where(expired, held)
            kept = (await conn.execute(query)).scalar_one()
    return int(total) - int(kept), int(kept)


async def _dry_run(engine: AsyncEngine, policy: RetentionPolicy, summary: PurgeSummary) -> None:
    c = EXECUTIONS.c
    kind = REPORTS.c.report_type
    query = (
        select(kind, c.status, func.count())
        .join_from(EXECUTIONS, REPORTS, c.report_id == REPORTS.c.report_id)
        .where(c.retention_until <= summary.now, *not_held(policy))
        .group_by(kind, c.status)
    )
    async with engine.connect() as conn:
        for report_type, status, count in await conn.execute(query):
            summary.would_delete[f"{report_type or '(undefined)'}/{status}"] = int(count)
    summary.expired, summary.held = await count_expired(engine, policy, summary.now)


async def delete_with_tombstones(conn: AsyncConnection, ids: list[int], now: datetime) -> int:
    """Delete these executions if still past retention, leaving a tombstone for each.

    The rows are locked first (by primary key), so the tombstones name exactly
    the rows deleted: a row a late event changed meanwhile (a later explicit
    ``retention_until``) is neither deleted nor tombstoned. Also used by a
    replay's final sweep.
    """
    c = EXECUTIONS.c
    still = [c.id.in_(ids), c.retention_until <= now]
    locked = (await conn.execute(select(c.id).where(*still).with_for_update())).scalars().all()
    if not locked:
        return 0
    # server-side copy of the ids of the rows we hold locked: nothing crosses the wire
    copy = mysql_insert(TOMBSTONES).from_select(
        ["execution_id", "purged_at"],
        select(c.execution_id, literal(now, TOMBSTONES.c.purged_at.type)).where(c.id.in_(locked)),
    )
    await conn.execute(
        copy.on_duplicate_key_update(purged_at=literal(now, copy.table.c.purged_at.type))
    )
    result = await conn.execute(delete(EXECUTIONS).where(c.id.in_(locked)))
    return int(result.rowcount)


async def _delete_chunk(
    engine: AsyncEngine, ids: list[int], now: datetime, summary: PurgeSummary
) -> int:
    async def attempt() -> int:
        async with engine.begin() as conn:
            return await delete_with_tombstones(conn, ids, now)

    def retrying(error: ExectrackError, retry_number: int, _delay: float) -> None:
        summary.retries += 1
        log.warning("purge_retry", error=str(error)[:200], attempt=retry_number)

    return await retry(
        attempt, classify=classify, backoff=JOB_BACKOFF, attempts=JOB_ATTEMPTS, on_retry=retrying
    )


async def expire_tombstones(engine: AsyncEngine, older_than: datetime, chunk: int = 1000) -> int:
    """Delete tombstones purged before ``older_than``, ``chunk`` at a time."""
    t = TOMBSTONES.c
    removed = 0
    while True:
        async with engine.begin() as conn:
            ids = (
                (
                    await conn.execute(
                        select(t.execution_id).where(t.purged_at < older_than).limit(chunk)
                    )
                )
                .scalars()
                .all()
            )
            if not ids:
                return removed
            for part in key_runs(ids, await packet.statement_limit(conn)):  # max_allowed_packet
                await conn.execute(delete(TOMBSTONES).where(t.execution_id.in_(part)))
        removed += len(ids)


async def _purge(
    engine: AsyncEngine,
    policy: RetentionPolicy,
    options: PurgeOptions,
    summary: PurgeSummary,
    on_chunk: Callable[[int], None] | None,
) -> None:
    c = EXECUTIONS.c
    async with engine.connect() as conn:  # a chunk's ids travel in IN lists: max_allowed_packet
        statement_limit = await packet.statement_limit(conn)
    chunk = min(options.chunk_size, packet.ids_per_statement(statement_limit))

    def room() -> int:  # rows the next chunk may take (0: max_rows reached)
        if options.max_rows is None:
            return chunk
        return min(chunk, options.max_rows - summary.deleted)

    query = select(c.id, c.retention_until).where(
        c.retention_until <= summary.now, *not_held(policy)
    )
    async for rows in keyset.pages(
        engine, query, (c.retention_until, c.id), room, pause_s=options.pause_ms / 1000
    ):
        deleted = await _delete_chunk(engine, [r.id for r in rows], summary.now, summary)
        summary.deleted += deleted
        summary.chunks += 1
        metrics.PURGE_ROWS_DELETED.inc(deleted)
        if on_chunk is not None:
            on_chunk(summary.deleted)


async def purge(
    engine: AsyncEngine,
    policy: RetentionPolicy,
    options: PurgeOptions | None = None,
    *,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    on_start: Callable[[PurgeSummary], None] | None = None,
    on_chunk: Callable[[int], None] | None = None,
) -> PurgeSummary:
    """One purge run; metrics and a summary log line whatever the outcome.

    Deletes rows whose ``retention_until`` <= now and not on hold, in chunks
    along the index on ``retention_until``, each leaving a tombstone
    (CONTRACT.md, "Retention"); then tombstones older than ``tombstone_ttl_s``.
    Another run holding the named lock on this database: outcome ``busy``,
    nothing done.

    Args:
        clock: the run's "now" (aware UTC).
        on_start: called once with the summary (``expired``, ``held`` counted).
        on_chunk: called after each chunk with the rows deleted so far (progress).

    Returns:
        The summary (``outcome``: success, dry_run or busy).

    Raises:
        StorageError: a chunk failed ``RETRIES`` times (deadlock, lock wait
            timeout, lost connection).
        PoisonBatch: the database refused a chunk for good.
    """
    options = options or PurgeOptions()
    summary = PurgeSummary(now=clock(), dry_run=options.dry_run)
    started = time.perf_counter()
    lock = NamedLock(engine, lock_name(engine, "purge"))
    try:
        if options.dry_run:
            summary.outcome = "dry_run"
            await _dry_run(engine, policy, summary)
        elif not await lock.acquire():
            summary.outcome = "busy"
        else:
            if on_start is not None:
                summary.expired, summary.held = await count_expired(engine, policy, summary.now)
                on_start(summary)
            await _purge(engine, policy, options, summary, on_chunk)
            if options.tombstone_ttl_s is not None:
                horizon = summary.now - timedelta(seconds=options.tombstone_ttl_s)
                summary.tombstones_expired = await expire_tombstones(engine, horizon)
    except BaseException:
        summary.outcome = "error"
        raise
    finally:
        await lock.release()
        summary.elapsed_s = time.perf_counter() - started
        metrics.PURGE_RUNS.labels(outcome=summary.outcome).inc()
        if summary.outcome == "success":
            metrics.PURGE_SECONDS.observe(summary.elapsed_s)
            metrics.PURGE_LAST_SUCCESS.set(time.time())
        log.info(
            "purge", outcome=summary.outcome, deleted=summary.deleted, chunks=summary.chunks,
            retries=summary.retries, tombstones_expired=summary.tombstones_expired,
            s=round(summary.elapsed_s, 3),
            rows_per_s=round(summary.rows_per_s), now=summary.now.isoformat(),
        )  # fmt: skip
    return summary
