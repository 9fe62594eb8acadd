"""A simulated stream (duplicates, reordering, 1% invalid) through the real consumer.

Each test ends with the table equal to the oracle fold of the valid events
(tests/support/oracle.py, independent of exectrack.consumer.ingest.fold), the dead-letter topic
holding exactly the invalid messages, and the group's offsets at the end.
Some tests run the consumer as a separate OS process and hurt it: kill -9,
SIGTERM, the database stopped for 30 s.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from exectrack.consumer.service import ConsumerService
from tests.conftest import Topics
from tests.stack import STACK_SCRIPT, Services
from tests.support.faults import (
    Spawn,
    assert_converged,
    drained,
    lag,
    progressed,
    publish_stream,
    spawner,
    stream,
)
from tests.support.service import consumer_settings, run_until


async def test_simulated_stream_converges_to_the_oracle(
    db: AsyncEngine, database_url: str, topics: Topics
) -> None:
    messages = stream(1500, seed=1)
    assert sum(m.invalid_reason is not None for m in messages) > 0
    sent = await publish_stream(topics, messages)
    service = ConsumerService(
        consumer_settings(topics, database_url, batch_max_records=500), engine=db
    )
    await run_until(service, len(messages))
    await assert_converged(db, topics, messages, sent)


# ------------------------------------------------------------------ as a process
@pytest.fixture
def spawn(topics: Topics, database_url: str, tmp_path: Path) -> Iterator[Spawn]:
    """Start `exectrack-consumer consume` processes; every one is killed at teardown."""
    yield from spawner(topics, database_url, tmp_path)


async def test_kill_9_mid_stream_then_restart(db: AsyncEngine, topics: Topics, spawn) -> None:
    messages = stream(3000, seed=2)
    sent = await publish_stream(topics, messages)
    first = spawn()
    await progressed(topics, len(messages), 0.2)
    first.send_signal(signal.SIGKILL)  # mid-batch, no goodbye
    assert first.wait(10) == -signal.SIGKILL
    assert await lag(topics) > 0, "the consumer finished before it could be killed"
    spawn()
    await drained(topics)
    await assert_converged(db, topics, messages, sent)


async def test_sigterm_finishes_the_batch_commits_and_exits_0(
    db: AsyncEngine, topics: Topics, spawn
) -> None:
    messages = stream(3000, seed=3)
    sent = await publish_stream(topics, messages)
    proc = spawn()
    await progressed(topics, len(messages), 0.2)
    started = asyncio.get_running_loop().time()
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait, 30) == 0
    assert asyncio.get_running_loop().time() - started < 15
    remaining = await lag(topics)
    assert 0 < remaining < len(messages)
    spawn()  # a successor picks up exactly where the committed offsets say
    await drained(topics)
    await assert_converged(db, topics, messages, sent)


@pytest.fixture
def local_stack(stack: Services) -> Iterator[Services]:
    """Tests that stop a service through deploy/local/stack.sh; it is up again afterwards."""
    if stack.backend != "local":
        pytest.skip("stops services through deploy/local/stack.sh; testcontainers backend in use")
    yield stack
    subprocess.run(["bash", str(STACK_SCRIPT), "up"], check=True)


async def test_database_stopped_30s_mid_stream(
    db: AsyncEngine, topics: Topics, spawn, local_stack: Services
) -> None:
    messages = stream(3000, seed=4)
    sent = await publish_stream(topics, messages)
    proc = spawn()
    await progressed(topics, len(messages), 0.1)
    await asyncio.to_thread(
        subprocess.run, ["bash", str(STACK_SCRIPT), "down", "mariadb"], check=True
    )
    frozen = await lag(topics)
    await asyncio.sleep(30)
    assert proc.poll() is None, "the consumer died while the database was down"
    assert await lag(topics) == frozen, "offsets moved while the database was down"
    await asyncio.to_thread(
        subprocess.run, ["bash", str(STACK_SCRIPT), "up", "mariadb"], check=True
    )
    await db.dispose()  # the test's own pool holds dead connections
    await drained(topics)
    await assert_converged(db, topics, messages, sent)


async def test_rebalances_while_the_stream_flows(
    db: AsyncEngine, database_url: str, topics: Topics
) -> None:
    """A second consumer joins mid-stream, then the first leaves: partitions move twice."""
    messages = stream(3000, seed=5)
    sent = await publish_stream(topics, messages)
    settings = consumer_settings(topics, database_url, batch_max_records=100)
    first, second = ConsumerService(settings, engine=db), ConsumerService(settings, engine=db)
    first_task = asyncio.create_task(first.run())
    second_task = None
    try:
        await progressed(topics, len(messages), 0.15)
        second_task = asyncio.create_task(second.run())
        async with asyncio.timeout(60):
            while not (second.consumer and second.consumer.assignment() and second.totals.batches):
                await asyncio.sleep(0.05)
        first.request_stop()  # leaves the group: the second takes everything
        await asyncio.wait_for(first_task, 30)
        await drained(topics)
    finally:
        for service in (first, second):
            service.request_stop()
        await asyncio.gather(first_task, *(t for t in [second_task] if t), return_exceptions=True)
    assert first.totals.records > 0
    assert second.totals.records > 0
    await assert_converged(db, topics, messages, sent)


async def test_broker_restarted_mid_stream(
    db: AsyncEngine, topics: Topics, spawn, local_stack: Services
) -> None:
    """The broker goes away for ~10 s and comes back: the consumer process reconnects."""
    messages = stream(3000, seed=6)
    sent = await publish_stream(topics, messages)
    proc = spawn()
    await progressed(topics, len(messages), 0.1)
    try:
        await asyncio.to_thread(
            subprocess.run, ["bash", str(STACK_SCRIPT), "down", "kafka"], check=True
        )
        await asyncio.sleep(5)
        assert proc.poll() is None, "the consumer died while the broker was down"
    finally:
        await asyncio.to_thread(
            subprocess.run, ["bash", str(STACK_SCRIPT), "up", "kafka"], check=True
        )
    await drained(topics, timeout_s=180)
    assert proc.poll() is None
    await assert_converged(db, topics, messages, sent)
