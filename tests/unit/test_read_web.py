"""The web page's pure helpers: the filter from a query string, the chart's data."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from starlette.datastructures import QueryParams

from exectrack.consumer.read.queries import DurationBucket
from exectrack.consumer.read.web import (
    chart_data,
    duration_text,
    parse_filter,
    parse_number,
    safe_next,
    visible,
)
from exectrack.producer.events import ExecutionStatus

T0 = datetime(2026, 11, 30, tzinfo=UTC)


def test_filter_from_a_get_form() -> None:
    params = QueryParams(
        "status=failed&status=timeout&report_id=&report_type=&created_from=2026-11-30T07:42"
        "&started_by=7"
    )
    flt, form, error = parse_filter(params)
    assert error is None
    assert flt.status == [ExecutionStatus.FAILED, ExecutionStatus.TIMEOUT]
    assert flt.report_id == []  # an empty field is no filter
    assert flt.created_from == datetime(2026, 11, 30, 7, 42, tzinfo=UTC)  # datetime-local: UTC
    assert flt.started_by == 7
    assert form["created_from"] == "2026-11-30T07:42"  # the form shows what was given


def test_a_bad_filter_names_its_field() -> None:
    flt, _, error = parse_filter(QueryParams("status=nope&status=failed"))
    assert error is not None
    assert error.startswith("status:")
    assert flt.status == []


def test_chart_breaks_lines_over_empty_buckets() -> None:
    def bucket(minutes: int, p50: int) -> DurationBucket:
        return DurationBucket(
            start=T0 + timedelta(minutes=minutes), count=1, p50_ms=p50, p95_ms=2 * p50
        )

    data = chart_data(
        [bucket(0, 1000), bucket(1, 2000), bucket(5, 3000)], T0, T0 + timedelta(hours=1), 60
    )
    start = T0.timestamp()
    assert data["x"] == [start, start + 60, start + 120, start + 300]
    assert data["p50"] == [1.0, 2.0, None, 3.0]
    assert data["p95"] == [2.0, 4.0, None, 6.0]
    assert (data["since"], data["until"]) == (start, start + 3600)


def test_bidi_controls_are_shown_not_obeyed() -> None:
    assert visible("bidi\u202egnp.exe") == "bidi\u27e8U+202E\u27e9gnp.exe"
    assert visible("\u2067x\u2069") == "\u27e8U+2067\u27e9x\u27e8U+2069\u27e9"
    assert visible("plain/id") == "plain/id"


@pytest.mark.parametrize(
    ("ms", "text"),
    [(None, ""), (850, "850 ms"), (4200, "4.2 s"), (185_000, "3 min 05 s"),
     (7_800_000, "2 h 10 min"), (3 * 86_400_000 + 4 * 3_600_000, "3 d 4 h"),
     (364 * 86_400_000, "364 d 0 h"), (365 * 86_400_000, "> 1 year"),
     (9223372036854775807, "> 1 year")],
)  # fmt: skip
def test_duration_text_stays_short(ms: int | None, text: str) -> None:
    assert duration_text(ms) == text
    assert len(duration_text(ms)) <= 10


def test_the_time_filter_takes_seconds_as_utc() -> None:
    flt, form, error = parse_filter(
        QueryParams("created_from=2026-11-30T07:42:30&ended_to=2026-11-30T07:42:30.5")
    )
    assert error is None
    assert flt.created_from == datetime(2026, 11, 30, 7, 42, 30, tzinfo=UTC)
    assert flt.ended_to == datetime(2026, 11, 30, 7, 42, 30, 500000, tzinfo=UTC)
    assert form["created_from"] == "2026-11-30T07:42:30"


@pytest.mark.parametrize(
    "raw", ["\u00b2", "\u0661\u0662", "inf", "nan", "1e3", "-1", "0", "501", "9" * 40, ""]
)
def test_page_integers_are_ascii_digits_in_bounds(raw: str) -> None:
    value, error = parse_number(raw, "limit", 1, 500)
    assert value is None
    assert error is not None
    assert error.startswith("limit:")


def test_page_numbers_within_bounds() -> None:
    assert parse_number("50", "limit", 1, 500) == (50, None)
    assert parse_number(" 2.5 ", "stuck_min", 0, 60, fraction=True) == (2.5, None)
    assert parse_number("0", "stuck_min", 0, 60, fraction=True)[0] is None


@pytest.mark.parametrize(
    ("given", "kept"),
    [("/?status=failed&x=%2F", "/?status=failed&x=%2F"), ("/report?id=a%2Fb", "/report?id=a%2Fb"),
     ("//evil.example", "/"), ("/\\evil.example", "/"), ("/\t/evil.example", "/"),
     ("https://evil.example/", "/"), ("evil", "/"), ("/a b", "/")],
)  # fmt: skip
def test_login_goes_back_only_to_this_site(given: str, kept: str) -> None:
    assert safe_next(given) == kept
