"""What the table and the dead-letter topic must hold after a simulated stream."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from exectrack.consumer.retention.policy import RetentionPolicy
from exectrack.producer.events import ExecutionEvent
from exectrack.producer.simulate import SimMessage
from tests.support.kafka import Sent
from tests.support.oracle import expected_row


def expected_rows(
    messages: Sequence[SimMessage], swept_at: datetime | None, policy: RetentionPolicy | None = None
) -> dict[str, dict[str, Any]]:
    """Oracle rows of every execution with valid events.

    ``swept_at``: when a purge (or a replay's final sweep) ran after the last
    event, the rows it deleted (``retention_until <= swept_at``) are left out;
    ``None`` when none ran: the consumer writes every fold whole, past retention
    or not (CONTRACT.md "Retention": no partial fold is judged expired).
    """
    policy = policy or RetentionPolicy()
    by_execution: dict[str, list[ExecutionEvent]] = defaultdict(list)
    for message in messages:
        if isinstance(message.event, ExecutionEvent):
            by_execution[message.event.data.execution_id].append(message.event)
    rows = {}
    for eid, events in by_execution.items():
        status = expected_row(events, None)["status"]
        row = expected_row(events, policy.default.get(status))
        until = row["retention_until"]
        if swept_at is None or until is None or until > swept_at:
            rows[eid] = row
    return rows


def invalid_offsets(
    sent: Sequence[Sent], messages: Sequence[SimMessage]
) -> dict[tuple[int, int], str]:
    """(partition, offset) -> reason, for every invalid message published."""
    return {
        (s.partition, s.offset): m.invalid_reason
        for s, m in zip(sent, messages, strict=True)
        if m.invalid_reason is not None
    }


def dead_lettered(records: Sequence[Any]) -> dict[tuple[int, int], str]:
    """(source partition, offset) -> reason, from the dead-letter topic (duplicates folded)."""
    found = {}
    for record in records:
        headers = dict(record.headers)
        key = (int(headers["exectrack.dlq.partition"]), int(headers["exectrack.dlq.offset"]))
        found[key] = headers["exectrack.dlq.reason"].decode()
    return found
