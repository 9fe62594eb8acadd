"""A replay's options, its plan, its progress display and its summary (replay.rebuild).

The progress display (rich, on stderr) has one bar per partition, its position
against the end offset captured at the start, and a total: events done of
events to read, the rate over the last 30 s and the time remaining at that
rate. With more than ``MAX_PARTITION_BARS`` partitions only the total is
drawn. Disabled, it costs nothing. The summary prints as text or JSON.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Literal

from aiokafka import TopicPartition
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from exectrack.producer.errors import ExectrackError

MAX_PARTITION_BARS = 32
Mode = Literal["rebuild", "merge"]


class ReplayError(ExectrackError, ValueError):
    """The replay cannot start or cannot finish (a usage error, a missing topic, a stall)."""


@dataclass(frozen=True)
class ReplayOptions:
    """What ``exectrack-consumer replay`` was asked (docs/replay.md); the defaults replay all.

    ``from_time``: aware; each partition starts at its first record at or after it.
    """

    target_url: str | None = None  # None: the configured database
    from_time: datetime | None = None
    partitions: tuple[int, ...] | None = None  # in replay order; None: all
    sequential: bool = False  # one partition after another instead of all at once
    merge: bool = False  # allow a target that already holds executions
    dead_letter: bool = False  # send invalid and refused records to the DLQ again


@dataclass(frozen=True)
class Span:
    """One partition's offsets to replay: ``start`` included, ``end`` excluded."""

    tp: TopicPartition
    start: int
    end: int


@dataclass(frozen=True)
class ReplayPlan:
    """The offsets a replay reads, fixed at ``captured_at`` (records published later are not)."""

    topic: str
    spans: tuple[Span, ...]
    sequential: bool
    captured_at: datetime  # when the end offsets were read

    @property
    def events(self) -> int:
        """Records to read: the sum of the spans' ``end - start``."""
        return sum(max(0, s.end - s.start) for s in self.spans)


@dataclass
class ReplaySummary:
    """What a replay did: counts of records and rows, and how long it took (``elapsed_s``, s)."""

    topic: str
    target: str
    mode: Mode
    partitions: int
    captured_at: datetime
    events_read: int = 0
    applied: int = 0
    invalid: int = 0
    refused: int = 0  # valid events of executions/reports the database refused
    dead_lettered: int = 0
    dead_letters_dropped: int = (
        0  # the DLQ could not carry them (exectrack.consumer.dlq.send; logged)
    )
    batches: int = 0
    row_writes: int = 0  # inserts and updates; an execution spanning batches counts per batch
    skipped_expired: int = 0
    skipped_purged: int = 0  # folds of executions with a tombstone; per batch, like row_writes
    reports_defined: int = 0
    executions: int = 0  # rows in the target's report_executions at the end
    elapsed_s: float = 0.0
    first_errors: list[str] = field(default_factory=list)
    end_offsets: dict[int, int] = field(default_factory=dict)  # partition -> where it stopped

    @property
    def events_per_s(self) -> float:
        """Records read per second of ``elapsed_s`` (0.0 before any time passed)."""
        return self.events_read / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        """The fields and ``events_per_s``, JSON-ready (``captured_at`` as RFC 3339): ``--json``."""
        found = asdict(self)
        found.update(captured_at=self.captured_at.isoformat(), events_per_s=self.events_per_s)
        return found

    def render(self) -> str:
        """The summary as aligned text lines, for people."""
        invalid_note = "dead-lettered again" if self.dead_lettered else "not dead-lettered again"
        if self.dead_letters_dropped:
            invalid_note += f", {self.dead_letters_dropped:,} the DLQ could not carry"
        rows = [
            ("events read", f"{self.events_read:,}"),
            ("applied", f"{self.applied:,}"),
            ("invalid", f"{self.invalid:,} ({invalid_note})"),
            ("refused by the db", f"{self.refused:,}"),
            ("execution rows written", f"{self.row_writes:,} in {self.batches:,} batches"),
            ("skipped as expired", f"{self.skipped_expired:,}"),
            ("skipped as purged (tombstone)", f"{self.skipped_purged:,}"),
            ("report definitions", f"{self.reports_defined:,}"),
            ("executions in target", f"{self.executions:,}"),
            ("elapsed", f"{self.elapsed_s:,.1f} s"),
            ("throughput", f"{self.events_per_s:,.0f} events/s"),
        ]
        head = (
            f"replay of {self.topic} ({self.partitions} partitions, end offsets of "
            f"{self.captured_at.isoformat(timespec='seconds')}) into {self.target} ({self.mode})"
        )
        errors = [f"  db refused: {e}" for e in self.first_errors]
        return "\n".join([head, *(f"  {k:<24}{v}" for k, v in rows), *errors])


class TotalOnly(ProgressColumn):
    """Draws ``column`` on the total's line only (partitions are read in bursts:
    their rates and ETAs would only flicker)."""

    def __init__(self, column: ProgressColumn) -> None:
        super().__init__()
        self.column = column

    def render(self, task: Task) -> Any:
        """The wrapped column's cell on the total's line, an empty text elsewhere."""
        return self.column.render(task) if task.fields.get("total_line") else Text("")


class RateColumn(ProgressColumn):
    """The task's speed, as rich measures it, in events per second."""

    def render(self, task: Task) -> Text:
        """``12,345/s``."""
        return Text(f"{task.speed or 0:,.0f}/s", style="progress.data.speed", no_wrap=True)


class ReplayProgress:
    """The progress bars on stderr: one per partition (up to ``MAX_PARTITION_BARS``), a total.

    A context manager; ``enabled=False`` draws nothing.
    """

    def __init__(
        self, spans: Sequence[Span], *, enabled: bool = True, console: Console | None = None
    ) -> None:
        self.bar = Progress(
            TextColumn("{task.description:<7}"),
            BarColumn(bar_width=30),
            TextColumn("{task.fields[where]}"),
            TotalOnly(RateColumn()),
            TotalOnly(TimeRemainingColumn()),
            console=console or Console(stderr=True),
            disable=not enabled,
        )
        self.spans = {s.tp: s for s in spans}
        self.done: dict[Any, int] = dict.fromkeys(self.spans, 0)
        self.todo = sum(max(0, s.end - s.start) for s in spans)
        self.total: TaskID = self.bar.add_task(
            "all", total=self.todo, where=self._where(0), total_line=True
        )
        self.tasks: dict[Any, TaskID] = {}
        if len(spans) <= MAX_PARTITION_BARS:
            for s in spans:
                self.tasks[s.tp] = self.bar.add_task(
                    f"  p{s.tp.partition}",
                    total=max(0, s.end - s.start),
                    where=f"offset {s.start:,}/{s.end:,}",
                )

    def _where(self, done: int) -> str:
        return f"{done:,}/{self.todo:,} events"

    def update(self, tp: Any, position: int) -> None:
        """``tp`` has been read up to ``position`` (the next offset)."""
        span = self.spans[tp]
        self.done[tp] = max(0, position - span.start)
        if tp in self.tasks:
            where = f"offset {position:,}/{span.end:,}"
            self.bar.update(self.tasks[tp], completed=self.done[tp], where=where)
        done = sum(self.done.values())
        self.bar.update(self.total, completed=done, where=self._where(done))

    def __enter__(self) -> ReplayProgress:
        self.bar.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.bar.stop()


def parse_time(value: str) -> datetime:
    """An RFC 3339 time with an offset (``2026-05-01T00:00:00Z``), as aware UTC.

    Raises:
        ReplayError: not an ISO 8601 time, or no UTC offset.
    """
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ReplayError(f"not an RFC 3339 time: {value!r}") from exc
    if parsed.tzinfo is None:
        raise ReplayError(f"{value!r} has no UTC offset (write Z or +hh:mm)")
    return parsed.astimezone(UTC)
