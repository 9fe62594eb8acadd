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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

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


class Fact(NamedTuple):
    """One execution event as the fold reads it: what ``ExecutionFold`` takes from it.

    ``key``: the event's order key K (``ExecutionEvent.order_key``); ``fields``:
    the ``CARRIED_FIELDS`` the event gave a value (not null) -> that value as
    validated (before ``storable``). Made from a validated event by
    ``fact_of``, or straight from a message's bytes by the consumer's decoder
    (exectrack.consumer.ingest.fast); both give equal facts for one message.
    """

    execution_id: str
    report_id: str
    status: ExecutionStatus
    key: OrderKey
    started_by: int | None
    fields: dict[str, Any]


def fact_of(event: ExecutionEvent) -> Fact:
    """The ``Fact`` of a validated execution event."""
    data = event.data
    values = data.__dict__
    fields = {
        name: values[name]
        for name in CARRIED_FIELDS
        if name in data.model_fields_set and values[name] is not None
    }
    return Fact(data.execution_id, data.report_id, event.status, event.order_key,
                data.started_by, fields)  # fmt: skip


STATUS = "status"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_MS = timedelta(milliseconds=1)
ONE_US = timedelta(microseconds=1)
_KEYED_NAMES = sorted((STATUS, *CARRIED_FIELDS))  # encode_keys' order of "f"


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
    def of(cls, event: ExecutionEvent | Fact) -> ExecutionFold:
        """The state of an execution that has seen only ``event``."""
        fact = event if type(event) is Fact else fact_of(event)  # type: ignore[arg-type]
        key = fact.key
        fold = cls(
            execution_id=fact.execution_id,
            status=fact.status,
            status_key=key,
            first_time=key[2],
            last_time=key[2],
            digests={key[3]: key[4]},
            reports={fact.report_id},
        )
        user = fact.started_by
        if user is not None and user <= MAX_INT_ID:
            fold.users.add(user)  # above INT: not carried (storable)
        fold._take_fields(fact.fields, key)
        return fold

    def _seen(self, event_id: str, digest: str) -> None:
        if not digest:
            return  # a key stored before digests existed: content unknown
        known = self.digests.setdefault(event_id, digest)
        if known != digest:
            self.conflicts.add(event_id)

    def add(self, event: ExecutionEvent | Fact) -> None:
        """Merge one event into this state (in place).

        Each field it carries replaces the stored one when the event's order key
        is greater (CONTRACT.md, "The fold"); adding an event twice changes nothing.
        """
        fact = event if type(event) is Fact else fact_of(event)  # type: ignore[arg-type]
        key = fact.key
        event_id, digest = key[3], key[4]  # inlined _seen: once per event, hot path
        if self.digests.setdefault(event_id, digest) != digest:
            self.conflicts.add(event_id)
        self.reports.add(fact.report_id)
        user = fact.started_by
        if user is not None and user <= MAX_INT_ID:
            self.users.add(user)
        if key > self.status_key:
            self.status, self.status_key = fact.status, key
        time = key[2]
        if time < self.first_time:
            self.first_time = time
        elif time > self.last_time:
            self.last_time = time
        self._take_fields(fact.fields, key)

    def _take_fields(self, fields: dict[str, Any], key: OrderKey) -> None:
        values = self.values
        for name, sent in fields.items():  # only the carried fields the event gave a value
            value = sent
            if name in _RANGED:
                value = storable(name, sent)
                if value is not sent:
                    self.out_of_range.add((name, key[3], shown(sent), value))
                if value is None:
                    continue
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
        return _duration(
            self.value("duration_ms"), self.value("start_time"), self.value("end_time")
        )

    def retention_until(self, period: timedelta | None) -> datetime | None:
        """Explicit override if carried; else, once terminal, (end_time or the
        terminal event's time) + period. ``period=None`` means no expiry (a hold).

        CONTRACT.md, "The fold" (``retention_until``). Returns an aware UTC
        datetime, capped at ``MAX_TIME`` (the end of MySQL ``TIMESTAMP``), or None.
        """
        return self._retention(self.value("retention_until"), self.value("end_time"), period)

    def _retention(
        self, explicit: datetime | None, end_time: datetime | None, period: timedelta | None
    ) -> datetime | None:
        if explicit is not None:
            return explicit
        if period is None or self.status not in TERMINAL_STATUSES:
            return None
        base = end_time or self.status_key[2]
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
        row: dict[str, Any] = dict.fromkeys(CARRIED_FIELDS)  # None: no event carried it
        for name, (_, value) in self.values.items():
            row[name] = value
        end_time = row["end_time"]
        row["execution_id"] = self.execution_id
        row["status"] = self.status
        row["duration_ms"] = _duration(row["duration_ms"], row["start_time"], end_time)
        row["retention_until"] = self._retention(row["retention_until"], end_time, retention_period)
        row["created_at"] = self.first_time
        row["last_event_at"] = self.last_time
        row["fold_keys"] = encode_keys(self)
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


def _duration(carried: Any, start: datetime | None, end: datetime | None) -> int | None:
    if carried is not None:
        return int(carried)
    if start is not None and end is not None and end >= start:
        return int((end - start) // ONE_MS)
    return None


def _encode_key(key: OrderKey) -> list[Any]:
    rank, sequence, time, event_id, digest = key
    return [rank, sequence, (time - EPOCH) // ONE_US, event_id, digest]


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
    # Most fields share one key object per event: distinct by identity first (cheap),
    # then by value (equal keys from different objects, e.g. a stored row's, are one).
    by_field: dict[str, OrderKey] = {STATUS: fold.status_key}
    objects = {id(fold.status_key): fold.status_key}
    for name, (key, _) in fold.values.items():
        by_field[name] = key
        objects[id(key)] = key
    distinct = sorted(set(objects.values()), reverse=True)
    position = {key: i for i, key in enumerate(distinct)}
    index = {ident: position[key] for ident, key in objects.items()}
    names = [name for name in _KEYED_NAMES if name in by_field]
    if len(names) != len(by_field):  # a stored row with names of its own
        names = sorted(by_field)
    return {
        "k": [_encode_key(key) for key in distinct],
        "f": {name: index[id(by_field[name])] for name in names},
    }


def decode_keys(raw: Mapping[str, Any]) -> dict[str, OrderKey]:
    """The inverse of ``encode_keys``: field name (and ``"status"``) -> its order key."""
    distinct = [_decode_key(k) for k in raw["k"]]
    return {name: distinct[i] for name, i in raw["f"].items()}


class Terminal(NamedTuple):
    """An execution whose row a write made terminal for the first time (``first_terminal``).

    The row's values as written: ``report_id``, ``status`` (completed, failed,
    cancelled, timeout), ``trigger_type`` (None: no event carried it),
    ``duration_ms`` (None: neither carried nor derivable).
    """

    execution_id: str
    report_id: str
    status: str
    trigger_type: str | None
    duration_ms: int | None


def first_terminal(stored_status: str | None, merged: ExecutionFold) -> bool:
    """Whether a write makes the row terminal for the first time.

    ``stored_status``: the row's status as read (locked) before the merge, None
    when there is no row; ``merged``: the state written. True when ``merged`` is
    terminal and the stored row was not (absent, pending or running). A row
    already terminal stays counted once, whatever later events do to it (a
    duplicate, a late progress, another terminal event winning by its order key):
    the rule behind ``exectrack_executions_terminal_total`` (docs/read/metrics.md).
    """
    return merged.terminal and (stored_status is None or stored_status not in TERMINAL_STATUSES)


def fold_events(events: Sequence[ExecutionEvent | Fact]) -> dict[str, ExecutionFold]:
    """Fold a batch of execution events (or their ``Fact``s) into one state per execution_id."""
    folds: dict[str, ExecutionFold] = {}
    for event in events:
        fact = event if type(event) is Fact else fact_of(event)  # type: ignore[arg-type]
        current = folds.get(fact.execution_id)
        if current is None:
            folds[fact.execution_id] = ExecutionFold.of(fact)
        else:
            current.add(fact)
    return folds
