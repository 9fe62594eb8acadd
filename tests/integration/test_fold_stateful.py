"""A stateful property test of the real write path (issue #13, "Beyond the listed inputs").

The promise under test (CONTRACT.md, "The fold", "Retention", "Invalid input"):
the ``report_executions`` table always equals the fold of the SET of valid
events written (tests/support/oracle.py, written from the contract's words),
minus purged executions; invalid records are dead-lettered, each with its
reason, and nothing else is; and a replay of the whole stream into an empty
database verifies against the live table.

What runs for real
    Records (``tests/support/stateful.Record``: topic, partition, offset,
    timestamp, key, value, headers, as aiokafka hands them over) go through
    ``exectrack.consumer.ingest.decode.decode_yielding`` (parse, dead-letter) and
    ``exectrack.consumer.ingest.writer.BatchWriter.write`` on the real MariaDB: the consumer's
    own batch path without the broker, so a Hypothesis step costs milliseconds.
    The purge is ``exectrack.consumer.retention.purge.purge`` with a clock. At the end of every
    example the whole delivered stream is published to a fresh real topic
    (12 partitions), ``exectrack.consumer.replay.rebuild.replay`` rebuilds it into a fresh
    database (dead letters re-sent to a fresh dead-letter topic) and
    ``exectrack.consumer.replay.verify.verify`` compares it with the live table.

The state machine (``WritePath``)
    - ``emit``: new events join the pending pool: valid events of 4 executions
      (every type, random fields from small domains so that ties and winners
      change, report ids that vary inside an execution, one report on hold),
      in structured or binary mode; byte-identical re-sends of a valid record
      emitted before; re-sends of a valid event in the other mode (other bytes, same
      event); conflicting duplicates (an earlier event's id, type, sequence and
      time with other content); invalid records (not JSON, not a CloudEvent,
      unknown type, key != execution_id, a naive timestamp in the value or in a
      ``ce_time`` header, a field out of its range, a record without a value).
    - ``deliver``: a random subset of the pending pool in a random order, split
      into 1-3 batches written one after the other.
    - ``restart``: a new engine and a new BatchWriter (no in-memory state kept:
      the next batch merges from what the table holds, ``fold_keys``).
    - ``purge``: ``purge`` at a clock that only moves forward (a purge runs at
      wall-clock time), from 30 days ago to now.
    Times sit on a grid of whole hours 30 minutes off the wall clock at the
    start (events in the past, explicit ``retention_until`` in the past and the
    future, policy periods of whole days), so no value is within 30 minutes of
    "now" while the test runs: the replay's sweep and ``verify`` (which use
    the wall clock) see every row on a definite side of it.

Invariants, after every step
    - the table == ``expected_row(events written, policy period)`` for every
      execution that has events written and no tombstone; an event delivered
      while its execution has a tombstone writes nothing (CONTRACT.md,
      "Retention": purged executions stay purged);
    - ``purged_executions`` == the executions the model purged (a purge at
      clock C tombstones exactly the rows with ``retention_until <= C`` whose
      execution and report are not on hold);
    - ``reports`` and ``users`` hold exactly the reports and users named by
      the valid events delivered (placeholders, CONTRACT.md "Invalid input");
    - every batch: its dead letters are exactly its invalid records
      (partition, offset, reason), the writer refused nothing, and it skipped
      exactly the batch's tombstoned executions; every purge deleted exactly
      the model's rows and expired no tombstone.
    At the end of an example: the rebuilt table == the fold of ALL valid
    events (tombstoned or not) minus the replay's final sweep, its tombstones
    == what the sweep deleted; the dead-letter topic holds exactly the invalid
    records (source partition and offset as published, and their reasons);
    ``verify`` reports no difference but one, predicted exactly by the model:
    an execution the live purge tombstoned whose later events moved its
    ``retention_until`` past the replay's sweep is "extra in rebuilt"
    (docs/reliability/state.md, finding 2: CONTRACT.md promises agreement here).

Runtime: ``EXECTRACK_PROPERTY_SCALE=quick`` (the default, part of ``make
test``): 100 examples of up to 50 steps, about 65 s on the 2-core machine;
``long``: 600 examples of up to 80 steps, about 10 minutes at that rate (on demand,
docs/reliability/state.md). ``EXECTRACK_PROPERTY_SHRINK=0`` reports the first
failing example unshrunk. No Hypothesis deadline (tests/conftest.py's
profile). Hypothesis's stateful runner has no asyncio support: the test runs
its own event loop and the rules drive it with ``run_until_complete``.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections import Counter
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, TypeVar

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from hypothesis import HealthCheck, Phase, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from exectrack.consumer.db.engine import create_engine
from exectrack.consumer.ingest.decode import decode_yielding
from exectrack.consumer.ingest.writer import BatchWriter
from exectrack.consumer.replay.rebuild import ReplayOptions, replay
from exectrack.consumer.replay.verify import verify
from exectrack.consumer.retention.purge import PurgeOptions, purge
from exectrack.consumer.service import ConsumerService
from exectrack.consumer.settings import DatabaseSettings
from exectrack.producer.events import EventType, execution_event, kafka_headers, to_json
from tests.conftest import TABLES, Topics, create_database, database_url_for, drop_database
from tests.stack import Services
from tests.support.expect import dead_lettered
from tests.support.kafka import publish, read_all, wait_for_leaders
from tests.support.service import consumer_settings, run_until, table
from tests.support.stateful import (
    PARTITIONS,
    POLICY,
    TOPIC,
    World,
    emissions,
)

SCALE = os.environ.get("EXECTRACK_PROPERTY_SCALE", "quick")
if SCALE not in ("quick", "long"):
    raise ValueError(f"EXECTRACK_PROPERTY_SCALE={SCALE!r}: use quick or long")
EXAMPLES, STEPS = (600, 80) if SCALE == "long" else (100, 50)
# EXECTRACK_PROPERTY_SHRINK=0: report the first failing example unshrunk (mutation runs:
# shrinking replays examples on the real services, minutes per failure)
SHRINK = os.environ.get("EXECTRACK_PROPERTY_SHRINK", "1") != "0"
T = TypeVar("T")
COVERAGE: Counter[str] = Counter()  # summed over the examples of a run (printed at the end)


class WritePath(RuleBasedStateMachine):
    """One example: a live database, a stream delivered in batches; see the module docstring."""

    loop: ClassVar[asyncio.AbstractEventLoop]
    stack: ClassVar[Services]
    live_url: ClassVar[str]

    def __init__(self) -> None:
        super().__init__()
        self.world = World.start()
        self.engine: AsyncEngine | None = None
        self.writer: BatchWriter | None = None

    def run(self, work: Awaitable[T]) -> T:
        return self.loop.run_until_complete(work)

    # ------------------------------------------------------------- rules
    @initialize()
    def empty_tables(self) -> None:
        self.run(self._empty_tables())
        self._connect()

    async def _empty_tables(self) -> None:
        engine = create_engine(DatabaseSettings(), url=self.live_url)
        try:
            async with engine.begin() as conn:
                await conn.execute(text("SET FOREIGN_KEY_CHECKS = 0"))
                for name in TABLES:
                    await conn.execute(text(f"TRUNCATE TABLE {name}"))
                await conn.execute(text("SET FOREIGN_KEY_CHECKS = 1"))
        finally:
            await engine.dispose()

    def _connect(self) -> None:
        self.engine = create_engine(DatabaseSettings(), url=self.live_url)
        self.writer = BatchWriter(self.engine, POLICY, retry_initial_s=0.01)

    @rule(new=emissions())
    def emit(self, new: Any) -> None:
        self.world.emit(new)

    @precondition(lambda self: bool(self.world.pending))
    @rule(data=st.data())
    def deliver(self, data: st.DataObject) -> None:
        pending = self.world.pending
        chosen = data.draw(st.lists(st.sampled_from(range(len(pending))), unique=True, min_size=1))
        cuts = sorted(data.draw(st.sets(st.integers(1, len(chosen)), max_size=2)) - {len(chosen)})
        batches = [chosen[a:b] for a, b in zip([0, *cuts], [*cuts, len(chosen)], strict=True)]
        records = {i: pending[i] for i in chosen}
        for indexes in batches:
            self.run(self._write([records[i] for i in indexes]))
        self.world.pending = [p for i, p in enumerate(pending) if i not in records]

    async def _write(self, emitted: list[Any]) -> None:
        assert self.writer is not None
        delivered = [self.world.deliver(e) for e in emitted]
        fetched: dict[TopicPartition, list[Any]] = {}
        for record, _ in delivered:
            fetched.setdefault(TopicPartition(TOPIC, record.partition), []).append(record)
        batch = await decode_yielding(fetched)
        expected_dead = {(r.partition, r.offset): reason for r, reason in delivered if reason}
        assert {(d.partition, d.offset): d.reason for d in batch.dead_letters} == expected_dead
        tombstoned_in_batch = batch.executions.keys() & self.world.tombstones
        outcome = await self.writer.write(batch.executions, batch.definitions)
        assert (outcome.errors, outcome.poisoned_executions) == ({}, [])
        assert outcome.skipped_purged == len(tombstoned_in_batch)
        assert outcome.written == len(batch.executions) - len(tombstoned_in_batch)

    @rule()
    def restart(self) -> None:
        assert self.engine is not None
        self.run(self.engine.dispose())
        self._connect()

    @rule(hours=st.integers(0, 24 * 12))
    def purge(self, hours: int) -> None:
        assert self.engine is not None
        clock = self.world.advance_clock(hours)
        summary = self.run(
            purge(self.engine, POLICY, PurgeOptions(chunk_size=3), clock=lambda: clock)
        )
        purged = self.world.purge(clock)
        assert (summary.outcome, summary.deleted) == ("success", len(purged))
        assert summary.tombstones_expired == 0  # clocks span < EXECTRACK_TOMBSTONE_TTL_S

    # ------------------------------------------------------------- invariants
    @invariant()
    def table_is_the_fold_of_the_set(self) -> None:
        if self.engine is None:
            return
        rows, tombstones, reports, users = self.run(self._read())
        assert tombstones == self.world.tombstones
        # placeholders: every report and user named by a valid event (CONTRACT.md, "Invalid input")
        assert (reports, users) == self.world.named()
        expected = self.world.live_rows()
        assert rows.keys() == expected.keys()
        for eid, row in rows.items():
            assert row == expected[eid], eid

    async def _read(self) -> tuple[dict[str, dict[str, Any]], set[str], set[str], set[int]]:
        assert self.engine is not None
        async with self.engine.connect() as conn:
            found = [
                set((await conn.execute(text(query))).scalars())
                for query in (
                    "SELECT execution_id FROM purged_executions",
                    "SELECT report_id FROM reports",
                    "SELECT id FROM users",
                )
            ]
        return await table(self.engine), *found  # type: ignore[return-value]

    # ------------------------------------------------------------- the end
    def teardown(self) -> None:
        try:
            if self.engine is not None and self.world.delivered:
                self.run(self._replay_and_verify())
        finally:
            if self.engine is not None:
                self.run(self.engine.dispose())

    async def _replay_and_verify(self) -> None:
        suffix = uuid.uuid4().hex[:10]
        topics = Topics(
            bootstrap=self.stack.kafka_bootstrap,
            topic=f"exectrack-test-{suffix}",
            dlq=f"exectrack-test-{suffix}.dlq",
            group_id=f"exectrack-test-{suffix}",
            partitions=PARTITIONS,
        )
        name = f"exectrack_test_{uuid.uuid4().hex[:12]}"
        admin = AIOKafkaAdminClient(bootstrap_servers=topics.bootstrap)
        await admin.start()
        try:
            await admin.create_topics([
                NewTopic(topics.topic, num_partitions=PARTITIONS, replication_factor=1),
                NewTopic(topics.dlq, num_partitions=1, replication_factor=1),
            ])  # fmt: skip
            await wait_for_leaders(topics.bootstrap, [topics.topic, topics.dlq])
            await create_database(self.stack.database_url, name)
            try:
                await self._replay_into(topics, database_url_for(self.stack.database_url, name))
            finally:
                await drop_database(self.stack.database_url, name)
        finally:
            try:
                await admin.delete_topics([topics.topic, topics.dlq])
            finally:
                await admin.close()

    async def _replay_into(self, topics: Topics, target: str) -> None:
        stream = self.world.delivered
        sent = await publish(
            topics.bootstrap, topics.topic, [(r.key, r.value, r.headers) for r, _ in stream]
        )
        settings_ = consumer_settings(topics, self.live_url, retention=POLICY, batch_max_records=7)
        summary = await replay(settings_, ReplayOptions(target, dead_letter=True))
        invalid = {
            (s.partition, s.offset): reason
            for s, (_, reason) in zip(sent, stream, strict=True)
            if reason
        }
        assert summary.events_read == len(stream)
        assert summary.invalid == summary.dead_lettered == len(invalid)
        assert dead_lettered(await read_all(topics.bootstrap, topics.dlq)) == invalid

        rebuilt_engine = create_engine(DatabaseSettings(), url=target)
        try:
            rebuilt = await table(rebuilt_engine)
            async with rebuilt_engine.connect() as conn:
                found = await conn.execute(text("SELECT execution_id FROM purged_executions"))
                tombstones = set(found.scalars())
        finally:
            await rebuilt_engine.dispose()
        assert (rebuilt, tombstones) == self.world.rebuilt(summary.captured_at)
        report = await verify(DatabaseSettings(), self.live_url, target, max_shown=100)
        executions, reports = report.tables
        # The one difference allowed, and required: an execution the live purge
        # tombstoned whose later events moved its retention_until past the replay's
        # sweep (or off, to never): the replay folds every event, the live table
        # stays purged. CONTRACT.md promises agreement; docs/reliability/state.md, finding 2.
        resurrected = self.world.resurrected(summary.captured_at)
        for what, count in self.world.coverage(summary.captured_at, resurrected).items():
            COVERAGE[what] += count
            if count:
                event(what)
        extra = {d.key for d in executions.shown if d.kind == "extra"}
        assert (executions.missing, executions.differing, reports.differences) == (0, 0, 0), (
            report.render()
        )
        assert (extra, executions.extra) == (resurrected, len(resurrected)), report.render()


async def test_every_report_and_user_an_event_names_gets_a_placeholder(
    db: AsyncEngine, database_url: str, topics: Topics
) -> None:
    """The state machine's first finding, as one input on the real broker: in one batch,
    a ``pending`` naming report ``r-old`` and user 7, then the ``completed`` (greater K)
    naming ``r-new`` and user 8; after a purge, a late ``progress`` of the purged
    execution naming ``r-late`` and user 9. Every named report and user has its
    placeholder (CONTRACT.md, "Invalid input"): before, only the batch fold's winner
    got one (``r-new``, 8), so the reports table depended on batch boundaries and a
    replay's ``verify`` found ``r-old`` extra in the rebuilt table."""
    old = datetime.now(UTC).replace(microsecond=0) - timedelta(days=400)
    common: dict[str, Any] = {"execution_id": "p-1", "source": "/tests"}
    pending = execution_event(
        EventType.PENDING, **common, report_id="r-old", started_by=7, sequence=0, time=old
    )
    completed = execution_event(
        EventType.COMPLETED, **common, report_id="r-new", started_by=8, sequence=2,
        time=old + timedelta(hours=1),
    )  # fmt: skip
    late = execution_event(
        EventType.PROGRESS, **common, report_id="r-late", started_by=9, sequence=1,
        time=old + timedelta(minutes=30),
    )  # fmt: skip
    messages = [(e.key, to_json(e), kafka_headers(e)) for e in (pending, completed)]
    await publish(topics.bootstrap, topics.topic, messages)
    settings_ = consumer_settings(topics, database_url)
    await run_until(ConsumerService(settings_, engine=db), 2)
    assert (await table(db))["p-1"]["report_id"] == "r-new"
    assert (await purge(db, settings_.retention)).deleted == 1  # completed 400 days ago
    await publish(topics.bootstrap, topics.topic, [(late.key, to_json(late), kafka_headers(late))])
    await run_until(ConsumerService(settings_, engine=db), 1)

    assert await table(db) == {}  # purged: the late event wrote no row
    async with db.connect() as conn:
        reports = set((await conn.execute(text("SELECT report_id FROM reports"))).scalars())
        users = set((await conn.execute(text("SELECT id FROM users"))).scalars())
    assert (reports, users) == ({"r-old", "r-new", "r-late"}, {7, 8, 9})


# generating takes ~65 s (quick) or ~10 min (long); a failure adds up to Hypothesis's
# 300 s of shrinking plus the example being replayed: room for the shrunk report
@pytest.mark.timeout(3600 if SCALE == "long" else 900)
def test_table_is_the_fold_of_the_valid_events_seen(stack: Services, database_url: str) -> None:
    """Runs the WritePath state machine (module docstring) on its own event loop."""
    loop = asyncio.new_event_loop()
    WritePath.loop, WritePath.stack, WritePath.live_url = loop, stack, database_url
    try:
        run_state_machine_as_test(
            WritePath,
            settings=settings(
                max_examples=EXAMPLES,
                stateful_step_count=STEPS,
                deadline=None,
                phases=list(Phase) if SHRINK else [Phase.explicit, Phase.reuse, Phase.generate],
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            ),
        )
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
        print(f"\nstateful write path ({SCALE}):", dict(COVERAGE))
