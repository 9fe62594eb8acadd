"""The fold is a function of the SET of events: order, duplicates and batching don't matter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from exectrack.consumer.ingest.anomalies import report_conflicts
from exectrack.consumer.ingest.fold import ExecutionFold, decode_keys, encode_keys, fold_events
from exectrack.producer.events import MAX_TIME, MIN_TIME, EventType, ExecutionEvent, execution_event
from tests.support.oracle import expected_row

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
PERIOD = timedelta(days=30)
EXECUTION_TYPES = [t for t in EventType if t is not EventType.REPORT_DEFINED]


def ev(type_: EventType, n: int, **fields: Any) -> ExecutionEvent:
    fields.setdefault("time", T0 + timedelta(seconds=n))
    return execution_event(
        type_, execution_id="e-1", report_id="r-1", source="/tests", id=f"id-{n:03d}", **fields
    )


def row_without_keys(fold: ExecutionFold, period: timedelta | None = PERIOD) -> dict[str, Any]:
    row = fold.to_row(period)
    row.pop("fold_keys")
    return row


def fold_all(events: list[ExecutionEvent]) -> ExecutionFold:
    folds = fold_events(events)
    assert list(folds) == ["e-1"]
    return folds["e-1"]


# ----------------------------------------------------------------- examples
def test_late_progress_never_undoes_completed() -> None:
    done = ev(EventType.COMPLETED, 3, sequence=3, records_processed=10)
    late = ev(EventType.PROGRESS, 9, sequence=2, records_processed=7)
    row = row_without_keys(fold_all([done, late]))
    assert row["status"] == "completed"
    assert row["records_processed"] == 10


def test_pending_arriving_last_still_fills_trigger_type() -> None:
    events = [
        ev(EventType.COMPLETED, 5, sequence=2),
        ev(EventType.STARTED, 4, sequence=1, start_time=T0),
        ev(EventType.PENDING, 1, sequence=0, trigger_type="scheduled", started_by=42),
    ]
    row = row_without_keys(fold_all(events))
    assert (row["status"], row["trigger_type"], row["started_by"]) == ("completed", "scheduled", 42)


def test_sequence_orders_events_of_equal_rank_before_time() -> None:
    # progress #5 has an older clock than progress #4: sequence wins
    a = ev(EventType.PROGRESS, 2, sequence=5, records_processed=50)
    b = ev(EventType.PROGRESS, 8, sequence=4, records_processed=40)
    assert fold_all([a, b]).value("records_processed") == 50


def test_duration_derived_from_times_rounded_down() -> None:
    start = T0
    end = T0 + timedelta(seconds=2, microseconds=999)
    fold = fold_all([ev(EventType.COMPLETED, 1, start_time=start, end_time=end)])
    assert fold.duration_ms() == 2000
    carried = fold_all([ev(EventType.COMPLETED, 1, start_time=start, end_time=end, duration_ms=7)])
    assert carried.duration_ms() == 7
    backwards = fold_all([ev(EventType.COMPLETED, 1, start_time=end, end_time=start)])
    assert backwards.duration_ms() is None


def test_retention_explicit_beats_policy_and_needs_terminal() -> None:
    running = fold_all([ev(EventType.STARTED, 1)])
    assert running.retention_until(PERIOD) is None
    end = T0 + timedelta(hours=1)
    done = fold_all([ev(EventType.FAILED, 2, end_time=end)])
    assert done.retention_until(PERIOD) == end + PERIOD
    assert done.retention_until(None) is None  # on hold
    no_end = fold_all([ev(EventType.CANCELLED, 3)])
    assert no_end.retention_until(PERIOD) == T0 + timedelta(seconds=3) + PERIOD
    explicit = T0 + timedelta(days=1)
    held = fold_all([ev(EventType.COMPLETED, 4, retention_until=explicit)])
    assert held.retention_until(PERIOD) == explicit
    assert held.retention_until(None) == explicit


def test_retention_saturates_at_the_column_range() -> None:
    fold = fold_all([ev(EventType.COMPLETED, 1, end_time=datetime(2037, 12, 1, tzinfo=UTC))])
    assert fold.retention_until(timedelta(days=3650)) == MAX_TIME


def test_created_at_and_last_event_at_are_time_bounds() -> None:
    fold = fold_all([ev(EventType.STARTED, 5), ev(EventType.PENDING, 1), ev(EventType.PROGRESS, 3)])
    assert (fold.first_time, fold.last_time) == (
        T0 + timedelta(seconds=1),
        T0 + timedelta(seconds=5),
    )


def test_keys_encoding_round_trips_and_is_compact() -> None:
    events = [
        ev(EventType.PENDING, 1, trigger_type="api", started_by=3),
        ev(EventType.COMPLETED, 2, start_time=T0, end_time=T0, records_processed=1),
    ]
    fold = fold_all(events)
    encoded = encode_keys(fold)
    assert len(encoded["k"]) == 2  # two events supplied everything
    decoded = decode_keys(encoded)
    assert decoded["status"] == fold.status_key
    assert decoded["trigger_type"] == fold.values["trigger_type"][0]


# ----------------------------------------------------------------- properties
times = st.integers(min_value=0, max_value=5).map(lambda s: T0 + timedelta(seconds=s))
# data times may lie outside TIMESTAMP's range (issue #13 item 8): saturated or dropped
data_times = st.one_of(
    times,
    st.sampled_from([datetime(1969, 7, 20, tzinfo=UTC), datetime(2050, 1, 1, tzinfo=UTC)]),
)


def nested(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


# JSON fields: small objects, one nested too deep for the columns (not carried),
# one just fitting, one with an integer beyond 64 bits (kept exactly)
json_objects = st.one_of(
    st.dictionaries(st.sampled_from("abc"), st.integers(0, 3), max_size=2),
    st.sampled_from([nested(32), nested(31), {"n": 2**70 + 1}]),
)


@st.composite
def execution_events(draw: st.DrawFn) -> list[ExecutionEvent]:
    """A set of 1..8 distinct events of one execution, with ties in time on purpose."""
    count = draw(st.integers(1, 8))
    events = []
    for n in range(count):
        fields: dict[str, Any] = draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "sequence": st.integers(0, 4),
                    "trigger_type": st.sampled_from(["manual", "scheduled", "api", "webhook"]),
                    "started_by": st.one_of(st.integers(1, 3), st.just(2**31)),
                    "start_time": data_times,
                    "end_time": data_times,
                    "duration_ms": st.integers(0, 10),
                    "records_processed": st.one_of(st.integers(0, 10), st.just(2**63)),
                    "output_size_bytes": st.integers(0, 10),
                    "execution_parameters": json_objects,
                    "result_summary": json_objects,
                    "error_details": json_objects,
                    "output_location": st.sampled_from(["s3://a", "gs://b"]),
                    "retention_until": data_times,
                },
            )
        )
        events.append(
            execution_event(
                draw(st.sampled_from(EXECUTION_TYPES)),
                execution_id="e-1",
                report_id=draw(st.sampled_from(["r-1", "r-2"])),
                source="/tests",
                id=f"id-{draw(st.integers(0, 10**6)):07d}-{n}",
                time=draw(times),
                **fields,
            )
        )
    return events


@settings(max_examples=300)
@given(events=execution_events(), data=st.data())
def test_any_order_duplicates_and_batching_give_the_oracle_row(
    events: list[ExecutionEvent], data: st.DataObject
) -> None:
    expected = expected_row(events, PERIOD)
    # duplicate some events (a re-sent event keeps its id and content), then shuffle
    dupes = data.draw(st.lists(st.sampled_from(events), max_size=4))
    stream = data.draw(st.permutations(events + dupes))
    # split into batches; each batch is folded alone, then stored and re-read
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(stream) - 1)), max_size=3)))
    batches = [stream[i:j] for i, j in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    stored: dict[str, Any] | None = None
    for batch in filter(None, batches):
        fold = fold_all(batch)
        if stored is not None:
            fold.merge(ExecutionFold.from_row(stored))
        stored = fold.to_row(PERIOD)
    assert stored is not None
    stored.pop("fold_keys")
    assert stored == expected


@st.composite
def with_conflicts(draw: st.DrawFn) -> list[ExecutionEvent]:
    """A set of events plus, for some, a conflicting twin: same id, type, sequence
    and time, other content (a producer that re-used an id)."""
    events = draw(execution_events())
    twins = []
    for event in draw(st.lists(st.sampled_from(events), max_size=3, unique_by=lambda e: e.id)):
        data = event.data.model_dump(exclude_none=True)
        data.pop("execution_id")
        data["records_processed"] = draw(st.integers(11, 20))
        if draw(st.booleans()):
            data["output_location"] = "s3://twin"
        twins.append(
            execution_event(
                event.type,
                execution_id="e-1",
                source="/other",
                time=event.time,
                id=event.id,
                **data,
            )
        )
    return events + twins


@settings(max_examples=300)
@given(events=with_conflicts(), data=st.data())
def test_conflicting_duplicates_in_any_order_and_batching_give_one_row(
    events: list[ExecutionEvent], data: st.DataObject
) -> None:
    expected = expected_row(events, PERIOD)
    stream = data.draw(st.permutations(events + data.draw(st.lists(st.sampled_from(events)))))
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(stream) - 1)), max_size=3)))
    stored: dict[str, Any] | None = None
    for batch in filter(
        None, [stream[i:j] for i, j in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    ):
        fold = fold_all(batch)
        if stored is not None:
            fold.merge(ExecutionFold.from_row(stored))
        stored = fold.to_row(PERIOD)
    assert stored is not None
    stored.pop("fold_keys")
    assert stored == expected


@given(events=execution_events())
def test_applying_a_batch_twice_changes_nothing(events: list[ExecutionEvent]) -> None:
    once = fold_all(events)
    row = once.to_row(PERIOD)
    twice = ExecutionFold.from_row(row)
    twice.merge(fold_all(events))
    assert twice.to_row(PERIOD) == row


# ----------------------------------------------------------------- conflicting duplicates
def twins() -> tuple[ExecutionEvent, ExecutionEvent]:
    """Issue #13 item 6: two progress events, one id, sequence and time, two contents."""
    small = ev(EventType.PROGRESS, 7, sequence=1, records_processed=10)
    large = ev(EventType.PROGRESS, 7, sequence=1, records_processed=20, output_location="s3://o")
    assert small.order_key[:4] == large.order_key[:4]
    assert small.digest != large.digest
    return small, large


def test_conflicting_duplicates_give_one_row_in_either_order() -> None:
    small, large = twins()
    winner = max(small, large, key=lambda e: e.digest)
    rows = []
    for stream in ([small, large], [large, small]):
        fold = fold_all(stream)
        assert fold.conflicts == {small.id}
        rows.append(fold.to_row(PERIOD))
    assert rows[0] == rows[1]
    assert rows[0]["records_processed"] == winner.data.records_processed
    assert rows[0]["output_location"] == "s3://o"  # only one of them carries it
    assert rows[0] == {**expected_row([small, large], PERIOD), "fold_keys": rows[0]["fold_keys"]}


def test_conflicting_duplicates_across_batches_are_detected_through_stored_keys() -> None:
    small, large = twins()
    for first, second in ((small, large), (large, small)):
        stored = fold_all([first]).to_row(PERIOD)
        later = ExecutionFold.from_row(stored)
        assert not later.conflicts
        later.merge(fold_all([second]))
        assert later.conflicts == {small.id}
        assert (
            later.value("records_processed")
            == max(small, large, key=lambda e: e.digest).data.records_processed
        )


def test_keys_stored_before_the_digest_decode_with_an_empty_digest() -> None:
    """fold_keys written by earlier versions hold 4-element keys: they still decode,
    compare below any real digest of the same event, and are never a conflict."""
    event = ev(EventType.PROGRESS, 2, sequence=1, records_processed=5)
    row = fold_all([event]).to_row(PERIOD)
    row["fold_keys"] = {
        "k": [k[:4] for k in row["fold_keys"]["k"]],
        "f": row["fold_keys"]["f"],
    }
    old = ExecutionFold.from_row(row)
    assert old.status_key == (*event.order_key[:4], "")
    assert old.status_key < event.order_key
    old.merge(fold_all([event]))  # the same event delivered again
    assert not old.conflicts
    assert old.status_key == event.order_key  # the key gains its digest
    assert old.value("records_processed") == 5


def test_conflicts_are_counted_and_logged_with_execution_and_event_id() -> None:
    before = REGISTRY.get_sample_value("exectrack_event_id_conflicts_total") or 0.0
    with capture_logs() as logs:
        report_conflicts([("e-1", "id-007")])
    assert REGISTRY.get_sample_value("exectrack_event_id_conflicts_total") == before + 1
    assert logs == [
        {
            "event": "event_id_conflict",
            "execution_id": "e-1",
            "id": "id-007",
            "log_level": "warning",
        }
    ]


# ----------------------------------------------------------------- times outside the columns
def test_retention_until_beyond_2038_is_held_until_the_column_end() -> None:
    """Issue #13 item 8: a 25-year compliance hold on a completed event."""
    hold = datetime(2050, 1, 1, tzinfo=UTC)
    done = ev(EventType.COMPLETED, 3, sequence=2, retention_until=hold)
    fold = fold_all([ev(EventType.STARTED, 1, sequence=1), done])
    row = fold.to_row(PERIOD)
    assert (row["status"], row["retention_until"]) == ("completed", MAX_TIME)
    assert fold.out_of_range == {("retention_until", done.id, hold, MAX_TIME)}
    past = ev(EventType.COMPLETED, 4, retention_until=datetime(1900, 1, 1, tzinfo=UTC))
    assert fold_all([past]).to_row(PERIOD)["retention_until"] == MIN_TIME


def test_start_and_end_time_outside_the_range_are_not_carried() -> None:
    """No made-up duration or retention base: an earlier in-range value wins, else NULL."""
    started = ev(EventType.STARTED, 1, sequence=1, start_time=T0, end_time=T0)
    done = ev(
        EventType.COMPLETED, 5, sequence=2,
        start_time=datetime(1969, 7, 20, tzinfo=UTC), end_time=datetime(2050, 1, 1, tzinfo=UTC),
    )  # fmt: skip
    fold = fold_all([done, started])
    row = fold.to_row(PERIOD)
    assert (row["start_time"], row["end_time"], row["duration_ms"]) == (T0, T0, 0)
    alone = fold_all([done]).to_row(PERIOD)
    assert (alone["start_time"], alone["end_time"], alone["duration_ms"]) == (None, None, None)
    assert alone["retention_until"] == done.time + PERIOD  # the terminal event's time
    assert {(name, taken) for name, _, _, taken in fold.out_of_range} == {
        ("start_time", None),
        ("end_time", None),
    }


def test_integers_beyond_their_columns_are_not_carried() -> None:
    """records_processed above BIGINT, started_by above INT: the status still counts."""
    started = ev(EventType.STARTED, 1, sequence=1, records_processed=5, started_by=7)
    done = ev(EventType.COMPLETED, 2, sequence=2, records_processed=2**63, started_by=2**31)
    fold = fold_all([done, started])
    row = fold.to_row(PERIOD)
    assert (row["status"], row["records_processed"], row["started_by"]) == ("completed", 5, 7)
    assert fold.out_of_range == {
        ("records_processed", done.id, 2**63, None),
        ("started_by", done.id, 2**31, None),
    }
