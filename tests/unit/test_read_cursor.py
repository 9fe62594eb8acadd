"""Keyset cursors and the read commands' time/duration options: pure logic, no database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import click
import pytest
from hypothesis import given
from hypothesis import strategies as st

from exectrack.consumer.errors import BadCursor
from exectrack.consumer.read import cursor
from exectrack.consumer.read.cli import DURATION, TIME

# hypothesis wants naive bounds and adds the time zone
LOW, HIGH = datetime(1970, 1, 2, tzinfo=UTC), datetime(2038, 1, 1, tzinfo=UTC)
TIMES = st.datetimes(
    min_value=LOW.replace(tzinfo=None), max_value=HIGH.replace(tzinfo=None), timezones=st.just(UTC)
)


@given(st.sampled_from(["last_event_at", "created_at"]), st.booleans(), st.none() | TIMES,
       st.integers(1, 2**31))  # fmt: skip
def test_a_time_cursor_round_trips(sort: str, descending: bool, value: datetime | None,
                                   row_id: int) -> None:  # fmt: skip
    token = cursor.encode(sort, descending, value, row_id)
    assert "=" not in token
    assert cursor.decode(token, sort, descending, is_time=True) == (value, row_id)
    with pytest.raises(BadCursor):
        cursor.decode(token, sort, not descending, is_time=True)


@given(st.none() | st.integers(0, 2**63 - 1), st.integers(1, 2**31))
def test_a_duration_cursor_round_trips(value: int | None, row_id: int) -> None:
    token = cursor.encode("duration_ms", False, value, row_id)
    assert cursor.decode(token, "duration_ms", False, is_time=False) == (value, row_id)
    with pytest.raises(BadCursor):
        cursor.decode(token, "end_time", False, is_time=True)


def test_times_iso_or_ago_and_durations() -> None:
    assert TIME.convert("2026-11-30T08:00:00+02:00", None, None) == datetime(
        2026, 11, 30, 6, tzinfo=UTC
    )
    assert TIME.convert("2026-11-30", None, None) == datetime(2026, 11, 30, tzinfo=UTC)
    before = datetime.now(UTC)
    ago = TIME.convert("2h", None, None)
    assert before - timedelta(hours=2, seconds=5) < ago <= datetime.now(UTC) - timedelta(hours=2)
    assert DURATION.convert("15m", None, None) == 900.0
    assert DURATION.convert("PT1H", None, None) == 3600.0
    for bad in ("yesterday", "never", "-2h"):
        with pytest.raises(click.BadParameter):
            TIME.convert(bad, None, None)
    for bad in ("0", "soon", "never", "-5m"):
        with pytest.raises(click.BadParameter):
            DURATION.convert(bad, None, None)
