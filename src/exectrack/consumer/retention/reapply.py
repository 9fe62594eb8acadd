"""``retention reapply``: recompute stored rows' ``retention_until`` under the current policy.

The value is exactly what the fold would write (``fold_retention``): the row's
``fold_keys`` say whether an event carried ``retention_until`` (then it stays)
and which event set the status (its time is the base when ``end_time`` is
unknown); the period comes from ``RetentionPolicy.period`` with the report's
current ``report_type`` and ``category``, as in exectrack.consumer.db.repository.

Rows are read in batches along the primary key with a plain consistent read
(no locks). Only rows whose value changes are touched: they are locked by
primary key (``SELECT ... FOR UPDATE``), recomputed from what is now stored
(the consumer may have changed them meanwhile) and updated, one short
transaction per batch. ``dry_run`` counts what would change and writes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from exectrack.consumer import metrics
from exectrack.consumer.db import keyset
from exectrack.consumer.db.repository import EXECUTIONS, REPORTS, classify
from exectrack.consumer.ingest.fold import ExecutionFold
from exectrack.consumer.retention.policy import RetentionPolicy
from exectrack.consumer.retry import JOB_ATTEMPTS, JOB_BACKOFF, retry
from exectrack.producer.events import ReportCategory, ReportType

COLUMNS = ("id", "execution_id", "report_id", "status", "end_time", "retention_until",
           "created_at", "last_event_at", "fold_keys")  # fmt: skip
Kind = tuple[ReportType | None, ReportCategory | None]


def fold_retention(row: Mapping[str, Any], policy: RetentionPolicy, kind: Kind) -> datetime | None:
    """The ``retention_until`` the fold computes for this stored row under ``policy``."""
    fold = ExecutionFold.from_row(row)  # the columns retention depends on
    period = policy.period(
        fold.status, report_type=kind[0], category=kind[1],
        report_id=row["report_id"], execution_id=row["execution_id"],
    )  # fmt: skip
    return fold.retention_until(period)


@dataclass
class ReapplySummary:
    """What one reapply did (or would do, ``dry_run``): rows scanned and changed, seconds taken."""

    dry_run: bool
    report_ids: list[str] | None
    scanned: int = 0
    changed: int = 0  # rows updated (dry run: that would be)
    now_expired: int = 0  # of those, rows whose new retention_until has passed: next purge
    now_kept: int = 0  # of those, rows that no longer expire (NULL)
    batches: int = 0
    elapsed_s: float = 0.0
    examples: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The fields, JSON-ready: ``--json``."""
        return asdict(self)

    def render(self) -> str:
        """The summary for people: one line, then up to 10 changed rows (old -> new)."""
        verb = "would change" if self.dry_run else "changed"
        scope = "all reports" if not self.report_ids else ", ".join(self.report_ids)
        text = (
            f"retention reapply ({scope}): scanned {self.scanned} rows in {self.batches} "
            f"batches, {verb} {self.changed} ({self.now_expired} now past retention, "
            f"{self.now_kept} now kept forever) in {self.elapsed_s:.1f} s"
        )
        return "\n".join([text, *(f"  {e}" for e in self.examples)])


def _select() -> Any:
    e = EXECUTIONS.c
    return select(*(e[c] for c in COLUMNS), REPORTS.c.report_type, REPORTS.c.category).join_from(
        EXECUTIONS, REPORTS, e.report_id == REPORTS.c.report_id
    )


def _changes(
    rows: list[dict[str, Any]], policy: RetentionPolicy
) -> dict[int, tuple[datetime | None, datetime | None]]:
    """id -> (stored, computed) for the rows whose value differs."""
    found = {}
    for row in rows:
        wanted = fold_retention(row, policy, (row["report_type"], row["category"]))
        if wanted != row["retention_until"]:
            found[row["id"]] = (row["retention_until"], wanted)
    return found


async def _apply(engine: AsyncEngine, ids: list[int], policy: RetentionPolicy) -> int:
    """Lock the rows, recompute from what is stored now, update those still different."""
    e = EXECUTIONS.c

    async def attempt() -> int:
        async with engine.begin() as conn:
            locked = select(*(e[c] for c in COLUMNS)).where(e.id.in_(ids))
            rows = [
                dict(r)
                for r in (await conn.execute(locked.order_by(e.id).with_for_update())).mappings()
            ]
            report_ids = sorted({r["report_id"] for r in rows})
            kinds_query = select(REPORTS.c.report_id, REPORTS.c.report_type, REPORTS.c.category)
            kinds = {
                rid: (t, c)
                for rid, t, c in await conn.execute(
                    kinds_query.where(REPORTS.c.report_id.in_(report_ids))
                )
            }
            for row in rows:
                row["report_type"], row["category"] = kinds.get(row["report_id"], (None, None))
            changes = _changes(rows, policy)
            if changes:
                stmt = (
                    update(EXECUTIONS)
                    .where(e.id == bindparam("row_id"))
                    .values(retention_until=bindparam("until", type_=e.retention_until.type))
                )
                params = [{"row_id": i, "until": new} for i, (_, new) in changes.items()]
                await conn.execute(stmt, params)
            return len(changes)

    return await retry(attempt, classify=classify, backoff=JOB_BACKOFF, attempts=JOB_ATTEMPTS)


async def reapply(
    engine: AsyncEngine,
    policy: RetentionPolicy,
    *,
    report_ids: Sequence[str] | None = None,
    batch_size: int = 1000,
    dry_run: bool = False,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    on_batch: Callable[[int, int], None] | None = None,  # (rows scanned, rows changed)
) -> ReapplySummary:
    """Walk ``report_executions`` (or only ``report_ids``' rows) and fix ``retention_until``.

    Each row's value is computed again as the fold does (CONTRACT.md, "The
    fold": explicit value, else terminal time + the policy's period) from its
    stored state and its report's current type and category; rows whose value
    differs are updated (locked and recomputed first), ``batch_size`` rows at a
    time in ``id`` order. ``on_batch(scanned, changed)`` after each batch.

    Raises:
        StorageError: an update still failed after ``RETRIES`` attempts (deadlock,
            lock wait timeout, lost connection).
        PoisonBatch: the database refused an update for good.
    """
    started = time.perf_counter()
    summary = ReapplySummary(dry_run, sorted(report_ids) if report_ids else None)
    now, query = clock(), _select()
    if summary.report_ids:
        query = query.where(EXECUTIONS.c.report_id.in_(summary.report_ids))
    async for page in keyset.pages(engine, query, (EXECUTIONS.c.id,), batch_size):
        rows = [dict(r._mapping) for r in page]
        summary.batches += 1
        summary.scanned += len(rows)
        changes = _changes(rows, policy)
        by_id = {r["id"]: r for r in rows}
        for row_id, (old, new) in changes.items():
            summary.now_expired += new is not None and new <= now
            summary.now_kept += new is None
            if len(summary.examples) < 10:
                summary.examples.append(f"{by_id[row_id]['execution_id']}: {_t(old)} -> {_t(new)}")
        changed = len(changes)
        if changes and not dry_run:
            changed = await _apply(engine, sorted(changes), policy)
        summary.changed += changed
        if not dry_run:
            metrics.RETENTION_REAPPLIED.inc(changed)
        if on_batch is not None:
            on_batch(len(rows), changed)
    summary.elapsed_s = time.perf_counter() - started
    return summary


def _t(value: datetime | None) -> str:
    return "NULL" if value is None else value.isoformat()


async def count_rows(engine: AsyncEngine, report_ids: Sequence[str] | None = None) -> int:
    """How many rows a reapply walks (for the progress bar)."""
    query = select(func.count()).select_from(EXECUTIONS)
    if report_ids:
        query = query.where(EXECUTIONS.c.report_id.in_(report_ids))
    async with engine.connect() as conn:
        return int((await conn.execute(query)).scalar_one())


async def reports_changed_since(engine: AsyncEngine, since: datetime) -> list[str]:
    """Reports whose row was written at or after ``since`` (index on ``reports.updated_at``):
    a definition that arrived after its executions may have changed their period."""
    query = select(REPORTS.c.report_id).where(REPORTS.c.updated_at >= since)
    async with engine.connect() as conn:
        return sorted((await conn.execute(query)).scalars())
