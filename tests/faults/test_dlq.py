"""The dead-letter path itself failing (issue #13, item 3; docs/reliability/dead-letter-path.md).

Every scenario puts its records on ONE partition of the source topic, a valid
event after the one whose dead letter is hard to carry, and checks against the
outside: the group's committed offsets, the table, the dead-letter topic, and
the drop counter (exectrack.consumer.metrics). Topics are made per test; the DLQ topic is
made with the config under test (or not at all).
"""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import (
    KafkaTimeoutError,
    NotLeaderForPartitionError,
    RequestTimedOutError,
    TopicAuthorizationFailedError,
)
from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import AsyncEngine

from exectrack.consumer.dlq._topic import PROBE_EVERY_S
from exectrack.consumer.dlq.send import DeadLetterQueue
from exectrack.consumer.service import ConsumerService
from exectrack.producer.events import EventType, ExecutionEvent, execution_event, to_json
from tests.conftest import Topics
from tests.stack import Services
from tests.support.faults import Spawn, spawner
from tests.support.kafka import committed_lag, read_all, wait_for_leaders
from tests.support.service import consumer_settings, table

pytestmark = pytest.mark.integration
HEADERS = [("content-type", b"application/cloudevents+json")]
SOURCE = "/services/dlq-faults"
ISSUE_KEY = b"k" * 2_000_000  # issue #13 item 3: a 2,000,000-byte key
MIB = 1024 * 1024
Message = tuple[bytes | None, bytes, list[tuple[str, bytes]]]


# ------------------------------------------------------------------ helpers
@asynccontextmanager
async def made_topics(
    stack: Services, *, dlq_configs: dict[str, str] | None = None, dlq: str | None = None
) -> AsyncIterator[Topics]:
    """A 3-partition source topic and a group; the DLQ topic with ``dlq_configs``,
    or, when ``dlq`` names it, that name left uncreated."""
    suffix = uuid.uuid4().hex[:10]
    made = Topics(
        stack.kafka_bootstrap,
        f"exectrack-dlqf-{suffix}",
        dlq or f"exectrack-dlqf-{suffix}.dlq",
        f"exectrack-dlqf-{suffix}",
        3,
    )
    wanted = [NewTopic(made.topic, 3, 1)]
    if dlq is None:
        wanted.append(NewTopic(made.dlq, 1, 1, topic_configs=dlq_configs or {}))
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics(wanted)
        await wait_for_leaders(stack.kafka_bootstrap, [t.name for t in wanted])
        yield made
    finally:
        existing = set(await admin.list_topics())
        await admin.delete_topics([t for t in (made.topic, made.dlq) if t in existing])
        await admin.close()


async def publish_on_partition_0(topics: Topics, messages: Sequence[Message]) -> list[int]:
    """Publish in order on partition 0, zstd-compressed so the source topic takes the
    2,000,000-byte key (its compressed batch is small); returns the offsets."""
    producer = AIOKafkaProducer(
        bootstrap_servers=topics.bootstrap,
        acks="all",
        compression_type="zstd",
        max_request_size=4 * MIB,
    )
    await producer.start()
    try:
        offsets = []
        for key, value, headers in messages:
            meta = await producer.send_and_wait(topics.topic, value, key, 0, headers=headers)
            offsets.append(meta.offset)
        return offsets
    finally:
        await producer.stop()


def event(eid: str, kind: EventType, seq: int, **fields: Any) -> ExecutionEvent:
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10 - seq)
    return execution_event(
        kind,
        execution_id=eid,
        report_id="report-dlq",
        source=SOURCE,
        sequence=seq,
        time=at,
        **fields,
    )


def valid(e: ExecutionEvent) -> Message:
    return e.data.execution_id.encode(), to_json(e), HEADERS


def lifecycle(eid: str) -> tuple[Message, Message]:
    """(pending, completed) of one execution: the valid events around the hard letter."""
    pending = event(eid, EventType.PENDING, 0, trigger_type="api")
    return valid(pending), valid(event(eid, EventType.COMPLETED, 2, records_processed=42))


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def dropped(cause: str) -> float:
    return counter("exectrack_dead_letters_dropped_total", cause=cause)


@asynccontextmanager
async def running(service: ConsumerService) -> AsyncIterator[asyncio.Task[Any]]:
    """The service runs in a task; stopped (and its exception surfaced) at the end."""
    task = asyncio.create_task(service.run())
    try:
        yield task
    finally:
        service.request_stop()
        await asyncio.wait_for(task, timeout=60)


async def consumed(service: ConsumerService, task: asyncio.Task[Any], records: int) -> None:
    """Wait until ``records`` records are committed; a crash of the service fails at once."""
    async with asyncio.timeout(90):
        while service.totals.records < records:
            if task.done():
                await task
                raise AssertionError("the service stopped before consuming everything")
            await asyncio.sleep(0.05)


def by_offset(records: Sequence[Any]) -> dict[int, Any]:
    return {int(dict(r.headers)["exectrack.dlq.offset"]): r for r in records}


def batch_bytes(record: Any) -> int:
    return (
        len(record.key or b"")
        + len(record.value or b"")
        + sum(len(k) + len(v) for k, v in record.headers)
    )


async def lag_is_zero(topics: Topics) -> None:
    assert await committed_lag(topics.bootstrap, topics.topic, topics.group_id) == 0


# ------------------------------------------------------------------ the issue's input
async def test_issue_key_of_2_000_000_bytes_is_dead_lettered_shrunk_and_the_partition_flows(
    db: AsyncEngine, database_url: str, stack: Services
) -> None:
    eid, other = str(uuid.uuid4()), str(uuid.uuid4())
    pending, completed = lifecycle(eid)
    foreign = to_json(event(other, EventType.COMPLETED, 2))  # valid, of ANOTHER execution
    truncated_before = counter("exectrack_dead_letters_truncated_total")
    async with made_topics(stack) as topics:
        offsets = await publish_on_partition_0(
            topics, [pending, (ISSUE_KEY, foreign, HEADERS), completed]
        )
        service = ConsumerService(consumer_settings(topics, database_url), engine=db)
        async with running(service) as task:
            await consumed(service, task, 3)
        assert not task.exception()
        await lag_is_zero(topics)  # committed past the record
        dlq = await read_all(topics.bootstrap, topics.dlq)

    assert (service.totals.dead_lettered, service.totals.dead_letters_dropped) == (1, 0)
    (letter,) = dlq
    headers = dict(letter.headers)
    assert headers["exectrack.dlq.reason"] == b"key_mismatch"
    assert (headers["exectrack.dlq.partition"], headers["exectrack.dlq.offset"]) == (
        b"0",
        str(offsets[1]).encode(),
    )
    assert letter.value == foreign  # the event is kept byte for byte: it can be re-published
    kept = len(letter.key)
    assert MIB - 4096 < kept < MIB
    assert letter.key == ISSUE_KEY[:kept]
    assert headers["exectrack.dlq.truncated"] == f"true; key=2000000/{kept}".encode()
    assert headers["content-type"] == HEADERS[0][1]
    assert counter("exectrack_dead_letters_truncated_total") == truncated_before + 1
    rows = await table(db)
    assert rows[eid]["status"] == "completed"  # the valid events on the partition applied
    assert rows[eid]["records_processed"] == 42
    assert rows[eid]["trigger_type"] == "api"
    assert other not in rows  # its event came under another key: dead-lettered, not applied


async def test_headers_and_a_value_over_a_mib_are_cut_to_the_dlq_limit(
    db: AsyncEngine, database_url: str, stack: Services
) -> None:
    """The same kind through the headers and the value: one record with a 1,500,000-byte
    header, one with a 3,000,000-byte value (both zstd on the source topic)."""
    eid = str(uuid.uuid4())
    pending, completed = lifecycle(eid)
    big_header = (
        eid.encode(),
        to_json(event(eid, EventType.STARTED, 1)) + b"x",
        [*HEADERS, ("x-blob", b"h" * 1_500_000)],
    )
    big_value = (eid.encode(), b"{" + b"v" * 3_000_000, HEADERS)
    async with made_topics(stack) as topics:
        offsets = await publish_on_partition_0(topics, [pending, big_header, big_value, completed])
        service = ConsumerService(consumer_settings(topics, database_url), engine=db)
        async with running(service) as task:
            await consumed(service, task, 4)
        await lag_is_zero(topics)
        dlq = by_offset(await read_all(topics.bootstrap, topics.dlq))
    assert sorted(dlq) == offsets[1:3]
    assert all(batch_bytes(r) <= MIB for r in dlq.values())
    header_cut = dict(dlq[offsets[1]].headers)
    assert header_cut["exectrack.dlq.truncated"].startswith(b"true; header:x-blob=1500000/")
    assert dlq[offsets[1]].value == big_header[1]  # the small value stays whole
    value_cut = dict(dlq[offsets[2]].headers)
    assert value_cut["exectrack.dlq.truncated"].startswith(b"true; value=3000001/")
    assert value_cut["exectrack.dlq.reason"] == b"too_large"
    assert (await table(db))[eid]["status"] == "completed"


@pytest.fixture
def spawn_dlq(database_url: str, tmp_path: Path) -> Iterator[Any]:
    """Build a ``spawn`` for topics made inside the test; processes killed at teardown."""
    generators: list[Iterator[Spawn]] = []

    def bind(topics: Topics) -> Spawn:
        generator = spawner(topics, database_url, tmp_path)
        generators.append(generator)
        return next(generator)

    yield bind
    for generator in generators:
        next(generator, None)  # the spawner's cleanup: kill what still runs


async def test_issue_input_the_consumer_process_keeps_running(
    db: AsyncEngine, stack: Services, spawn_dlq: Any, tmp_path: Path
) -> None:
    """The issue as reported: `exectrack-consumer consume` exited 1 at every restart."""
    eid, other = str(uuid.uuid4()), str(uuid.uuid4())
    pending, completed = lifecycle(eid)
    foreign = to_json(event(other, EventType.COMPLETED, 2))
    async with made_topics(stack) as topics:
        offsets = await publish_on_partition_0(
            topics, [pending, (ISSUE_KEY, foreign, HEADERS), completed]
        )
        proc = spawn_dlq(topics)()
        try:
            async with asyncio.timeout(90):
                while await committed_lag(topics.bootstrap, topics.topic, topics.group_id):
                    assert proc.poll() is None, "the consumer exited"
                    await asyncio.sleep(0.5)
            assert proc.poll() is None
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(proc.wait, 30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
        dlq = await read_all(topics.bootstrap, topics.dlq)
    assert list(by_offset(dlq)) == [offsets[1]]
    lines = [
        json.loads(x)
        for x in (tmp_path / "consumer-0.log").read_text().splitlines()
        if x.startswith("{")
    ]
    (cut,) = [x for x in lines if x["event"] == "dead_letter_truncated"]
    assert (cut["topic"], cut["partition"], cut["offset"]) == (topics.topic, 0, offsets[1])
    assert cut["cuts"][0].startswith("key=2000000/")
    assert (await table(db))[eid]["status"] == "completed"


# ------------------------------------------------------------------ the DLQ topic's own limit
async def test_a_dlq_topic_of_1024_bytes_gets_shrunk_letters_then_explicit_drops(
    db: AsyncEngine, database_url: str, stack: Services
) -> None:
    """max.message.bytes=1024 read at start: letters are cut to fit. Then the limit is
    lowered to 200 while the consumer runs: the broker refuses the next letter, the
    limit is read again, nothing fits: dropped explicitly, counted, the partition flows."""
    eid, later = str(uuid.uuid4()), str(uuid.uuid4())
    pending, completed = lifecycle(eid)
    headers_heavy = [*HEADERS, *((f"x-trace-{i}", b"h" * 300) for i in range(5))]
    first = [
        pending,
        (eid.encode(), b"{not json", HEADERS),
        (eid.encode(), b"{" + b"v" * 5000, HEADERS),
        (eid.encode(), b"[1]", headers_heavy),
        completed,
    ]
    too_large_before = dropped("too_large")
    async with made_topics(stack, dlq_configs={"max.message.bytes": "1024"}) as topics:
        offsets = await publish_on_partition_0(topics, first)
        service = ConsumerService(consumer_settings(topics, database_url), engine=db)
        async with running(service) as task:
            await consumed(service, task, len(first))
            assert service.dead_letters.limit == 1024  # read from the topic at start
            admin = AIOKafkaAdminClient(bootstrap_servers=topics.bootstrap)
            await admin.start()
            try:
                await admin.alter_configs(
                    [
                        ConfigResource(
                            ConfigResourceType.TOPIC, topics.dlq, {"max.message.bytes": "200"}
                        )
                    ]
                )
            finally:
                await admin.close()
            await asyncio.sleep(1)  # the broker applies the new config
            second = [(later.encode(), b"nope", HEADERS), *lifecycle(later)]
            offsets += await publish_on_partition_0(topics, second)
            await consumed(service, task, len(first) + len(second))
        await lag_is_zero(topics)
        dlq = by_offset(await read_all(topics.bootstrap, topics.dlq))

    assert sorted(dlq) == offsets[1:4]  # the fourth letter: dropped, not in the DLQ
    assert all(batch_bytes(r) <= 1024 for r in dlq.values())
    small, big, heavy = (dict(dlq[o].headers) for o in offsets[1:4])
    assert "exectrack.dlq.truncated" not in small
    assert dlq[offsets[1]].value == b"{not json"
    assert big["exectrack.dlq.truncated"].startswith(b"true; value=5001/")
    assert b"; header:x-trace-0=300/" in heavy["exectrack.dlq.truncated"]
    assert heavy["exectrack.dlq.reason"] == b"not_cloudevent"
    assert dropped("too_large") == too_large_before + 1
    assert (service.totals.dead_lettered, service.totals.dead_letters_dropped) == (3, 1)
    assert service.dead_letters.limit == 200  # read again after the broker's refusal
    rows = await table(db)
    assert rows[eid]["status"] == rows[later]["status"] == "completed"


# ------------------------------------------------------------------ a DLQ that is away for now
class FlakyDeadLetters(DeadLetterQueue):
    """The real DLQ, whose first ``failures`` sends fail with transient errors.

    Kafka 4.1 cannot be made to refuse writes transiently per topic without
    stopping the shared broker (min.insync.replicas above the replication factor
    is capped by ELR, KIP-966: the write succeeds), so the errors are injected
    where aiokafka would raise them: on the send's future."""

    TRANSIENT = (NotLeaderForPartitionError, KafkaTimeoutError, RequestTimedOutError)

    def __init__(
        self,
        service: ConsumerService,
        failures: float,
        errors: Sequence[Callable[[], Exception]] = TRANSIENT,
    ) -> None:
        super().__init__(service.settings.kafka, service.identity, retry_max_s=0.3)
        self.failures = failures
        self.errors = errors
        self.failed = 0

    async def start(self) -> None:
        await super().start()
        assert self.producer is not None
        real = self.producer.send

        async def send(*args: Any, **kwargs: Any) -> Any:
            if self.failed >= self.failures:
                return await real(*args, **kwargs)
            future = asyncio.get_running_loop().create_future()
            future.set_exception(self.errors[self.failed % len(self.errors)]())
            self.failed += 1
            return future

        self.producer.send = send


async def test_transient_dlq_errors_are_retried_and_nothing_is_committed_past_them(
    db: AsyncEngine, database_url: str, stack: Services
) -> None:
    """Not leader, timeouts: retried with backoff, the offsets wait; a stop while
    retrying abandons the batch uncommitted; the next consumer sends and commits."""
    eid = str(uuid.uuid4())
    pending, completed = lifecycle(eid)
    async with made_topics(stack) as topics:
        offsets = await publish_on_partition_0(
            topics, [pending, (eid.encode(), b"nope", HEADERS), completed]
        )
        settings = consumer_settings(topics, database_url)

        stuck = ConsumerService(settings, engine=db)
        stuck.dead_letters = FlakyDeadLetters(stuck, failures=float("inf"))
        async with running(stuck):
            async with asyncio.timeout(60):
                while stuck.dead_letters.failed < 4:
                    await asyncio.sleep(0.05)
            assert await committed_lag(topics.bootstrap, topics.topic, topics.group_id) == 3
        assert stuck.abandoned  # stopped while retrying: nothing committed past the letter
        assert stuck.totals.records == 0
        assert await committed_lag(topics.bootstrap, topics.topic, topics.group_id) == 3
        assert await read_all(topics.bootstrap, topics.dlq) == []

        retries = counter("exectrack_dead_letter_retries_total")
        again = ConsumerService(settings, engine=db)
        again.dead_letters = FlakyDeadLetters(again, failures=3)
        async with running(again) as task:
            await consumed(again, task, 3)
        await lag_is_zero(topics)
        dlq = by_offset(await read_all(topics.bootstrap, topics.dlq))
    assert sorted(dlq) == [offsets[1]]
    assert counter("exectrack_dead_letter_retries_total") == retries + 3
    assert (again.totals.dead_lettered, again.totals.dead_letters_dropped) == (1, 0)
    assert (await table(db))[eid]["status"] == "completed"


async def test_an_unauthorized_dlq_drops_explicitly_and_tries_again_with_the_next_letter(
    db: AsyncEngine, database_url: str, stack: Services
) -> None:
    """TOPIC_AUTHORIZATION_FAILED (the local broker has no authorizer: injected as
    above) on the first four sends (two letters together, then each again alone): both
    dropped with cause unauthorized, the partition flows; once WRITE is granted, the
    next letter goes."""
    eid, later = str(uuid.uuid4()), str(uuid.uuid4())
    unauthorized_before = dropped("unauthorized")
    async with made_topics(stack) as topics:
        pending, completed = lifecycle(eid)
        first = [
            pending,
            (eid.encode(), b"nope-1", HEADERS),
            (eid.encode(), b"nope-2", HEADERS),
            completed,
        ]
        offsets = await publish_on_partition_0(topics, first)
        service = ConsumerService(consumer_settings(topics, database_url), engine=db)
        denied = (lambda: TopicAuthorizationFailedError(topics.dlq),)
        service.dead_letters = FlakyDeadLetters(service, failures=4, errors=denied)
        async with running(service) as task:
            await consumed(service, task, len(first))
            assert dropped("unauthorized") == unauthorized_before + 2
            second = [(later.encode(), b"nope-3", HEADERS), *lifecycle(later)]
            offsets += await publish_on_partition_0(topics, second)
            await consumed(service, task, len(first) + len(second))
        await lag_is_zero(topics)
        dlq = by_offset(await read_all(topics.bootstrap, topics.dlq))
    assert sorted(dlq) == [offsets[4]]
    assert (service.totals.dead_lettered, service.totals.dead_letters_dropped) == (1, 2)
    rows = await table(db)
    assert rows[eid]["status"] == rows[later]["status"] == "completed"


# ------------------------------------------------------------------ a DLQ topic that is not there
async def test_a_missing_dlq_topic_drops_explicitly_after_the_grace_then_resumes(
    db: AsyncEngine, database_url: str, stack: Services
) -> None:
    """deploy/local sets auto.create.topics.enable=false; the consumer never sends to a
    topic the broker says is missing (so an auto-creating broker behaves the same)."""
    eid, later = str(uuid.uuid4()), str(uuid.uuid4())
    name = f"exectrack-dlqf-missing-{uuid.uuid4().hex[:8]}"
    missing_before = dropped("topic_missing")
    async with made_topics(stack, dlq=name) as topics:
        first = [lifecycle(eid)[0], (eid.encode(), b"nope", HEADERS), lifecycle(eid)[1]]
        offsets = await publish_on_partition_0(topics, first)
        settings = consumer_settings(topics, database_url, dlq_missing_grace_s=1.0)
        service = ConsumerService(settings, engine=db)
        async with running(service) as task:
            await consumed(service, task, 3)
            assert dropped("topic_missing") == missing_before + 1
            await lag_is_zero(topics)
            admin = AIOKafkaAdminClient(bootstrap_servers=topics.bootstrap)
            await admin.start()
            try:
                assert name not in await admin.list_topics()
                await admin.create_topics([NewTopic(name, 1, 1)])
            finally:
                await admin.close()
            await wait_for_leaders(topics.bootstrap, [name])
            await asyncio.sleep(PROBE_EVERY_S + 0.5)  # the next probe sees it
            second = [(later.encode(), b"again", HEADERS), *lifecycle(later)]
            offsets += await publish_on_partition_0(topics, second)
            await consumed(service, task, 6)
        await lag_is_zero(topics)
        dlq = by_offset(await read_all(topics.bootstrap, name))

    assert sorted(dlq) == [offsets[3]]  # the first letter was dropped; the second went
    assert dropped("topic_missing") == missing_before + 1
    rows = await table(db)
    assert rows[eid]["status"] == rows[later]["status"] == "completed"


async def test_a_dlq_topic_deleted_while_running_is_found_missing_by_the_send(
    db: AsyncEngine, database_url: str, stack: Services
) -> None:
    """The topic existed at start (the producer knows its partitions) and is deleted:
    the send fails with UNKNOWN_TOPIC_OR_PARTITION, the topic is described again,
    found missing, waited for (grace 1 s) and the letter dropped; the partition flows."""
    eid = str(uuid.uuid4())
    missing_before = dropped("topic_missing")
    async with made_topics(stack) as topics:
        pending, completed = lifecycle(eid)
        first = [pending, (eid.encode(), b"nope-1", HEADERS)]
        offsets = await publish_on_partition_0(topics, first)
        settings = consumer_settings(topics, database_url, dlq_missing_grace_s=1.0)
        service = ConsumerService(settings, engine=db)
        service.dead_letters = DeadLetterQueue(
            settings.kafka, service.identity, request_timeout_ms=2000, missing_grace_s=1.0
        )
        async with running(service) as task:
            await consumed(service, task, len(first))
            admin = AIOKafkaAdminClient(bootstrap_servers=topics.bootstrap)
            await admin.start()
            try:
                await admin.delete_topics([topics.dlq])
                async with asyncio.timeout(30):
                    while topics.dlq in await admin.list_topics():
                        await asyncio.sleep(0.1)
            finally:
                await admin.close()
            second = [(eid.encode(), b"nope-2", HEADERS), completed]
            offsets += await publish_on_partition_0(topics, second)
            await consumed(service, task, len(first) + len(second))
        await lag_is_zero(topics)
    assert dropped("topic_missing") == missing_before + 1
    assert (service.totals.dead_lettered, service.totals.dead_letters_dropped) == (1, 1)
    assert service.dead_letters.topic.status == "missing"
    assert (await table(db))[eid]["status"] == "completed"
    assert offsets[2] == 2


async def test_an_invalid_dlq_topic_name_drops_explicitly_one_log_line_per_letter(
    db: AsyncEngine, stack: Services, spawn_dlq: Any, tmp_path: Path
) -> None:
    """A name the broker can never create: every letter dropped at once (no wait), one
    JSON line each naming cause and source; the process keeps running and exits 0."""
    eid = str(uuid.uuid4())
    async with made_topics(stack, dlq="exectrack dlq: not a topic name!") as topics:
        pending, completed = lifecycle(eid)
        offsets = await publish_on_partition_0(
            topics, [pending, (eid.encode(), b"nope", HEADERS), completed]
        )
        proc = spawn_dlq(topics)(EXECTRACK_CREATE_TOPICS="false")  # true: refused at start
        try:
            async with asyncio.timeout(90):
                while await committed_lag(topics.bootstrap, topics.topic, topics.group_id):
                    assert proc.poll() is None, "the consumer exited"
                    await asyncio.sleep(0.5)
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(proc.wait, 30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
    lines = [
        json.loads(x)
        for x in (tmp_path / "consumer-0.log").read_text().splitlines()
        if x.startswith("{")
    ]
    (drop,) = [x for x in lines if x["event"] == "dead_letter_dropped"]
    assert drop["cause"] == "topic_invalid"
    assert drop["level"] == "error"
    assert (drop["topic"], drop["partition"], drop["offset"]) == (topics.topic, 0, offsets[1])
    assert drop["reason"] == "not_json"
    assert (await table(db))[eid]["status"] == "completed"


# ------------------------------------------------------------------ a DLQ that refuses one record
async def test_a_compacted_dlq_refuses_only_the_null_key_letter(
    db: AsyncEngine, database_url: str, stack: Services
) -> None:
    """A compacted topic refuses a record without key (INVALID_RECORD) and with it the
    whole batch: the letters are sent again one by one, only the keyless one is dropped."""
    eid = str(uuid.uuid4())
    refused_before = dropped("refused")
    async with made_topics(stack, dlq_configs={"cleanup.policy": "compact"}) as topics:
        pending, completed = lifecycle(eid)
        messages = [
            pending,
            (eid.encode(), b"nope-1", HEADERS),
            (None, b"nope-2", HEADERS),
            (eid.encode(), b"nope-3", HEADERS),
            completed,
        ]
        offsets = await publish_on_partition_0(topics, messages)
        service = ConsumerService(consumer_settings(topics, database_url), engine=db)
        async with running(service) as task:
            await consumed(service, task, len(messages))
        await lag_is_zero(topics)
        dlq = by_offset(await read_all(topics.bootstrap, topics.dlq))
    assert sorted(dlq) == [offsets[1], offsets[3]]
    assert [dlq[o].value for o in sorted(dlq)] == [b"nope-1", b"nope-3"]
    assert dropped("refused") == refused_before + 1
    assert (service.totals.dead_lettered, service.totals.dead_letters_dropped) == (2, 1)
    assert (await table(db))[eid]["status"] == "completed"
