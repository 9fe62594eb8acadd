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
  succeeded before a split are safe to write again. A failure that names its
  rows (``RowTooLarge``: over the statement limit, exectrack.consumer.db.packet) takes
  them out at once, without bisecting.
- A lost connection (``ConnectionLost``: 2006, 2013, 2055) is either an outage or a
  statement the server hangs up on (over ``max_allowed_packet``, one that
  crashes it), which no retry can fix. After each one the writer probes the
  server on a connection of its own (``SELECT 1``): when it answers, the loss
  counts against the batch; ``lost_connection_limit`` losses in a row to a
  server that answers make the batch a ``PoisonBatch`` (bisected as above). A
  probe that fails is an outage: the count restarts and the batch is retried
  for as long as it lasts, never dead-lettered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from exectrack.consumer import metrics
from exectrack.consumer.db.repository import WriteResult, classify, write_batch
from exectrack.consumer.errors import ConnectionLost, PoisonBatch, RowTooLarge, StorageError
from exectrack.consumer.ingest.anomalies import report_conflicts, report_out_of_range
from exectrack.consumer.ingest.fold import ExecutionFold
from exectrack.consumer.retention.policy import RetentionPolicy
from exectrack.consumer.retry import Backoff, retry
from exectrack.consumer.settings import Settings
from exectrack.producer.errors import ExectrackError
from exectrack.producer.events import ReportDefinedEvent

log = structlog.get_logger(__name__)


@dataclass
class Outcome:
    """What ``BatchWriter.write`` did with one batch, over all its transactions.

    ``written``: execution rows inserted or updated; ``attempts``: transactions
    tried (retries and bisection included); ``poisoned_*``: the execution and
    report ids the database refused for good, with their error text in ``errors``
    (their records are dead-lettered as ``db_refused``).
    """

    written: int = 0
    skipped_purged: int = 0
    reports_defined: int = 0
    placeholders: int = 0
    attempts: int = 0
    poisoned_executions: list[str] = field(default_factory=list)
    poisoned_reports: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)  # key -> database error text

    def add(self, result: WriteResult) -> None:
        """Count one committed transaction's ``WriteResult``."""
        self.written += result.executions_written
        self.skipped_purged += result.executions_skipped_purged
        self.reports_defined += result.reports_defined
        self.placeholders += result.placeholders


PROBE_TIMEOUT_S = 10.0


@dataclass
class BatchWriter:
    """Writes folded batches; see the module docstring for retries and isolation.

    ``max_statement_bytes`` replaces the server's ``max_allowed_packet`` as the
    bound of one statement (None: the server's, exectrack.consumer.db.packet);
    ``lost_connection_limit`` is how many lost connections in a row, with the
    server answering a probe after each, make a batch poison.
    """

    engine: AsyncEngine
    policy: RetentionPolicy
    retry_initial_s: float = 0.2
    retry_max_s: float = 30.0
    max_statement_bytes: int | None = None
    lost_connection_limit: int = 3

    @classmethod
    def of(cls, engine: AsyncEngine, settings: Settings, **overrides: Any) -> BatchWriter:
        """The writer ``settings`` describe (the consume loop's and replay's)."""
        options: dict[str, Any] = {
            "retry_initial_s": settings.db_retry_initial_s,
            "retry_max_s": settings.db_retry_max_s,
            "max_statement_bytes": settings.db_max_statement_bytes,
            "lost_connection_limit": settings.db_lost_connection_limit,
        }
        return cls(engine, settings.retention, **(options | overrides))

    async def write(
        self,
        executions: Mapping[str, ExecutionFold],
        definitions: Mapping[str, ReportDefinedEvent],
        keep_going: Callable[[], bool] = lambda: True,
    ) -> Outcome:
        """Write one folded batch: retried while retriable, bisected when refused (module doc).

        Args:
            executions: one fold state per ``execution_id`` (the batch's, merged
                into the stored rows).
            definitions: the winning definition per ``report_id``.
            keep_going: asked before each retry; False stops retrying.

        Returns:
            The ``Outcome``; refused ids are in it, not raised.

        Raises:
            Stopped: a retriable failure persisted and ``keep_going()`` turned
                false; nothing was committed for the failing part.
        """
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
        while True:
            try:
                result = await self._write_retrying(executions, definitions, outcome, keep_going)
                outcome.add(result)
                report_conflicts(result.conflicts)
                report_out_of_range(result.out_of_range)
                return
            except PoisonBatch as exc:
                size = len(executions) + len(definitions)
                if size == 1:
                    key = next(iter(executions or definitions))
                    self._refuse(key, bool(executions), str(exc), outcome)
                    return
                sizes = exc.sizes if isinstance(exc, RowTooLarge) else {}
                named = {k for k in sizes if (k in executions) != (k in definitions)}
                if not named:
                    log.info("db_bisect", size=size, error=str(exc))
                    break
                # the failure names its rows: take them out, write the rest
                for key in sorted(named):
                    error = exc.reason(key) if isinstance(exc, RowTooLarge) else str(exc)
                    self._refuse(key, key in executions, error, outcome)
                executions = {k: v for k, v in executions.items() if k not in named}
                definitions = {k: v for k, v in definitions.items() if k not in named}
                if not executions and not definitions:
                    return
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

    @staticmethod
    def _refuse(key: str, execution: bool, error: str, outcome: Outcome) -> None:
        (outcome.poisoned_executions if execution else outcome.poisoned_reports).append(key)
        outcome.errors[key] = error
        log.warning("db_refused", key=key, error=error)

    async def _server_answers(self) -> bool:
        """Whether the server answers ``SELECT 1`` on a pooled (pre-pinged) or new connection."""
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_S), self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception:  # any failure means: not reachable now
            return False
        return True

    async def _write_retrying(
        self,
        executions: dict[str, ExecutionFold],
        definitions: dict[str, ReportDefinedEvent],
        outcome: Outcome,
        keep_going: Callable[[], bool],
    ) -> WriteResult:
        lost = 0  # connections lost in a row while the server answers a probe

        async def attempt() -> WriteResult:
            nonlocal lost
            outcome.attempts += 1
            started = asyncio.get_running_loop().time()
            try:
                async with self.engine.begin() as conn:
                    result = await write_batch(
                        conn, executions, definitions, self.policy,
                        max_statement_bytes=self.max_statement_bytes,
                    )  # fmt: skip
            except Exception as exc:
                error = classify(exc)
                metrics.DB_ERRORS.labels(kind=type(error).__name__).inc()
                if isinstance(error, StorageError):
                    # an outage (the probe fails) or any other failure breaks the row
                    lost = (
                        lost + 1
                        if isinstance(error, ConnectionLost) and await self._server_answers()
                        else 0
                    )
                    if lost >= self.lost_connection_limit:
                        raise PoisonBatch(
                            f"the connection was lost {lost} times in a row on these rows while "
                            "the server answers a new connection (a statement it hangs up on: "
                            f"larger than max_allowed_packet, or one that crashes it): {error}"
                        ) from exc
                if error is exc:  # already classified (RowTooLarge, from write_batch)
                    raise
                raise error from exc
            metrics.DB_WRITE_SECONDS.observe(asyncio.get_running_loop().time() - started)
            return result

        def retrying(error: ExectrackError, _retry: int, delay: float) -> None:
            log.warning("db_retry", error=str(error), retry_in_s=round(delay, 2))

        return await retry(
            attempt,
            classify=classify,
            backoff=Backoff(self.retry_initial_s, self.retry_max_s),
            keep_going=keep_going,
            on_retry=retrying,
        )
