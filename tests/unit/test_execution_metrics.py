"""The pure parts of the execution metrics (docs/read/metrics.md): which write counts an
execution as terminal, what the counter and histogram record, how the gauges are set.

The end-to-end rule (once per execution, on the real broker and database, through
duplicates, late events, a restart and a replay) is tests/integration/test_execution_metrics.py.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY

from exectrack.consumer import metrics
from exectrack.consumer.ingest.fold import ExecutionFold, Terminal, first_terminal
from exectrack.consumer.ingest.writer import BatchWriter
from exectrack.consumer.read.gauges import execution_counts
from exectrack.consumer.retention.policy import RetentionPolicy
from exectrack.consumer.service import ConsumerService
from exectrack.consumer.settings import Settings
from exectrack.producer.events import EventType, ExecutionStatus
from exectrack.producer.events import execution_event as make

T0 = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)
STATUS_EVENT = {
    ExecutionStatus.PENDING: EventType.PENDING,
    ExecutionStatus.RUNNING: EventType.STARTED,
    ExecutionStatus.COMPLETED: EventType.COMPLETED,
    ExecutionStatus.FAILED: EventType.FAILED,
    ExecutionStatus.CANCELLED: EventType.CANCELLED,
    ExecutionStatus.TIMEOUT: EventType.TIMED_OUT,
}
OPEN = (ExecutionStatus.PENDING, ExecutionStatus.RUNNING)
CLOSED = tuple(s for s in ExecutionStatus if s not in OPEN)


def fold_in(status: ExecutionStatus) -> ExecutionFold:
    event = make(STATUS_EVENT[status], execution_id="e", report_id="r", source="/t", time=T0)
    return ExecutionFold.of(event)


@pytest.mark.parametrize("after", list(ExecutionStatus))
@pytest.mark.parametrize("before", [None, *ExecutionStatus])
def test_first_terminal_only_when_the_stored_row_was_not(
    before: ExecutionStatus | None, after: ExecutionStatus
) -> None:
    expected = after in CLOSED and before not in CLOSED
    stored = None if before is None else str(before)  # as read back: a plain string too
    assert first_terminal(stored, fold_in(after)) is expected
    if before is not None:
        assert first_terminal(before, fold_in(after)) is expected


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_count_terminal_labels_and_duration() -> None:
    report = f"r-{uuid.uuid4().hex[:8]}"
    metrics.count_terminal(
        [
            Terminal("a", report, "completed", "manual", 1500),
            Terminal("b", report, "completed", "manual", 90_000),
            Terminal("c", report, "failed", None, None),  # no trigger, no duration
            Terminal("d", report, "timeout", "scheduled", 0),
        ]
    )
    counter = "exectrack_executions_terminal_total"
    labels: dict[str, Any] = {"report_id": report}
    assert sample(counter, **labels, status="completed", trigger_type="manual") == 2
    assert sample(counter, **labels, status="failed", trigger_type="unknown") == 1
    assert sample(counter, **labels, status="timeout", trigger_type="scheduled") == 1
    assert sample(counter, **labels, status="failed", trigger_type="manual") == 0
    histogram = "exectrack_execution_duration_seconds"
    assert sample(f"{histogram}_count", **labels) == 3  # the one without a duration is not
    assert sample(f"{histogram}_sum", **labels) == pytest.approx(91.5)
    assert sample(f"{histogram}_bucket", **labels, le="1.0") == 1  # 0 s
    assert sample(f"{histogram}_bucket", **labels, le="5.0") == 2  # 1.5 s
    assert sample(f"{histogram}_bucket", **labels, le="60.0") == 2
    assert sample(f"{histogram}_bucket", **labels, le="120.0") == 3  # 90 s


def test_duration_buckets_span_a_second_to_two_hours() -> None:
    bounds = metrics.EXECUTION_DURATION._upper_bounds
    assert (bounds[0], bounds[-2], bounds[-1]) == (1, 7200, float("inf"))
    assert bounds == sorted(bounds)


def test_set_execution_gauges_zero_for_a_status_without_rows() -> None:
    metrics.set_execution_gauges({"running": 4, "pending": 2}, 3, 1000.0)
    assert sample("exectrack_executions_active", status="running") == 4
    metrics.set_execution_gauges({"running": 7}, 1, 2000.0)
    assert sample("exectrack_executions_active", status="running") == 7
    assert sample("exectrack_executions_active", status="pending") == 0
    assert sample("exectrack_executions_stuck") == 1
    assert sample("exectrack_execution_gauges_timestamp_seconds") == 2000.0


def test_only_the_consume_loop_counts() -> None:
    """The consume loop's writer counts terminal executions; a writer built for anything
    else (replay, benchmarks) does not unless asked."""
    settings = Settings(health_port=0)
    service = ConsumerService(settings)  # no I/O before start()
    assert service.writer.count_terminal is True
    assert BatchWriter.of(service.engine, settings).count_terminal is False
    assert BatchWriter(service.engine, RetentionPolicy()).count_terminal is False


async def test_stuck_window_must_be_positive() -> None:
    with pytest.raises(ValueError, match="stuck_after_s"):
        await execution_counts(None, stuck_after_s=0)  # type: ignore[arg-type]
    assert timedelta(seconds=Settings().execution_stuck_after_s) == timedelta(minutes=15)
    assert Settings().execution_gauges_interval_s == 30
