"""Scenario 2: three consumer processes in one group, scaled 3 -> 1 -> 3 while the
stream flows, then one of them frozen (SIGSTOP) longer than its session timeout
while it works through a backlog: the group fences it and hands its partitions
to the others, which progress. Woken up (SIGCONT), the zombie finishes the batch
it held: its database write is a lock-merge-write of events the new owner also
applies (harmless), and its offset commit is refused (CommitFailedError).

If the zombie happens to be frozen INSIDE its write transaction, it holds its
row locks and the new owners wait, for at most EXECTRACK_DB_IDLE_TIMEOUT_S (the
server then drops its connection: tests/faults/test_zombie_locks.py) or until
it wakes up, whichever comes first (here: it wakes after 12 s). This scenario
records ``group_stalled_by_zombie_locks`` and checks the table is still exact.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import Topics
from tests.faults.conftest import pick
from tests.support.faults import (
    Figures,
    Spawn,
    assert_converged,
    committed_moves,
    committed_total,
    drained,
    lag,
    log_lines,
    publish_in_chunks,
    stream,
)

pytestmark = pytest.mark.integration
SESSION_TIMEOUT_S = 6  # EXECTRACK_SESSION_TIMEOUT_MS of the spawned consumers


async def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)  # scale down: finish the batch, commit, leave
    assert await asyncio.to_thread(proc.wait, 30) == 0


async def assigned(logs: Path, index: int, timeout_s: float = 60) -> None:
    async with asyncio.timeout(timeout_s):
        while log_lines(logs, index, "partitions_assigned") == 0:
            await asyncio.sleep(0.1)


async def test_group_scaled_3_1_3_and_a_fenced_zombie(
    db: AsyncEngine, topics: Topics, spawn: Spawn, figures: Figures, tmp_path: Path
) -> None:
    messages = stream(pick(4000, 20000), seed=102)
    publisher = asyncio.create_task(
        publish_in_chunks(topics, messages, chunks=pick(40, 120), pause_s=1.0)
    )
    procs = [spawn() for _ in range(3)]
    await asyncio.gather(*(assigned(tmp_path, i) for i in range(3)))
    await committed_moves(topics, 0)

    # 3 -> 1
    await asyncio.gather(stop(procs[1]), stop(procs[2]))
    figures.recover_s.append(await committed_moves(topics, await committed_total(topics)))

    # 1 -> 3
    procs += [spawn(), spawn()]
    await asyncio.gather(assigned(tmp_path, 3), assigned(tmp_path, 4))
    figures.recover_s.append(await committed_moves(topics, await committed_total(topics)))

    # a zombie: frozen while a backlog is being worked through, past its session timeout
    zombie = procs[4]
    async with asyncio.timeout(30):
        while await lag(topics) < 300:  # let a backlog build: the zombie surely holds a batch
            await asyncio.sleep(0.05)
    others = [log_lines(tmp_path, i, "partitions_assigned") for i in (0, 3)]
    zombie.send_signal(signal.SIGSTOP)
    loop = asyncio.get_running_loop()
    stopped = loop.time()
    async with asyncio.timeout(60):  # fenced: the others get its partitions
        while not all(
            log_lines(tmp_path, i, "partitions_assigned") > n
            for i, n in zip((0, 3), others, strict=True)
        ):
            await asyncio.sleep(0.1)
    figures.recover_s.append(loop.time() - stopped)
    try:  # ...and progress, unless the zombie froze inside its database transaction
        await committed_moves(topics, await committed_total(topics), timeout_s=25)
        stalled = False
    except TimeoutError:  # its row locks hold the new owners (bounded: test_zombie_locks.py)
        stalled = True
    await asyncio.sleep(max(0.0, SESSION_TIMEOUT_S * 2 - (loop.time() - stopped)))
    zombie.send_signal(signal.SIGCONT)  # it wakes up, batch in hand

    sent = await publisher
    await drained(topics, timeout_s=pick(120, 300))
    await asyncio.sleep(2)  # the zombie's late write and refused commit, if still pending
    assert all(p.poll() is None for p in (procs[0], procs[3], zombie)), "a consumer died"
    figures.faults = [
        "scale 3 -> 1 (SIGTERM x2) -> 3 (2 new processes)",
        f"SIGSTOP one consumer {SESSION_TIMEOUT_S * 2} s (> session timeout), then SIGCONT",
    ]
    figures.counts = await assert_converged(db, topics, messages, sent)
    figures.notes["zombie_commit_failed"] = log_lines(tmp_path, 4, "commit_failed")
    figures.notes["group_stalled_by_zombie_locks"] = stalled
