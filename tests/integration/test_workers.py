"""``exectrack-consumer consume --workers 2`` on the real broker and database.

The supervisor runs as a child in its own session (process group): whatever a test
leaves behind, the supervisor and every worker it started are killed at teardown.
Each test ends with the table equal to the oracle fold, the dead-letter topic
holding exactly the invalid messages and the group's offsets at the end
(``assert_converged``), then SIGTERM: exit 0, nothing left to commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from sqlalchemy.ext.asyncio import AsyncEngine

from exectrack.consumer.db import migrate
from tests.conftest import MakeDatabase, Topics
from tests.support.expect import expected_rows
from tests.support.faults import (
    CONSUMER,
    assert_converged,
    committed_moves,
    consumer_env,
    drained,
    lag,
    publish_in_chunks,
    publish_stream,
    stream,
)
from tests.support.kafka import committed_lag
from tests.support.service import rows_of

Start = Callable[..., subprocess.Popen[bytes]]


@pytest.fixture
def supervisor(topics: Topics, database_url: str, tmp_path: Path) -> Iterator[Start]:
    """Start ``consume --workers N`` (into ``url``, default the session's database; other
    keyword arguments: extra environment variables); logs in
    ``tmp_path/supervisor.log``; the whole process group is killed at teardown."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(workers: int = 2, url: str | None = None, **extra: str) -> subprocess.Popen[bytes]:
        env = consumer_env(topics, url or database_url, **extra)
        with (tmp_path / "supervisor.log").open("ab") as log:
            proc = subprocess.Popen(
                [str(CONSUMER), "consume", "--workers", str(workers)],
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the supervisor and its workers
        proc.wait(10)


def lines(logs: Path, event: str, **fields: Any) -> list[dict[str, Any]]:
    """The JSON log lines of ``event`` (with these field values) in supervisor.log."""
    found = []
    for line in (logs / "supervisor.log").read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if entry.get("event") == event and all(entry.get(k) == v for k, v in fields.items()):
                found.append(entry)
    return found


async def log_line(logs: Path, event: str, timeout_s: float = 60, **fields: Any) -> dict[str, Any]:
    """Wait for the first line of ``event`` with these fields."""
    async with asyncio.timeout(timeout_s):
        while not (found := lines(logs, event, **fields)):
            await asyncio.sleep(0.1)
    return found[0]


async def assignment(topics: Topics) -> list[set[int]]:
    """The group's members as the coordinator sees them: each one's partitions of the topic."""
    admin = AIOKafkaAdminClient(bootstrap_servers=topics.bootstrap)
    await admin.start()
    try:
        (response,) = await admin.describe_consumer_groups([topics.group_id])
    finally:
        await admin.close()
    (group,) = response.groups
    members = group[5]  # error, group, state, protocol type, protocol, members
    owned: list[set[int]] = []
    for member in members:
        raw = member[-1]  # member_id, (instance id), client_id, host, metadata, assignment
        if not raw:
            owned.append(set())
            continue
        decoded = ConsumerProtocolMemberAssignment.decode(raw)
        owned.append({tp.partition for tp in decoded.partitions() if tp.topic == topics.topic})
    return owned


async def both_own_partitions(topics: Topics, timeout_s: float = 90) -> list[set[int]]:
    """Wait until the group has exactly two members, each owning partitions, all covered."""
    async with asyncio.timeout(timeout_s):
        while True:
            owned = await assignment(topics)
            if (
                len(owned) == 2
                and all(owned)
                and set().union(*owned) == set(range(topics.partitions))
            ):
                return owned
            await asyncio.sleep(0.5)


def free_ports(count: int) -> int:
    """A port with the ``count - 1`` ports after it also free on 127.0.0.1 (the base)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = int(probe.getsockname()[1])
        if base + count > 65535:
            continue
        try:
            with contextlib.ExitStack() as stack:
                for port in range(base, base + count):
                    sock = stack.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise RuntimeError(f"no {count} consecutive free ports")


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def answers(port: int, path: str, status: int, timeout_s: float = 60) -> str:
    async with asyncio.timeout(timeout_s):
        while True:
            with contextlib.suppress(OSError):
                found, body = await asyncio.to_thread(get, port, path)
                if found == status:
                    return body
            await asyncio.sleep(0.25)


async def stopped_cleanly(proc: subprocess.Popen[bytes], topics: Topics) -> None:
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait, 60) == 0
    assert await committed_lag(topics.bootstrap, topics.topic, topics.group_id) == 0


async def test_two_workers_fold_a_stream_exactly_and_stop_on_sigterm(
    db: AsyncEngine, topics: Topics, supervisor: Start, tmp_path: Path
) -> None:
    messages = stream(3000, seed=161)
    port = free_ports(3)
    proc = supervisor(EXECTRACK_HEALTH_PORT=str(port))
    for index in (0, 1):
        await log_line(tmp_path, "partitions_assigned", worker=index)
    publisher = asyncio.create_task(publish_in_chunks(topics, messages, chunks=10, pause_s=0.5))

    owned = await both_own_partitions(topics)
    assert sorted(len(p) for p in owned) == [6, 6]  # 12 partitions over 2 members
    # the supervisor answers the probes for both; each worker serves its own metrics
    ready = await answers(port, "/readyz", 200)
    assert ready.count(": ready") == 2
    assert "exectrack_workers 2.0" in (await answers(port, "/metrics", 200))
    for index in (0, 1):
        metrics = await answers(port + 1 + index, "/metrics", 200)
        assert "exectrack_assigned_partitions 6.0" in metrics

    sent = await publisher
    await drained(topics)
    await assert_converged(db, topics, messages, sent)
    for index in (0, 1):  # both did part of the work
        assert lines(tmp_path, "batch", worker=index)
    assert not lines(tmp_path, "worker_exited")

    await stopped_cleanly(proc, topics)
    assert len(lines(tmp_path, "worker_started")) == 2
    assert lines(tmp_path, "workers_stopped")
    for entry in lines(tmp_path, "worker_started"):
        with pytest.raises(ProcessLookupError):
            os.kill(entry["pid"], 0)  # no worker left behind


async def test_a_worker_killed_9_is_logged_and_restarted_and_the_fold_stays_exact(
    db: AsyncEngine, topics: Topics, supervisor: Start, tmp_path: Path
) -> None:
    messages = stream(4000, seed=162)
    proc = supervisor()
    publisher = asyncio.create_task(publish_in_chunks(topics, messages, chunks=20, pause_s=0.5))
    await both_own_partitions(topics)
    await committed_moves(topics, 0)
    async with asyncio.timeout(30):
        while await lag(topics) == 0:  # kill it with work in hand
            await asyncio.sleep(0.05)

    victim = (await log_line(tmp_path, "worker_started", worker=1))["pid"]
    survivor = (await log_line(tmp_path, "worker_started", worker=0))["pid"]
    os.kill(victim, signal.SIGKILL)
    exited = await log_line(tmp_path, "worker_exited", worker=1)
    assert exited["pid"] == victim
    assert exited["signal"] == "SIGKILL"
    assert exited["failures_in_a_row"] == 1
    assert exited["level"] == "error"
    restarted = [e["pid"] for e in lines(tmp_path, "worker_started", worker=1)]
    async with asyncio.timeout(30):
        while len(restarted) < 2:
            await asyncio.sleep(0.1)
            restarted = [e["pid"] for e in lines(tmp_path, "worker_started", worker=1)]
    assert restarted[1] != victim
    assert not publisher.done(), "the stream ended before the kill: slow it down"

    await both_own_partitions(topics)  # the new worker is a member again
    sent = await publisher
    await drained(topics)
    await assert_converged(db, topics, messages, sent)
    assert proc.poll() is None
    assert [e["pid"] for e in lines(tmp_path, "worker_started", worker=0)] == [survivor]
    assert len(lines(tmp_path, "worker_exited")) == 1
    await stopped_cleanly(proc, topics)


async def test_workers_leave_when_their_supervisor_is_killed_9(
    db: AsyncEngine, topics: Topics, supervisor: Start, tmp_path: Path
) -> None:
    """No orphans: the kernel sends each worker SIGTERM when the supervisor dies
    (PR_SET_PDEATHSIG), and they finish their batch, commit and leave."""
    proc = supervisor()
    await both_own_partitions(topics)
    pids = [e["pid"] for e in lines(tmp_path, "worker_started")]
    proc.send_signal(signal.SIGKILL)
    assert await asyncio.to_thread(proc.wait, 10) == -signal.SIGKILL
    async with asyncio.timeout(40):
        while any(alive(pid) for pid in pids):
            await asyncio.sleep(0.1)
    for index in (0, 1):  # a graceful stop: each logged its totals
        assert lines(tmp_path, "consumer_stopped", worker=index)
    assert await assignment(topics) == []  # both left the group


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not reaped by its init, counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def test_workers_failing_at_start_are_restarted_with_backoff_until_it_heals(
    topics: Topics, supervisor: Start, new_database: MakeDatabase, tmp_path: Path
) -> None:
    """A database without the schema: every worker exits 1 at start (``connect_failed``),
    again and again, with growing waits; the supervisor keeps running. ``migrate``:
    the next attempts come up and fold the stream."""
    url = await new_database()
    proc = supervisor(
        url=url, EXECTRACK_WORKER_RESTART_INITIAL_S="0.5", EXECTRACK_WORKER_RESTART_MAX_S="2"
    )
    async with asyncio.timeout(60):
        while any(len(lines(tmp_path, "worker_exited", worker=i)) < 3 for i in (0, 1)):
            assert proc.poll() is None, "the supervisor gave up"
            await asyncio.sleep(0.2)
    for index in (0, 1):
        exits = lines(tmp_path, "worker_exited", worker=index)[:3]
        assert [e["failures_in_a_row"] for e in exits] == [1, 2, 3]
        assert all(e["exit_code"] == 1 for e in exits)
        assert exits[0]["restart_in_s"] < exits[2]["restart_in_s"]  # 0.5, 1, 2 (+-20%)
    assert lines(tmp_path, "connect_failed")

    await migrate.upgrade(url)
    messages = stream(500, seed=163)
    sent = await publish_stream(topics, messages)
    await both_own_partitions(topics, timeout_s=60)
    await drained(topics)
    assert await rows_of(url) == expected_rows(messages, None)
    assert len(sent) == len(messages)
    await stopped_cleanly(proc, topics)
