"""The retention policy (pure): periods, precedence, holds, and reapply == the fold."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from exectrack.consumer.errors import BadPeriod
from exectrack.consumer.ingest.fold import ExecutionFold, fold_events
from exectrack.consumer.retention.policy import RetentionPolicy, format_period, parse_period
from exectrack.consumer.retention.reap import REAPER_SOURCE, Stale, timed_out_event
from exectrack.consumer.retention.reapply import fold_retention
from exectrack.producer.events import (
    MAX_TIME,
    EventType,
    ExecutionStatus,
    ReportCategory,
    ReportType,
    execution_event,
)
from tests.unit.test_fold import execution_events

S, D = ExecutionStatus, timedelta(days=1)
T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
POLICY = RetentionPolicy.model_validate(
    {
        "default": {"completed": "30d"},
        "report_types": {"vpc_inventory": {"completed": "7d", "failed": "never"}},
        "categories": {"security": {"completed": "365d", "cancelled": "1d"}},
        "hold_reports": ["held-report"],
        "hold_executions": ["held-execution"],
    }
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (3600, timedelta(hours=1)),
        (1.5, timedelta(seconds=1.5)),
        ("90d", 90 * D),
        ("36h", timedelta(hours=36)),
        ("15m", timedelta(minutes=15)),
        ("30s", timedelta(seconds=30)),
        ("2w", 14 * D),
        ("1.5d", timedelta(hours=36)),
        ("P90D", 90 * D),
        ("PT36H", timedelta(hours=36)),
        ("never", None),
        ("forever", None),
        (None, None),
        ("0s", timedelta(0)),
        (timedelta(hours=2), timedelta(hours=2)),
    ],
)
def test_period_spellings(value: Any, expected: timedelta | None) -> None:
    assert parse_period(value) == expected


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("-3d", "negative period"),
        (-1, "negative period"),
        ("ninety days", "bad duration"),
        ("90", "bad duration"),
        (True, "bad duration"),
        ([1], "bad duration"),
    ],
)
def test_bad_periods(value: Any, reason: str) -> None:
    with pytest.raises(BadPeriod, match=reason):
        parse_period(value)


def test_format_period() -> None:
    assert [format_period(p) for p in (90 * D, timedelta(hours=36), None, timedelta(0))] == [
        "90d", "1d 12h", "never", "0s",
    ]  # fmt: skip


def test_precedence_hold_type_category_default() -> None:
    p = POLICY.period
    vpc, sec = ReportType.VPC_INVENTORY, ReportCategory.SECURITY
    assert p(S.COMPLETED) == 30 * D
    assert p(S.FAILED) == 180 * D  # built-in default kept for the statuses not overridden
    assert p(S.COMPLETED, report_type=vpc, category=sec) == 7 * D  # type beats category
    assert p(S.FAILED, report_type=vpc, category=sec) is None  # "never" is a period too
    assert p(S.COMPLETED, report_type=ReportType.DNS_INVENTORY, category=sec) == 365 * D
    assert p(S.CANCELLED, report_type=vpc, category=sec) == D  # type has no cancelled rule
    assert p(S.TIMEOUT, report_type=vpc, category=sec) == 90 * D
    assert p(S.COMPLETED, report_type=vpc, report_id="held-report") is None
    assert p(S.COMPLETED, execution_id="held-execution") is None
    assert POLICY.held(report_id="held-report")
    assert POLICY.held(execution_id="held-execution")
    assert not POLICY.held(report_id="r", execution_id="e")


@pytest.mark.parametrize(
    "policy",
    [
        {"default": {"running": "1d"}},
        {"report_types": {"custom": {"pending": "1d"}}},
        {"default": {"completed": "-1d"}},
        {"categories": {"nope": {"completed": "1d"}}},
    ],
)
def test_invalid_policies_are_refused(policy: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        RetentionPolicy.model_validate(policy)


def test_describe_lists_the_rules_most_specific_first() -> None:
    lines = POLICY.describe()
    assert lines[:2] == ["hold execution held-execution", "hold report held-report"]
    assert "report_type vpc_inventory: failed never" in lines
    assert lines[-4:] == [
        "default: completed 30d", "default: failed 180d", "default: cancelled 30d",
        "default: timeout 90d",
    ]  # fmt: skip


# ------------------------------------------------------------- the fold's rule
def ev(type_: EventType, n: int, **fields: Any) -> Any:
    fields.setdefault("time", T0 + timedelta(seconds=n))
    return execution_event(
        type_, execution_id="e-1", report_id="r-1", source="/tests", id=f"id-{n}", **fields
    )


def test_explicit_retention_beats_policy_and_hold_in_the_row() -> None:
    """The fold stores an explicit retention_until even for a held execution; the
    purge is what honours the hold (tests/integration/test_purge.py)."""
    until = T0 + 3 * D
    fold = fold_events([ev(EventType.COMPLETED, 1, retention_until=until)])["e-1"]
    assert fold.retention_until(None) == until
    assert fold.retention_until(7 * D) == until


def test_base_is_end_time_else_the_terminal_events_time() -> None:
    with_end = fold_events([ev(EventType.COMPLETED, 5, end_time=T0)])["e-1"]
    without = fold_events([ev(EventType.STARTED, 1), ev(EventType.FAILED, 9)])["e-1"]
    assert with_end.retention_until(D) == T0 + D
    assert without.retention_until(D) == T0 + timedelta(seconds=9) + D
    assert fold_events([ev(EventType.STARTED, 1)])["e-1"].retention_until(D) is None
    assert with_end.retention_until(timedelta(days=100_000)) == MAX_TIME


KINDS = st.tuples(
    st.sampled_from([None, ReportType.VPC_INVENTORY, ReportType.CUSTOM]),
    st.sampled_from([None, ReportCategory.SECURITY, ReportCategory.COST]),
)


@settings(max_examples=300)
@given(events=execution_events(), kind=KINDS, held=st.booleans())
def test_reapply_computes_exactly_what_the_fold_writes(
    events: list[Any], kind: tuple[Any, Any], held: bool
) -> None:
    """A row written under the default policy, re-read and recomputed under POLICY,
    gives what the fold would have written under POLICY in the first place."""
    fold = fold_events(events)["e-1"]
    stored = fold.to_row(RetentionPolicy().default.get(fold.status))
    policy = POLICY.model_copy(update={"hold_executions": frozenset({"e-1"} if held else ())})
    period = policy.period(
        fold.status, report_type=kind[0], category=kind[1],
        report_id=stored["report_id"], execution_id="e-1",
    )  # fmt: skip
    assert fold_retention(stored, policy, kind) == fold.to_row(period)["retention_until"]
    assert ExecutionFold.from_row(stored).retention_until(period) == fold_retention(
        stored, policy, kind
    )


# ------------------------------------------------------------- the reaper's event
def test_a_workers_late_terminal_event_with_a_sequence_beats_the_reaper() -> None:
    stale = Stale("e-1", "r-1", S.RUNNING, T0)
    reaped = timed_out_event(stale, now=T0 + D, after_s=6 * 3600, host="h")
    assert (reaped.source, reaped.data.sequence, reaped.data.end_time) == (
        REAPER_SOURCE, None, T0 + D,
    )  # fmt: skip
    assert reaped.data.error_details == {
        "reason": "no event for 86400 s", "reaper": "h", "window_s": 21600,
        "status": "running", "last_event_at": T0.isoformat(),
    }  # fmt: skip
    started = ev(EventType.STARTED, 0, sequence=1)
    late_progress = ev(EventType.PROGRESS, 3, sequence=2)
    assert fold_events([started, reaped, late_progress])["e-1"].status == S.TIMEOUT
    # the worker's completion happened before the reaper's clock, but carries a sequence
    done = ev(EventType.COMPLETED, 7, sequence=3, end_time=T0 + timedelta(seconds=7))
    fold = fold_events([started, reaped, done])["e-1"]
    assert (fold.status, fold.value("end_time")) == (S.COMPLETED, T0 + timedelta(seconds=7))
    # the reaper's error_details stay: the completion did not carry any (docs/retention.md)
    assert fold.value("error_details")["reaper"] == "h"
    # without a sequence the earlier completion loses to the reaper (K compares time next)
    unsequenced = ev(EventType.COMPLETED, 8)
    assert fold_events([started, reaped, unsequenced])["e-1"].status == S.TIMEOUT
