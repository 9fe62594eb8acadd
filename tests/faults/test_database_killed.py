"""Scenario 3: MariaDB is killed with SIGKILL mid-stream, then started again.

(The database stopped cleanly for 30 s is tests/integration/test_stream.py::
test_database_stopped_30s_mid_stream.) The consumer must stay up, retry the
batch it was writing (nothing is committed while the database is away), and
continue once InnoDB has recovered.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import Topics
from tests.faults.conftest import pick
from tests.stack import ROOT, Services
from tests.support.faults import (
    Figures,
    Spawn,
    assert_converged,
    committed_moves,
    committed_total,
    drained,
    publish_in_chunks,
    stack,
    stream,
)

pytestmark = pytest.mark.integration
LOCAL_DIR = Path(os.environ.get("EXECTRACK_LOCAL_DIR", ROOT / ".local"))


async def test_database_sigkilled_mid_stream(
    db: AsyncEngine, topics: Topics, spawn: Spawn, local_stack: Services, figures: Figures
) -> None:
    messages = stream(pick(3000, 20000), seed=103)
    publisher = asyncio.create_task(
        publish_in_chunks(topics, messages, chunks=pick(20, 60), pause_s=0.5)
    )
    proc = spawn()
    await committed_moves(topics, 0)
    pid = int((LOCAL_DIR / "mariadb" / "mariadbd.pid").read_text().strip())
    os.kill(pid, signal.SIGKILL)
    down_s = pick(5, 20)
    await asyncio.sleep(down_s)
    assert proc.poll() is None, "the consumer died with the database"
    frozen = await committed_total(topics)
    loop = asyncio.get_running_loop()
    restarted = loop.time()
    await stack("up", "mariadb")
    await db.dispose()  # the test's own pool holds dead connections
    await committed_moves(topics, frozen, timeout_s=90)
    figures.recover_s.append(loop.time() - restarted)
    sent = await publisher
    await drained(topics)
    assert proc.poll() is None
    figures.faults = [f"mariadbd SIGKILL, down {down_s} s, restarted by stack.sh up mariadb"]
    figures.counts = await assert_converged(db, topics, messages, sent)
