"""A deterministic stream of realistic traffic: lifecycles, duplicates, disorder, garbage.

``generate(SimConfig(seed=7))`` yields the same bytes for the same config,
every time, on every machine: consumer tests replay it, and compare the
database with the fold of the events it says are valid. What it makes:

- ``executions`` lifecycles, ``pending -> started -> 0..3 progress ->``
  completed (~85%) / failed (~10%) / cancelled (~3%) / timed_out (~2%),
  about ``IN_FLIGHT`` at a time, interleaved as real traffic is (a partition
  sees many executions at once). Times start at ``start`` and advance by
  ~``ADMIT_EVERY`` per execution; an execution lasts seconds to minutes.
- Sequence numbers 0, 1, 2, ... on every event of 90% of executions; the
  others omit it on about half of their events.
- ``reorder_ratio`` of executions are published out of lifecycle order
  (their ``time`` and ``sequence`` still tell the true order).
- ``duplicate_ratio`` of valid messages are sent again later, byte for byte.
- ``invalid_ratio`` of messages are invalid, one ``InvalidReason`` each (see
  ``SimMessage.invalid_reason``): not JSON, not UTF-8, naive time, unknown
  type, a negative count, a Kafka key that is another execution's id.
- ``reports`` report ids; about half get an ``exectrack.report.defined``
  (some before their executions, some after, a quarter of them twice:
  version 1 then 2). ``started_by`` users are ids 1..``users`` that exist
  nowhere: the consumer creates placeholders.

Valid values are exactly ``to_json(event)``; generating needs no pydantic
(``generate`` builds ``SimMessage.event`` with ``model_construct``, and
``run_simulation`` skips even that), so it runs at ~200,000 messages/s.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from itertools import islice
from typing import TYPE_CHECKING, Any, Protocol, cast

import click
import structlog

from exectrack.producer._traffic import (
    ADMIT_EVERY,
    DUPLICATE,
    IN_FLIGHT,
    INVALID,
    VALID,
    Record,
    SimConfig,
    Simulation,
)
from exectrack.producer.errors import PublishError
from exectrack.producer.events import (
    EventType,
    ExecutionData,
    ExecutionEvent,
    ReportData,
    ReportDefinedEvent,
)
from exectrack.producer.publisher import RawRecord, SentBatch

if TYPE_CHECKING:
    from rich.progress import Progress

__all__ = [
    "ADMIT_EVERY",
    "IN_FLIGHT",
    "RawSink",
    "SimConfig",
    "SimMessage",
    "SimReport",
    "TokenBucket",
    "generate",
    "records",
    "run_simulation",
]

log = structlog.get_logger(__name__)
RETRY_BACKOFF_S = 0.5


@dataclass(frozen=True)
class SimMessage:
    """One Kafka message of the simulation, and what the consumer must make of it."""

    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]
    event: ExecutionEvent | ReportDefinedEvent | None
    """The event ``parse_event`` returns for it; None for invalid messages."""
    invalid_reason: str | None
    """The ``InvalidReason`` the consumer must report; None if valid."""


def generate(config: SimConfig) -> Iterator[SimMessage]:
    """The simulation's messages, in publishing order; the same config gives the same bytes."""
    for record in Simulation(config).run():
        event = None if record.wire is None else _model(record.wire)
        yield SimMessage(record.key, record.value, list(record.headers), event, record.reason)


def records(config: SimConfig) -> Iterator[Record]:
    """``generate``'s messages without their events (``Record.wire`` is None): the fast path."""
    return Simulation(config, keep_events=False).run()


def _model(wire: dict[str, Any]) -> ExecutionEvent | ReportDefinedEvent:
    if wire["type"] is EventType.REPORT_DEFINED:
        return ReportDefinedEvent.model_construct(
            **{**wire, "data": ReportData.model_construct(**wire["data"])}
        )
    return ExecutionEvent.model_construct(
        **{**wire, "data": ExecutionData.model_construct(**wire["data"])}
    )


# ---------------------------------------------------------------- publishing
class RawSink(Protocol):
    """What ``run_simulation`` publishes to: ``Publisher`` or ``InMemoryPublisher``."""

    async def send_many(self, records: Sequence[RawRecord], /) -> list[SentBatch]:
        """Queue records as whole batches (``Publisher.send_many``)."""

    async def flush(self) -> None:
        """Wait for every batch queued so far (``Publisher.flush``)."""


@dataclass(frozen=True)
class SimReport:
    """What ``run_simulation`` got acknowledged (``sent = valid + duplicates + invalid``)."""

    sent: int
    valid: int
    """Distinct valid events (messages minus re-sent duplicates)."""
    invalid: int
    duplicates: int
    failed: int
    """Messages the broker never acknowledged, after retries."""
    resent: int
    """Messages sent again after a retriable failure (they may be on the topic twice)."""
    elapsed_s: float
    rate: float
    """Acknowledged messages per second."""


class TokenBucket:
    """At most ``rate`` tokens a second on average, bursts up to ``capacity``."""

    def __init__(self, rate: float, capacity: float | None = None) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.capacity = capacity if capacity is not None else max(1.0, rate / 20)
        self._tokens = self.capacity
        self._stamp = time.monotonic()

    async def take(self, count: float) -> None:
        """Wait until ``count`` tokens (at most ``capacity``) are there, and take them."""
        count = min(count, self.capacity)
        while True:
            now = time.monotonic()
            self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            if self._tokens >= count:
                self._tokens -= count
                return
            await asyncio.sleep((count - self._tokens) / self.rate)


class _Tally:
    """Counts acknowledgements as batches complete; queues retriable failures for a resend."""

    def __init__(self, retry_until: float) -> None:
        self.kinds = [0, 0, 0]  # VALID, DUPLICATE, INVALID
        self.failed = 0
        self.resent = 0
        self.retry: list[Sequence[Record]] = []
        self.pending: set[asyncio.Future[Any]] = set()
        self.retry_until = retry_until
        self.first_error: PublishError | None = None

    def watch(self, batches: list[SentBatch]) -> None:
        for batch in batches:
            self.pending.add(batch.future)
            batch.future.add_done_callback(partial(self._done, batch))

    def _done(self, batch: SentBatch, future: asyncio.Future[Any]) -> None:
        self.pending.discard(future)
        error = None if future.cancelled() else future.exception()
        if error is None:
            kinds = self.kinds
            for record in cast(Sequence[Record], batch.records):
                kinds[record.kind] += 1
            return
        if isinstance(error, PublishError):
            self.first_error = self.first_error or error
            if error.retriable and time.monotonic() < self.retry_until:
                self.retry.append(cast(Sequence[Record], batch.records))
                return
        self.failed += len(batch.records)
        log.error(
            "simulated messages not acknowledged", count=len(batch.records), error=repr(error)
        )


async def run_simulation(
    publisher: RawSink,
    config: SimConfig,
    *,
    rate: float | None = None,
    progress: bool = False,
    chunk: int = 4000,
    retry_for: float = 300.0,
) -> SimReport:
    """Publish the whole simulation; return (and print) what was acknowledged, and how fast.

    Messages go out in chunks through ``send_many`` (a batch per partition, no
    await per message), at most ``rate`` a second when given (token bucket).
    A batch that fails with a retriable error is sent again for up to
    ``retry_for`` seconds (a restarting broker); what still fails is counted
    in ``failed``, never dropped silently. ``progress`` draws a progress bar on
    stderr with rich (the ``exectrack[simulate]`` extra); the summary line goes
    to stdout.

    Raises:
        click.UsageError: ``progress`` without rich installed (one line naming the extra).
    """
    tally = _Tally(retry_until=time.monotonic() + retry_for)
    bucket = TokenBucket(rate) if rate else None
    size = chunk if bucket is None else max(1, min(chunk, int(bucket.capacity)))
    simulation = Simulation(config, keep_events=False)
    stream = simulation.run()
    queued = 0
    bar = _progress_bar() if progress else None
    started = time.monotonic()
    with bar if bar is not None else contextlib.nullcontext():
        show: Callable[..., None] = _no_progress
        if bar is not None:
            show = partial(
                bar.update, bar.add_task("simulate", total=config.executions, queued=0, rate=0.0)
            )
        while True:
            if tally.retry:
                await asyncio.sleep(RETRY_BACKOFF_S)
            while tally.retry:
                resend = tally.retry.pop()
                tally.resent += len(resend)
                tally.watch(await publisher.send_many(resend))
            batch = list(islice(stream, size))
            if not batch:
                if tally.pending:
                    await asyncio.wait(tally.pending, return_when=asyncio.FIRST_COMPLETED)
                elif not tally.retry:
                    break
                continue
            if bucket is not None:
                await bucket.take(len(batch))
            tally.watch(await publisher.send_many(batch))
            queued += len(batch)
            rate_now = queued / max(time.monotonic() - started, 1e-9)
            show(completed=simulation.finished, queued=queued, rate=rate_now)
        show(completed=config.executions, queued=queued)
    elapsed = time.monotonic() - started
    with contextlib.suppress(PublishError):  # counted above, batch by batch
        await publisher.flush()
    valid, duplicates, invalid = tally.kinds[VALID], tally.kinds[DUPLICATE], tally.kinds[INVALID]
    sent = valid + duplicates + invalid
    report = SimReport(
        sent=sent, valid=valid, invalid=invalid, duplicates=duplicates, failed=tally.failed,
        resent=tally.resent, elapsed_s=elapsed, rate=sent / elapsed if elapsed > 0 else 0.0,
    )  # fmt: skip
    click.echo(
        f"simulate: {sent:,} messages acknowledged ({valid:,} valid, {duplicates:,} duplicates, "
        f"{invalid:,} invalid) in {elapsed:.2f} s: {report.rate:,.0f} events/s"
        + (f"; {tally.resent:,} re-sent after retriable errors" if tally.resent else "")
        + (click.style(f"; {tally.failed:,} failed", fg="red") if tally.failed else "")
    )
    return report


def _no_progress(**_: Any) -> None:
    """What ``run_simulation`` calls instead of the bar's update without ``progress``."""


def _progress_bar() -> Progress:
    """rich's progress bar on stderr (imported here: rich is the ``simulate`` extra)."""
    try:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
    except ImportError:
        raise click.UsageError("--progress needs rich: pip install 'exectrack[simulate]'") from None
    return Progress(
        TextColumn("[bold]simulate"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(
            "executions · {task.fields[queued]:,} events · {task.fields[rate]:,.0f} events/s"
        ),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    )
