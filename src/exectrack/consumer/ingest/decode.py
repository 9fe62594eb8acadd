"""Turning a fetched batch of Kafka records into fold states and dead letters.

No I/O: ``decode_yielding`` only hands the event loop back between chunks, and
``tune_gc`` sets the collector up for this allocation pattern.

Every record ends in exactly one place: a valid execution event (folded per
execution), a valid report definition (the winner per report), or a dead
letter. The offsets to commit are the last offset + 1 of every partition seen,
whatever happened to the records; the consume loop raises them to the
consumer's position, past transaction markers and aborted records that
read_committed skipped (consumer/service.py).
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from exectrack.consumer.dlq.letter import DeadLetter
from exectrack.consumer.ingest.anomalies import report_conflicts, report_out_of_range
from exectrack.consumer.ingest.fast import fast_fact
from exectrack.consumer.ingest.fold import (
    ExecutionFold,
    Fact,
    OutOfRange,
    fact_of,
    fold_events,
    shown,
    storable_json,
)
from exectrack.consumer.kafka import UNDECODABLE_HEADER
from exectrack.consumer.metrics import EVENTS_WITHOUT_KEY
from exectrack.producer.errors import InvalidEvent
from exectrack.producer.events import ExecutionEvent, ReportDefinedEvent, parse_event

UNDECODABLE_RECORD = "undecodable_record"  # dead-letter reason: bytes the client cannot decode
YIELD_EVERY = 250  # records decoded between two turns of the event loop
REPORT_JSON_FIELDS = ("query_config", "scheduling_config", "notification_config",
                      "parameters_schema")  # fmt: skip


def storable_definition(event: ReportDefinedEvent) -> ReportDefinedEvent:
    """The definition as the ``reports`` row can hold it: a JSON field nested deeper
    than ``MAX_JSON_DEPTH`` is not carried (None), counted and logged
    (``exectrack_fields_out_of_range_total{field}``, ``field_out_of_range``), the
    rule of the execution fields (exectrack.consumer.ingest.fold.storable). Done before the
    definition is ordered, so its digest is the one of what the row stores."""
    data = event.data
    dropped: list[OutOfRange] = []
    for name in REPORT_JSON_FIELDS:
        value = getattr(data, name)
        if value is not None and storable_json(value) is None:
            dropped.append((name, event.id, shown(value), None))
    if not dropped:
        return event
    report_out_of_range([(data.report_id, o) for o in dropped], key="report_id")
    cut = data.model_copy(update={name: None for name, *_ in dropped})
    return event.model_copy(update={"data": cut})


# The loop allocates ~10 short-lived, almost always acyclic objects per record,
# batch by batch (freed by reference counting). With CPython's default gen-0
# threshold (700) the cyclic collector runs every few dozen records and rescans
# the live batch: measured at ~45% of decode time (docs/performance.md). With the
# write pipeline two batches are alive at once; 200,000 keeps collections rare
# (cyclic garbage, e.g. a dead letter's exception, waits at most that long).
GC_GEN0_THRESHOLD = 200_000


def tune_gc() -> None:
    """Process-wide: collect cycles less often, and never rescan start-up objects."""
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


@dataclass
class Batch:
    """One fetched batch, decoded: every record is folded, a definition, or a dead letter.

    ``executions``: one fold state per ``execution_id``; ``definitions``: the
    winning definition per ``report_id``; ``offsets``: TopicPartition -> the
    next offset to consume (last offset + 1); ``records``: records fetched;
    ``valid_events``: records that were valid events (``records`` minus dead letters).
    """

    executions: dict[str, ExecutionFold]
    definitions: dict[str, ReportDefinedEvent]
    dead_letters: list[DeadLetter]
    offsets: dict[Any, int]  # TopicPartition -> next offset to consume
    records: int
    valid_events: int
    # which records fed which execution/report: to dead-letter them if the DB refuses it
    sources: dict[tuple[str, str], list[Any]] = field(default_factory=dict)

    def refused(self, errors: Mapping[str, str]) -> list[DeadLetter]:
        """Dead letters for every record of the executions/reports the database refused."""
        return [
            DeadLetter.of(record, "db_refused", error)
            for kind in ("execution", "report")
            for key, error in errors.items()
            for record in self.sources.get((kind, key), ())
        ]


class Decoder:
    """Builds a Batch record by record, so a caller can yield between chunks.

    Each record is read by the fast path (``exectrack.consumer.ingest.fast``) and,
    when it is not sure, by ``parse_event``: the contract's judge, whose
    ``InvalidEvent`` names the dead letter's reason.
    """

    def __init__(self) -> None:
        self.facts: list[Fact] = []
        self.definitions: dict[str, ReportDefinedEvent] = {}
        self.dead: list[DeadLetter] = []
        self.offsets: dict[Any, int] = {}
        self.sources: dict[tuple[str, str], list[Any]] = {}
        self.records = 0

    def add(self, tp: Any, records: Iterable[Any]) -> None:
        """Decode ``records`` of partition ``tp``; count the valid ones without a key
        (``exectrack_events_without_key_total``: accepted, docs/events.md "Transport")."""
        facts, sources = self.facts, self.sources
        without_key = 0
        record = None
        for record in records:
            self.records += 1
            headers = record.headers
            if headers and headers[-1][0] == UNDECODABLE_HEADER:  # exectrack.consumer.kafka
                error = headers[-1][1].decode("utf-8", "replace")
                self.dead.append(DeadLetter.of(record, UNDECODABLE_RECORD, error))
                continue
            fact = fast_fact(record.value, headers, record.key)
            if fact is None:
                try:
                    event = parse_event(record.value, headers or (), record.key)
                except InvalidEvent as exc:
                    self.dead.append(DeadLetter.of(record, str(exc.reason), exc.detail))
                    continue
                if not isinstance(event, ExecutionEvent):
                    if not record.key:  # None or b""
                        without_key += 1
                    self._define(event, record)
                    continue
                fact = fact_of(event)
            if not record.key:
                without_key += 1
            facts.append(fact)
            found = sources.get(("execution", fact.execution_id))
            if found is None:
                sources["execution", fact.execution_id] = [record]
            else:
                found.append(record)
        if record is not None:
            self.offsets[tp] = record.offset + 1
        if without_key:
            EVENTS_WITHOUT_KEY.inc(without_key)

    def _define(self, event: ReportDefinedEvent, record: Any) -> None:
        """Keep the winning definition per report (its order key), reporting conflicts."""
        definitions = self.definitions
        event = storable_definition(event)
        rid = event.data.report_id
        self.sources.setdefault(("report", rid), []).append(record)
        current = definitions.get(rid)
        if current is None:
            definitions[rid] = event
            return
        key, other = event.order_key, current.order_key
        if key[:3] == other[:3] and key[3] != other[3]:  # one id, two definitions
            report_conflicts([(rid, event.id)], key="report_id")
        if key > other:
            definitions[rid] = event

    def batch(self) -> Batch:
        """The ``Batch`` of everything added so far (execution events folded now)."""
        return Batch(
            executions=fold_events(self.facts),
            definitions=self.definitions,
            dead_letters=self.dead,
            offsets=self.offsets,
            records=self.records,
            valid_events=self.records - len(self.dead),
            sources=self.sources,
        )


async def decode_yielding(fetched: Mapping[Any, Sequence[Any]], every: int = YIELD_EVERY) -> Batch:
    """Decode ``fetched`` (aiokafka's ``getmany()`` result: TopicPartition -> records)
    into one Batch, handing the event loop back every ``every`` records.

    Decoding is pure CPU. While it runs, the batch written before this one is
    waiting on the database; yielding lets that write send its next statement
    as soon as the previous answer is in, so the server works while we decode
    (exectrack.consumer.ingest.pipeline).
    """
    decoder = Decoder()
    for tp, records in fetched.items():
        for start in range(0, len(records), every):
            decoder.add(tp, records[start : start + every])
            await asyncio.sleep(0)
    return decoder.batch()
