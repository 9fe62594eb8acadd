"""The reaper: close stale executions by publishing ``exectrack.execution.timed_out``.

A stale execution is ``pending`` or ``running`` with no event for longer than
``reap_after_s`` (its ``last_event_at``, the greatest event time the fold has
seen). The reaper finds them along ``ix_report_executions_status_last_event``
(one range per status, keyset-paginated on ``(last_event_at, id)``) and
publishes, for each, a ``timed_out`` event to the events topic, keyed by the
``execution_id``, from ``REAPER_SOURCE``, WITHOUT a ``sequence``, with
``end_time`` = now and ``error_details`` saying why. It never writes the table:
the consumer folds the event like any other, so the topic holds the history and
a replay gives the same row.

Order key K = (rank, sequence or -1, time, id, digest): the reaper's event is
(2, -1, now, id, digest). A worker's own terminal event (rank 2) that arrives later
still wins if it carries a sequence (>= 0 > -1), whatever its time; without a
sequence it wins only if its time is later than the reaper's. A late
``started``/``progress`` (rank 1) never reopens the execution.

Reaping twice before the consumer applied the first run (or two replicas at
once; a named lock makes that rare) publishes two ``timed_out`` events with
different ids: the fold keeps the status ``timeout`` either way, and the later
event's ``end_time`` and ``error_details`` (greatest K). Harmless, and counted.
"""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from exectrack.consumer import metrics
from exectrack.consumer.db import keyset
from exectrack.consumer.db.repository import EXECUTIONS
from exectrack.consumer.retention.purge import NamedLock, lock_name
from exectrack.producer.events import EventType, ExecutionEvent, ExecutionStatus, execution_event
from exectrack.producer.publisher import Publisher
from exectrack.producer.settings import KafkaSettings

log = structlog.get_logger(__name__)
REAPER_SOURCE = "/services/exectrack-reaper"
OPEN = (ExecutionStatus.PENDING, ExecutionStatus.RUNNING)


@dataclass(frozen=True)
class Stale:
    """A pending or running execution with no event since ``last_event_at`` (aware UTC)."""

    execution_id: str
    report_id: str
    status: ExecutionStatus
    last_event_at: datetime


@dataclass
class ReapSummary:
    """What one reap did (or would do, ``dry_run``); ``after_s`` and ``elapsed_s`` in seconds."""

    now: datetime
    after_s: float
    dry_run: bool
    outcome: str = "success"  # success | dry_run | busy | error
    stale: list[Stale] = field(default_factory=list)  # dry run: all; else the first 20
    found: int = 0
    published: int = 0
    elapsed_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """The summary, JSON-ready (times as RFC 3339): ``--json``."""
        return {
            "now": self.now.isoformat(), "after_s": self.after_s, "dry_run": self.dry_run,
            "outcome": self.outcome, "found": self.found, "published": self.published,
            "elapsed_s": self.elapsed_s,
            "stale": [
                {"execution_id": s.execution_id, "report_id": s.report_id, "status": s.status,
                 "last_event_at": s.last_event_at.isoformat()}
                for s in self.stale
            ],
        }  # fmt: skip

    def render(self) -> str:
        """The summary for people: one line, then one per stale execution listed."""
        if self.outcome == "busy":
            return "reap: another reaper holds the lock on this database; nothing done"
        verb = "would publish" if self.dry_run else "published"
        lines = [
            f"reap: {self.found} executions pending/running with no event for "
            f"{self.after_s:g} s; {verb} {self.published if not self.dry_run else self.found} "
            f"timed_out events in {self.elapsed_s:.2f} s"
        ]
        lines += [
            f"  {s.execution_id} ({s.report_id}) {s.status}, "
            f"last event {s.last_event_at.isoformat()}"
            for s in self.stale
        ]
        return "\n".join(lines)


async def find_stale(
    engine: AsyncEngine, cutoff: datetime, *, batch_size: int = 500
) -> AsyncIterator[list[Stale]]:
    """Batches of open executions whose last event is older than ``cutoff``."""
    c = EXECUTIONS.c
    for status in OPEN:
        query = select(c.id, c.execution_id, c.report_id, c.status, c.last_event_at).where(
            c.status == status, c.last_event_at < cutoff
        )
        async for rows in keyset.pages(engine, query, (c.last_event_at, c.id), batch_size):
            yield [Stale(r.execution_id, r.report_id, r.status, r.last_event_at) for r in rows]


def timed_out_event(stale: Stale, *, now: datetime, after_s: float, host: str) -> ExecutionEvent:
    """The event the reaper publishes for one stale execution."""
    silence = int((now - stale.last_event_at).total_seconds())
    return execution_event(
        EventType.TIMED_OUT,
        execution_id=stale.execution_id,
        report_id=stale.report_id,
        source=REAPER_SOURCE,
        time=now,
        end_time=now,
        error_details={
            "reason": f"no event for {silence} s",
            "reaper": host,
            "window_s": after_s,
            "status": str(stale.status),
            "last_event_at": stale.last_event_at.isoformat(),
        },
    )


async def reap(
    engine: AsyncEngine,
    kafka: KafkaSettings,
    *,
    after_s: float,
    dry_run: bool = False,
    limit: int | None = None,
    batch_size: int = 500,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> ReapSummary:
    """Publish ``timed_out`` for every stale execution (at most ``limit``); acknowledged.

    Stale: pending or running, with no event for ``after_s`` seconds
    (CONTRACT.md, "Retention": closed by publishing
    ``exectrack.execution.timed_out`` to the topic, so the history records it
    and replays agree). Read ``batch_size`` rows at a time; each batch's events
    are acknowledged before the next is read. Another reaper holding the named
    lock on this database: outcome ``busy``, nothing done.

    Raises:
        StartFailed: no broker answered (``Publisher.start``).
        PublishError: an event was not acknowledged.
        sqlalchemy.exc.SQLAlchemyError: the database failed.
    """
    now = clock()
    summary = ReapSummary(now=now, after_s=after_s, dry_run=dry_run)
    started = time.perf_counter()
    host = socket.gethostname()
    cutoff = now - timedelta(seconds=after_s)
    lock = NamedLock(engine, lock_name(engine, "reap"))
    publisher: Publisher | None = None
    try:
        if dry_run:
            summary.outcome = "dry_run"
        elif not await lock.acquire():
            summary.outcome = "busy"
            return summary
        else:
            publisher = Publisher(kafka, source=REAPER_SOURCE)
            await publisher.start()
        async for batch in find_stale(engine, cutoff, batch_size=batch_size):
            if limit is not None:
                batch = batch[: max(0, limit - summary.found)]
            summary.found += len(batch)
            keep = len(batch) if dry_run else max(0, 20 - len(summary.stale))
            summary.stale += batch[:keep]
            if publisher is not None and batch:
                for stale in batch:
                    await publisher.send(
                        timed_out_event(stale, now=now, after_s=after_s, host=host)
                    )
                await publisher.flush()  # acknowledged before the next batch is read
                summary.published += len(batch)
                metrics.REAP_PUBLISHED.inc(len(batch))
            if limit is not None and summary.found >= limit:
                break
    except BaseException:
        summary.outcome = "error"
        raise
    finally:
        try:
            if publisher is not None:
                await publisher.stop()
        finally:
            await lock.release()
            summary.elapsed_s = time.perf_counter() - started
            metrics.REAP_RUNS.labels(outcome=summary.outcome).inc()
            if summary.outcome == "success":
                metrics.REAP_LAST_SUCCESS.set(time.time())
            log.info(
                "reap", outcome=summary.outcome, found=summary.found,
                published=summary.published, after_s=after_s, s=round(summary.elapsed_s, 3),
            )  # fmt: skip
    return summary
