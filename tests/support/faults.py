"""Shared helpers of the tests that hurt the system (tests/integration/test_stream.py,
tests/faults/): simulated streams, consumer processes, waits on committed offsets,
the convergence check, and the figures a fault scenario reports.

Every check is against the outside: the table vs the oracle fold
(tests/support/expect.py), the dead-letter topic vs the invalid messages, and
the group's committed offsets vs the end offsets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from exectrack.producer.events import ExecutionEvent
from exectrack.producer.simulate import SimConfig, SimMessage, generate
from tests.conftest import Topics
from tests.stack import STACK_SCRIPT
from tests.support.expect import dead_lettered, expected_rows, invalid_offsets
from tests.support.kafka import Sent, committed_lag, group_offsets, publish, read_all
from tests.support.service import table

CONSUMER = Path(sys.executable).parent / "exectrack-consumer"
Spawn = Callable[..., subprocess.Popen[bytes]]


def stream(executions: int, seed: int, *, start: datetime | None = None) -> list[SimMessage]:
    """A simulated stream: ~1% duplicates, 30% of executions reordered, 1% invalid."""
    start = start or datetime.now(UTC) - timedelta(hours=2)  # recent: nothing is past retention
    config = SimConfig(
        executions=executions, seed=seed, start=start,
        duplicate_ratio=0.01, reorder_ratio=0.3, invalid_ratio=0.01,
    )  # fmt: skip
    return list(generate(config))


def duplicates(messages: Sequence[SimMessage]) -> int:
    """Messages carrying an event id already sent earlier in the stream."""
    seen: set[str] = set()
    count = 0
    for message in messages:
        if message.event is not None:
            count += message.event.id in seen
            seen.add(message.event.id)
    return count


async def publish_stream(topics: Topics, messages: Sequence[SimMessage]) -> list[Sent]:
    return await publish(
        topics.bootstrap, topics.topic, [(m.key, m.value, m.headers) for m in messages]
    )


async def publish_in_chunks(
    topics: Topics, messages: Sequence[SimMessage], *, chunks: int, pause_s: float
) -> list[Sent]:
    """Publish in ``chunks`` parts with a pause between them: a stream that keeps flowing.

    Run it as a background task while faults are injected; its result lines up
    with ``messages`` (for ``invalid_offsets``)."""
    size = max(1, -(-len(messages) // chunks))
    sent: list[Sent] = []
    for begin in range(0, len(messages), size):
        sent += await publish_stream(topics, messages[begin : begin + size])
        await asyncio.sleep(pause_s)
    return sent


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


async def committed_total(topics: Topics) -> int:
    """Sum of the group's committed offsets (records it has finished, duplicates included)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=topics.bootstrap)
    await admin.start()
    try:
        committed = await group_offsets(admin, topics.group_id)
    finally:
        await admin.close()
    return sum(meta.offset for tp, meta in committed.items() if tp.topic == topics.topic)


async def committed_moves(topics: Topics, beyond: int, timeout_s: float = 60) -> float:
    """Wait until the committed total exceeds ``beyond``; the seconds it took."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with asyncio.timeout(timeout_s):
        while await committed_total(topics) <= beyond:
            await asyncio.sleep(0.05)
    return loop.time() - started


async def assert_converged(
    db: AsyncEngine,
    topics: Topics,
    messages: Sequence[SimMessage],
    sent: Sequence[Sent],
    *,
    expected: dict[str, dict[str, Any]] | None = None,
) -> dict[str, int]:
    """Table == oracle, DLQ == invalid messages, offsets at the end; the counts checked."""
    rows = await table(db)
    if expected is None:
        expected = expected_rows(messages, None)
    missing = expected.keys() - rows.keys()
    extra = rows.keys() - expected.keys()
    assert not missing, f"{len(missing)} executions missing, e.g. {sorted(missing)[:5]}"
    assert not extra, f"{len(extra)} unexpected rows, e.g. {sorted(extra)[:5]}"
    wrong = [eid for eid in expected if rows[eid] != expected[eid]]
    assert not wrong, (
        f"{len(wrong)} wrong rows, e.g. {wrong[0]}: {rows[wrong[0]]} != {expected[wrong[0]]}"
    )
    dead = dead_lettered(await read_all(topics.bootstrap, topics.dlq))
    invalid = invalid_offsets(sent, messages)
    assert dead == invalid
    assert await committed_lag(topics.bootstrap, topics.topic, topics.group_id) == 0
    return {
        "events_in": len(messages),
        "valid_events": sum(m.invalid_reason is None for m in messages),
        "invalid_events": len(invalid),
        "dead_lettered": len(dead),
        "duplicates_in_stream": duplicates(messages),
        "rows_expected": len(expected),
        "rows_out": len(rows),
        "missing": len(missing),
        "wrong": len(wrong),
        "lost": 0,
    }


def execution_events(messages: Sequence[SimMessage]) -> list[ExecutionEvent]:
    return [m.event for m in messages if isinstance(m.event, ExecutionEvent)]


# ------------------------------------------------------------------ processes
def consumer_env(topics: Topics, database_url: str, **extra: str) -> dict[str, str]:
    return {
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
        "PYTHONUNBUFFERED": "1",  # a SIGKILL must not eat the log lines already written
        **extra,
    }


def spawner(topics: Topics, database_url: str, logs: Path) -> Iterator[Spawn]:
    """Body of a ``spawn`` fixture: start `exectrack-consumer consume` processes
    (keyword arguments become extra environment variables); all killed at the end."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(**extra: str) -> subprocess.Popen[bytes]:
        env = consumer_env(topics, database_url, **extra)
        with (logs / f"consumer-{len(procs)}.log").open("wb") as log:  # the child keeps a copy
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


def stack_sync(*args: str) -> None:
    """``deploy/local/stack.sh ARGS``; fails the test if it fails."""
    subprocess.run(["bash", str(STACK_SCRIPT), *args], check=True)


async def stack(*args: str) -> None:
    """``deploy/local/stack.sh ARGS`` off the event loop."""
    await asyncio.to_thread(stack_sync, *args)


def processed_records(logs: Path) -> int:
    """Records the consumer processes logged as committed (their `batch` lines)."""
    total = 0
    for path in logs.glob("consumer-*.log"):
        for line in path.read_text(errors="replace").splitlines():
            if '"batch"' in line:
                with contextlib.suppress(ValueError):
                    entry = json.loads(line)
                    if entry.get("event") == "batch":
                        total += int(entry.get("records", 0))
    return total


def log_lines(logs: Path, index: int, event: str) -> int:
    """How many lines of ``event`` consumer number ``index`` logged."""
    path = logs / f"consumer-{index}.log"
    count = 0
    for line in path.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            count += json.loads(line).get("event") == event
    return count


# ------------------------------------------------------------------ figures
@dataclass
class Figures:
    """What one fault scenario reports (tests/faults/results/*.json, docs/reliability.md)."""

    scenario: str
    faults: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    recover_s: list[float] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)
    elapsed_s: float = 0.0
