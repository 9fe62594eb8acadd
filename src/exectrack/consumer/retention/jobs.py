"""Retention jobs inside the consumer process, on a schedule (off by default).

- every ``purge_interval_s`` (> 0): reapply the policy to the executions of
  reports whose row changed since the last pass (a definition that arrived
  after its executions were written changes their type/category, so maybe
  their period), then purge;
- every ``reap_interval_s`` (> 0): the reaper.

Each job is a separate asyncio task with its own small engine (two connections:
the named lock and the statements), so it never takes a connection from the
consume loop's pool; the loop never waits for it either (a purge chunk holds
its row locks for milliseconds).
Replicas all run the schedule, but a named lock per database and job lets only
one of them work at a time (the others log ``busy``). A failing run is logged
and counted (``..._runs_total{outcome="error"}``); the next one tries again.

The service starts them with one call and stops them on the way out::

    jobs = start_retention_jobs(settings)
    try:
        ...
    finally:
        await jobs.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from exectrack.consumer.db.engine import create_engine
from exectrack.consumer.retention.purge import PurgeOptions, purge
from exectrack.consumer.retention.reap import reap
from exectrack.consumer.retention.reapply import reapply, reports_changed_since
from exectrack.consumer.settings import Settings

log = structlog.get_logger(__name__)
# A report row is written (updated_at) inside a batch transaction that commits a
# little later; looking back this much more than the interval never misses one.
REPORT_LOOKBACK = timedelta(minutes=10)


class RetentionJobs:
    """The scheduled purge and reap of one consumer process (module doc).

    ``engine``: the database to work on (default: a new two-connection engine
    from ``settings.database``, disposed by ``stop()``).
    """

    def __init__(self, settings: Settings, engine: AsyncEngine | None = None) -> None:
        self.settings = settings
        self._owns_engine = engine is None
        self.engine = engine or create_engine(settings.database.model_copy(update={"pool_size": 2}))
        self.tasks: list[asyncio.Task[None]] = []
        started = datetime.now(UTC)
        self.reports_since = started - timedelta(seconds=settings.purge_interval_s)
        self.reports_since -= REPORT_LOOKBACK

    def start(self) -> RetentionJobs:
        """Start one task per job whose interval (``purge_interval_s``, ``reap_interval_s``) is > 0.

        Returns:
            ``self``, so that ``RetentionJobs(settings).start()`` reads as one step.
        """
        s = self.settings
        for name, interval, job in (
            ("purge", s.purge_interval_s, self.purge_once),
            ("reap", s.reap_interval_s, self.reap_once),
        ):
            if interval > 0:
                self.tasks.append(asyncio.create_task(self._every(name, interval, job)))
                log.info("retention_job_scheduled", job=name, interval_s=interval)
        return self

    async def stop(self) -> None:
        """Cancel the jobs, wait for them (a run in progress is abandoned), dispose our engine."""
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.tasks = []
        if self._owns_engine:
            await self.engine.dispose()

    async def _every(self, name: str, interval: float, job: Callable[[], Awaitable[None]]) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await job()
            except Exception as exc:  # logged and counted; the next run tries again
                log.error("retention_job_failed", job=name, error=str(exc)[:500])

    async def purge_once(self) -> None:
        """One scheduled purge pass: reapply the policy to the reports changed since the last
        pass (``REPORT_LOOKBACK`` earlier), then ``purge`` with the settings' chunk, pause
        and tombstone TTL.

        Raises:
            sqlalchemy.exc.SQLAlchemyError: the database failed; the schedule logs it
                and tries again at the next interval.
        """
        s = self.settings
        started = datetime.now(UTC)
        changed = await reports_changed_since(self.engine, self.reports_since)
        if changed:
            summary = await reapply(self.engine, s.retention, report_ids=changed)
            log.info("retention_reapplied", reports=len(changed), changed=summary.changed)
        self.reports_since = started - REPORT_LOOKBACK
        options = PurgeOptions(
            chunk_size=s.purge_chunk_size,
            pause_ms=s.purge_pause_ms,
            tombstone_ttl_s=s.tombstone_ttl_s or None,
        )
        await purge(self.engine, s.retention, options)

    async def reap_once(self) -> None:
        """One scheduled ``reap``: ``timed_out`` for executions silent for ``reap_after_s`` seconds.

        Raises:
            Exception: what ``reap`` raises (database or broker failures); the schedule
                logs it and tries again at the next interval.
        """
        s = self.settings
        await reap(self.engine, s.kafka, after_s=s.reap_after_s)


def start_retention_jobs(settings: Settings, engine: AsyncEngine | None = None) -> RetentionJobs:
    """Start the scheduled jobs the settings ask for (none by default); ``stop()`` them."""
    return RetentionJobs(settings, engine).start()
