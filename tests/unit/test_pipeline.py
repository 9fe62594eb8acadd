"""The write pipeline and the consume loop's gating of batches (pure asyncio, no I/O)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from exectrack.consumer.ingest.decode import Batch
from exectrack.consumer.ingest.pipeline import WritePipeline
from exectrack.consumer.service import ConsumerService
from exectrack.consumer.settings import Settings


async def test_writes_run_one_at_a_time_in_order() -> None:
    pipeline, log = WritePipeline(), []
    gate = asyncio.Event()

    async def write(n: int) -> None:
        log.append(f"start {n}")
        if n == 1:
            await gate.wait()
        log.append(f"end {n}")

    await pipeline.submit(write(1))
    await asyncio.sleep(0)
    assert pipeline.busy
    assert log == ["start 1"]
    submitted = asyncio.create_task(pipeline.submit(write(2)))
    await asyncio.sleep(0.01)
    assert log == ["start 1"]
    assert not submitted.done()
    gate.set()
    await submitted
    await pipeline.settle()
    assert log == ["start 1", "end 1", "start 2", "end 2"]
    assert not pipeline.busy


async def test_a_failed_write_is_raised_by_the_next_submit_and_the_next_write_never_runs() -> None:
    pipeline, ran = WritePipeline(), []

    async def fail() -> None:
        raise RuntimeError("database said no")

    async def write() -> None:
        ran.append(True)

    await pipeline.submit(fail())
    with pytest.raises(RuntimeError, match="database said no"):
        await pipeline.submit(write())
    await pipeline.settle()
    assert ran == []


async def test_cancel_abandons_the_write_in_flight_and_swallows_its_error() -> None:
    pipeline, finished = WritePipeline(), []

    async def slow() -> None:
        await asyncio.sleep(10)
        finished.append(True)

    async def fail() -> None:
        raise RuntimeError("ignored: the caller is already failing")

    await pipeline.submit(slow())
    await pipeline.cancel()
    assert finished == []
    assert not pipeline.busy
    await pipeline.submit(fail())
    await asyncio.sleep(0)
    await pipeline.cancel()  # does not raise
    await pipeline.cancel()  # nothing in flight: a no-op


def batch(records: int = 3) -> Batch:
    return Batch(executions={}, definitions={}, dead_letters=[], offsets={}, records=records,
                 valid_events=records)  # fmt: skip


@pytest.fixture
def service(monkeypatch: pytest.MonkeyPatch) -> tuple[ConsumerService, list[Batch]]:
    svc = ConsumerService(Settings())  # no I/O before start(): nothing connects
    written: list[Batch] = []

    async def process(b: Batch, started: float) -> None:
        written.append(b)

    monkeypatch.setattr(svc, "_process", process)
    return svc, written


async def test_a_batch_fetched_before_a_rebalance_is_dropped(
    service: tuple[ConsumerService, list[Batch]],
) -> None:
    svc, written = service
    before = svc.generation
    svc.generation += 1  # what the rebalance listener does on revocation
    await svc._write(batch(), before, 0.0)
    assert written == []
    current = batch()
    await svc._write(current, svc.generation, 0.0)
    assert written == [current]


async def test_nothing_is_written_after_a_batch_was_abandoned_on_stop(
    service: tuple[ConsumerService, list[Batch]],
) -> None:
    svc, written = service
    svc.abandoned = True  # a batch before this one was left uncommitted
    await svc._write(batch(), svc.generation, 0.0)
    assert written == []


async def test_an_abandoned_batch_stops_later_commits(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real _process: the writer gives up on stop, so nothing after it may commit."""
    from exectrack.consumer.errors import Stopped

    svc = ConsumerService(Settings())

    async def give_up(*args: Any, **kwargs: Any) -> Any:
        raise Stopped("database unavailable")

    monkeypatch.setattr(svc.writer, "write", give_up)
    await svc._write(batch(), svc.generation, 0.0)
    assert svc.abandoned
    await svc.engine.dispose()


def test_the_aiokafka_c_extension_is_detected() -> None:
    """This environment has aiokafka's wheel: the check must say so; and it must notice
    when the extension is switched off (a fresh interpreter with AIOKAFKA_NO_EXTENSIONS)."""
    import os
    import subprocess
    import sys

    from exectrack.consumer.service import kafka_accelerated

    assert kafka_accelerated()
    probe = "from exectrack.consumer.service import kafka_accelerated; print(kafka_accelerated())"
    env = {**os.environ, "AIOKAFKA_NO_EXTENSIONS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"
