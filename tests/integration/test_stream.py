"""A simulated stream (duplicates, reordering, 1% invalid) through the real consumer.

Each test ends with the table equal to the oracle fold of the valid events
(tests/support/oracle.py, independent of consumer.fold), the dead-letter topic
holding exactly the invalid messages, and the group's offsets at the end.
Some tests run the consumer as a separate OS process and hurt it: kill -9,
SIGTERM, the database stopped for 30 s.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from consumer.service import ConsumerService
from producer.simulate import SimConfig, SimMessage, generate
from tests.conftest import Topics
from tests.stack import STACK_SCRIPT, Services
from tests.support.expect import dead_lettered, expected_rows, invalid_offsets
from tests.support.kafka import Sent, committed_lag, publish, read_all
from tests.support.service import consumer_settings, run_until, table

CONSUMER = Path(sys.executable).parent / "exectrack-consumer"


def stream(executions: int, seed: int) -> list[SimMessage]:
    start = datetime.now(UTC) - timedelta(hours=2)  # recent: nothing is past retention
    config = SimConfig(
        executions=executions, seed=seed, start=start,
        duplicate_ratio=0.01, reorder_ratio=0.3, invalid_ratio=0.01,
    )  # fmt: skip
    return list(generate(config))


async def publish_stream(topics: Topics, messages: list[SimMessage]) -> list[Sent]:
    return await publish(
        topics.bootstrap, topics.topic, [(m.key, m.value, m.headers) for m in messages]
    )


async def assert_converged(
    db: AsyncEngine, topics: Topics, messages: list[SimMessage], sent: list[Sent]
) -> None:
    rows = await table(db)
    expected = expected_rows(messages, datetime.now(UTC))
    assert rows.keys() == expected.keys()
    wrong = [eid for eid in expected if rows[eid] != expected[eid]]
    assert not wrong, (
        f"{len(wrong)} wrong rows, e.g. {wrong[0]}: {rows[wrong[0]]} != {expected[wrong[0]]}"
    )
    dead = dead_lettered(await read_all(topics.bootstrap, topics.dlq))
    assert dead == invalid_offsets(sent, messages)
    assert await committed_lag(topics.bootstrap, topics.topic, topics.group_id) == 0


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
def spawn(
    topics: Topics, database_url: str, tmp_path: Path
) -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    """Start `exectrack-consumer consume` processes; every one is killed at teardown."""
    procs: list[subprocess.Popen[bytes]] = []
    env = {
        **os.environ,
        "EXECTRACK_KAFKA__BOOTSTRAP_SERVERS": topics.bootstrap,
        "EXECTRACK_KAFKA__TOPIC": topics.topic,
        "EXECTRACK_KAFKA__DLQ_TOPIC": topics.dlq,
        "EXECTRACK_DATABASE__URL": database_url,
        "EXECTRACK_GROUP_ID": topics.group_id,
        "EXECTRACK_HEALTH_PORT": "0",
        "EXECTRACK_BATCH_MAX_RECORDS": "100",
        "EXECTRACK_SESSION_TIMEOUT_MS": "6000",
        "EXECTRACK_DB_RETRY_MAX_S": "2",
        "EXECTRACK_LOG_FORMAT": "json",
    }

    def start() -> subprocess.Popen[bytes]:
        with (tmp_path / f"consumer-{len(procs)}.log").open(
            "wb"
        ) as log:  # the child keeps its copy
            proc = subprocess.Popen(
                [str(CONSUMER), "consume"], env=env, stdout=log, stderr=subprocess.STDOUT
            )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


async def lag(topics: Topics) -> int:
    return await committed_lag(topics.bootstrap, topics.topic, topics.group_id)


async def drained(topics: Topics, timeout_s: float = 120) -> None:
    async with asyncio.timeout(timeout_s):
        while await lag(topics) != 0:
            await asyncio.sleep(0.5)


async def progressed(topics: Topics, total: int, fraction: float, timeout_s: float = 60) -> None:
    async with asyncio.timeout(timeout_s):
        while await lag(topics) > total * (1 - fraction):
            await asyncio.sleep(0.05)


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
