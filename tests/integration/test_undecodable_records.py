"""A record aiokafka cannot decode, in the middle of a batch, on the real broker and database.

One producer batch on partition 0: two valid events, a record whose header
name is not UTF-8 (``x-trace-\\xff\\xfe``, bytes the broker and the Java
client accept; ag2ai/faststream#2458, napalm-automation/napalm-logs PR #390),
two more valid events. aiokafka's parser raises on the third record inside
``getmany``; exectrack.consumer.kafka reads the rest of the partition's fetched data
again leniently (docs/reliability/found-by-users.md, "Records the client
cannot decode"). Both readers of the topic, the consume loop and replay, must
apply the four valid events, dead-letter the bad one as ``undecodable_record``
and read to the end.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncEngine

from exectrack.consumer.replay.rebuild import Replay, ReplayOptions
from exectrack.consumer.service import ConsumerService
from tests.conftest import MakeDatabase, Topics
from tests.support.kafka import committed_lag, read_all
from tests.support.service import consumer_settings, rows_of, run_until, table

VALID = ["undec-a", "undec-b", "undec-d", "undec-e"]

# One batch: send() without waiting, then flush; linger_ms keeps them together.
# AIOKAFKA_NO_EXTENSIONS=1: the pure-Python batch builder calls the name's encode().
PRODUCER = """
import asyncio, sys
from aiokafka import AIOKafkaProducer

class RawName(str):
    def encode(self, *args, **kwargs):
        return b"x-trace-\\xff\\xfe"

async def main(bootstrap, topic, *values):
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=500)
    await producer.start()
    try:
        ct = ("content-type", b"application/cloudevents+json")
        futures = []
        for value in values:
            key = value.split('"execution_id":"')[1].split('"')[0].encode()
            headers = [ct, (RawName("x"), b"v")] if key == b"undec-c" else [ct]
            futures.append(await producer.send(topic, value.encode(), key=key, partition=0,
                                               headers=headers))
        await producer.flush()
        offsets = [(await f).offset for f in futures]
        assert offsets == list(range(len(values))), offsets
    finally:
        await producer.stop()

asyncio.run(main(*sys.argv[1:]))
"""


def event(execution_id: str) -> str:
    return orjson.dumps(
        {
            "specversion": "1.0",
            "id": f"{execution_id}-1",
            "source": "/services/undecodable",
            "type": "exectrack.execution.started",
            "subject": execution_id,
            "time": "2026-01-01T12:00:00Z",
            "data": {"execution_id": execution_id, "report_id": "r-undec"},
        }
    ).decode()


async def publish_batch(topics: Topics) -> None:
    """undec-a, undec-b, undec-c (header name not UTF-8), undec-d, undec-e: offsets 0..4."""
    values = [event(e) for e in ("undec-a", "undec-b", "undec-c", "undec-d", "undec-e")]
    env = dict(os.environ, AIOKAFKA_NO_EXTENSIONS="1")
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PRODUCER, topics.bootstrap, topics.topic, *values, env=env
    )
    assert await asyncio.wait_for(child.wait(), timeout=60) == 0


def assert_dead_letter(dead: list[Any], consumer_suffix: str) -> None:
    [letter] = dead
    headers = dict(letter.headers)
    assert headers["exectrack.dlq.reason"] == b"undecodable_record"
    assert headers["exectrack.dlq.offset"] == b"2"
    assert headers["exectrack.dlq.partition"] == b"0"
    assert b"header name 'x-trace-\\\\xff\\\\xfe' is not UTF-8" in headers["exectrack.dlq.error"]
    assert headers["exectrack.dlq.consumer"].endswith(consumer_suffix.encode())
    assert "exectrack.dlq.undecodable" not in headers  # the marker is not carried
    assert headers["x-trace-\\xff\\xfe"] == b"v"  # the name, decoded backslashreplace
    assert headers["content-type"] == b"application/cloudevents+json"
    assert (letter.key, letter.value) == (b"undec-c", event("undec-c").encode())


async def test_undecodable_record_in_the_middle_of_a_batch_is_dead_lettered_the_rest_applied(
    db: AsyncEngine, database_url: str, topics: Topics
) -> None:
    await publish_batch(topics)
    service = ConsumerService(consumer_settings(topics, database_url), engine=db)
    totals = await run_until(service, 5, timeout_s=60)
    assert (totals.records, totals.applied, totals.dead_lettered) == (5, 4, 1)
    rows = await table(db)
    assert sorted(rows) == VALID
    assert all(rows[e]["status"] == "running" for e in VALID)
    assert_dead_letter(await read_all(topics.bootstrap, topics.dlq), topics.group_id)
    assert await committed_lag(topics.bootstrap, topics.topic, topics.group_id) == 0


async def test_replay_reads_past_an_undecodable_record(
    database_url: str, topics: Topics, new_database: MakeDatabase
) -> None:
    await publish_batch(topics)
    target = await new_database()
    settings = consumer_settings(topics, database_url)
    async with Replay(settings, ReplayOptions(target, dead_letter=True)) as job:
        await job.prepare_target()
        plan = await job.plan()
        summary = await job.run(plan)
    assert plan.events == summary.events_read == 5
    assert summary.dead_lettered == 1
    assert sorted(await rows_of(target)) == VALID
    assert_dead_letter(await read_all(topics.bootstrap, topics.dlq), "/replay")
