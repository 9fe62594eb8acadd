"""Execution gauges read from the database on an interval, inside the consume service.

- ``exectrack_executions_active{status}``: executions ``pending`` / ``running`` now;
- ``exectrack_executions_stuck``: of those, the ones with no event for
  ``execution_stuck_after_s`` (default 15 min): the reaper's definition of a
  stale execution (``retention.reap.find_stale``: status in ``OPEN`` and
  ``last_event_at`` before a cutoff), with a shorter window, so a dashboard sees
  them before the reaper (``reap_after_s``, default 6 h) closes them;
- ``exectrack_execution_gauges_timestamp_seconds``: when they were read.

One statement per interval (``execution_counts``): ``status IN ('pending',
'running')`` grouped by status, along ``ix_report_executions_status_last_event``
(status, last_event_at), which covers it: index ranges, no table rows read.
It counts, so it does not take ``read.queries.stuck_executions`` (a page of rows).
Every consumer replica runs it and exports the same numbers: aggregate with
``max``, not ``sum`` (docs/read/metrics.md). A failed read is logged
(``execution_gauges_failed``) and leaves the gauges as they were; the timestamp
gauge tells how old they are. The task has its own one-connection engine, so it
never takes a connection from the consume loop's pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog
from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from exectrack.consumer import metrics
from exectrack.consumer.db.engine import create_engine
from exectrack.consumer.db.repository import EXECUTIONS
from exectrack.consumer.retention.reap import OPEN
from exectrack.consumer.settings import Settings

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ExecutionCounts:
    """Open executions now: ``active`` per status (``pending``, ``running``; absent: 0)
    and ``stuck``, those with no event since ``cutoff`` (aware UTC)."""

    active: dict[str, int]
    stuck: int
    cutoff: datetime


async def execution_counts(
    engine: AsyncEngine, *, stuck_after_s: float, now: datetime | None = None
) -> ExecutionCounts:
    """Count pending/running executions, and the stuck ones, in one statement.

    Args:
        engine: the database.
        stuck_after_s: seconds without an event after which an open execution is
            stuck (compared with ``last_event_at``, the greatest event time folded).
        now: the clock (aware; default: now, UTC).

    Raises:
        ValueError: ``stuck_after_s`` is not positive.
        sqlalchemy.exc.SQLAlchemyError: the database failed.
    """
    if not stuck_after_s > 0:
        raise ValueError(f"stuck_after_s: must be > 0 seconds, got {stuck_after_s!r}")
    cutoff = (now or datetime.now(UTC)) - timedelta(seconds=stuck_after_s)
    c = EXECUTIONS.c
    stuck = func.sum(case((c.last_event_at < cutoff, 1), else_=0))
    query = select(c.status, func.count(), stuck).where(c.status.in_(OPEN)).group_by(c.status)
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    active = {str(status): int(count) for status, count, _ in rows}
    return ExecutionCounts(active, sum(int(n or 0) for _, _, n in rows), cutoff)


class ExecutionGauges:
    """The gauge task of one consumer process (module doc).

    ``engine``: the database to read (default: a one-connection engine from
    ``settings.database``, disposed by ``stop()``).
    """

    def __init__(self, settings: Settings, engine: AsyncEngine | None = None) -> None:
        self.settings = settings
        self._owns_engine = engine is None
        self.engine = engine or create_engine(settings.database.model_copy(update={"pool_size": 1}))
        self.task: asyncio.Task[None] | None = None

    def start(self) -> ExecutionGauges:
        """Start reading every ``execution_gauges_interval_s`` (none when it is 0).

        Returns:
            ``self``, so that ``ExecutionGauges(settings).start()`` reads as one step.
        """
        interval = self.settings.execution_gauges_interval_s
        if interval > 0:
            self.task = asyncio.create_task(self._every(interval))
            log.info("execution_gauges_scheduled", interval_s=interval)
        return self

    async def refresh(self) -> ExecutionCounts:
        """Read the counts once and set the gauges.

        Raises:
            sqlalchemy.exc.SQLAlchemyError: the database failed (the gauges keep
                their previous values).
        """
        counts = await execution_counts(
            self.engine, stuck_after_s=self.settings.execution_stuck_after_s
        )
        metrics.set_execution_gauges(counts.active, counts.stuck, time.time())
        return counts

    async def _every(self, interval: float) -> None:
        while True:
            try:
                await self.refresh()
            except Exception as exc:  # logged; the next interval tries again
                log.warning("execution_gauges_failed", error=str(exc)[:500])
            await asyncio.sleep(interval)

    async def stop(self) -> None:
        """Cancel the task, wait for it, dispose our engine (safe to call twice)."""
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None
        if self._owns_engine:
            await self.engine.dispose()


def start_execution_gauges(settings: Settings) -> ExecutionGauges:
    """Start the gauge task ``execution_gauges_interval_s`` asks for (0: none); ``stop()`` it."""
    return ExecutionGauges(settings).start()
