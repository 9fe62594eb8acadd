"""Publisher pieces that need no broker, and the in-memory publisher services test with."""

from __future__ import annotations

import pickle
import random
import socket
import traceback
from datetime import UTC, datetime

import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NotLeaderForPartitionError,
)
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2

import exectrack.producer.events
from exectrack.producer._kafka import Partitioner, murmur2, publish_error
from exectrack.producer.errors import InvalidEvent, InvalidReason, PublishError, StartFailed
from exectrack.producer.events import (
    CONTENT_TYPE,
    EventType,
    ExecutionData,
    ExecutionEvent,
    execution_event,
    to_json,
)
from exectrack.producer.publisher import Publisher
from exectrack.producer.settings import KafkaSettings, ProducerSettings, PublisherSettings
from exectrack.producer.sync import SyncPublisher
from exectrack.producer.testing import InMemoryPublisher
from exectrack.producer.tracking import track

R = InvalidReason


def event(
    execution_id: str = "exec-1", event_type: EventType = EventType.STARTED
) -> ExecutionEvent:
    return execution_event(event_type, execution_id=execution_id, report_id="r", source="/s")


# ---------------------------------------------------------------- partitioning
def test_murmur2_is_kafkas() -> None:
    rng = random.Random(3)
    keys = [rng.randbytes(n) for n in range(64) for _ in range(30)]
    keys += [b"", b"exec-1", "é-utf8".encode()]
    assert [murmur2(k) for k in keys] == [aiokafka_murmur2(k) for k in keys]


def test_partitioner_agrees_with_aiokafkas_default_partitioner() -> None:
    partitioner, reference = Partitioner(max_keys=50), DefaultPartitioner()
    rng = random.Random(4)
    for _ in range(500):
        key = str(rng.getrandbits(64)).encode()
        partitions = list(range(rng.choice([1, 3, 12, 50])))
        assert partitioner(key, partitions, partitions) == reference(key, partitions, partitions)
    assert len(partitioner._hashes) <= 50  # bounded cache
    assert partitioner(None, [0, 1, 2], [1]) == 1  # keyless: among the available ones


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("error", "retriable"),
    [
        (KafkaConnectionError("gone"), True),
        (NotLeaderForPartitionError(), True),
        (KafkaTimeoutError(), True),  # aiokafka says False; a timeout is transient
        (MessageSizeTooLargeError(), False),
    ],
)
def test_broker_errors_become_publish_errors(error: Exception, retriable: bool) -> None:
    wrapped = publish_error(error)
    assert isinstance(wrapped, PublishError)
    assert wrapped.retriable is retriable
    assert wrapped.__cause__ is error
    assert type(error).__name__ in str(wrapped)


def test_publish_error_keeps_its_flag_through_pickle() -> None:
    error = PublishError("too big", retriable=False)
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own bytes
    assert (str(copy), copy.retriable) == ("too big", False)
    assert PublishError.retriable is True
    assert PublishError("default").retriable is True


# ---------------------------------------------------------------- settings
def test_publisher_settings_make_retries_safe() -> None:
    kwargs = PublisherSettings().producer_kwargs()
    assert kwargs["acks"] == "all"
    assert kwargs["enable_idempotence"] is True
    assert kwargs["compression_type"] == "zstd"
    assert 5 <= kwargs["linger_ms"] <= 10
    assert PublisherSettings(compression_type="none").producer_kwargs()["compression_type"] is None


def test_publisher_reads_the_settings_it_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXECTRACK_KAFKA__TOPIC", "from-env")
    monkeypatch.setenv("EXECTRACK_SOURCE", "/services/env")
    monkeypatch.setenv("EXECTRACK_PUBLISHER__LINGER_MS", "9")
    from_env = Publisher()
    assert (from_env.topic, from_env.source, from_env.options.linger_ms) == (
        "from-env",
        "/services/env",
        9,
    )
    explicit = Publisher(KafkaSettings(topic="t"), topic="override", source="/s")
    assert (explicit.topic, explicit.source) == ("override", "/s")
    assert Publisher(KafkaSettings()).source == "/services/exectrack-cli"
    assert Publisher(ProducerSettings(source="/p")).source == "/p"


async def test_publisher_must_be_started() -> None:
    with pytest.raises(RuntimeError, match="not started"):
        await Publisher(KafkaSettings()).send(event())
    await Publisher(KafkaSettings()).stop()  # stopping a never-started publisher is fine


def test_events_module_still_exports_the_contract() -> None:
    missing = [
        name
        for name in exectrack.producer.events.__all__
        if not hasattr(exectrack.producer.events, name)
    ]
    assert missing == []


# ---------------------------------------------------------------- InMemoryPublisher
async def test_in_memory_publisher_stores_events_and_messages() -> None:
    async with InMemoryPublisher(topic="t", partitions=12) as pub:
        first = await pub.publish(event("a", EventType.PENDING))
        future = await pub.send(event("a", EventType.STARTED))
        await pub.publish(event("b"))
        await pub.flush()
    second = await future
    assert (first.topic, second.partition) == ("t", first.partition)
    assert second.offset == first.offset + 1
    assert first.partition == DefaultPartitioner()(b"a", list(range(12)), [])
    assert pub.types_for("a") == [EventType.PENDING, EventType.STARTED]
    assert [e.data.execution_id for e in pub.events_for("b")] == ["b"]
    message = pub.messages[0]
    assert message.key == b"a"
    assert message.headers == [("content-type", CONTENT_TYPE.encode())]
    assert message.value == to_json(pub.events[0])
    assert pub.dead_letters == []
    pub.clear()
    assert (pub.events, pub.messages) == ([], [])


async def test_in_memory_publisher_rejects_what_the_consumer_would() -> None:
    bad = ExecutionEvent.model_construct(
        specversion="1.0",
        id="x",
        source="/s",
        type=EventType.PROGRESS,
        subject="exec-1",
        time=datetime(2026, 1, 1, tzinfo=UTC),
        datacontenttype="application/json",
        data=ExecutionData.model_construct(
            execution_id="exec-1", report_id="r", records_processed=-5
        ),
    )
    mismatched = bad.model_copy(
        update={"data": ExecutionData.model_construct(execution_id="exec-2", report_id="r")}
    )
    async with InMemoryPublisher() as pub:
        with pytest.raises(InvalidEvent) as caught:
            await pub.publish(bad)
        assert caught.value.reason == R.INVALID_FIELD
        with pytest.raises(InvalidEvent) as caught:
            await pub.send(mismatched)
        assert caught.value.reason == R.KEY_MISMATCH
        assert pub.messages == []


async def test_in_memory_publisher_keeps_raw_messages_and_dead_letters_invalid_ones() -> None:
    valid = event("a")
    async with InMemoryPublisher() as pub:
        await pub.send_raw(b"a", b"{not json", [("content-type", b"application/json")])
        await pub.publish_raw(b"zzz", to_json(valid), [])
        await pub.send_raw(valid.key, to_json(valid))
    assert len(pub.messages) == 3
    assert [(m.key, e.reason) for m, e in pub.dead_letters] == [
        (b"a", R.NOT_JSON),
        (b"zzz", R.KEY_MISMATCH),
    ]
    assert pub.events == [valid]


async def test_in_memory_publisher_failure_injection() -> None:
    async with InMemoryPublisher() as pub:
        pub.fail_next(1, retriable=False)
        with pytest.raises(PublishError) as caught:
            await pub.publish(event())
        assert not caught.value.retriable
        await pub.flush()  # publish raised it already: flush has nothing to say
        pub.fail_next(2)
        future = await pub.send(event())
        with pytest.raises(PublishError):
            await future
        await pub.send_raw(b"k", b"v")
        with pytest.raises(PublishError, match="2 message"):
            await pub.flush()
        await pub.flush()  # reported once
        assert pub.events == []


async def test_in_memory_publisher_must_be_started() -> None:
    pub = InMemoryPublisher()
    with pytest.raises(RuntimeError, match="not started"):
        await pub.publish(event())


# ---------------------------------------------------------------- start with the broker down
def closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def enter(publisher: Publisher, how: str) -> None:
    if how == "start":
        await publisher.start()
        return
    async with publisher:
        pytest.fail("entered with no broker")


@pytest.mark.parametrize("how", ["start", "async with"])
async def test_start_with_the_broker_down_is_one_clear_exception(how: str) -> None:
    servers = f"127.0.0.1:{closed_port()}"
    publisher = Publisher(
        KafkaSettings(bootstrap_servers=servers),
        options=PublisherSettings(request_timeout_ms=2000),
    )
    with pytest.raises(StartFailed) as caught:
        await enter(publisher, how)
    error = caught.value
    assert isinstance(error, PublishError)
    assert error.retriable
    assert error.bootstrap_servers == servers
    prefix = f"cannot start the publisher: Kafka at {servers}: KafkaConnectionError: "
    assert str(error).startswith(prefix + "Unable to bootstrap from [('127.0.0.1', ")
    assert str(error).count("KafkaConnectionError") == 1
    assert "\n" not in str(error)
    assert isinstance(error.__cause__, KafkaConnectionError)
    assert error.__suppress_context__
    printed = "".join(traceback.format_exception(error))
    assert "During handling of the above exception" not in printed
    assert printed.count("Traceback (most recent call last)") == 2  # the error and its cause
    assert printed.rstrip().endswith(str(error))
    with pytest.raises(RuntimeError, match="not started"):  # nothing half-started is left
        await publisher.publish(event())


def test_sync_publisher_start_with_the_broker_down_raises_the_same() -> None:
    servers = f"127.0.0.1:{closed_port()}"
    with pytest.raises(StartFailed, match=f"Kafka at {servers}: KafkaConnectionError"):
        SyncPublisher(settings=KafkaSettings(bootstrap_servers=servers), timeout=10).start()


def test_start_failed_survives_pickling() -> None:
    error = StartFailed("a:9092,b:9092", "KafkaConnectionError: no\nanswer", retriable=False)
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own bytes
    assert (
        str(copy)
        == "cannot start the publisher: Kafka at a:9092,b:9092: KafkaConnectionError: no answer"
    )
    assert copy.retriable is False


async def test_a_report_runs_untracked_on_a_publisher_that_never_started() -> None:
    """docs/events.md, "When the broker is down at start": the fallback it shows works."""
    publisher = Publisher(KafkaSettings(bootstrap_servers=f"127.0.0.1:{closed_port()}"))
    with pytest.raises(StartFailed):
        await publisher.start()
    try:
        async with track(publisher, report_id="r", execution_id="untracked") as run:
            await run.progress(records_processed=3)
            done = True
    finally:
        await publisher.stop()
    assert done
    assert run.publish_errors == 4  # pending, started, progress, completed: logged, counted
    assert [e.type.rsplit(".", 1)[1] for e in run.events] == [
        "pending", "started", "progress", "completed",
    ]  # fmt: skip
