"""``captured_events`` / ``exectrack_events`` capture a service's own Publisher, no network."""

from __future__ import annotations

import asyncio
import socket

import pytest

from exectrack.producer.errors import StartFailed
from exectrack.producer.events import EventType
from exectrack.producer.publisher import Capture, Publisher
from exectrack.producer.settings import KafkaSettings
from exectrack.producer.testing import InMemoryPublisher, captured_events
from tests.unit import fake_service

pytest_plugins = ["exectrack.producer.pytest_plugin"]

T = EventType
LIFECYCLE = [T.PENDING, T.STARTED, T.PROGRESS, T.COMPLETED]


@pytest.fixture(autouse=True)
def kafka_is_nowhere(monkeypatch: pytest.MonkeyPatch) -> str:
    """Every real Publisher would connect to a closed port: any network use fails the test."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        servers = f"127.0.0.1:{sock.getsockname()[1]}"
    monkeypatch.setenv("EXECTRACK_KAFKA__BOOTSTRAP_SERVERS", servers)
    return servers


async def test_a_service_publisher_is_captured_without_passing_it_in() -> None:
    with captured_events() as pub:
        execution_id = await fake_service.run_report(rows=7)
    assert pub.types_for(execution_id) == LIFECYCLE
    events = pub.events_for(execution_id)
    assert {e.source for e in events} == {fake_service.SOURCE}
    assert events[-1].data.result_summary == {"rows": 7}
    assert [e.data.sequence for e in events] == [0, 1, 2, 3]
    assert not pub.dead_letters
    assert Capture._stack == []


async def test_the_fixture_does_the_same(exectrack_events: InMemoryPublisher) -> None:
    execution_id = await fake_service.run_report()
    assert exectrack_events.types_for(execution_id) == LIFECYCLE
    assert exectrack_events.started


async def test_a_failed_run_is_captured_with_its_error() -> None:
    with captured_events() as pub, pytest.raises(fake_service.ScanFailed) as caught:
        await fake_service.run_report(fail=True)
    execution_id = str(caught.value)
    assert pub.types_for(execution_id) == [T.PENDING, T.STARTED, T.PROGRESS, T.FAILED]


def test_a_sync_service_is_captured_through_its_sync_publisher() -> None:
    with captured_events() as pub:
        execution_id = fake_service.run_report_sync(rows=2)
    assert pub.types_for(execution_id) == LIFECYCLE
    assert pub.events_for(execution_id)[2].data.records_processed == 2


async def test_the_real_publisher_is_back_after_the_block_even_on_error(
    kafka_is_nowhere: str,
) -> None:
    bound = Publisher(KafkaSettings(bootstrap_servers=kafka_is_nowhere))

    async def broken_test_body() -> None:
        await bound.start()  # captured: no connection, no StartFailed
        await bound.publish_raw(b"k", b"not an event")
        raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError), captured_events() as pub:  # the error crosses it
        await broken_test_body()
    assert len(pub.messages) == 1
    assert len(pub.dead_letters) == 1  # the consumer would dead-letter it
    assert not pub.started
    assert Capture._stack == []
    with pytest.raises(RuntimeError, match="not started"):  # unbound: counts as stopped
        await bound.publish_raw(b"k", b"late")
    assert len(pub.messages) == 1
    with pytest.raises(StartFailed, match=kafka_is_nowhere):  # a new start() is real again
        await fake_service.run_report()


async def test_a_publisher_started_before_the_block_stays_real() -> None:
    outside = Publisher()
    with pytest.raises(StartFailed):
        await outside.start()  # real: Kafka is nowhere
    with captured_events() as pub:
        await outside.start()  # not started before: now captured
        await outside.publish_raw(b"k", b"v")
        await outside.stop()
        with pytest.raises(RuntimeError, match="not started"):  # stop() unbinds it
            await outside.publish_raw(b"k", b"v2")
    assert [m.value for m in pub.messages] == [b"v"]


async def test_nested_captures_the_innermost_receives_then_the_outer_again() -> None:
    with captured_events() as outer:
        first = await fake_service.run_report()
        with captured_events() as inner:
            second = await fake_service.run_report()
        third = await fake_service.run_report()
    assert outer.types_for(first) == outer.types_for(third) == LIFECYCLE
    assert outer.types_for(second) == []
    assert len(outer.events) == 2 * len(LIFECYCLE)
    assert inner.types_for(second) == LIFECYCLE
    assert len(inner.events) == len(LIFECYCLE)


async def test_concurrent_tasks_share_the_capture_entered_last() -> None:
    with captured_events() as pub:
        ids = await asyncio.gather(*(fake_service.run_report(rows=n) for n in range(5)))
    assert len(set(ids)) == 5
    for execution_id in ids:
        assert pub.types_for(execution_id) == LIFECYCLE


async def test_captures_may_end_in_any_order_across_tasks() -> None:
    first_in = asyncio.Event()
    second_in = asyncio.Event()
    first_out = asyncio.Event()

    async def first() -> InMemoryPublisher:
        with captured_events() as pub:
            first_in.set()
            await second_in.wait()
        first_out.set()
        return pub

    async def second() -> tuple[InMemoryPublisher, str]:
        await first_in.wait()
        with captured_events() as pub:
            second_in.set()
            await first_out.wait()  # the first capture ended while this one is active
            execution_id = await fake_service.run_report()
        return pub, execution_id

    one, (two, execution_id) = await asyncio.gather(first(), second())
    assert one.events == []
    assert two.types_for(execution_id) == LIFECYCLE
    assert Capture._stack == []


async def test_a_given_in_memory_publisher_is_used_with_its_failures() -> None:
    memory = InMemoryPublisher(topic="svc.events")
    memory.fail_next(1)
    with captured_events(memory) as pub:
        execution_id = await fake_service.run_report()
    assert pub is memory
    assert {m.topic for m in memory.messages} == {"svc.events"}
    # the injected failure took `pending` (logged by track, which goes on)
    assert memory.types_for(execution_id) == [T.STARTED, T.PROGRESS, T.COMPLETED]


async def test_a_publisher_rebound_to_a_later_capture_stays_with_it() -> None:
    """Captures of two tasks may end out of order: the first's end leaves the second's binding."""
    publisher = Publisher()
    first, second = captured_events(), captured_events()
    one = first.__enter__()
    await publisher.start()
    await publisher.stop()
    two = second.__enter__()
    await publisher.start()  # bound to the second, the innermost now
    first.__exit__(None, None, None)  # ends before the second: the binding stays
    await publisher.publish_raw(b"k", b"to two")
    second.__exit__(None, None, None)
    with pytest.raises(RuntimeError, match="not started"):
        await publisher.publish_raw(b"k", b"after both")
    assert one.messages == []
    assert [m.value for m in two.messages] == [b"to two"]
