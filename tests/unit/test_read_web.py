"""The web page's pure helpers: the filter from a query string, the chart's data."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from starlette.datastructures import QueryParams

from exectrack.consumer.read.queries import DurationBucket
from exectrack.consumer.read.web import chart_data, parse_filter
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
