"""The publisher against the real broker: partitions, headers, bytes, acknowledgements."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections import defaultdict
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.partitioner import DefaultPartitioner

from exectrack.consumer.kafka import reader
from exectrack.producer.errors import PublishError
from exectrack.producer.events import (
    CONTENT_TYPE,
    EventType,
    ExecutionEvent,
    execution_event,
    parse_event,
    to_json,
)
from exectrack.producer.publisher import Delivery, Publisher, ensure_topics
from exectrack.producer.settings import CompressionType, KafkaSettings, PublisherSettings
from exectrack.producer.simulate import SimConfig, generate
from exectrack.producer.sync import SyncPublisher, track_sync
from exectrack.producer.tracking import track
from tests.conftest import Topics
from tests.support.kafka import wait_for_leaders

T = EventType
HEADERS = [("content-type", CONTENT_TYPE.encode())]


def settings_for(topics: Topics) -> KafkaSettings:
    return KafkaSettings(
        bootstrap_servers=topics.bootstrap,
        topic=topics.topic,
        dlq_topic=topics.dlq,
        partitions=topics.partitions,
    )


async def messages_on(topics: Topics, *, at_least: int, wait_s: float = 60) -> list[Any]:
    """Every record of the topic (fresh per test), reading until the end offsets."""
    consumer = reader(
        bootstrap_servers=topics.bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topics.topic, p) for p in range(topics.partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        deadline = time.monotonic() + wait_s
        ends: dict[Any, int] = {}
        while time.monotonic() < deadline:
            ends = await consumer.end_offsets(partitions)
            if sum(ends.values()) >= at_least:
                break
        records: list[Any] = []
        while sum(ends.values()) > len(records) and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=1000, max_records=20_000)
            for part in batch.values():
                records.extend(part)
        return records
    finally:
        await consumer.stop()


def lifecycle(execution_id: str) -> list[ExecutionEvent]:
    return [
        execution_event(t, execution_id=execution_id, report_id="r", source="/s", sequence=n)
        for n, t in enumerate([T.PENDING, T.STARTED, T.PROGRESS, T.COMPLETED])
    ]


async def test_events_land_on_the_partition_of_their_key(topics: Topics) -> None:
    events = [e for n in range(40) for e in lifecycle(f"exec-{n}-{uuid.uuid4()}")]
    deliveries: dict[str, Delivery] = {}
    async with Publisher(settings_for(topics)) as pub:
        futures = {e.id: await pub.send(e) for e in events[1::2]}
        for e in events[::2]:
            deliveries[e.id] = await pub.publish(e)
        await pub.flush()
    deliveries |= {event_id: future.result() for event_id, future in futures.items()}

    records = await messages_on(topics, at_least=len(events))
    assert len(records) == len(events)
    sent = {e.id: e for e in events}
    partitions_of: dict[bytes, set[int]] = defaultdict(set)
    default = DefaultPartitioner()
    for record in records:
        event = parse_event(record.value, record.headers, record.key)
        assert event == sent[event.id]
        assert list(record.headers) == [("content-type", b"application/cloudevents+json")]
        assert record.key == event.key
        assert record.partition == default(record.key, list(range(topics.partitions)), [])
        assert deliveries[event.id][1:3] == (record.partition, record.offset)
        assert deliveries[event.id].topic == topics.topic
        partitions_of[record.key].add(record.partition)
    assert all(len(p) == 1 for p in partitions_of.values())  # one execution, one partition
    assert len({p for ps in partitions_of.values() for p in ps}) > 6  # and keys spread


async def test_events_of_an_execution_keep_their_order(topics: Topics) -> None:
    events = [e for n in range(50) for e in lifecycle(f"exec-ordered-{n % 5}")]
    async with Publisher(settings_for(topics)) as pub:
        for event in events:
            await pub.send(event)  # pipelined: acknowledged later, still in order
    records = await messages_on(topics, at_least=len(events))
    for n in range(5):
        key = f"exec-ordered-{n}".encode()
        on_topic = [r.value for r in records if r.key == key]
        assert on_topic == [to_json(e) for e in events if e.key == key]


async def test_send_many_batches_per_partition_in_order(topics: Topics) -> None:
    sim = list(generate(SimConfig(executions=300, seed=11)))
    async with Publisher(settings_for(topics)) as pub:
        batches = await pub.send_many(sim[:700])
        batches += await pub.send_many(sim[700:])
        first_offsets = [await b.future for b in batches]
    assert sum(len(b.records) for b in batches) == len(sim)
    records = await messages_on(topics, at_least=len(sim))
    assert len(records) == len(sim)
    default = DefaultPartitioner()
    for partition in range(topics.partitions):
        on_topic = [r.value for r in records if r.partition == partition]
        expected = [
            m.value for m in sim if default(m.key, list(range(topics.partitions)), []) == partition
        ]
        assert on_topic == expected
    by_offset = {(r.partition, r.offset): r.value for r in records}
    for batch, first in zip(batches, first_offsets, strict=True):
        assert first.partition == batch.partition
        for index, message in enumerate(batch.records):
            assert by_offset[(batch.partition, first.offset + index)] == message.value


async def test_raw_bytes_go_out_untouched(topics: Topics) -> None:
    garbage = [(b"exec-1", b"\xff\xfe not even utf-8", []), (None, b"{}", [("x", b"y")])]
    async with Publisher(settings_for(topics)) as pub:
        for key, value, headers in garbage:
            await pub.publish_raw(key, value, headers)
    records = await messages_on(topics, at_least=2)
    assert sorted((r.value, list(r.headers)) for r in records) == sorted(
        (v, h) for _, v, h in garbage
    )


async def test_a_message_too_large_is_refused_not_retried(topics: Topics) -> None:
    async with Publisher(settings_for(topics)) as pub:
        with pytest.raises(PublishError) as caught:
            await pub.send_raw(b"k", b"x" * (2 * 1024 * 1024))
        assert caught.value.retriable is False
        assert type(caught.value.__cause__).__name__ == "MessageSizeTooLargeError"


async def test_a_failed_batch_does_not_poison_its_partition(topics: Topics) -> None:
    """The broker refuses a batch; later batches of that partition still get through.

    aiokafka's idempotent producer counts the refused batch's sequence numbers
    as used, so without a fresh producer every later batch of the partition
    fails with OutOfOrderSequenceNumber.
    """
    too_big_for_the_broker = os.urandom(1_050_000)  # under our max_request_size, incompressible
    async with Publisher(settings_for(topics)) as pub:
        before = await pub.publish_raw(b"same-key", b"before")  # the broker knows our sequence
        refused = await pub.send_raw(b"same-key", too_big_for_the_broker)
        with pytest.raises(PublishError):
            await refused
        after = [await pub.publish_raw(b"same-key", f"after-{n}".encode()) for n in range(3)]
        with pytest.raises(PublishError, match="1 message"):
            await pub.flush()  # the refused one, reported once more
    assert {d.partition for d in after} == {before.partition}
    records = await messages_on(topics, at_least=4)
    assert [r.value for r in records] == [b"before", b"after-0", b"after-1", b"after-2"]


async def test_every_codec_works(topics: Topics) -> None:
    events = lifecycle("exec-codecs")
    codecs: tuple[CompressionType, ...] = ("zstd", "lz4", "gzip", "snappy", "none")
    for codec in codecs:
        options = PublisherSettings(compression_type=codec)
        async with Publisher(settings_for(topics), options=options) as pub:
            for event in events:
                await pub.publish(event)
    records = await messages_on(topics, at_least=len(codecs) * len(events))
    assert len(records) == len(codecs) * len(events)
    assert {parse_event(r.value).id for r in records} == {e.id for e in events}


async def test_stop_waits_for_everything_sent(topics: Topics) -> None:
    sim = list(generate(SimConfig(executions=500, seed=2)))
    async with Publisher(settings_for(topics)) as pub:
        for message in sim:
            await pub.send_raw(message.key, message.value, message.headers)  # not awaited
    records = await messages_on(topics, at_least=len(sim))
    assert sorted(r.value for r in records) == sorted(m.value for m in sim)


async def test_an_unreachable_broker_is_a_retriable_publish_error() -> None:
    publisher = Publisher(
        KafkaSettings(bootstrap_servers="127.0.0.1:9"),
        options=PublisherSettings(request_timeout_ms=2000),
    )
    with pytest.raises(PublishError) as caught:
        await publisher.start()
    assert caught.value.retriable


async def test_ensure_topics_creates_both_and_is_idempotent(topics: Topics) -> None:
    name = f"exectrack-test-ensure-{uuid.uuid4().hex[:8]}"
    settings = KafkaSettings(
        bootstrap_servers=topics.bootstrap, topic=name, dlq_topic=f"{name}.dlq", partitions=5
    )
    admin = AIOKafkaAdminClient(bootstrap_servers=topics.bootstrap)
    await admin.start()
    try:
        assert sorted(await ensure_topics(settings)) == [name, f"{name}.dlq"]
        assert await ensure_topics(settings) == []
        # a loaded broker may answer a describe before the new topic's metadata has
        # propagated (0 partitions): wait until it is usable, as every reader does
        await wait_for_leaders(topics.bootstrap, [name, f"{name}.dlq"])
        found = await admin.describe_topics([name, f"{name}.dlq"])
        described = {t["topic"]: len(t["partitions"]) for t in found}
        assert described == {name: 5, f"{name}.dlq": 1}
    finally:
        await admin.delete_topics([name, f"{name}.dlq"])
        await admin.close()


async def test_track_publishes_the_lifecycle_to_kafka(topics: Topics) -> None:
    async with (
        Publisher(settings_for(topics), source="/services/it") as pub,
        track(pub, report_id="rep", execution_id="exec-tracked") as run,
    ):
        await run.progress(records_processed=5)
        run.set(result_summary={"ok": True})
    records = await messages_on(topics, at_least=4)
    events = [parse_event(r.value, r.headers, r.key) for r in records]
    assert [(e.type, e.data.sequence) for e in events] == [  # type: ignore[union-attr]
        (T.PENDING, 0), (T.STARTED, 1), (T.PROGRESS, 2), (T.COMPLETED, 3),
    ]  # fmt: skip
    assert {e.source for e in events} == {"/services/it"}
    assert run.publish_errors == 0


async def test_track_sync_publishes_to_kafka(topics: Topics) -> None:
    def blocking_service() -> Delivery:
        with SyncPublisher(settings=settings_for(topics)) as pub:
            with track_sync(pub, report_id="rep", execution_id="exec-sync") as run:
                run.progress(records_processed=1)
            assert run.publish_errors == 0
            return pub.publish(lifecycle("exec-sync-2")[0])  # type: ignore[no-any-return]

    delivery = await asyncio.to_thread(blocking_service)
    assert delivery.topic == topics.topic
    records = await messages_on(topics, at_least=5)
    types = [parse_event(r.value).type for r in records if r.key == b"exec-sync"]
    assert types == [T.PENDING, T.STARTED, T.PROGRESS, T.COMPLETED]
