"""Writing batches with retries, and isolating what the database refuses for good.

- Retriable failures (database down or busy, deadlock, a concurrent insert) are
  retried with capped exponential backoff and jitter, for as long as the
  caller's ``keep_going()`` says so. No offsets are committed meanwhile, so
  nothing is lost if the process stops instead.
- A non-retriable failure (``PoisonBatch``) is isolated by bisection: the
  batch's executions and reports are split in halves, each half written in its
  own transaction, down to the single execution (or report) the database
  refuses. Its events are handed back to be dead-lettered; the rest is written
  and the partition keeps flowing. Writes are idempotent, so the halves that
  succeeded before a split are safe to write again.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from consumer import metrics
from consumer.db.repository import WriteResult, classify, write_batch
from consumer.errors import PoisonBatch, StorageError
from consumer.fold import ExecutionFold
from consumer.retention import RetentionPolicy
from producer.events import ReportDefinedEvent

log = structlog.get_logger(__name__)


@dataclass
class Outcome:
    written: int = 0
    skipped_purged: int = 0
    reports_defined: int = 0
    placeholders: int = 0
    attempts: int = 0
    poisoned_executions: list[str] = field(default_factory=list)
    poisoned_reports: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)  # key -> database error text

    def add(self, result: WriteResult) -> None:
        self.written += result.executions_written
        self.skipped_purged += result.executions_skipped_purged
        self.reports_defined += result.reports_defined
        self.placeholders += result.placeholders


def report_conflicts(conflicts: Iterable[tuple[str, str]]) -> None:
    """Count and log each event id seen with two contents (CONTRACT.md, "The fold").

    The fold already ordered them by digest (the row does not depend on which
    came first); this only tells the operator that a producer re-used an id.
    """
    for execution_id, event_id in conflicts:
        metrics.EVENT_ID_CONFLICTS.inc()
        log.warning("event_id_conflict", execution_id=execution_id, id=event_id)


class Stopped(Exception):
    """keep_going() turned false while a retriable failure persisted."""


@dataclass
class BatchWriter:
    engine: AsyncEngine
    policy: RetentionPolicy
    retry_initial_s: float = 0.2
    retry_max_s: float = 30.0

    async def write(
        self,
        executions: Mapping[str, ExecutionFold],
        definitions: Mapping[str, ReportDefinedEvent],
        keep_going: Callable[[], bool] = lambda: True,
    ) -> Outcome:
        outcome = Outcome()
        await self._write_isolating(dict(executions), dict(definitions), outcome, keep_going)
        return outcome

    async def _write_isolating(
        self,
        executions: dict[str, ExecutionFold],
        definitions: dict[str, ReportDefinedEvent],
        outcome: Outcome,
        keep_going: Callable[[], bool],
    ) -> None:
        try:
            result = await self._write_retrying(executions, definitions, outcome, keep_going)
            outcome.add(result)
            report_conflicts(result.conflicts)
            return
        except PoisonBatch as exc:
            size = len(executions) + len(definitions)
            if size == 1:
                key = next(iter(executions or definitions))
                target = outcome.poisoned_executions if executions else outcome.poisoned_reports
                target.append(key)
                outcome.errors[key] = str(exc)
                log.warning("db_refused", key=key, error=str(exc))
                return
            log.info("db_bisect", size=size, error=str(exc))
        ex_keys, def_keys = sorted(executions), sorted(definitions)
        if len(ex_keys) + len(def_keys) > 1 and ex_keys and def_keys:
            halves = [(ex_keys, []), ([], def_keys)]
        elif ex_keys:
            mid = len(ex_keys) // 2
            halves = [(ex_keys[:mid], []), (ex_keys[mid:], [])]
        else:
            mid = len(def_keys) // 2
            halves = [([], def_keys[:mid]), ([], def_keys[mid:])]
        for ex_part, def_part in halves:
            await self._write_isolating(
                {k: executions[k] for k in ex_part},
                {k: definitions[k] for k in def_part},
                outcome,
                keep_going,
            )

    async def _write_retrying(
        self,
        executions: dict[str, ExecutionFold],
        definitions: dict[str, ReportDefinedEvent],
        outcome: Outcome,
        keep_going: Callable[[], bool],
    ) -> WriteResult:
        delay = self.retry_initial_s
        while True:
            outcome.attempts += 1
            started = asyncio.get_running_loop().time()
            try:
                async with self.engine.begin() as conn:
                    result = await write_batch(conn, executions, definitions, self.policy)
                metrics.DB_WRITE_SECONDS.observe(asyncio.get_running_loop().time() - started)
                return result
            except Exception as exc:
                error = classify(exc)
                metrics.DB_ERRORS.labels(kind=type(error).__name__).inc()
                if not isinstance(error, StorageError):
                    raise error from exc
                if not keep_going():
                    raise Stopped(str(error)) from exc
                log.warning("db_retry", error=str(error), retry_in_s=round(delay, 2))
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))  # noqa: S311 - jitter
                delay = min(delay * 2, self.retry_max_s)
