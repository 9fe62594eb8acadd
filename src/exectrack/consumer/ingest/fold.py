"""The fold: a set of execution events -> one ``report_executions`` row. Pure, no I/O.

CONTRACT.md defines the row as a function of the SET of distinct events of an
execution, whatever the order, duplication or batching. Each field is a
last-writer-wins register ordered by the event order key

    K = (rank, sequence or -1, time, id, digest)

(``digest``: ``ExecutionEvent.digest``, of the event's canonical content), so
the state kept per execution is, for each field, the value and the K of the
event that supplied it (plus the status, and the smallest and greatest event
time). Merging two states field by field with max-by-K is associative,
commutative and idempotent, which is exactly what makes the result independent
of order, duplicates and batch boundaries (tests/unit/test_fold_properties.py).

The database keeps that state: the values are the row's columns, the K's are
the compact ``fold_keys`` JSON column (docs/schema.md), so a batch can merge
into an existing row without any event history.

Conflicting duplicates (one ``id``, two contents: a producer broke "a re-sent
event keeps its id and content") are ordered by their digests like any two
events, and reported: each state remembers the digest of every event id it
has seen (the batch's events, and the ids of the stored keys), and collects
the ids seen with two digests in ``conflicts`` (the writer counts and logs
them). Keys stored before the digest existed (4 elements) decode with digest
``""``: below every real digest, and never reported as a conflict, since their
content is unknown.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from exectrack.producer.events import (
    MAX_BIGINT,
    MAX_INT_ID,
    MAX_JSON_DEPTH,
    MAX_TIME,
    MIN_TIME,
    TERMINAL_STATUSES,
    ExecutionEvent,
    ExecutionStatus,
    json_depth,
)

OrderKey = tuple[int, int, datetime, str, str]
# field, event id, value sent (a JSON field: its description, fold.shown), value taken (or None)
OutOfRange = tuple[str, str, Any, Any]

# Fields an event may carry; each is merged on its own (report_id is required on
# every event, so its winner is the overall greatest K).
CARRIED_FIELDS: tuple[str, ...] = (
    "report_id",
    "trigger_type",
    "started_by",
    "start_time",
    "end_time",
    "duration_ms",
    "records_processed",
    "output_size_bytes",
    "execution_parameters",
    "result_summary",
    "error_details",
    "output_location",
    "retention_until",
)
_CARRIED = frozenset(CARRIED_FIELDS)
SATURATED_TIMES = frozenset({"retention_until"})
DROPPED_TIMES = frozenset({"start_time", "end_time"})
_LARGEST = {"duration_ms": MAX_BIGINT, "records_processed": MAX_BIGINT,
            "output_size_bytes": MAX_BIGINT, "started_by": MAX_INT_ID}  # fmt: skip
JSON_FIELDS = frozenset({"execution_parameters", "result_summary", "error_details"})
_RANGED = SATURATED_TIMES | DROPPED_TIMES | _LARGEST.keys() | JSON_FIELDS


def storable_json(value: dict[str, Any]) -> dict[str, Any] | None:
    """A JSON field's value if its nesting fits every supported server's JSON
    column (``MAX_JSON_DEPTH`` = 31 arrays/objects: MariaDB 10.11's
    ``JSON_VALID`` CHECK refuses 32, MySQL 8.0 allows 100), else None (not
    carried). The walk stops at the first container too deep."""
    return value if json_depth(value, MAX_JSON_DEPTH) <= MAX_JSON_DEPTH else None


def shown(value: Any) -> Any:
    """A hashable, short stand-in of a value sent, for ``OutOfRange`` and the log
    line: a JSON field is described by its depth, not repeated."""
    if isinstance(value, dict | list):
        return f"JSON nested {json_depth(value)} deep (limit {MAX_JSON_DEPTH})"
    return value


def storable(name: str, value: Any) -> Any:
    """What the fold takes from an event's optional ``data`` field ``name`` whose
    column cannot hold every value the contract allows (docs/events.md, "Values
    outside the columns' range"). Inside the column's range, the value as sent.

    Times: the columns are ``TIMESTAMP(6)``, MIN_TIME..MAX_TIME
    (1970-01-01T00:00:01Z .. 2038-01-19T03:14:07.999999Z, docs/schema.md):

    - ``retention_until`` saturates: after MAX_TIME it is held until the
      column's end (a 25-year compliance hold stays a hold); before MIN_TIME it
      is MIN_TIME (already past either way);
    - ``start_time`` / ``end_time`` count as not carried (None): an instant a
      run started or ended cannot be before 1970 or after 2038 on a correct
      clock, and a clamped value would make up a duration and a retention base.

    Integers: a count above ``MAX_BIGINT`` (``BIGINT``) or a ``started_by``
    above ``MAX_INT_ID`` (``INT``) counts as not carried (a saturated count or
    user id would be made up).

    JSON fields (``execution_parameters``, ``result_summary``,
    ``error_details``): nested deeper than ``MAX_JSON_DEPTH`` they count as not
    carried (``storable_json``): MariaDB's CHECK would refuse the whole row, and
    a cut-down object would be made up.

    Applied per event before the merge, so the stored state, and every row
    derived from it, is the same whatever the batching (CONTRACT.md, "The fold").
    """
    if isinstance(value, datetime):
        if MIN_TIME <= value <= MAX_TIME:
            return value
        if name in SATURATED_TIMES:
            return MAX_TIME if value > MAX_TIME else MIN_TIME
        return None
    if name in JSON_FIELDS:
        return storable_json(value)
    return value if value <= _LARGEST[name] else None


STATUS = "status"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_MS = timedelta(milliseconds=1)


@dataclass(slots=True)
class ExecutionFold:
    """The merge state of one execution: per-field (K, value), status, time bounds."""

    execution_id: str
    status: ExecutionStatus
    status_key: OrderKey
    first_time: datetime
    last_time: datetime
    values: dict[str, tuple[OrderKey, Any]] = field(default_factory=dict)
    digests: dict[str, str] = field(default_factory=dict)  # event id -> digest seen
    conflicts: set[str] = field(default_factory=set)  # ids seen with two digests
    # (field, event id, value sent, value taken or None) for out-of-range values
    out_of_range: set[OutOfRange] = field(default_factory=set)
    # every report and user named by the events folded here (not only the winners):
    # each gets its placeholder row (CONTRACT.md, "Invalid input"), whatever the batch
    # boundaries; not stored (a stored row's report and user already have their rows)
    reports: set[str] = field(default_factory=set)
    users: set[int] = field(default_factory=set)

    @classmethod
    def of(cls, event: ExecutionEvent) -> ExecutionFold:
        """The state of an execution that has seen only ``event``."""
        key = event.order_key
        fold = cls(
            execution_id=event.data.execution_id,
            status=event.status,
            status_key=key,
            first_time=event.time,
            last_time=event.time,
            digests={key[3]: key[4]},
            reports={event.data.report_id},
        )
        if event.data.started_by is not None and event.data.started_by <= MAX_INT_ID:
            fold.users.add(event.data.started_by)  # above INT: not carried (storable)
        fold._take_fields(event, key)
        return fold

    def _seen(self, event_id: str, digest: str) -> None:
        if not digest:
            return  # a key stored before digests existed: content unknown
        known = self.digests.setdefault(event_id, digest)
        if known != digest:
            self.conflicts.add(event_id)

    def add(self, event: ExecutionEvent) -> None:
        """Merge one event into this state (in place).

        Each field it carries replaces the stored one when the event's order key
        is greater (CONTRACT.md, "The fold"); adding an event twice changes nothing.
        """
        key = event.order_key
        event_id, digest = key[3], key[4]  # inlined _seen: once per event, hot path
        if self.digests.setdefault(event_id, digest) != digest:
            self.conflicts.add(event_id)
        data = event.data
        self.reports.add(data.report_id)
        if data.started_by is not None and data.started_by <= MAX_INT_ID:
            self.users.add(data.started_by)
        if key > self.status_key:
            self.status, self.status_key = event.status, key
        if event.time < self.first_time:
            self.first_time = event.time
        elif event.time > self.last_time:
            self.last_time = event.time
        self._take_fields(event, key)

    def _take_fields(self, event: ExecutionEvent, key: OrderKey) -> None:
        data = event.data
        fields = data.__dict__
        values = self.values
        # only the fields the event carried (pydantic records which were given)
        for name in data.model_fields_set:
            if name not in _CARRIED:
                continue
            value = fields[name]
            if value is not None and name in _RANGED:
                taken = storable(name, value)
                if taken is not value:
                    self.out_of_range.add((name, event.id, shown(value), taken))
                value = taken
            if value is not None:
                current = values.get(name)
                if current is None or key > current[0]:
                    values[name] = (key, value)

    def merge(self, other: ExecutionFold) -> None:
        """Join another state of the same execution into this one (in place).

        Field by field, max by order key: associative, commutative and idempotent,
        so a stored row merged with a batch's state gives the fold of all their events.
        """
        for event_id, digest in other.digests.items():
            self._seen(event_id, digest)
        self.conflicts |= other.conflicts
        self.out_of_range |= other.out_of_range
        self.reports |= other.reports
        self.users |= other.users
        if other.status_key > self.status_key:
            self.status, self.status_key = other.status, other.status_key
        self.first_time = min(self.first_time, other.first_time)
        self.last_time = max(self.last_time, other.last_time)
        for name, (key, value) in other.values.items():
            current = self.values.get(name)
            if current is None or key > current[0]:
                self.values[name] = (key, value)

    def value(self, name: str) -> Any:
        """The winning value of field ``name`` (``CARRIED_FIELDS``); None: no event carried it."""
        found = self.values.get(name)
        return None if found is None else found[1]

    @property
    def terminal(self) -> bool:
        """Whether the status is terminal (rank 2: completed, failed, cancelled, timeout)."""
        return self.status in TERMINAL_STATUSES

    def duration_ms(self) -> int | None:
        """Milliseconds: carried if any event carried it, else derived from the two times.

        Derived: ``end_time - start_time`` in whole milliseconds, rounded down,
        when both are known and ``end_time >= start_time`` (CONTRACT.md, "The
        fold"); else None.
        """
        carried = self.value("duration_ms")
        if carried is not None:
            return int(carried)
        start, end = self.value("start_time"), self.value("end_time")
        if start is not None and end is not None and end >= start:
            return int((end - start) // ONE_MS)
        return None

    def retention_until(self, period: timedelta | None) -> datetime | None:
        """Explicit override if carried; else, once terminal, (end_time or the
        terminal event's time) + period. ``period=None`` means no expiry (a hold).

        CONTRACT.md, "The fold" (``retention_until``). Returns an aware UTC
        datetime, capped at ``MAX_TIME`` (the end of MySQL ``TIMESTAMP``), or None.
        """
        explicit = self.value("retention_until")
        if explicit is not None:
            return explicit  # type: ignore[no-any-return]
        if not self.terminal or period is None:
            return None
        base: datetime = self.value("end_time") or self.status_key[2]
        try:
            until = base + period
        except OverflowError:
            return MAX_TIME
        return min(until, MAX_TIME)  # the column is a TIMESTAMP: saturate at its end

    def to_row(self, retention_period: timedelta | None) -> dict[str, Any]:
        """The ``report_executions`` columns (without ``id``): column name -> value.

        ``retention_period`` is the policy's period for this execution
        (``RetentionPolicy.period``), as ``retention_until`` takes it;
        ``fold_keys`` is ``encode_keys(self)``.
        """
        row: dict[str, Any] = {name: self.value(name) for name in CARRIED_FIELDS}
        row.update(
            execution_id=self.execution_id,
            status=self.status,
            duration_ms=self.duration_ms(),
            retention_until=self.retention_until(retention_period),
            created_at=self.first_time,
            last_event_at=self.last_time,
            fold_keys=encode_keys(self),
        )
        return row

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> ExecutionFold:
        """Rebuild the state from a stored row (inverse of ``to_row`` for the state).

        A row read with only some of the columns gives a state holding just those
        fields (e.g. ``retention reapply`` reads only what retention depends on).
        """
        keys = decode_keys(row["fold_keys"])
        fold = cls(
            execution_id=row["execution_id"],
            status=ExecutionStatus(row["status"]),
            status_key=keys.pop(STATUS),
            first_time=row["created_at"],
            last_time=row["last_event_at"],
        )
        fold.values = {name: (key, row[name]) for name, key in keys.items() if name in row}
        for key in (fold.status_key, *(key for key, _ in fold.values.values())):
            if key[4]:
                fold.digests[key[3]] = key[4]
        return fold


def _encode_key(key: OrderKey) -> list[Any]:
    rank, sequence, time, event_id, digest = key
    return [rank, sequence, (time - EPOCH) // timedelta(microseconds=1), event_id, digest]


def _decode_key(raw: list[Any]) -> OrderKey:
    """A stored key; one written before the digest existed (4 elements) gets digest ``""``."""
    rank, sequence, micros, event_id, *digest = raw
    when = EPOCH + timedelta(microseconds=int(micros))
    return (int(rank), int(sequence), when, str(event_id), str(digest[0]) if digest else "")


def encode_keys(fold: ExecutionFold) -> dict[str, Any]:
    """Compact, deterministic JSON of the order keys: distinct keys once, fields by index.

    ``{"k": [[rank, seq, time_us, id, digest], ...], "f": {"status": 0, "report_id": 0, ...}}``
    Most fields of an execution come from a handful of events, so this stays small.
    """
    by_field: dict[str, OrderKey] = {STATUS: fold.status_key}
    by_field.update({name: key for name, (key, _) in fold.values.items()})
    distinct = sorted(set(by_field.values()), reverse=True)
    index = {key: i for i, key in enumerate(distinct)}
    return {
        "k": [_encode_key(key) for key in distinct],
        "f": {name: index[key] for name, key in sorted(by_field.items())},
    }


def decode_keys(raw: Mapping[str, Any]) -> dict[str, OrderKey]:
    """The inverse of ``encode_keys``: field name (and ``"status"``) -> its order key."""
    distinct = [_decode_key(k) for k in raw["k"]]
    return {name: distinct[i] for name, i in raw["f"].items()}


def fold_events(events: list[ExecutionEvent]) -> dict[str, ExecutionFold]:
    """Fold a batch of execution events into one state per execution_id."""
    folds: dict[str, ExecutionFold] = {}
    for event in events:
        current = folds.get(event.data.execution_id)
        if current is None:
            folds[event.data.execution_id] = ExecutionFold.of(event)
        else:
            current.add(event)
    return folds
