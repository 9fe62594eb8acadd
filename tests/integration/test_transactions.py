"""Kafka transactions on the real broker: only committed records count (CONTRACT.md, Transport).

A transactional producer (aiokafka ``transactional_id``, as a Java or librdkafka
service with exactly-once on) writes its records to the log before it decides;
an aborted transaction's records stay in the log. Every reader of exectrack reads
``read_committed`` (exectrack.consumer.kafka.reader), so: a committed transaction is
applied; an aborted one never happened (no row, no field, no dead letter); an
open one holds its partition at the last stable offset until it is decided, and
``exectrack_transaction_held_records`` shows it.

Records go to an explicit partition so that interleavings on ONE partition are
exactly what the test says (the consumer does not check key -> partition).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from exectrack.consumer.replay.rebuild import ReplayOptions, replay
from exectrack.consumer.retention.policy import RetentionPolicy
from exectrack.consumer.service import ConsumerService
from exectrack.producer.events import (
    CloudProvider,
    EventType,
    ExecutionEvent,
    ReportCategory,
    ReportType,
    kafka_headers,
    report_defined_event,
    to_json,
)
from exectrack.producer.events import execution_event as make
from tests.conftest import Topics, create_database, database_url_for, drop_database
from tests.stack import Services
from tests.support.kafka import committed_lag, read_all
from tests.support.oracle import expected_row
from tests.support.service import consumer_settings, rows_of, run_until, table

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)  # recent: nothing expired
PERIODS = RetentionPolicy().default
Message = tuple[bytes, bytes, list[tuple[str, bytes]]]
POISON: Message = (b"t-poison", b"{not json", [])


def ev(type_: EventType, execution: str, n: int, **fields: Any) -> ExecutionEvent:
    fields.setdefault("report_id", "txn-report")
    return make(
        type_, execution_id=execution, source="/tests/txn", id=f"{execution}-{n}",
        time=T0 + timedelta(seconds=n), sequence=n, **fields,
    )  # fmt: skip


def message(event: ExecutionEvent) -> Message:
    return event.key, to_json(event), kafka_headers(event)


def row_of(events: Sequence[ExecutionEvent]) -> dict[str, Any]:
    """The oracle's row for the (committed) events of one execution."""
    status = expected_row(list(events), None)["status"]
    return expected_row(list(events), PERIODS.get(status))


@contextlib.asynccontextmanager
async def producer(topics: Topics, name: str | None = None, **options: Any) -> AsyncIterator[Any]:
    """A started producer; transactional (``transactional_id`` per test) when ``name``."""
    if name is not None:
        options["transactional_id"] = f"{topics.topic}-{name}"
    client = AIOKafkaProducer(
        bootstrap_servers=topics.bootstrap, acks="all", enable_idempotence=True, **options
    )
    await client.start()
    try:
        yield client
    finally:
        with contextlib.suppress(KafkaError):  # a producer whose transaction the broker aborted
            await client.stop()


async def send(client: Any, topics: Topics, partition: int, *messages: Message) -> None:
    """Append ``messages`` to ``partition`` in this order, each acknowledged before the next."""
    for key, value, headers in messages:
        await client.send_and_wait(
            topics.topic, value=value, key=key, headers=headers, partition=partition
        )


def gauge(name: str, topics: Topics, partition: int) -> float | None:
    labels = {"topic": topics.topic, "partition": str(partition)}
    return REGISTRY.get_sample_value(name, labels)


async def until(condition: Any, what: str, timeout_s: float = 60) -> None:
    try:
        async with asyncio.timeout(timeout_s):
            while not await condition():
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


@pytest.fixture
async def scratch(stack: Services) -> AsyncIterator[str]:
    """A fresh, empty database (no tables) for a replay target; dropped at teardown."""
    name = f"exectrack_test_{uuid.uuid4().hex[:12]}"
    await create_database(stack.database_url, name)
    try:
        yield database_url_for(stack.database_url, name)
    finally:
        await drop_database(stack.database_url, name)


@contextlib.asynccontextmanager
async def running(service: ConsumerService) -> AsyncIterator[None]:
    """The service's loop in the background; stopped (and its failure raised) on exit."""
    task = asyncio.create_task(service.run())
    try:
        yield
    finally:
        service.request_stop()
        await asyncio.wait_for(task, 30)


# ------------------------------------------------------------ (a) commit, (b) abort


async def test_a_committed_transaction_is_applied(
    db: AsyncEngine, database_url: str, topics: Topics
) -> None:
    events = [
        ev(EventType.PENDING, "t-ok", 0, trigger_type="api", started_by=7),
        ev(EventType.STARTED, "t-ok", 1, start_time=T0 + timedelta(seconds=1)),
        ev(EventType.COMPLETED, "t-ok", 2, end_time=T0 + timedelta(seconds=2), records_processed=5),
    ]
    async with producer(topics, "a") as txn:
        await txn.begin_transaction()
        await send(txn, topics, 0, *map(message, events))
        await txn.commit_transaction()

    service = ConsumerService(consumer_settings(topics, database_url), engine=db)
    totals = await run_until(service, len(events))
    assert (totals.records, totals.dead_lettered) == (3, 0)
    assert await table(db) == {"t-ok": row_of(events)}
    # the committed offset is past the commit marker: no phantom lag of 1 after a transaction
    assert await committed_lag(topics.bootstrap, topics.topic, topics.group_id) == 0


async def test_b_an_aborted_transaction_never_happened(
    db: AsyncEngine, database_url: str, topics: Topics
) -> None:
    before = [ev(EventType.PENDING, "t-run", 0), ev(EventType.STARTED, "t-run", 1)]
    aborted_failed = ev(EventType.FAILED, "t-run", 5, error_details={"type": "Aborted"})
    ghost = [  # naming a report and a user nobody else names: no placeholder either
        ev(EventType.PENDING, "t-ghost", 0, report_id="ghost-report", started_by=99),
        ev(EventType.COMPLETED, "t-ghost", 3, report_id="ghost-report"),
    ]
    renamed = report_defined_event(
        source="/tests/txn", report_id="txn-report", version=9, name="Aborted name",
        report_type=ReportType.VPC_INVENTORY, category=ReportCategory.INFRASTRUCTURE,
        provider=CloudProvider.AWS, time=T0, id="def-aborted",
    )  # fmt: skip
    after = ev(EventType.PENDING, "t-after", 0)
    async with producer(topics) as plain, producer(topics, "b") as txn:
        await send(plain, topics, 2, *map(message, before))
        await txn.begin_transaction()  # one transaction over two partitions
        await send(txn, topics, 2, message(aborted_failed), POISON)
        await send(txn, topics, 11, (renamed.key, to_json(renamed), kafka_headers(renamed)))
        await send(txn, topics, 9, *map(message, ghost))  # 9 holds only aborted records
        await txn.abort_transaction()
        await send(plain, topics, 2, message(after))

    service = ConsumerService(consumer_settings(topics, database_url), engine=db)
    async with running(service):

        async def done() -> bool:
            lag = await committed_lag(topics.bootstrap, topics.topic, topics.group_id)
            return service.totals.records >= 3 and lag == 0

        # partition 9 gave no record: its offset moves past the aborted ones on an idle poll
        await until(done, "3 records read and every committed offset at its partition's end")
        await asyncio.sleep(1)  # more polls: anything (wrongly) handed over would be in now
        assert gauge("exectrack_consumer_lag_events", topics, 9) == 0
    rows = await table(db)
    assert rows == {"t-run": row_of(before), "t-after": row_of([after])}
    assert (rows["t-run"]["status"], rows["t-run"]["error_details"]) == ("running", None)
    totals = service.totals
    assert (totals.records, totals.dead_lettered) == (3, 0)  # the 5 aborted were never read
    async with db.connect() as conn:
        reports = (await conn.execute(text("SELECT report_id, name, version FROM reports"))).all()
        users = (await conn.execute(text("SELECT id FROM users"))).scalars().all()
    assert (reports, users) == ([("txn-report", "txn-report", 1)], [])  # a placeholder only
    assert await read_all(topics.bootstrap, topics.dlq) == []  # the aborted poison: no dead letter
    on_topic = await read_all(topics.bootstrap, topics.topic)  # the test helper reads committed
    assert [r.value for r in on_topic] == [to_json(e) for e in [*before, after]]
    assert await committed_lag(topics.bootstrap, topics.topic, topics.group_id) == 0


# ------------------------------------------------------------ (c) interleaving, (d) replay


async def interleave(topics: Topics, partition: int) -> dict[str, list[ExecutionEvent]]:
    """Two transactional producers and a plain one write to ONE partition, transactions
    overlapping, one producer committing, aborting and committing in a row, and the
    partition ending with an aborted transaction; returns the committed events by
    execution (the oracle's input)."""
    x = [ev(EventType.PENDING, "t-x", 0, trigger_type="manual"), ev(EventType.STARTED, "t-x", 1)]
    x_done = ev(EventType.COMPLETED, "t-x", 4, records_processed=7)
    y = [ev(EventType.PENDING, "t-y", 0), ev(EventType.STARTED, "t-y", 1, records_processed=1)]
    z = [ev(EventType.PENDING, "t-z", 0, trigger_type="webhook"), ev(EventType.STARTED, "t-z", 1)]
    aborted = [
        ev(EventType.FAILED, "t-x", 5, error_details={"type": "Aborted"}),
        ev(EventType.COMPLETED, "t-y", 9, result_summary={"aborted": True}),
        ev(EventType.PROGRESS, "t-x", 3, records_processed=99, output_location="s3://aborted"),
        ev(EventType.FAILED, "t-z", 2, error_details={"type": "Aborted"}),
        ev(EventType.PENDING, "t-never", 0),
        ev(EventType.COMPLETED, "t-z", 8, result_summary={"aborted": 2}),
        ev(EventType.CANCELLED, "t-y", 9),
    ]
    async with (
        producer(topics) as plain,
        producer(topics, "c-a") as a,
        producer(topics, "c-b") as b,
    ):
        await a.begin_transaction()
        await send(a, topics, partition, message(x[0]))
        await b.begin_transaction()
        await send(b, topics, partition, message(aborted[0]))
        await send(plain, topics, partition, message(y[0]))
        await send(a, topics, partition, message(x[1]))
        await send(b, topics, partition, message(aborted[1]), POISON)
        await a.commit_transaction()
        await send(b, topics, partition, message(aborted[2]))
        await b.abort_transaction()
        await a.begin_transaction()
        await send(a, topics, partition, message(x_done), message(z[0]))
        await b.begin_transaction()
        await send(b, topics, partition, message(aborted[3]), message(aborted[4]))
        await a.commit_transaction()
        await b.abort_transaction()
        await send(plain, topics, partition, message(y[1]))
        # one producer: committed, aborted, committed in a row (kafka4beam/brod#659)
        await a.begin_transaction()
        await send(a, topics, partition, message(aborted[5]))
        await a.abort_transaction()
        await a.begin_transaction()
        await send(a, topics, partition, message(z[1]))
        await a.commit_transaction()
        # the partition ends with an aborted transaction: no record after its marker
        await b.begin_transaction()
        await send(b, topics, partition, message(aborted[6]))
        await b.abort_transaction()
    return {"t-x": [*x, x_done], "t-y": y, "t-z": z}


async def consume_all(service: ConsumerService, topics: Topics, records: int) -> None:
    """Run ``service`` until it read ``records`` and the group's committed offsets reached
    every partition's end (the LSO), then one more second: anything (wrongly) handed
    over, an aborted record, would be in by then."""
    async with running(service):

        async def done() -> bool:
            lag = await committed_lag(topics.bootstrap, topics.topic, topics.group_id)
            return service.totals.records >= records and lag == 0

        await until(done, f"{records} records read and every committed offset at the end")
        await asyncio.sleep(1)


async def test_c_interleaved_transactions_on_one_partition_fold_only_the_committed(
    db: AsyncEngine, database_url: str, topics: Topics
) -> None:
    committed = await interleave(topics, partition=5)
    service = ConsumerService(consumer_settings(topics, database_url), engine=db)
    await consume_all(service, topics, 7)
    totals = service.totals
    assert await table(db) == {eid: row_of(events) for eid, events in committed.items()}
    assert (totals.records, totals.dead_lettered) == (7, 0)
    assert await read_all(topics.bootstrap, topics.dlq) == []
    assert await committed_lag(topics.bootstrap, topics.topic, topics.group_id) == 0


async def test_d_replay_of_a_topic_with_aborted_transactions_gives_the_same_rows(
    db: AsyncEngine, database_url: str, topics: Topics, scratch: str
) -> None:
    committed = await interleave(topics, partition=7)
    async with producer(topics, "d-only-aborted") as txn:  # partition 8: nothing committed
        await txn.begin_transaction()
        await send(txn, topics, 8, message(ev(EventType.PENDING, "t-void", 0)), POISON)
        await txn.abort_transaction()
    settings = consumer_settings(topics, database_url)
    await consume_all(ConsumerService(settings, engine=db), topics, 7)
    live = await table(db)
    assert live == {eid: row_of(events) for eid, events in committed.items()}

    target = scratch
    options = ReplayOptions(target, dead_letter=True)  # would re-send an aborted poison
    summary = await replay(settings, options)  # ends: positions step over aborted tails
    assert await rows_of(target) == live
    counts = (summary.events_read, summary.applied, summary.invalid, summary.dead_lettered)
    assert counts == (7, 7, 0, 0)
    assert (summary.end_offsets[7], summary.end_offsets[8]) == (22, 3)  # records + markers
    assert await read_all(topics.bootstrap, topics.dlq) == []


async def test_d_replay_stops_at_the_last_stable_offset_of_an_open_transaction(
    database_url: str, topics: Topics, scratch: str
) -> None:
    """The end offsets a replay captures are last stable offsets: it does not wait for an
    undecided transaction, nor read what it holds (the live consumer gets those)."""
    done = ev(EventType.PENDING, "t-done", 0)
    undecided = ev(EventType.FAILED, "t-undecided", 2, error_details={"type": "Open"})
    held = ev(EventType.PENDING, "t-held", 0)
    async with producer(topics) as plain, producer(topics, "d-open") as txn:
        await send(plain, topics, 0, message(done))
        await send(plain, topics, 3, message(done))  # a duplicate: offset 0 of partition 3
        await txn.begin_transaction()
        await send(txn, topics, 3, message(undecided))  # offset 1: the LSO of partition 3
        await send(plain, topics, 3, message(held))  # offset 2
        summary = await replay(consumer_settings(topics, database_url), ReplayOptions(scratch))
        await txn.abort_transaction()
    assert (summary.end_offsets[0], summary.end_offsets[3]) == (1, 1)
    assert (summary.events_read, summary.applied) == (2, 2)
    assert await rows_of(scratch) == {"t-done": row_of([done])}


# ------------------------------------------------------------ (e) an open transaction


async def test_e_an_open_transaction_holds_its_partition_until_decided(
    db: AsyncEngine, database_url: str, topics: Topics
) -> None:
    """Records after an undecided transaction wait at the last stable offset, whoever wrote
    them; the held gauge counts them while the lag gauge (against the LSO) stays 0."""
    held_name, lag_name = "exectrack_transaction_held_records", "exectrack_consumer_lag_events"
    opened = ev(EventType.PENDING, "t-open", 0)
    later = [ev(EventType.PENDING, "t-later", 0), ev(EventType.COMPLETED, "t-later", 2)]
    doomed = ev(EventType.FAILED, "t-doomed", 2, error_details={"type": "Aborted"})
    behind = ev(EventType.PENDING, "t-behind", 0)
    service = ConsumerService(consumer_settings(topics, database_url), engine=db)
    async with running(service):
        async with (
            producer(topics) as plain,
            producer(topics, "e-commit") as committer,
            producer(topics, "e-abort") as aborter,
        ):
            await committer.begin_transaction()
            await send(committer, topics, 1, message(opened))
            await send(plain, topics, 1, *map(message, later))
            await aborter.begin_transaction()
            await send(aborter, topics, 4, message(doomed))
            await send(plain, topics, 4, message(behind))

            async def held() -> bool:
                return (gauge(held_name, topics, 1), gauge(held_name, topics, 4)) == (3, 2)

            await until(held, "the held gauges of partitions 1 and 4")
            await asyncio.sleep(1)  # several idle polls: still nothing may be applied
            assert await table(db) == {}
            assert (gauge(lag_name, topics, 1), gauge(lag_name, topics, 4)) == (0, 0)

            await committer.commit_transaction()

            async def applied() -> bool:
                return set(await table(db)) == {"t-open", "t-later"}

            await until(applied, "the rows of the committed transaction and what it held")
            await aborter.abort_transaction()

            async def all_in() -> bool:
                return len(await table(db)) == 3

            await until(all_in, "the record the aborted transaction held")
        rows = await table(db)
        assert rows == {
            "t-open": row_of([opened]),
            "t-later": row_of(later),
            "t-behind": row_of([behind]),
        }

        async def released() -> bool:
            return (gauge(held_name, topics, 1), gauge(held_name, topics, 4)) == (0, 0)

        await until(released, "the held gauges back at 0")
        assert service.totals.dead_lettered == 0


async def test_e_the_broker_aborts_a_transaction_left_open_past_its_timeout(
    db: AsyncEngine, database_url: str, topics: Topics
) -> None:
    """A producer that dies inside a transaction holds the partition until the broker
    aborts it (transaction.timeout.ms, checked every
    transaction.abort.timed.out.transaction.cleanup.interval.ms, 10 s by default)."""
    stranded = ev(EventType.FAILED, "t-stranded", 2, error_details={"type": "Stranded"})
    behind = [ev(EventType.PENDING, "t-waits", 0), ev(EventType.STARTED, "t-waits", 1)]
    service = ConsumerService(consumer_settings(topics, database_url), engine=db)
    async with running(service):
        async with (
            producer(topics) as plain,
            producer(topics, "e-dies", transaction_timeout_ms=1000) as dies,
        ):
            await dies.begin_transaction()
            await send(dies, topics, 6, message(stranded))
            await send(plain, topics, 6, *map(message, behind))
            # the producer never decides: the broker's timeout does

            async def applied() -> bool:
                return set(await table(db)) == {"t-waits"}

            await until(applied, "the broker to abort the stranded transaction", timeout_s=60)
        assert await table(db) == {"t-waits": row_of(behind)}
        assert service.totals.dead_lettered == 0
