"""The read side's queries on the real database: every filter, sort, page, statistic.

Expected values come from tests/support/reads.py's Python oracle over the rows
the test inserted, never from SQL.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, insert
from sqlalchemy.ext.asyncio import AsyncEngine

from exectrack.consumer.db import migrate
from exectrack.consumer.db.engine import create_engine
from exectrack.consumer.db.repository import EXECUTIONS, REPORTS, write_batch
from exectrack.consumer.errors import BadCursor, BadQuery
from exectrack.consumer.ingest.fold import fold_events
from exectrack.consumer.read.queries import (
    MAX_LIMIT,
    SORT_KEYS,
    ExecutionFilter,
    duration_series,
    get_execution,
    list_executions,
    report_stats,
    stuck_executions,
)
from exectrack.consumer.retention.policy import RetentionPolicy
from exectrack.consumer.settings import DatabaseSettings
from exectrack.producer.events import (
    EventType,
    ExecutionStatus,
    ReportCategory,
    ReportType,
    TriggerType,
    execution_event,
)
from tests.conftest import MakeDatabase
from tests.support.reads import (
    STUCK_FOR_S,
    dataset,
    expected_stats,
    nearest_rank,
    ordered,
    seed,
    selected,
)

S = ExecutionStatus
Row = dict[str, Any]
Known = tuple[AsyncEngine, list[Row]]
NOW = datetime.now(UTC)


@pytest.fixture(scope="module")
async def known(new_database_module: MakeDatabase) -> AsyncIterator[Known]:
    """A migrated database holding ``dataset(NOW)``: (engine, the rows with their ids)."""
    url = await new_database_module()
    await migrate.upgrade(url)
    engine = create_engine(DatabaseSettings(), url=url)
    rows = await seed(engine, dataset(NOW))
    yield engine, rows
    await engine.dispose()


async def every_page(engine: AsyncEngine, flt: ExecutionFilter, **kwargs: Any) -> list[list[str]]:
    """The execution_ids of each page, following the cursors to the end."""
    pages, cursor = [], None
    while True:
        page = await list_executions(engine, flt, cursor=cursor, **kwargs)
        pages.append([item.execution_id for item in page.items])
        if page.next_cursor is None:
            return pages
        assert len(pages) < 1000
        cursor = page.next_cursor


def at(hours_ago: float) -> datetime:
    return NOW - timedelta(hours=hours_ago)


FILTERS = [
    ExecutionFilter(),
    ExecutionFilter(status=[S.FAILED]),
    ExecutionFilter(status=[S.FAILED, S.TIMEOUT, S.CANCELLED]),
    ExecutionFilter(report_id=["r-b"]),
    ExecutionFilter(report_id=["r-a", "r-d"]),
    ExecutionFilter(report_type=ReportType.VPC_INVENTORY),
    ExecutionFilter(category=ReportCategory.SECURITY),
    ExecutionFilter(report_type=ReportType.VPC_INVENTORY, category=ReportCategory.COST),
    ExecutionFilter(trigger_type=[TriggerType.API]),
    ExecutionFilter(trigger_type=[TriggerType.MANUAL, TriggerType.WEBHOOK]),
    ExecutionFilter(started_by=2),
    ExecutionFilter(created_from=at(40)),
    ExecutionFilter(created_to=at(40)),
    ExecutionFilter(created_from=at(50), created_to=at(30)),
    ExecutionFilter(started_from=at(50), started_to=at(20)),
    ExecutionFilter(ended_from=at(60)),
    ExecutionFilter(ended_to=at(45)),
    ExecutionFilter(last_event_from=at(40)),
    ExecutionFilter(status=[S.FAILED, S.TIMEOUT], last_event_from=at(60), last_event_to=at(10)),
    ExecutionFilter(stuck_for_s=STUCK_FOR_S),
    ExecutionFilter(stuck_for_s=STUCK_FOR_S, status=[S.RUNNING], report_id=["r-a", "r-c"]),
    ExecutionFilter(
        status=[S.COMPLETED, S.FAILED],
        category=ReportCategory.INFRASTRUCTURE,
        trigger_type=[TriggerType.SCHEDULED, TriggerType.API],
        created_from=at(60),
    ),
]


@pytest.mark.parametrize("flt", FILTERS, ids=lambda f: json.dumps(f.model_dump(mode="json",
                         exclude_defaults=True)))  # fmt: skip
async def test_every_filter_selects_exactly_its_rows(known: Known, flt: ExecutionFilter) -> None:
    engine, rows = known
    expected = ordered(selected(rows, flt, NOW), "created_at", descending=True)  # the default
    assert expected, "the dataset must hold rows this filter selects"
    if flt != ExecutionFilter():
        assert len(expected) < len(rows), "and rows it does not"
    pages = await every_page(engine, flt, limit=17)
    assert [eid for page in pages for eid in page] == expected
    assert all(len(page) == 17 for page in pages[:-1])


@pytest.mark.parametrize("sort", SORT_KEYS)
@pytest.mark.parametrize("descending", [True, False])
async def test_pages_concatenate_to_the_sorted_list(
    known: Known, sort: str, descending: bool
) -> None:
    engine, rows = known
    expected = ordered(rows, sort, descending)
    values = [row[sort] for row in rows]
    assert None in values or sort in ("created_at", "last_event_at")
    assert len(set(values)) < len(values), "ties, so the id tiebreak is exercised"
    for limit in (1, 7, 50, MAX_LIMIT):
        pages = await every_page(engine, ExecutionFilter(), sort=sort, descending=descending,
                                 limit=limit)  # fmt: skip
        flat = [eid for page in pages for eid in page]
        assert flat == expected, (sort, descending, limit)
        assert len(set(flat)) == len(flat)
    # filtered and sorted: the cursor keeps the filter's rows only
    flt = ExecutionFilter(status=[S.COMPLETED, S.RUNNING])
    pages = await every_page(engine, flt, sort=sort, descending=descending, limit=5)
    assert [e for p in pages for e in p] == ordered(selected(rows, flt, NOW), sort, descending)


async def test_a_page_holds_the_summary_columns(known: Known) -> None:
    engine, rows = known
    page = await list_executions(engine, ExecutionFilter(), sort="created_at", limit=3)
    by_id = {row["execution_id"]: row for row in rows}
    for item in page.items:
        row = by_id[item.execution_id]
        for name, value in item.model_dump().items():
            assert value == row[name], name


async def test_a_report_type_no_report_has_lists_nothing(known: Known) -> None:
    for flt in (
        ExecutionFilter(report_type=ReportType.CUSTOM),
        ExecutionFilter(category=ReportCategory.SECURITY, report_id=["r-a"]),
    ):
        page = await list_executions(known[0], flt)
        assert (page.items, page.next_cursor) == ([], None)


def cursor_of(parts: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(parts).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "!!!", "bm90IGpzb24", cursor_of({"a": 1}), cursor_of(["last_event_at", True, 1]),
        cursor_of(["last_event_at", True, "x", 1]), cursor_of(["last_event_at", 1, 5, 1]),
        cursor_of(["created_at", True, 5, 1]), cursor_of(["last_event_at", False, 5, 1]),
        cursor_of(["last_event_at", True, 10**30, 1]), cursor_of(["last_event_at", True, 5, True]),
    ],
)  # fmt: skip
async def test_a_cursor_not_issued_for_this_listing_is_refused(known: Known, cursor: str) -> None:
    with pytest.raises(BadCursor) as caught:
        await list_executions(known[0], ExecutionFilter(), sort="last_event_at", cursor=cursor)
    assert caught.value.argument == "cursor"
    assert isinstance(caught.value, ValueError)
    assert str(caught.value).startswith("cursor: ")


async def test_bad_arguments_name_the_argument(known: Known) -> None:
    engine = known[0]
    calls: list[tuple[str, Any]] = [
        ("limit", list_executions(engine, ExecutionFilter(), limit=0)),
        ("limit", list_executions(engine, ExecutionFilter(), limit=MAX_LIMIT + 1)),
        ("sort", list_executions(engine, ExecutionFilter(), sort="id")),  # type: ignore[arg-type]
        ("older_than_s", stuck_executions(engine, older_than_s=0)),
        ("limit", stuck_executions(engine, older_than_s=60, limit=0)),
        ("until", report_stats(engine, since=NOW, until=NOW)),
        ("since", report_stats(engine, since=NOW.replace(tzinfo=None), until=NOW)),
        ("bucket_s", duration_series(engine, "r-a", since=at(2), until=NOW, bucket_s=0)),
        ("bucket_s", duration_series(engine, "r-a", since=at(9000), until=NOW, bucket_s=1)),
        ("until", duration_series(engine, "r-a", since=NOW, until=at(1), bucket_s=60)),
    ]
    for argument, call in calls:
        with pytest.raises(BadQuery) as caught:
            await call
        assert caught.value.argument == argument
        assert isinstance(caught.value, ValueError)
    with pytest.raises(ValueError, match="stuck_for_s"):
        ExecutionFilter(stuck_for_s=0)
    with pytest.raises(ValueError, match="created_from"):
        ExecutionFilter(created_from=datetime(2026, 1, 1))  # noqa: DTZ001 - naive on purpose


async def test_stuck_executions_longest_silent_first(known: Known) -> None:
    engine, rows = known
    flt = ExecutionFilter(stuck_for_s=STUCK_FOR_S)
    expected = ordered(selected(rows, flt, NOW), "last_event_at", descending=False)
    assert 5 < len(expected) < len([r for r in rows if r["status"] in (S.PENDING, S.RUNNING)])
    found = await stuck_executions(engine, older_than_s=STUCK_FOR_S, limit=MAX_LIMIT)
    assert [e.execution_id for e in found] == expected
    few = await stuck_executions(engine, older_than_s=STUCK_FOR_S, limit=3)
    assert [e.execution_id for e in few] == expected[:3]


@pytest.mark.parametrize("window", [(80, 0), (50, 20), (30, 29)])
async def test_report_stats_match_the_oracle(known: Known, window: tuple[int, int]) -> None:
    engine, rows = known
    since, until = at(window[0]), at(window[1])
    expected = expected_stats(rows, since, until)
    found = await report_stats(engine, since=since, until=until)
    assert [s.report_id for s in found] == sorted(expected)
    assert {s.report_id: s.model_dump() for s in found} == expected
    one = await report_stats(engine, since=since, until=until, report_id="r-b")
    assert [s.model_dump() for s in one] == ([expected["r-b"]] if "r-b" in expected else [])
    if window == (80, 0):
        assert len(expected) == 4
        assert all(s["duration_p95_ms"] for s in expected.values())


@pytest.mark.parametrize("bucket_s", [3600, 6 * 3600, 86400])
async def test_duration_series_match_the_oracle(known: Known, bucket_s: int) -> None:
    engine, rows = known
    since, until = at(70), at(10)
    buckets: dict[int, list[int]] = {}
    ended = [r for r in rows if r["end_time"] is not None and r["duration_ms"] is not None]
    for row in ended:
        if row["report_id"] == "r-a" and since <= row["end_time"] < until:
            index = (row["end_time"] - since) // timedelta(seconds=bucket_s)
            buckets.setdefault(index, []).append(row["duration_ms"])
    expected = [
        {"start": since + k * timedelta(seconds=bucket_s), "count": len(d),
         "p50_ms": nearest_rank(d, 50), "p95_ms": nearest_rank(d, 95)}
        for k, d in sorted(buckets.items())
    ]  # fmt: skip
    assert expected
    found = await duration_series(engine, "r-a", since=since, until=until, bucket_s=bucket_s)
    assert [b.model_dump() for b in found] == expected


@pytest.fixture(scope="module")
async def scratch(new_database_module: MakeDatabase) -> AsyncIterator[AsyncEngine]:
    url = await new_database_module()
    await migrate.upgrade(url)
    engine = create_engine(DatabaseSettings(), url=url)
    async with engine.begin() as conn:
        await conn.execute(insert(REPORTS), [{"report_id": r, "name": r} for r in "pq"])
    yield engine
    await engine.dispose()


@settings(max_examples=40)
@given(
    st.dictionaries(
        st.sampled_from("pq"),
        st.lists(st.integers(min_value=0, max_value=10**12), min_size=1, max_size=60),
        min_size=1,
    )
)
async def test_percentiles_are_nearest_rank(
    scratch: AsyncEngine, durations: dict[str, list[int]]
) -> None:
    t0 = datetime(2026, 6, 1, tzinfo=UTC)
    rows = [
        {"execution_id": f"{rid}{i}", "report_id": rid, "status": S.COMPLETED,
         "duration_ms": d, "created_at": t0, "last_event_at": t0,
         "end_time": t0 + timedelta(seconds=i % 120), "fold_keys": {"k": [], "f": {}}}
        for rid, values in durations.items() for i, d in enumerate(values)
    ]  # fmt: skip
    async with scratch.begin() as conn:
        await conn.execute(delete(EXECUTIONS))
        await conn.execute(insert(EXECUTIONS), rows)
    found = await report_stats(scratch, since=t0, until=t0 + timedelta(seconds=1))
    assert {s.report_id: (s.duration_p50_ms, s.duration_p95_ms, s.duration_max_ms)
            for s in found} == {
        rid: (nearest_rank(v, 50), nearest_rank(v, 95), max(v)) for rid, v in durations.items()
    }  # fmt: skip
    rid, values = next(iter(durations.items()))
    series = await duration_series(scratch, rid, since=t0, until=t0 + timedelta(hours=1),
                                   bucket_s=60)  # fmt: skip
    by_minute: dict[int, list[int]] = {}
    for i, d in enumerate(values):
        by_minute.setdefault((i % 120) // 60, []).append(d)
    assert [(b.count, b.p50_ms, b.p95_ms) for b in series] == [
        (len(v), nearest_rank(v, 50), nearest_rank(v, 95)) for _, v in sorted(by_minute.items())
    ]


async def test_get_execution_has_every_column_and_the_provenance(db: AsyncEngine) -> None:
    t = datetime(2026, 5, 1, 12, tzinfo=UTC)
    events = [
        execution_event(EventType.STARTED, execution_id="d1", report_id="rep", source="/t",
                        id="ev-start", time=t, trigger_type=TriggerType.API, started_by=7),
        execution_event(EventType.PROGRESS, execution_id="d1", report_id="rep", source="/t",
                        id="ev-prog", time=t + timedelta(seconds=5), sequence=3,
                        records_processed=40),
        execution_event(EventType.FAILED, execution_id="d1", report_id="rep", source="/t",
                        id="ev-fail", time=t + timedelta(seconds=9),
                        error_details={"type": "Timeout"}),
    ]  # fmt: skip
    async with db.begin() as conn:
        await write_batch(conn, fold_events(events), {}, RetentionPolicy())
    detail = await get_execution(db, "d1")
    assert detail is not None
    assert (detail.status, detail.trigger_type, detail.started_by) == (S.FAILED, "api", 7)
    assert (detail.records_processed, detail.error_details) == (40, {"type": "Timeout"})
    assert detail.created_at == t
    assert detail.last_event_at == t + timedelta(seconds=9)
    sources = {name: (s.event_id, s.rank, s.sequence, s.time, s.stage)
               for name, s in detail.provenance.items()}  # fmt: skip
    assert sources["status"] == ("ev-fail", 2, -1, t + timedelta(seconds=9), "terminal")
    assert sources["trigger_type"] == ("ev-start", 1, -1, t, "running")
    assert sources["records_processed"] == ("ev-prog", 1, 3, t + timedelta(seconds=5), "running")
    assert sources["error_details"][0] == "ev-fail"
    assert set(sources) >= {"status", "report_id", "trigger_type", "started_by"}
    assert await get_execution(db, "D1") is None  # ids match byte-wise
    assert await get_execution(db, "nope") is None
