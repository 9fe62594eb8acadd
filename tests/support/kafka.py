"""Small real-Kafka helpers for integration tests: publish, read back, wait for a drain."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from exectrack.consumer.kafka import reader


@dataclass(frozen=True)
class Sent:
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    partition: int
    offset: int


async def publish(
    bootstrap: str,
    topic: str,
    messages: Iterable[tuple[bytes | None, bytes | None, Sequence[tuple[str, bytes]]]],
) -> list[Sent]:
    """Publish (key, value, headers) in order, acks=all; return where each landed."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5
    )
    await producer.start()
    try:
        pending = []
        items = list(messages)
        for key, value, headers in items:
            pending.append(await producer.send(topic, value=value, key=key, headers=list(headers)))
        results = await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return [
        Sent(key, value, list(headers), meta.partition, meta.offset)
        for (key, value, headers), meta in zip(items, results, strict=True)
    ]


async def read_all(bootstrap: str, topic: str, *, timeout_s: float = 30) -> list[Any]:
    """Every record currently in ``topic`` (up to the end offsets at call time)."""
    consumer = reader(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        partitions = await partitions_of(bootstrap, topic)
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        records: list[Any] = []
        deadline = asyncio.get_running_loop().time() + timeout_s
        while any([await consumer.position(tp) < end[tp] for tp in partitions]):
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"could not read {topic} to its end in {timeout_s}s")
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                records.extend(batch)
        return records
    finally:
        await consumer.stop()


async def committed_lag(bootstrap: str, topic: str, group_id: str) -> int:
    """Sum over partitions of end offset - committed offset of ``group_id``."""
    consumer = reader(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        partitions = await partitions_of(bootstrap, topic)
        end = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        committed = await group_offsets(admin, group_id)
    finally:
        await admin.close()
    return sum(end[tp] - (committed[tp].offset if tp in committed else 0) for tp in partitions)


async def wait_for_leaders(bootstrap: str, topics: Sequence[str], *, timeout_s: float = 30) -> None:
    """A just-created topic is usable once every partition has a leader."""

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                described = await admin.describe_topics(list(topics))
                if all(
                    t["error_code"] == 0
                    and t["partitions"]
                    and all(p["leader"] >= 0 for p in t["partitions"])
                    for t in described
                ):
                    return
                await asyncio.sleep(0.1)
    finally:
        await admin.close()


async def partitions_of(bootstrap: str, topic: str) -> list[TopicPartition]:

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return [TopicPartition(topic, p["partition"]) for p in described["partitions"]]


async def group_offsets(admin: AIOKafkaAdminClient, group_id: str, *, timeout_s: float = 60) -> Any:
    """``list_consumer_group_offsets``, retried while the broker says to retry.

    On a fresh broker the group coordinator (``__consumer_offsets``) is created on
    first use and answers GroupCoordinatorNotAvailable for a few seconds."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        try:
            return await admin.list_consumer_group_offsets(group_id)
        except KafkaError as exc:
            if not exc.retriable or asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.5)
