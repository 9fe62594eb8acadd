"""Counting and logging what the fold tolerates but an operator should hear about.

Both are producer mistakes the consumer absorbs without losing the event
(docs/events.md): two different events sent under one id (ordered by digest),
and optional data values outside their columns' range (saturated or not stored).
Each is one metric increment and one JSON log line naming the execution (or
report) and the event id. Called after a write committed (exectrack.consumer.ingest.writer),
or when a batch is decoded (exectrack.consumer.ingest.decode, report definitions).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import structlog

from exectrack.consumer import metrics
from exectrack.consumer.ingest.fold import OutOfRange

log = structlog.get_logger(__name__)


def report_conflicts(conflicts: Iterable[tuple[str, str]], key: str = "execution_id") -> None:
    """Count and log each event id seen with two contents (CONTRACT.md, "The fold").

    ``conflicts``: (execution_id, or report_id with ``key="report_id"``; event id).
    The fold already ordered them by digest (the row does not depend on which
    came first); this only tells the operator that a producer re-used an id.
    """
    for owner, event_id in conflicts:
        metrics.EVENT_ID_CONFLICTS.inc()
        log.warning("event_id_conflict", **{key: owner}, id=event_id)


def _shown(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def report_out_of_range(found: Iterable[tuple[str, OutOfRange]], key: str = "execution_id") -> None:
    """Count and log each optional data value outside its column's range
    (exectrack.consumer.ingest.fold.storable: retention_until saturated, the others not stored;
    a JSON field nested too deep, ``sent`` describing it, ``stored`` None).

    ``found``: (execution_id, or report_id with ``key="report_id"``; OutOfRange).
    """
    for owner, (name, event_id, sent, stored) in found:
        metrics.FIELDS_OUT_OF_RANGE.labels(field=name).inc()
        log.warning(
            "field_out_of_range",
            **{key: owner},
            id=event_id,
            field=name,
            sent=_shown(sent),
            stored=_shown(stored),
        )
