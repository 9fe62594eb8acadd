"""``track``/``track_sync`` emit exactly the lifecycle the contract expects, whatever happens."""

from __future__ import annotations

import asyncio
import traceback
import uuid
from datetime import UTC, datetime

import orjson
import pytest

from exectrack.producer.errors import InvalidEvent, InvalidReason, PublishError
from exectrack.producer.events import EventType, ExecutionEvent, TriggerType
from exectrack.producer.sync import SyncPublisher, track_sync
from exectrack.producer.testing import InMemoryPublisher
from exectrack.producer.tracking import (
    MAX_ERROR_DETAILS_BYTES,
    error_details,
    exectrack_execution_id,
    track,
)

T = EventType


class ReportBroke(Exception):
    pass


def steps(pub: InMemoryPublisher, execution_id: str) -> list[tuple[str, int | None]]:
    return [(e.type.rsplit(".", 1)[1], e.data.sequence) for e in pub.events_for(execution_id)]


async def test_success_emits_pending_started_progress_completed() -> None:
    async with InMemoryPublisher(source="/services/vpc-scanner") as pub:
        before = datetime.now(UTC)
        async with track(
            pub,
            report_id="vpc-inventory",
            trigger_type="scheduled",
            started_by=42,
            execution_parameters={"regions": ["eu-west-1"]},
        ) as run:
            await run.progress(records_processed=10)
            await run.progress(records_processed=20, output_size_bytes=100)
            run.set(result_summary={"vpcs": 12}, records_processed=25, output_location="s3://b/k")
    assert uuid.UUID(run.execution_id).version == 4
    assert steps(pub, run.execution_id) == [
        ("pending", 0), ("started", 1), ("progress", 2), ("progress", 3), ("completed", 4),
    ]  # fmt: skip
    pending, started, first, second, completed = pub.events_for(run.execution_id)
    assert pending.data.trigger_type == TriggerType.SCHEDULED
    assert pending.data.started_by == 42
    assert pending.data.execution_parameters == {"regions": ["eu-west-1"]}
    assert started.data.start_time is not None
    assert started.data.start_time >= before
    assert (first.data.records_processed, second.data.output_size_bytes) == (10, 100)
    data = completed.data
    assert data.end_time is not None
    assert data.end_time >= started.data.start_time
    assert data.duration_ms is not None
    assert 0 <= data.duration_ms < 5_000
    assert data.result_summary == {"vpcs": 12}
    assert (data.records_processed, data.output_location) == (25, "s3://b/k")
    assert data.error_details is None
    assert {e.source for e in pub.events} == {"/services/vpc-scanner"}
    assert {e.data.report_id for e in pub.events_for(run.execution_id)} == {"vpc-inventory"}
    assert run.publish_errors == 0


async def test_duration_comes_from_a_monotonic_clock() -> None:
    async with (
        InMemoryPublisher() as pub,
        track(pub, report_id="r", execution_id="exec-slow") as run,
    ):
        await asyncio.sleep(0.05)
    completed = pub.events_for("exec-slow")[-1]
    assert completed.data.duration_ms is not None
    assert 50 <= completed.data.duration_ms < 2_000
    assert run.execution_id == "exec-slow"


async def broken_report(pub: InMemoryPublisher) -> str:
    async with track(pub, report_id="r") as run:
        await run.progress(records_processed=3)
        run.set(records_processed=4)
        raise ReportBroke(f"quota exceeded in {run.execution_id}")


async def test_failure_emits_failed_with_error_details_and_reraises() -> None:
    async with InMemoryPublisher() as pub:
        with pytest.raises(ReportBroke, match="quota exceeded") as caught:
            await broken_report(pub)
    execution_id = str(caught.value).rsplit(" ", 1)[1]
    assert steps(pub, execution_id) == [
        ("pending", 0), ("started", 1), ("progress", 2), ("failed", 3),
    ]  # fmt: skip
    failed = pub.events_for(execution_id)[-1]
    details = failed.data.error_details
    assert details is not None
    assert details["type"] == f"{__name__}.ReportBroke"
    assert details["message"] == f"quota exceeded in {execution_id}"
    assert "ReportBroke: quota exceeded" in details["traceback"]
    assert "test_tracking.py" in details["traceback"]
    assert failed.data.records_processed == 4
    assert failed.data.end_time is not None
    assert failed.data.duration_ms is not None


async def test_builtin_exception_type_is_not_qualified_with_builtins() -> None:
    async with InMemoryPublisher() as pub:
        with pytest.raises(KeyError):
            async with track(pub, report_id="r", execution_id="e"):
                raise KeyError("VpcId")
    details = pub.events_for("e")[-1].data.error_details
    assert details is not None
    assert (details["type"], details["message"]) == ("KeyError", "'VpcId'")


def recurse(depth: int) -> None:
    if depth == 0:
        raise ValueError("\ud800 surrogate, NUL \x00, and a long tail " + "x" * 200_000)
    recurse(depth - 1)


def test_error_details_are_bounded_and_valid_json() -> None:
    try:
        recurse(60)
    except ValueError as exc:
        details = error_details(exc)
    size = len(orjson.dumps(details))
    assert size <= MAX_ERROR_DETAILS_BYTES
    assert details["type"] == "ValueError"
    assert details["message"].endswith("...")
    lines = details["traceback"].splitlines()
    assert 0 < len(lines) <= 20
    assert lines[-1].startswith("ValueError:")  # the innermost lines are kept


def test_error_details_survive_a_broken_str() -> None:
    class Weird(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    try:
        raise Weird
    except Weird as exc:
        details = error_details(exc)
    assert (
        details["message"] == "<unprintable test_error_details_survive_a_broken_str.<locals>.Weird>"
    )


async def test_huge_error_still_yields_a_valid_failed_event() -> None:
    async with InMemoryPublisher() as pub:
        with pytest.raises(ValueError, match="surrogate"):
            async with track(pub, report_id="r", execution_id="e"):
                recurse(80)
    assert pub.types_for("e") == [T.PENDING, T.STARTED, T.FAILED]


async def test_cancellation_emits_cancelled_and_reraises() -> None:
    pub = InMemoryPublisher()
    await pub.start()
    entered = asyncio.Event()

    async def report() -> None:
        async with track(pub, report_id="r", execution_id="e"):
            entered.set()
            await asyncio.sleep(60)

    task = asyncio.create_task(report())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert steps(pub, "e") == [("pending", 0), ("started", 1), ("cancelled", 2)]
    cancelled = pub.events_for("e")[-1]
    assert cancelled.data.end_time is not None
    assert cancelled.data.error_details is None


async def test_timeout_inside_the_block_is_a_cancellation() -> None:
    async with InMemoryPublisher() as pub:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.01), track(pub, report_id="r", execution_id="e"):
                await asyncio.sleep(60)
    assert pub.types_for("e") == [T.PENDING, T.STARTED, T.CANCELLED]


async def test_log_mode_keeps_the_report_running_and_counts_failures() -> None:
    async with InMemoryPublisher() as pub, track(pub, report_id="r", execution_id="e") as run:
        pub.fail_next(2)
        await run.progress(records_processed=1)  # lost
        await run.progress(records_processed=2)  # lost
        await run.progress(records_processed=3)
    assert run.publish_errors == 2
    assert steps(pub, "e") == [("pending", 0), ("started", 1), ("progress", 4), ("completed", 5)]
    assert len(run.events) == 6  # built, even the ones the broker never got


async def test_log_mode_survives_a_broker_away_for_the_whole_run() -> None:
    async with InMemoryPublisher() as pub:
        pub.fail_next(100)
        async with track(pub, report_id="r", execution_id="e") as run:
            await run.progress(records_processed=1)
        assert run.publish_errors == 4
        assert pub.events == []


async def progress_while_the_broker_refuses(pub: InMemoryPublisher) -> None:
    async with track(pub, report_id="r", execution_id="e", on_publish_error="raise") as run:
        pub.fail_next(1, retriable=False)
        await run.progress(records_processed=1)


async def test_raise_mode_propagates_the_publish_error() -> None:
    async with InMemoryPublisher() as pub:
        with pytest.raises(PublishError) as caught:
            await progress_while_the_broker_refuses(pub)
        assert caught.value.retriable is False
        # the block died of the PublishError: the execution is recorded as failed
        assert pub.types_for("e") == [T.PENDING, T.STARTED, T.FAILED]
        failed = pub.events_for("e")[-1].data.error_details
        assert failed is not None
        assert failed["type"] == "exectrack.producer.errors.PublishError"


async def test_raise_mode_fails_on_enter_when_pending_cannot_be_published() -> None:
    async with InMemoryPublisher() as pub:
        pub.fail_next(1)
        body_ran = False
        with pytest.raises(PublishError):
            async with track(pub, report_id="r", on_publish_error="raise"):
                body_ran = True
        assert not body_ran
        assert pub.events == []


async def fail_while_the_broker_refuses(pub: InMemoryPublisher) -> None:
    async with track(pub, report_id="r", execution_id="e", on_publish_error="raise"):
        pub.fail_next(1)
        raise ReportBroke("first")


async def test_raise_mode_keeps_the_block_exception_when_the_terminal_event_fails() -> None:
    async with InMemoryPublisher() as pub:
        with pytest.raises(ReportBroke) as caught:
            await fail_while_the_broker_refuses(pub)
        assert any("terminal event was not published" in n for n in caught.value.__notes__)
        assert pub.types_for("e") == [T.PENDING, T.STARTED]


async def test_raise_mode_raises_when_completed_cannot_be_published() -> None:
    async with InMemoryPublisher() as pub:
        with pytest.raises(PublishError):
            async with track(pub, report_id="r", execution_id="e", on_publish_error="raise"):
                pub.fail_next(1)


async def test_bad_fields_are_caller_bugs_and_raise() -> None:
    async with InMemoryPublisher() as pub:
        async with track(pub, report_id="r", execution_id="e") as run:
            with pytest.raises(InvalidEvent) as caught:
                run.set(duraton_ms=5)
            assert caught.value.reason == InvalidReason.INVALID_FIELD
            with pytest.raises(InvalidEvent):
                await run.progress(records_processed=-1)
            with pytest.raises(InvalidEvent):
                await run.progress(sequence=7)
        with pytest.raises(InvalidEvent):
            async with track(pub, report_id="r", trigger_type="cron"):
                pass
        with pytest.raises(ValueError, match="on_publish_error"):
            track(pub, report_id="r", on_publish_error="ignore")  # type: ignore[arg-type]


async def test_an_invalid_set_value_does_not_lose_the_terminal_event() -> None:
    async with InMemoryPublisher() as pub, track(pub, report_id="r", execution_id="e") as run:
        run.set(result_summary={"blob": "x" * 70_000}, records_processed=5)
    completed = pub.events_for("e")[-1]
    assert completed.type == T.COMPLETED
    assert completed.data.result_summary is None
    assert completed.data.end_time is not None


async def test_any_publisher_like_works_and_source_defaults() -> None:
    class Recorder:
        def __init__(self) -> None:
            self.events: list[ExecutionEvent] = []

        async def publish(self, event: ExecutionEvent) -> None:
            self.events.append(event)

    recorder = Recorder()
    async with track(recorder, report_id="r", source="/services/custom"):
        pass
    assert [e.type for e in recorder.events] == [T.PENDING, T.STARTED, T.COMPLETED]
    assert {e.source for e in recorder.events} == {"/services/custom"}
    other = Recorder()
    async with track(other, report_id="r"):
        pass
    assert other.events[0].source == "/services/exectrack-cli"


async def test_explicit_retention_is_carried() -> None:
    until = datetime(2030, 1, 1, tzinfo=UTC)
    async with InMemoryPublisher() as pub, track(pub, report_id="r", execution_id="e") as run:
        run.set(retention_until=until)
    assert pub.events_for("e")[-1].data.retention_until == until


# ---------------------------------------------------------------- the sync wrapper
def test_track_sync_success_and_failure() -> None:
    memory = InMemoryPublisher(source="/services/batch")
    with SyncPublisher(memory) as pub:
        with track_sync(pub, report_id="r", execution_id="ok", trigger_type="manual") as run:
            run.progress(records_processed=5)
            run.set(result_summary={"rows": 5})
        with pytest.raises(ReportBroke), track_sync(pub, report_id="r", execution_id="bad"):
            raise ReportBroke("sync failure")
        pub.flush()
    assert steps(memory, "ok") == [
        ("pending", 0),
        ("started", 1),
        ("progress", 2),
        ("completed", 3),
    ]
    assert memory.events_for("ok")[-1].data.result_summary == {"rows": 5}
    assert memory.types_for("bad") == [T.PENDING, T.STARTED, T.FAILED]
    assert memory.events_for("bad")[-1].source == "/services/batch"
    assert run.execution_id == "ok"
    assert run.publish_errors == 0
    assert not memory.started  # stop() stopped the wrapped publisher


def test_track_sync_keyboard_interrupt_is_a_cancellation() -> None:
    memory = InMemoryPublisher()
    with (
        SyncPublisher(memory) as pub,
        pytest.raises(KeyboardInterrupt),
        track_sync(pub, report_id="r", execution_id="e"),
    ):
        raise KeyboardInterrupt
    assert memory.types_for("e") == [T.PENDING, T.STARTED, T.CANCELLED]


def test_sync_publisher_uses_one_loop_thread_and_times_out() -> None:
    memory = InMemoryPublisher()
    pub = SyncPublisher(memory, timeout=0.2)
    with pytest.raises(RuntimeError, match="not started"):
        pub.flush()
    with pub:
        first = pub._thread
        assert first is not None
        assert first.daemon
        assert first.is_alive()
        with pytest.raises(PublishError) as caught:
            pub.run(asyncio.sleep(5))
        assert caught.value.retriable
        pub.start()  # idempotent
        assert pub._thread is first
    assert not first.is_alive()
    pub.stop()  # idempotent


def test_sync_run_with_log_mode_counts_failures() -> None:
    memory = InMemoryPublisher()
    with SyncPublisher(memory) as pub, track_sync(pub, report_id="r", execution_id="e") as run:
        memory.fail_next(1)
        run.progress(records_processed=1)
    assert run.publish_errors == 1
    assert memory.types_for("e") == [T.PENDING, T.STARTED, T.COMPLETED]


# ---------------------------------------------------------------- the execution_id on the exception
async def test_the_exception_leaving_track_names_its_execution() -> None:
    async with InMemoryPublisher() as pub:
        with pytest.raises(ReportBroke) as caught:
            async with track(pub, report_id="r") as run:
                raise ReportBroke("quota exceeded")
    exc = caught.value
    assert exectrack_execution_id(exc) == run.execution_id
    assert exc.exectrack_execution_id == run.execution_id  # type: ignore[attr-defined]
    assert exc.__notes__ == [f"exectrack execution_id={run.execution_id}"]
    assert f"exectrack execution_id={run.execution_id}" in "".join(traceback.format_exception(exc))
    # the note is for the service's log, not part of the report's own error
    details = pub.events_for(run.execution_id)[-1].data.error_details
    assert details is not None
    assert "exectrack execution_id" not in details["traceback"]
    assert exectrack_execution_id(ReportBroke("never tracked")) is None


async def test_nested_runs_the_innermost_id_wins_and_every_run_is_noted() -> None:
    async with InMemoryPublisher() as pub:
        with pytest.raises(ReportBroke) as caught:
            async with (
                track(pub, report_id="outer", execution_id="o") as outer,
                track(pub, report_id="inner", execution_id="i"),
            ):
                raise ReportBroke("deep")
    assert outer.execution_id == "o"
    assert exectrack_execution_id(caught.value) == "i"
    assert caught.value.__notes__ == ["exectrack execution_id=i", "exectrack execution_id=o"]


async def test_a_cancelled_run_also_names_its_execution() -> None:
    async with InMemoryPublisher() as pub:
        with pytest.raises(asyncio.CancelledError) as caught:
            async with track(pub, report_id="r", execution_id="c"):
                raise asyncio.CancelledError
    assert exectrack_execution_id(caught.value) == "c"
    assert pub.types_for("c") == [T.PENDING, T.STARTED, T.CANCELLED]


def test_track_sync_failure_names_its_execution() -> None:
    memory = InMemoryPublisher()
    with (
        SyncPublisher(memory) as pub,
        pytest.raises(ReportBroke) as caught,
        track_sync(pub, report_id="r") as run,
    ):
        raise ReportBroke("sync failure")
    assert exectrack_execution_id(caught.value) == run.execution_id
    assert caught.value.__notes__ == [f"exectrack execution_id={run.execution_id}"]
    assert memory.types_for(run.execution_id) == [T.PENDING, T.STARTED, T.FAILED]
