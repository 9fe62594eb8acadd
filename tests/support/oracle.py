"""An independent fold, written from CONTRACT.md's words, for tests to compare against.

Deliberately naive: it keeps every event and recomputes from scratch, with no
shared code with exectrack.consumer.ingest.fold beyond the event model.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from exectrack.producer.events import (
    MAX_BIGINT,
    MAX_INT_ID,
    MAX_JSON_DEPTH,
    MAX_TIME,
    MIN_TIME,
    ExecutionEvent,
)

FIELDS = (
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
TERMINAL = {"completed", "failed", "cancelled", "timeout"}


def k(event: ExecutionEvent) -> tuple[int, int, datetime, str, str]:
    """K = (rank, sequence or -1, time, id, digest), as CONTRACT.md words it."""
    seq = event.data.sequence
    return (event.rank, -1 if seq is None else seq, event.time, event.id, event.digest)


LARGEST = {"duration_ms": MAX_BIGINT, "records_processed": MAX_BIGINT,
           "output_size_bytes": MAX_BIGINT, "started_by": MAX_INT_ID}  # fmt: skip


JSON_FIELDS = ("execution_parameters", "result_summary", "error_details")


def depth(value: Any) -> int:
    """Nested arrays/objects, as docs/events.md counts them (a scalar: 0)."""
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    return 0


def carried(event: ExecutionEvent, name: str) -> Any:
    """The value of ``name`` the event carries, as docs/events.md says a value
    outside its column is taken: retention_until held at the column's ends,
    start_time/end_time outside 1970..2038, integers above BIGINT/INT and JSON
    nested deeper than 31 not carried."""
    value = getattr(event.data, name)
    if name in JSON_FIELDS and value is not None:
        return value if depth(value) <= MAX_JSON_DEPTH else None
    if name in LARGEST and value is not None:
        return value if value <= LARGEST[name] else None
    if name not in ("start_time", "end_time", "retention_until") or value is None:
        return value
    if MIN_TIME <= value <= MAX_TIME:
        return value
    if name != "retention_until":
        return None
    return MAX_TIME if value > MAX_TIME else MIN_TIME


def expected_row(events: list[ExecutionEvent], period: timedelta | None) -> dict[str, Any]:
    """The row for a set of events of ONE execution (distinct by id and content)."""
    distinct = list({(e.id, e.digest): e for e in events}.values())
    ordered = sorted(distinct, key=k)
    top = ordered[-1]
    row: dict[str, Any] = {"execution_id": top.data.execution_id, "status": top.status}
    for name in FIELDS:
        carriers = [e for e in ordered if carried(e, name) is not None]
        row[name] = carried(carriers[-1], name) if carriers else None
    if row["duration_ms"] is None:
        start, end = row["start_time"], row["end_time"]
        if start is not None and end is not None and end >= start:
            row["duration_ms"] = (end - start) // timedelta(milliseconds=1)
    if row["retention_until"] is None and top.status in TERMINAL and period is not None:
        base = row["end_time"] if row["end_time"] is not None else top.time
        row["retention_until"] = min(base + period, MAX_TIME)
    row["created_at"] = min(e.time for e in distinct)
    row["last_event_at"] = max(e.time for e in distinct)
    return row
