"""The simulator's generator: deterministic lifecycles, duplicates, disorder, invalid messages.

``exectrack.producer.simulate`` is the public face (``SimConfig``, ``generate``,
``run_simulation``); this module builds the messages as plain dicts and
bytes, without pydantic, so that generating is never the bottleneck.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import orjson

from exectrack.producer.events import (
    CONTENT_TYPE,
    MAX_TIME,
    MIN_TIME,
    CloudProvider,
    EventType,
    InvalidReason,
    ReportCategory,
    ReportType,
    TriggerType,
)

__all__ = [
    "ADMIT_EVERY",
    "DUPLICATE",
    "INVALID",
    "IN_FLIGHT",
    "VALID",
    "Record",
    "SimConfig",
    "Simulation",
]


@dataclass(frozen=True)
class SimConfig:
    """What a simulated run holds; one config and seed give the same messages, byte for byte.

    Ratios are fractions in [0, 1]. ``Simulation`` raises ``ValueError`` when
    ``start`` is naive or the run's times would leave MySQL ``TIMESTAMP``'s
    1970..2038 range.
    """

    executions: int = 1000
    """Executions to simulate, each a full lifecycle (pending .. terminal)."""
    seed: int = 0
    """Seed of the pseudo-random generator."""
    reports: int = 20
    """Distinct report ids; about half get a report.defined event."""
    duplicate_ratio: float = 0.01
    """Fraction of valid messages sent again identically (same id, same bytes)."""
    reorder_ratio: float = 0.1
    """Fraction of executions whose events are published out of lifecycle order."""
    invalid_ratio: float = 0.01
    """Fraction of messages that are invalid (mixed kinds)."""
    users: int = 50
    """``started_by`` ids are 1..users (placeholders: no such users exist)."""
    source: str = "/services/simulator"
    start: datetime = field(default=datetime(2026, 1, 1, tzinfo=UTC))
    """The first event's time; later ones advance deterministically from it."""


IN_FLIGHT = 64
"""Executions in progress at once: the interleaving a partition sees."""
ADMIT_EVERY = timedelta(milliseconds=250)
"""Simulated time between two executions' ``pending`` events."""

T = EventType
R = InvalidReason
HEADERS = [("content-type", CONTENT_TYPE.encode())]
VALID, DUPLICATE, INVALID = 0, 1, 2
_TERMINALS = ((0.85, T.COMPLETED), (0.95, T.FAILED), (0.98, T.CANCELLED), (1.0, T.TIMED_OUT))
_TRIGGERS = (*TriggerType,)
_INVALID_KINDS = (
    R.NOT_JSON, R.NOT_UTF8, R.NAIVE_TIMESTAMP, R.UNKNOWN_TYPE, R.INVALID_FIELD, R.KEY_MISMATCH,
)  # fmt: skip
_ERRORS = (
    ("botocore.exceptions.ClientError", "An error occurred (Throttling): Rate exceeded"),
    ("TimeoutError", "read timed out after 30 s"),
    ("KeyError", "'VpcId'"),
)


class Record(NamedTuple):
    """What ``run_simulation`` sends: a message, its kind, and its event as plain data."""

    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]
    kind: int  # VALID, DUPLICATE or INVALID
    wire: dict[str, Any] | None
    reason: str | None


def _dumps(wire: dict[str, Any]) -> bytes:
    return orjson.dumps(wire, option=orjson.OPT_UTC_Z)


_new_record = tuple.__new__  # Record(...) without the NamedTuple's Python-level __new__
_LONGEST = timedelta(days=402)  # an execution's last time, or its retention_until, after admission
_About = tuple[str, str, datetime]  # execution_id, report_id, its first event's time


class Simulation:
    """Makes one run of messages from a config: call ``run()`` once."""

    def __init__(self, config: SimConfig, *, keep_events: bool = True) -> None:
        """``keep_events=False`` leaves ``Record.wire`` empty for valid messages too: no dict
        outlives its serialization, which spares the garbage collector ~20% of the run."""
        if config.start.tzinfo is None:
            raise ValueError("SimConfig.start must be timezone-aware")
        last = config.start + config.executions * ADMIT_EVERY + _LONGEST
        if config.start < MIN_TIME or last > MAX_TIME:
            raise ValueError(
                "SimConfig: the events would fall outside 1970..2038 (MySQL TIMESTAMP)"
            )
        self.config = config
        self.keep_events = keep_events
        self.rng = random.Random(config.seed)  # noqa: S311 - a simulation, not cryptography
        self._random = self.rng.random
        self.start = config.start.astimezone(UTC)
        self.step = 0
        self.finished = 0
        """Executions whose every event has been yielded."""
        self.delayed: list[tuple[int, int, Record]] = []  # (due step, tie-break, duplicate)
        self.report_ids = [f"report-{i:04d}" for i in range(max(1, config.reports))]

    # ------------------------------------------------------------ the stream
    def run(self) -> Iterator[Record]:
        """Yield every message of the run once, in publishing order (call once per instance).

        Some report definitions first, then the executions interleaved
        ``IN_FLIGHT`` at a time, then the other report definitions; with
        ``INVALID`` messages mixed in and each ``DUPLICATE`` some steps after
        its original (``SimConfig`` ratios).
        """
        # The hot loop: locals and inlined steps, because this must never be what
        # limits run_simulation (see bench/producer.py).
        config, random_ = self.config, self._random
        invalid_ratio, executions = config.invalid_ratio, config.executions
        delayed = self.delayed
        before, after = self._report_definitions()
        yield from self._emit_all(before)
        pool: list[list[Record]] = []  # per execution in flight: its events, next one last
        about: list[_About] = []  # and what an invalid message about it needs
        admitted = 0
        while admitted < executions or pool:
            while len(pool) < IN_FLIGHT and admitted < executions:
                events, facts = self._execution(admitted)
                pool.append(events)
                about.append(facts)
                admitted += 1
            while delayed and delayed[0][0] <= self.step:
                yield heapq.heappop(delayed)[2]
            slot = int(random_() * len(pool))
            if random_() < invalid_ratio:
                yield self._invalid(*about[slot])
                continue
            queue = pool[slot]
            yield self._valid(queue.pop())
            if not queue:
                pool[slot], about[slot] = pool[-1], about[-1]
                pool.pop()
                about.pop()
                self.finished += 1
        yield from self._emit_all(after)
        while delayed:
            yield heapq.heappop(delayed)[2]

    def _emit_all(self, messages: list[Record]) -> Iterator[Record]:
        for message in messages:
            while self.delayed and self.delayed[0][0] <= self.step:
                yield heapq.heappop(self.delayed)[2]
            yield self._valid(message)

    def _valid(self, message: Record) -> Record:
        """Count a step; maybe schedule the message's duplicate for later."""
        self.step += 1
        if self._random() < self.config.duplicate_ratio:
            due = self.step + self._between(1, 200)
            duplicate = message._replace(kind=DUPLICATE)
            heapq.heappush(self.delayed, (due, self.step, duplicate))
        return message

    # ------------------------------------------------------------ building blocks
    def _below(self, n: int) -> int:
        """0 <= result < n; ``randrange``'s exactness costs 10x and buys nothing here."""
        return int(self._random() * n)

    def _between(self, low: int, high: int) -> int:
        """low <= result < high."""
        return low + int(self._random() * (high - low))

    def _uuid(self) -> str:
        bits = self.rng.getrandbits(128)
        bits = (bits & ~(0xF000 << 64) | 4 << 76) & ~(0xC000 << 48) | 0x8000 << 48
        h = f"{bits:032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def _wire(
        self,
        event_type: T,
        subject: str,
        time: datetime,
        data: dict[str, Any],
        id: str | None = None,
    ) -> dict[str, Any]:
        return {
            "specversion": "1.0",
            "id": id or self._uuid(),
            "source": self.config.source,
            "type": event_type,
            "subject": subject,
            "time": time,
            "datacontenttype": "application/json",
            "data": data,
        }

    def _record(self, wire: dict[str, Any]) -> Record:
        return Record(wire["subject"].encode(), _dumps(wire), HEADERS, VALID, wire, None)

    def _execution(self, index: int) -> tuple[list[Record], _About]:
        """One execution's events, reversed (``pop()`` gives the next one to publish)."""
        rng, config = self.rng, self.config
        execution_id = self._uuid()
        id_prefix = self._uuid()[:24]
        report_id = self.report_ids[self._below(len(self.report_ids))]
        ms = timedelta(milliseconds=1)
        time = self.start + index * ADMIT_EVERY + timedelta(microseconds=self._below(250_000))
        pending: dict[str, Any] = {"trigger_type": _TRIGGERS[self._below(len(_TRIGGERS))]}
        if rng.random() < 0.7:
            pending["started_by"] = self._between(1, config.users + 1)
        if rng.random() < 0.4:
            pending["execution_parameters"] = {
                "regions": ["eu-west-1", "us-east-1"][: self._between(1, 3)],
                "deep": rng.random() < 0.5,
            }
        steps: list[tuple[T, datetime, dict[str, Any]]] = [(T.PENDING, time, pending)]
        time += self._between(10, 5_000) * ms
        start_time = time
        steps.append((T.STARTED, time, {"start_time": start_time}))
        records = 0
        for _ in range(self._below(4)):
            time += self._between(100, 60_000) * ms
            records += self._between(1, 10_000)
            steps.append((T.PROGRESS, time, {"records_processed": records}))
        time += self._between(100, 120_000) * ms
        steps.append(self._terminal(time, start_time, records, report_id, execution_id))
        numbered = rng.random() >= 0.1
        key, source, bits = execution_id.encode(), config.source, rng.getrandbits
        keep = self.keep_events
        events = []
        for sequence, (event_type, at, fields) in enumerate(steps):
            data: dict[str, Any] = {"execution_id": execution_id, "report_id": report_id}
            if numbered or rng.random() < 0.5:
                data["sequence"] = sequence
            data.update(fields)
            wire = {
                "specversion": "1.0",
                # a random v4 UUID per execution, its last 48 bits redrawn per event
                "id": f"{id_prefix}{bits(48):012x}",
                "source": source,
                "type": event_type,
                "subject": execution_id,
                "time": at,
                "datacontenttype": "application/json",
                "data": data,
            }
            value = _dumps(wire)
            kept = wire if keep else None
            events.append(_new_record(Record, (key, value, HEADERS, VALID, kept, None)))
        events.reverse()  # pop() takes from the end: pending first
        if rng.random() < config.reorder_ratio:
            in_order = events[:]
            rng.shuffle(events)
            if events == in_order:  # the shuffle changed nothing: make it out of order
                events[-1], events[-2] = events[-2], events[-1]
        return events, (execution_id, report_id, steps[0][1])

    def _terminal(
        self, end: datetime, start: datetime, records: int, report_id: str, execution_id: str
    ) -> tuple[T, datetime, dict[str, Any]]:
        rng = self.rng
        roll = rng.random()
        event_type = next(t for bound, t in _TERMINALS if roll < bound)
        fields: dict[str, Any] = {"end_time": end}
        if rng.random() < 0.9:  # the others leave duration_ms to the consumer
            fields["duration_ms"] = (end - start) // timedelta(milliseconds=1)
        if event_type is T.COMPLETED:
            records += self._between(0, 10_000)
            fields["records_processed"] = records
            fields["output_size_bytes"] = records * self._between(100, 2_000)
            fields["result_summary"] = {"rows": records, "warnings": self._below(5)}
            fields["output_location"] = f"s3://exectrack-reports/{report_id}/{execution_id}.json"
        elif event_type is T.FAILED:
            if records:
                fields["records_processed"] = records
            kind, message = _ERRORS[self._below(len(_ERRORS))]
            fields["error_details"] = {"type": kind, "message": message}
        elif event_type is T.TIMED_OUT:
            fields["error_details"] = {"reason": "no event for 3600 s"}
        if rng.random() < 0.02:
            fields["retention_until"] = end + timedelta(days=self._between(1, 400))
        return event_type, end, fields

    def _report_definitions(self) -> tuple[list[Record], list[Record]]:
        """About half the reports get defined: some before their executions, some after."""
        rng, config = self.rng, self.config
        before: list[Record] = []
        after: list[Record] = []
        for index, report_id in enumerate(self.report_ids):
            if rng.random() >= 0.5:
                continue
            versions = 2 if rng.random() < 0.25 else 1
            for version in range(1, versions + 1):
                data = {
                    "report_id": report_id,
                    "version": version,
                    "name": f"Simulated report {index} v{version}",
                    "description": "Generated by exectrack's simulator.",
                    "report_type": [*ReportType][index % len(ReportType)],
                    "category": [*ReportCategory][index % len(ReportCategory)],
                    "provider": [*CloudProvider][index % len(CloudProvider)],
                    "query_config": {"regions": ["eu-west-1"], "version": version},
                    "is_active": True,
                    "is_public": index % 3 == 0,
                    "created_by": self._between(1, config.users + 1),
                    "last_modified_by": self._between(1, config.users + 1),
                }
                time = self.start + timedelta(seconds=version)
                wire = self._wire(T.REPORT_DEFINED, report_id, time, data)
                (before if version == 1 and rng.random() < 0.5 else after).append(
                    self._record(wire)
                )
        return before, after

    def _invalid(self, execution_id: str, report_id: str, time: datetime) -> Record:
        """A message about an in-flight execution that breaks one rule, on its key."""
        self.step += 1
        data: dict[str, Any] = {
            "execution_id": execution_id,
            "report_id": report_id,
            "records_processed": self._below(1_000),
        }
        wire = self._wire(T.PROGRESS, execution_id, time, data)
        reason = _INVALID_KINDS[self._below(len(_INVALID_KINDS))]
        key = execution_id.encode()
        if reason is R.NAIVE_TIMESTAMP:
            wire["time"] = wire["time"].replace(tzinfo=None).isoformat()
        elif reason is R.UNKNOWN_TYPE:
            wire["type"] = "exectrack.execution.paused"
        elif reason is R.INVALID_FIELD:
            data["records_processed"] = -1 - data["records_processed"]
        elif reason is R.KEY_MISMATCH:
            key = self._uuid().encode()
        value = _dumps(wire)
        if reason is R.NOT_JSON:
            value = value[: self._between(1, len(value) - 1)]
        elif reason is R.NOT_UTF8:
            value = value.replace(b'"id":"', b'"id":"\xff', 1)
        return Record(key, value, HEADERS, INVALID, None, str(reason))
