"""Turning a fetched batch of Kafka records into fold states and dead letters. Pure.

Every record ends in exactly one place: a valid execution event (folded per
execution), a valid report definition (the winner per report), or a dead
letter. The offsets to commit are the last offset + 1 of every partition seen,
whatever happened to the records.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from consumer.dlq import DeadLetter
from consumer.fold import ExecutionFold, fold_events
from producer.errors import InvalidEvent
from producer.events import ExecutionEvent, ReportDefinedEvent, parse_event


@dataclass
class Batch:
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


def decode(fetched: Mapping[Any, Iterable[Any]]) -> Batch:
    """``fetched`` is aiokafka's ``getmany()`` result: TopicPartition -> records."""
    execution_events: list[ExecutionEvent] = []
    definitions: dict[str, ReportDefinedEvent] = {}
    dead: list[DeadLetter] = []
    offsets: dict[Any, int] = {}
    sources: dict[tuple[str, str], list[Any]] = {}
    records = 0
    for tp, batch in fetched.items():
        for record in batch:
            records += 1
            offsets[tp] = record.offset + 1
            try:
                event = parse_event(record.value, record.headers or (), record.key)
            except InvalidEvent as exc:
                dead.append(DeadLetter.of(record, str(exc.reason), exc.detail))
                continue
            if isinstance(event, ExecutionEvent):
                execution_events.append(event)
                sources.setdefault(("execution", event.data.execution_id), []).append(record)
            else:
                rid = event.data.report_id
                sources.setdefault(("report", rid), []).append(record)
                current = definitions.get(rid)
                if current is None or event.order_key > current.order_key:
                    definitions[rid] = event
    return Batch(
        executions=fold_events(execution_events),
        definitions=definitions,
        dead_letters=dead,
        offsets=offsets,
        records=records,
        valid_events=records - len(dead),
        sources=sources,
    )
