"""The simulator: deterministic, every message what it claims to be, ratios honoured."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import UTC, datetime
from functools import cache
from typing import Any

import pytest

from exectrack.producer._traffic import VALID
from exectrack.producer.errors import InvalidEvent, InvalidReason
from exectrack.producer.events import (
    CONTENT_TYPE,
    MAX_TIME,
    MIN_TIME,
    EventType,
    ExecutionEvent,
    ReportDefinedEvent,
    parse_event,
    to_json,
)
from exectrack.producer.simulate import (
    ADMIT_EVERY,
    LIFECYCLE_MAX,
    SimConfig,
    SimMessage,
    TokenBucket,
    generate,
    records,
    run_simulation,
)
from exectrack.producer.testing import InMemoryPublisher

T = EventType
R = InvalidReason


@cache
def messages(
    seed: int = 0,
    executions: int = 1000,
    duplicate_ratio: float = 0.01,
    reorder_ratio: float = 0.1,
    invalid_ratio: float = 0.01,
) -> tuple[SimMessage, ...]:
    config = SimConfig(
        executions=executions,
        seed=seed,
        duplicate_ratio=duplicate_ratio,
        reorder_ratio=reorder_ratio,
        invalid_ratio=invalid_ratio,
    )
    return tuple(generate(config))


def by_execution(sim: tuple[SimMessage, ...]) -> dict[str, list[ExecutionEvent]]:
    """Valid execution events per execution, in publishing order, duplicates dropped."""
    seen: set[str] = set()
    out: dict[str, list[ExecutionEvent]] = {}
    for message in sim:
        event = message.event
        if isinstance(event, ExecutionEvent) and event.id not in seen:
            seen.add(event.id)
            out.setdefault(event.data.execution_id, []).append(event)
    return out


def test_same_seed_same_bytes_other_seed_other_bytes() -> None:
    first = [(m.key, m.value, m.headers) for m in generate(SimConfig(executions=300, seed=5))]
    again = [(m.key, m.value, m.headers) for m in generate(SimConfig(executions=300, seed=5))]
    other = [(m.key, m.value) for m in generate(SimConfig(executions=300, seed=6))]
    assert first == again
    assert [(k, v) for k, v, _ in first] != other
    fast = [(r.key, r.value) for r in records(SimConfig(executions=300, seed=5))]
    assert fast == [(k, v) for k, v, _ in first]


def test_every_invalid_message_fails_with_exactly_its_reason() -> None:
    sim = messages(seed=1, executions=1500, invalid_ratio=0.1)
    invalid = [m for m in sim if m.invalid_reason is not None]
    assert len(invalid) > 500
    for message in invalid:
        assert message.event is None
        with pytest.raises(InvalidEvent) as caught:
            parse_event(message.value, message.headers, message.key)
        assert caught.value.reason == message.invalid_reason, message
    kinds = Counter(m.invalid_reason for m in invalid)
    expected = {R.NOT_JSON, R.NOT_UTF8, R.NAIVE_TIMESTAMP, R.UNKNOWN_TYPE, R.INVALID_FIELD,
                R.KEY_MISMATCH}  # fmt: skip
    assert set(kinds) == expected
    assert min(kinds.values()) > len(invalid) / len(expected) / 2  # mixed, roughly evenly


def test_every_valid_message_parses_back_to_its_event() -> None:
    sim = messages()
    valid = [m for m in sim if m.invalid_reason is None]
    assert len(valid) > 4000
    for message in valid:
        assert message.event is not None
        assert parse_event(message.value, message.headers, message.key) == message.event
        assert message.value == to_json(message.event)  # what Publisher.send would write
        assert message.key == message.event.key
        assert message.headers == [("content-type", CONTENT_TYPE.encode())]
        assert MIN_TIME <= message.event.time <= MAX_TIME


def test_lifecycles_are_realistic() -> None:
    config = SimConfig()
    executions = by_execution(messages())
    assert len(executions) == config.executions
    terminals: Counter[str] = Counter()
    unnumbered = 0
    for events in executions.values():
        ordered = sorted(events, key=lambda e: e.time)  # lifecycle order (sequences may be absent)
        types = [e.type for e in ordered]
        assert types[:2] == [T.PENDING, T.STARTED]
        assert set(types[2:-1]) <= {T.PROGRESS}
        assert len(types) <= 6
        terminals[types[-1]] += 1
        numbers = [e.data.sequence for e in ordered if e.data.sequence is not None]
        assert numbers == sorted(set(numbers))
        pending, started, last = ordered[0].data, ordered[1].data, ordered[-1].data
        assert pending.trigger_type is not None
        assert pending.started_by is None or 1 <= pending.started_by <= config.users
        assert started.start_time == ordered[1].time
        assert last.end_time == ordered[-1].time
        if types[-1] == T.COMPLETED:
            assert last.records_processed is not None
            assert last.result_summary is not None
        if types[-1] == T.FAILED:
            assert last.error_details is not None
        unnumbered += any(e.data.sequence is None for e in events)
    total = config.executions
    assert 0.80 * total < terminals[T.COMPLETED] < 0.90 * total
    assert 0.06 * total < terminals[T.FAILED] < 0.14 * total
    assert terminals[T.CANCELLED] > 0
    assert terminals[T.TIMED_OUT] > 0
    assert 0.03 * total < unnumbered < 0.15 * total
    every_event = [e for events in executions.values() for e in events]
    assert any(e.data.retention_until is not None for e in every_event)
    assert any(e.data.duration_ms is None for e in every_event if e.rank == 2)  # consumer computes
    assert {e.data.started_by for e in every_event} - {None} <= set(range(1, config.users + 1))


def test_ratios_are_roughly_honoured() -> None:
    sim = messages(seed=2, executions=3000, duplicate_ratio=0.05, reorder_ratio=0.2,
                   invalid_ratio=0.03)  # fmt: skip
    ids = Counter(m.event.id for m in sim if m.event is not None)
    duplicates = sum(count - 1 for count in ids.values())
    invalid = sum(m.invalid_reason is not None for m in sim)
    assert 0.04 < duplicates / len(ids) < 0.06
    assert 0.02 < invalid / len(sim) < 0.04
    executions = by_execution(sim)
    out_of_order = sum(
        [e.time for e in events] != sorted(e.time for e in events) for events in executions.values()
    )
    assert 0.15 < out_of_order / len(executions) < 0.25
    identical = {m.value for m in sim if m.event is not None and ids[m.event.id] > 1}
    assert all(sum(m.value == v for m in sim) > 1 for v in list(identical)[:20])


def test_no_ratio_means_none_of_it() -> None:
    sim = messages(seed=3, executions=400, duplicate_ratio=0, reorder_ratio=0, invalid_ratio=0)
    assert all(m.invalid_reason is None for m in sim)
    assert len({m.event.id for m in sim if m.event}) == len(sim)
    for events in by_execution(sim).values():
        assert [e.time for e in events] == sorted(e.time for e in events)


def test_executions_interleave_like_real_traffic() -> None:
    sim = messages()
    window = [m.key for m in sim[50:250] if m.event is not None]
    assert len(set(window)) > 40  # many executions in flight at once
    positions: dict[bytes, list[int]] = {}
    for index, message in enumerate(sim):
        if isinstance(message.event, ExecutionEvent):
            positions.setdefault(message.key, []).append(index)
    spread = [p[-1] - p[0] for p in positions.values() if len(p) > 1]
    assert sum(spread) / len(spread) > 50  # an execution's events are far apart


def test_report_definitions_before_and_after_their_executions() -> None:
    sim = messages()
    config = SimConfig()
    defined = [(i, m.event) for i, m in enumerate(sim) if isinstance(m.event, ReportDefinedEvent)]
    reports = {e.data.report_id for _, e in defined}
    assert 0.2 * config.reports <= len(reports) <= 0.8 * config.reports
    first_execution = next(i for i, m in enumerate(sim) if isinstance(m.event, ExecutionEvent))
    last_execution = max(i for i, m in enumerate(sim) if isinstance(m.event, ExecutionEvent))
    assert any(i < first_execution for i, _ in defined)
    assert any(i > last_execution - 300 for i, _ in defined)
    used = {e.data.report_id for e in (m.event for m in sim) if isinstance(e, ExecutionEvent)}
    assert reports <= used
    assert len(used) == config.reports


def test_start_and_source_are_honoured() -> None:
    config = SimConfig(executions=20, start=datetime(2030, 6, 1, tzinfo=UTC), source="/s/x")
    events = [m.event for m in generate(config) if m.event is not None]
    assert min(e.time for e in events) >= datetime(2030, 6, 1, tzinfo=UTC)
    assert {e.source for e in events} == {"/s/x"}
    with pytest.raises(ValueError, match="timezone"):
        next(generate(SimConfig(start=datetime(2030, 1, 1))))  # noqa: DTZ001
    with pytest.raises(ValueError, match=r"1970\.\.2038"):
        next(generate(SimConfig(start=datetime(2037, 12, 1, tzinfo=UTC))))


def test_generating_counts_every_message() -> None:
    """How fast it generates is bench's business (bench.producer), not a timed unit test."""
    config = SimConfig(executions=2_000)
    kinds = Counter(record.kind for record in records(config))
    assert kinds[VALID] >= 2_000 * 3  # each execution: at least pending, started, a terminal


# ---------------------------------------------------------------- run_simulation
async def test_run_simulation_publishes_everything() -> None:
    config = SimConfig(executions=300, seed=9)
    expected = list(generate(config))
    async with InMemoryPublisher() as pub:
        report = await run_simulation(pub, config, progress=False)
    assert [m.value for m in pub.messages] != []
    assert sorted(m.value for m in pub.messages) == sorted(m.value for m in expected)
    assert report.sent == len(expected) == len(pub.messages)
    assert report.invalid == sum(m.invalid_reason is not None for m in expected)
    assert report.invalid == len(pub.dead_letters)
    assert report.valid + report.duplicates == len(pub.events)
    assert report.valid == len({e.id for e in pub.events})
    assert (report.failed, report.resent) == (0, 0)
    assert report.rate > 0
    assert report.elapsed_s > 0
    for message in pub.messages:  # the real partitioner's choice (see test_publisher)
        assert message.partition == pub._partitioner(message.key, pub.partitions, None)


async def test_run_simulation_resends_batches_that_failed_retriably() -> None:
    config = SimConfig(executions=100, seed=4)
    total = sum(1 for _ in generate(config))
    async with InMemoryPublisher() as pub:
        pub.fail_next(3)
        report = await run_simulation(pub, config, chunk=50)
    assert report.failed == 0
    assert report.resent > 0
    assert report.sent == total == len(pub.messages)


async def test_run_simulation_counts_what_never_got_through() -> None:
    config = SimConfig(executions=30, seed=4)
    async with InMemoryPublisher() as pub:
        pub.fail_next(2, retriable=False)
        report = await run_simulation(pub, config, chunk=10_000)
    assert report.failed > 0
    assert report.sent + report.failed == sum(1 for _ in generate(config))


async def test_run_simulation_honours_the_rate() -> None:
    config = SimConfig(executions=60, seed=4)
    total = sum(1 for _ in generate(config))
    async with InMemoryPublisher() as pub:
        started = time.monotonic()
        report = await run_simulation(pub, config, rate=1000)
        elapsed = time.monotonic() - started
    assert report.sent == total
    assert (total - 50) / 1000 <= elapsed < total / 1000 + 1.0


async def test_run_simulation_prints_its_progress_and_rate(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with InMemoryPublisher() as pub:
        await run_simulation(pub, SimConfig(executions=50), progress=True)
    captured = capsys.readouterr()
    assert "events/s" in captured.out  # the summary line
    assert "50/50" in captured.err  # the progress bar (rich, on stderr)
    assert "50/50" not in captured.out


async def test_run_simulation_without_progress_draws_no_bar(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with InMemoryPublisher() as pub:
        await run_simulation(pub, SimConfig(executions=20), progress=False)
    captured = capsys.readouterr()
    assert captured.out.startswith("simulate: ")
    assert captured.err == ""


async def test_progress_without_rich_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_rich(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.split(".")[0] == "rich":
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_rich)
    async with InMemoryPublisher() as pub:
        with pytest.raises(ModuleNotFoundError, match=r"pip install 'exectrack\[simulate\]'"):
            await run_simulation(pub, SimConfig(executions=5), progress=True)


async def test_token_bucket() -> None:
    bucket = TokenBucket(rate=200, capacity=10)
    started = time.monotonic()
    for _ in range(10):
        await bucket.take(10)  # the first 10 are in the bucket already
    assert 0.4 <= time.monotonic() - started < 1.0
    with pytest.raises(ValueError, match="positive"):
        TokenBucket(rate=0)
    await asyncio.wait_for(bucket.take(1000), 1)  # clipped to the capacity


def times_of(sim: tuple[SimMessage, ...] | list[SimMessage]) -> list[datetime]:
    """Every time a valid message carries: envelope ``time``, ``start_time``, ``end_time``."""
    found = []
    for message in sim:
        event = message.event
        if event is None:
            continue
        found.append(event.time)
        if isinstance(event, ExecutionEvent):
            found += [t for t in (event.data.start_time, event.data.end_time) if t is not None]
    return found


@pytest.mark.parametrize(("executions", "seed"), [(1, 0), (7, 3), (1000, 0), (3000, 11)])
def test_every_time_is_within_the_span(executions: int, seed: int) -> None:
    config = SimConfig(executions=executions, seed=seed)
    times = times_of(list(generate(config)))
    assert max(times) <= config.start + config.span()
    # the bound is not loose: the last execution is admitted at most one lifecycle before it
    assert max(times) >= config.start + config.span() - LIFECYCLE_MAX
    assert min(times) >= config.start
    assert config.span() == (executions - 1) * ADMIT_EVERY + LIFECYCLE_MAX


def test_ending_by_puts_every_time_at_or_before_the_moment() -> None:
    moment = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
    config = SimConfig(executions=2000, seed=4).ending_by(moment)
    sim = list(generate(config))
    times = times_of(sim)
    assert max(times) <= moment
    assert moment - max(times) < LIFECYCLE_MAX  # and the last executions end recently
    assert config.start == moment - config.span()
    # a function of the moment: the same moment, the same bytes
    again = list(generate(SimConfig(executions=2000, seed=4).ending_by(moment)))
    assert [m.value for m in again] == [m.value for m in sim]
    with pytest.raises(ValueError, match="timezone-aware"):
        SimConfig().ending_by(datetime(2026, 11, 30, 8, 0))  # noqa: DTZ001
