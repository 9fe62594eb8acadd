"""The diff logic of ``verify``, without a database: merge-join, compare, ignore, report."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exectrack.consumer.replay.verify import (
    Difference,
    Row,
    TableDiff,
    VerifyError,
    VerifyReport,
    compare,
    diff_rows,
    execution_filter,
    merge_join,
    report_filter,
    show,
)
from exectrack.producer.events import ExecutionStatus

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
COLUMNS = ("execution_id", "status", "records_processed", "retention_until", "last_event_at")


def row(eid: str, **changes: Any) -> dict[str, Any]:
    base = {
        "execution_id": eid,
        "status": ExecutionStatus.COMPLETED,
        "records_processed": 10,
        "retention_until": NOW + timedelta(days=30),
        "last_event_at": NOW - timedelta(hours=1),
    }
    return base | changes


async def rows(items: Iterable[Row]) -> AsyncIterator[Row]:
    for item in items:
        yield item


async def join(live: Sequence[Row], rebuilt: Sequence[Row]) -> list[tuple[str, Any, Any]]:
    return [p async for p in merge_join(rows(live), rows(rebuilt), "execution_id")]


async def diff(live: Sequence[Row], rebuilt: Sequence[Row], **options: Any) -> TableDiff:
    pairs = merge_join(rows(live), rows(rebuilt), "execution_id")
    return await diff_rows("report_executions", pairs, COLUMNS, **options)


# ----------------------------------------------------------------- compare
def test_equal_rows_make_no_difference() -> None:
    assert compare("a", row("a"), row("a"), COLUMNS) is None


def test_a_changed_column_carries_both_values() -> None:
    found = compare("a", row("a"), row("a", records_processed=11), COLUMNS)
    assert found == Difference("a", "differs", {"records_processed": (10, 11)})


def test_missing_and_extra_are_named_from_the_live_side() -> None:
    assert compare("a", row("a"), None, COLUMNS) == Difference("a", "missing")
    assert compare("a", None, row("a"), COLUMNS) == Difference("a", "extra")


def test_json_values_compare_by_content() -> None:
    live = row("a", fold_keys={"k": [[2, 1, 5, "x"]], "f": {"status": 0}})
    rebuilt = row("a", fold_keys={"f": {"status": 0}, "k": [[2, 1, 5, "x"]]})
    assert compare("a", live, rebuilt, [*COLUMNS, "fold_keys"]) is None


# ----------------------------------------------------------------- merge-join
async def test_merge_join_pairs_keys_of_both_sides_in_order() -> None:
    live = [row("a"), row("b"), row("d")]
    rebuilt = [row("b"), row("c"), row("d"), row("e")]
    pairs = await join(live, rebuilt)
    assert [(k, lv is not None, rb is not None) for k, lv, rb in pairs] == [
        ("a", True, False),
        ("b", True, True),
        ("c", False, True),
        ("d", True, True),
        ("e", False, True),
    ]


async def test_merge_join_of_empty_sides() -> None:
    assert await join([], []) == []
    assert [k for k, _, _ in await join([row("a")], [])] == ["a"]


@pytest.mark.parametrize("side", ["live", "rebuilt"])
async def test_rows_out_of_key_order_are_an_error_not_a_wrong_diff(side: str) -> None:
    bad, good = [row("b"), row("a")], [row("a"), row("b")]
    live, rebuilt = (bad, good) if side == "live" else (good, bad)
    with pytest.raises(VerifyError, match=f"{side} rows are not in increasing"):
        await join(live, rebuilt)


async def test_a_repeated_key_is_out_of_order_too() -> None:
    with pytest.raises(VerifyError):
        await join([row("a"), row("a")], [])


@settings(max_examples=200, deadline=None)
@given(
    st.sets(st.text(min_size=1, max_size=4)),
    st.sets(st.text(min_size=1, max_size=4)),
)
async def test_merge_join_is_a_full_outer_join(live: set[str], rebuilt: set[str]) -> None:
    pairs = await join([row(k) for k in sorted(live)], [row(k) for k in sorted(rebuilt)])
    assert [k for k, _, _ in pairs] == sorted(live | rebuilt)
    for key, lv, rb in pairs:
        assert (lv is not None, rb is not None) == (key in live, key in rebuilt)


# ----------------------------------------------------------------- a table
async def test_counts_every_kind_of_difference() -> None:
    live = [row("a"), row("b"), row("c"), row("d")]
    rebuilt = [row("a"), row("c", status=ExecutionStatus.RUNNING, records_processed=1), row("e")]
    result = await diff(live, rebuilt)
    assert (result.equal, result.missing, result.extra, result.differing) == (1, 2, 1, 1)
    assert result.differences == 4
    assert result.columns == {"status": 1, "records_processed": 1}
    assert [(d.kind, d.key) for d in result.shown] == [
        ("missing", "b"),
        ("differs", "c"),
        ("missing", "d"),
        ("extra", "e"),
    ]


async def test_shown_differences_are_capped_but_all_are_counted() -> None:
    live = [row(f"k{i:03d}") for i in range(50)]
    result = await diff(live, [], max_shown=3)
    assert result.missing == 50
    assert len(result.shown) == 3
    text = "\n".join(result.lines())
    assert "50 missing in rebuilt" in text
    assert "... and 47 more differences" in text


async def test_rows_past_retention_on_one_side_only_are_ignored_and_counted() -> None:
    expired = NOW - timedelta(seconds=1)
    live = [row("a", retention_until=expired), row("b")]
    result = await diff(live, [row("b")], ignore=execution_filter(NOW, None))
    assert result.differences == 0
    assert result.ignored == {"past retention": 1}


async def test_past_retention_on_one_side_but_not_the_other_is_a_difference() -> None:
    expired = NOW - timedelta(seconds=1)
    live, rebuilt = [row("a", retention_until=expired)], [row("a")]
    result = await diff(live, rebuilt, ignore=execution_filter(NOW, None))
    assert result.differing == 1
    assert list(result.columns) == ["retention_until"]


async def test_executions_with_recent_events_can_be_ignored() -> None:
    since = NOW - timedelta(minutes=5)
    live = [row("a", last_event_at=NOW, records_processed=99), row("b")]
    result = await diff(live, [row("a"), row("b")], ignore=execution_filter(NOW, since))
    assert (result.equal, result.differences) == (1, 0)
    assert result.ignored == {f"with events since {since.isoformat()}": 1}


def test_report_filter_ignores_definitions_since_a_time() -> None:
    ignore = report_filter(NOW)
    old, new, placeholder = ({"defined_at": t} for t in (NOW - timedelta(seconds=1), NOW, None))
    assert ignore(old, new) is not None
    assert ignore(None, new) is not None
    assert ignore(old, old) is None
    assert ignore(placeholder, None) is None
    assert report_filter(None)(new, new) is None


# ----------------------------------------------------------------- the report
def test_report_verdict_and_values() -> None:
    clean = TableDiff("reports", equal=3)
    assert VerifyReport("live", "rebuilt", [clean]).render().endswith("OK: no differences")
    dirty = TableDiff("report_executions")
    dirty.record(Difference("a", "differs", {"status": (ExecutionStatus.COMPLETED, "running")}))
    report = VerifyReport("live", "rebuilt", [dirty, clean])
    assert not report.ok
    text = report.render()
    assert "status: live='completed' rebuilt='running'" in text
    assert text.endswith("FAILED: 1 differences")


def test_show_keeps_values_readable_and_short() -> None:
    assert show(NOW) == "2026-11-24T12:00:00+00:00"
    assert show(ExecutionStatus.FAILED) == "'failed'"
    assert show(None) == "None"
    long = show({"x": "y" * 500})
    assert len(long) == 120
    assert long.endswith("...")
