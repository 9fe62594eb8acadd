"""A consumer frozen inside its write transaction must not stall the group with its locks.

Deterministic reproduction of what scenario 2 (test_group.py) hits by chance.
Consumer A owns the topic; the test holds a row lock on execution X, publishes
an event of X, and A's writer blocks on it (``SELECT ... FOR UPDATE``) inside
its batch transaction. A is then frozen (SIGSTOP) and the test releases its
lock: the server grants it to A's transaction, whose client will never finish
it. A is fenced after its session timeout and B takes every partition, replays
X's event, and waits on A's lock (``Lock wait timeout exceeded``, retried).
Without a bound, the server keeps A's idle transaction until ``wait_timeout``
(8 h by default) and the partitions stall that long although Kafka has already
fenced A. The consumer's connections set ``wait_timeout`` to
``EXECTRACK_DB_IDLE_TIMEOUT_S`` (consumer/db/engine.py): the server drops A's
connection, rolls its transaction back, and B drains within 30 s.
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from exectrack.producer.events import EventType, execution_event, to_json
from exectrack.producer.simulate import SimMessage
from tests.conftest import Topics
from tests.support.faults import Spawn, drained, publish_stream

pytestmark = pytest.mark.integration
SOURCE = "/services/zombie"
HEADERS = [("content-type", b"application/cloudevents+json")]


def event(eid: str, kind: EventType, seq: int) -> SimMessage:
    now = datetime.now(UTC)
    e = execution_event(
        kind, execution_id=eid, report_id="report-zombie", source=SOURCE, sequence=seq, time=now
    )
    return SimMessage(eid.encode(), to_json(e), HEADERS, e, None)


async def test_fenced_zombie_inside_its_transaction_does_not_stall_the_group(
    db: AsyncEngine, topics: Topics, spawn: Spawn
) -> None:
    eid = str(uuid.uuid4())
    await publish_stream(topics, [event(eid, EventType.PENDING, 0)])
    zombie = spawn()
    await drained(topics, timeout_s=60)
    try:
        async with db.connect() as conn:
            await conn.execute(
                text("SELECT id FROM report_executions WHERE execution_id = :e FOR UPDATE"),
                {"e": eid},
            )
            await publish_stream(topics, [event(eid, EventType.STARTED, 1)])
            await asyncio.sleep(2)  # A's writer is now waiting for our lock, in its transaction
            zombie.send_signal(signal.SIGSTOP)
            await conn.rollback()  # the lock goes to A's transaction, frozen with it
        spawn()  # B: gets every partition once A's session (6 s) expires
        await drained(topics, timeout_s=30)  # 6 s fencing + one event: plenty
    finally:
        zombie.send_signal(signal.SIGCONT)
