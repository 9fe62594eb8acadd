"""Scenario 1: the consumer process is SIGKILLed mid-batch, again and again, while
the stream keeps flowing (3 kills quick, 10 long).

Each incarnation is killed a moment after its first commit, while a backlog
(built up during the group's wait for the dead member's session to expire) is
being worked through in batches of 100: some batch is in flight. The next
incarnation replays from the committed offsets; the writes are idempotent merges.
"""

from __future__ import annotations

import asyncio
import random
import signal

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
    publish_in_chunks,
    stream,
)

pytestmark = pytest.mark.integration


async def test_consumer_sigkilled_repeatedly_mid_batch(
    db: AsyncEngine, topics: Topics, spawn: Spawn, figures: Figures
) -> None:
    kills = pick(3, 10)
    messages = stream(pick(3000, 20000), seed=101)
    rng = random.Random(101)
    publisher = asyncio.create_task(
        publish_in_chunks(topics, messages, chunks=kills * pick(9, 12), pause_s=1.0)
    )
    with_backlog = 0
    for _ in range(kills):
        before = await committed_total(topics)
        proc = spawn()
        figures.recover_s.append(await committed_moves(topics, before))
        await asyncio.sleep(rng.uniform(0.0, 0.3))
        with_backlog += await lag(topics) > 0
        proc.send_signal(signal.SIGKILL)  # no goodbye: no commit, no leave-group
        assert await asyncio.to_thread(proc.wait, 10) == -signal.SIGKILL
    assert not publisher.done(), "the stream ended before the last kill: slow it down"
    assert with_backlog > 0, "every kill hit an idle consumer"
    last = spawn()
    sent = await publisher
    await drained(topics, timeout_s=pick(120, 300))
    assert last.poll() is None
    figures.faults = [f"SIGKILL x{kills} (consumer process, mid-stream)"]
    figures.counts = await assert_converged(db, topics, messages, sent)
    figures.notes["kills_with_backlog"] = with_backlog
