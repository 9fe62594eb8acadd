"""The world of tests/integration/test_fold_stateful.py: what is emitted, delivered, expected.

Pure (no I/O). ``emissions()`` draws what a step adds to the pending pool;
``World`` turns emissions into Kafka-like records, keeps the valid events
written per execution, the tombstones, and gives the rows the oracle
(tests/support/oracle.py) expects, live and after a replay.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from hypothesis import strategies as st

from exectrack.consumer.retention.policy import RetentionPolicy
from exectrack.producer.events import (
    EventType,
    ExecutionEvent,
    ExecutionStatus,
    execution_event,
    kafka_headers,
    to_binary,
    to_json,
)
from tests.support.oracle import expected_row

TOPIC = "stateful"
PARTITIONS = 12
EXECUTIONS = ("x0", "x1", "x2", "x3")
HELD_REPORT = "r-held"
REPORTS = ("r-a", "r-b", HELD_REPORT)
DAY = timedelta(days=1)
# Whole days (times sit on a grid of whole hours); cancelled executions are kept forever.
POLICY = RetentionPolicy(
    default={
        ExecutionStatus.COMPLETED: DAY,
        ExecutionStatus.FAILED: 10 * DAY,
        ExecutionStatus.TIMEOUT: 20 * DAY,
        ExecutionStatus.CANCELLED: None,
    },
    hold_reports=frozenset({HELD_REPORT}),
)
SPAN_H = 30 * 24  # the grid: hour 0 is 30 days (and 30 minutes) ago, hour SPAN_H 30 min ago
EVENT_HOURS = st.integers(0, SPAN_H - 24)  # events at least a day old
# explicit retention_until: 30 and 20 days ago, 2 days ago, in 2 days, in 400 days
RETENTION_HOURS = st.sampled_from([0, 10 * 24, 28 * 24, SPAN_H + 48, SPAN_H + 400 * 24])
EXECUTION_TYPES = [t for t in EventType if t is not EventType.REPORT_DEFINED]
INVALID_KINDS = {
    "not_json": "not_json",
    "json_list": "not_cloudevent",
    "no_value": "not_cloudevent",
    "unknown_type": "unknown_type",
    "key_mismatch": "key_mismatch",
    "naive_time": "naive_timestamp",
    "naive_ce_time": "naive_timestamp",
    "negative_count": "invalid_field",
}
Headers = list[tuple[str, bytes]]


@dataclass(frozen=True)
class Record:
    """What aiokafka's ``getmany`` hands the consumer (the attributes it reads)."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: Headers


@dataclass(frozen=True)
class Spec:
    """A valid event to build: hours are grid hours (``World.at``)."""

    type: EventType
    execution_id: str
    report_id: str
    hour: int
    fields: dict[str, Any]
    binary: bool


@dataclass(frozen=True)
class New:
    spec: Spec


@dataclass(frozen=True)
class Resend:
    """A byte-identical re-send of a valid record emitted before (index modulo their count)."""

    index: int
    other_mode: bool  # the same event in the other content mode: other bytes, same event


@dataclass(frozen=True)
class Conflict:
    """An earlier event's id, type, sequence and time with other content."""

    index: int
    fields: dict[str, Any]
    binary: bool


@dataclass(frozen=True)
class Invalid:
    kind: str  # a key of INVALID_KINDS
    spec: Spec


Emission = New | Resend | Conflict | Invalid


@dataclass(frozen=True)
class Pending:
    """A record to deliver: Kafka key, value, headers; the event if valid, else the reason."""

    key: bytes | None
    value: bytes | None
    headers: Headers
    event: ExecutionEvent | None
    reason: str | None


small_json = st.dictionaries(st.sampled_from("ab"), st.integers(0, 2), max_size=2)


def field_values(hours: st.SearchStrategy[int]) -> st.SearchStrategy[dict[str, Any]]:
    """Optional data fields from small domains (grid hours for times, resolved later)."""
    return st.fixed_dictionaries(
        {},
        optional={
            "sequence": st.integers(0, 3),
            "trigger_type": st.sampled_from(["manual", "scheduled", "api", "webhook"]),
            "started_by": st.integers(1, 3),
            "start_time": hours,
            "end_time": hours,
            "duration_ms": st.integers(0, 5),
            "records_processed": st.integers(0, 5),
            "output_size_bytes": st.integers(0, 5),
            "execution_parameters": small_json,
            "result_summary": small_json,
            "error_details": small_json,
            "output_location": st.sampled_from(["s3://a", "gs://b"]),
            "retention_until": RETENTION_HOURS,
        },
    )


specs = st.builds(
    Spec,
    type=st.sampled_from(EXECUTION_TYPES),
    execution_id=st.sampled_from(EXECUTIONS),
    report_id=st.sampled_from(REPORTS),
    hour=EVENT_HOURS,
    fields=field_values(EVENT_HOURS),
    binary=st.booleans(),
)


def emissions() -> st.SearchStrategy[list[Emission]]:
    """What one ``emit`` step adds: mostly new valid events, some of every other kind."""
    one: st.SearchStrategy[Emission] = st.one_of(
        st.builds(New, specs),
        st.builds(New, specs),
        st.builds(Resend, st.integers(0, 50), st.booleans()),
        st.builds(Conflict, st.integers(0, 50), field_values(EVENT_HOURS), st.booleans()),
        st.builds(Invalid, st.sampled_from(sorted(INVALID_KINDS)), specs),
    )
    return st.lists(one, min_size=1, max_size=10)


@dataclass
class World:
    """The model: the pending pool, what was delivered, and what the tables must hold."""

    origin: datetime  # grid hour 0
    clock: datetime  # the last purge's clock (only moves forward)
    pending: list[Pending] = field(default_factory=list)
    valid: list[Pending] = field(default_factory=list)  # every valid record emitted
    delivered: list[tuple[Record, str | None]] = field(default_factory=list)
    written: dict[str, list[ExecutionEvent]] = field(default_factory=lambda: defaultdict(list))
    every: dict[str, list[ExecutionEvent]] = field(default_factory=lambda: defaultdict(list))
    tombstones: set[str] = field(default_factory=set)
    offsets: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    serial: int = 0

    @classmethod
    def start(cls, now: datetime | None = None) -> World:
        """Grid hour 0 = 30 days and 30 minutes before ``now``: no grid time is within
        30 minutes of the wall clock while the test runs."""
        now = (now or datetime.now(UTC)).replace(microsecond=0)
        origin = now - timedelta(hours=SPAN_H, minutes=30)
        return cls(origin=origin, clock=origin)

    @property
    def latest(self) -> datetime:
        """The last grid time before the wall clock (30 minutes before the start)."""
        return self.at(SPAN_H)

    def at(self, hour: int) -> datetime:
        return self.origin + timedelta(hours=hour)

    # ------------------------------------------------------------- emitting
    def _event(self, spec: Spec, **envelope: Any) -> ExecutionEvent:
        fields = dict(spec.fields)
        for name in ("start_time", "end_time", "retention_until"):
            if name in fields:
                fields[name] = self.at(fields[name])
        if "id" not in envelope:
            self.serial += 1
            envelope["id"] = f"ev-{self.serial}"
        envelope.setdefault("time", self.at(spec.hour))
        return execution_event(
            spec.type, execution_id=spec.execution_id, report_id=spec.report_id,
            source="/tests/stateful", **envelope, **fields,
        )  # fmt: skip

    @staticmethod
    def _valid(event: ExecutionEvent, binary: bool) -> Pending:
        if binary:
            headers, value = to_binary(event)
            return Pending(event.key, value, headers, event, None)
        return Pending(event.key, to_json(event), kafka_headers(event), event, None)

    def _invalid(self, kind: str, spec: Spec) -> Pending:
        event = self._event(spec)
        key, reason = event.key, INVALID_KINDS[kind]
        headers = kafka_headers(event)
        wire = orjson.loads(to_json(event))
        value: bytes | None
        if kind == "not_json":
            value = to_json(event)[:-3]
        elif kind == "json_list":
            value = b"[1, 2]"
        elif kind == "no_value":
            value = None
        elif kind == "unknown_type":
            value = orjson.dumps({**wire, "type": "exectrack.execution.paused"})
        elif kind == "key_mismatch":
            key = next(e for e in EXECUTIONS if e != spec.execution_id).encode()
            value = to_json(event)
        elif kind == "naive_time":
            value = orjson.dumps({**wire, "time": wire["time"].removesuffix("Z")})
        elif kind == "naive_ce_time":
            headers, value = to_binary(event)
            headers = [(n, v.removesuffix(b"Z") if n == "ce_time" else v) for n, v in headers]
        else:  # negative_count
            value = orjson.dumps({**wire, "data": {**wire["data"], "records_processed": -1}})
        return Pending(key, value, headers, None, reason)

    def emit(self, emissions: list[Emission]) -> None:
        for emission in emissions:
            made: Pending | None
            if isinstance(emission, New):
                made = self._valid(self._event(emission.spec), emission.spec.binary)
            elif isinstance(emission, Invalid):
                made = self._invalid(emission.kind, emission.spec)
            elif not self.valid:
                made = None  # nothing to re-send yet
            elif isinstance(emission, Resend):
                base = self.valid[emission.index % len(self.valid)]
                assert base.event is not None
                binary = any(name == "ce_specversion" for name, _ in base.headers)
                made = self._valid(base.event, not binary) if emission.other_mode else base
            else:
                base_event = self.valid[emission.index % len(self.valid)].event
                assert base_event is not None
                spec = Spec(
                    base_event.type, base_event.data.execution_id, base_event.data.report_id,
                    0, emission.fields, emission.binary,
                )  # fmt: skip
                sequence = base_event.data.sequence
                fields = {k: v for k, v in spec.fields.items() if k != "sequence"}
                event = self._event(
                    Spec(**{**spec.__dict__, "fields": fields}),
                    id=base_event.id, time=base_event.time, sequence=sequence,
                )  # fmt: skip
                made = self._valid(event, emission.binary)
            if made is not None:
                self.pending.append(made)
                if made.event is not None:
                    self.valid.append(made)

    # ------------------------------------------------------------- delivering
    def deliver(self, item: Pending) -> tuple[Record, str | None]:
        """The record as the broker would hand it over; the model learns what it writes."""
        partition = zlib.crc32(item.key or b"") % PARTITIONS
        offset = self.offsets[partition]
        self.offsets[partition] += 1
        millis = int(self.latest.timestamp() * 1000)
        record = Record(TOPIC, partition, offset, millis, item.key, item.value, item.headers)
        self.delivered.append((record, item.reason))
        if item.event is not None:
            eid = item.event.data.execution_id
            self.every[eid].append(item.event)
            if eid not in self.tombstones:  # a tombstoned execution: the event writes nothing
                self.written[eid].append(item.event)
        return record, item.reason

    # ------------------------------------------------------------- retention
    def advance_clock(self, hours: int) -> datetime:
        """The next purge's clock: later by ``hours``, never past the wall clock."""
        self.clock = min(self.clock + timedelta(hours=hours), self.latest)
        return self.clock

    def purge(self, now: datetime) -> list[str]:
        """Tombstone the live rows past retention at ``now`` and not on hold."""
        gone = [eid for eid, row in self.live_rows().items() if expired(eid, row, now)]
        self.tombstones.update(gone)
        return gone

    def coverage(self, swept_at: datetime, resurrected: set[str]) -> dict[str, int]:
        """What an example exercised (Hypothesis statistics: ``--hypothesis-show-statistics``)."""
        events = [e for events in self.every.values() for e in events]
        ids: dict[str, set[str]] = defaultdict(set)
        for e in events:
            ids[e.id].add(e.digest)
        late = sum(len(self.every[eid]) - len(self.written[eid]) for eid in self.tombstones)
        return {
            "valid records delivered": len(events),
            "invalid records delivered": sum(1 for _, reason in self.delivered if reason),
            "conflicting duplicates (one id, two contents)": sum(len(d) > 1 for d in ids.values()),
            "executions purged": len(self.tombstones),
            "events for a tombstoned execution": late,
            "executions swept by the replay": len(self.rebuilt(swept_at)[1]),
            "executions kept by the replay, purged live (verify: extra)": len(resurrected),
        }

    # ------------------------------------------------------------- expected
    def named(self) -> tuple[set[str], set[int]]:
        """The placeholders: every report and user named by a valid event delivered
        (tombstoned executions included: their events still name them)."""
        events = [e for events in self.every.values() for e in events]
        users = {e.data.started_by for e in events if e.data.started_by is not None}
        return {e.data.report_id for e in events}, users

    def live_rows(self) -> dict[str, dict[str, Any]]:
        """The live table: the fold of the events written, for executions without a tombstone."""
        return {
            eid: row_of(eid, events)
            for eid, events in self.written.items()
            if eid not in self.tombstones
        }

    def rebuilt(self, swept_at: datetime) -> tuple[dict[str, dict[str, Any]], set[str]]:
        """A replay of everything delivered into an empty database, swept at ``swept_at``:
        (its rows, its tombstones). It folds every valid event, tombstoned live or not."""
        rows = {eid: row_of(eid, events) for eid, events in self.every.items()}
        swept = {eid for eid, row in rows.items() if expired(eid, row, swept_at)}
        return {eid: row for eid, row in rows.items() if eid not in swept}, swept

    def resurrected(self, swept_at: datetime) -> set[str]:
        """Tombstoned live, yet kept by a replay swept at ``swept_at``, and not ignored by
        ``verify`` (which skips rows past retention, held or not): a later event moved
        their retention_until past the sweep, or their report on hold
        (docs/reliability/state.md, findings 2 and 3)."""
        rows = self.rebuilt(swept_at)[0]
        return {
            eid
            for eid in self.tombstones & rows.keys()
            if rows[eid]["retention_until"] is None or rows[eid]["retention_until"] > swept_at
        }


def row_of(execution_id: str, events: list[ExecutionEvent]) -> dict[str, Any]:
    """The oracle's row, with the period the policy gives its status and report."""
    top = expected_row(events, None)
    period = POLICY.period(top["status"], report_id=top["report_id"], execution_id=execution_id)
    return expected_row(events, period)


def expired(execution_id: str, row: dict[str, Any], now: datetime) -> bool:
    """What the purge (and a replay's sweep) deletes: past retention, not on hold."""
    until = row["retention_until"]
    held = POLICY.held(report_id=row["report_id"], execution_id=execution_id)
    return until is not None and until <= now and not held
