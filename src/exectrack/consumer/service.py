"""The consume loop: fetch a batch, decode, fold, write in one transaction, dead-letter, commit.

Offsets are committed only after the database transaction and the dead-letter
sends are acknowledged (or dropped by the explicit decision of exectrack.consumer.dlq.send,
when the dead-letter topic cannot carry them), so a crash at any point replays the
batch, which is harmless: the writes are idempotent merges (exectrack.consumer.ingest.fold). A
rebalance waits for the batch in flight (the listener takes the batch lock), so
partitions are handed over with their offsets committed.

The consumer reads ``read_committed`` (exectrack.consumer.kafka): aborted transactions'
records and transaction markers are skipped by the client, so the offset
committed for a partition is the consumer's position after the batch (past
any skipped offsets), not only the last record's offset + 1; an idle poll
commits positions that moved over skipped offsets alone. Otherwise the group's
committed offset would stay short of the end forever after a transaction, and
every lag tool would report records that do not exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from exectrack.consumer import metrics
from exectrack.consumer.db.engine import create_engine
from exectrack.consumer.dlq.letter import DeadLetter, consumer_identity
from exectrack.consumer.dlq.send import DeadLetterQueue
from exectrack.consumer.errors import Stopped, TopicMissing
from exectrack.consumer.health import serve_health
from exectrack.consumer.ingest.decode import Batch, decode_yielding, tune_gc
from exectrack.consumer.ingest.pipeline import WritePipeline
from exectrack.consumer.ingest.writer import BatchWriter
from exectrack.consumer.kafka import reader
from exectrack.consumer.retention.jobs import start_retention_jobs
from exectrack.consumer.settings import Settings
from exectrack.producer.admin import ensure_topics, missing_topics

log = structlog.get_logger(__name__)


def kafka_accelerated() -> bool:
    """Whether aiokafka parses record batches with its C extension (``_crecords``).

    Without it (no wheel for the platform, or ``AIOKAFKA_NO_EXTENSIONS`` set)
    reading is several times slower; the service still runs, and says so at start.
    """
    from aiokafka.record import default_records

    module: str = default_records.DefaultRecordBatch.__module__
    return module.startswith("aiokafka.record._crecords")


@dataclass
class Totals:
    """Counts since the service started (logged at stop, returned by ``run``).

    ``records``: fetched; ``applied``: records not dead-lettered (folded);
    ``dead_lettered``: letters acknowledged by the DLQ; ``written``: execution
    rows inserted or updated.
    """

    batches: int = 0
    records: int = 0
    applied: int = 0
    dead_lettered: int = 0
    written: int = 0
    dead_letters_dropped: int = 0  # the DLQ could not carry them (exectrack.consumer.dlq.send)


PARTITION_GAUGES = (metrics.CONSUMER_LAG, metrics.TRANSACTION_HELD, metrics.LAST_STABLE_OFFSET)


class _WaitForBatch(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, service: ConsumerService) -> None:
        self.service = service

    async def on_partitions_revoked(self, revoked: Any) -> None:
        async with self.service.batch_lock:  # the batch in flight commits first
            self.service.generation += 1  # batches fetched before this are stale (see _write)
            log.info("partitions_revoked", partitions=sorted(str(tp) for tp in revoked))
        for tp in revoked:  # another consumer reports their lag from now on
            self.service.committed.pop(tp, None)
            for gauge in PARTITION_GAUGES:
                with contextlib.suppress(KeyError):
                    gauge.remove(tp.topic, str(tp.partition))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        metrics.ASSIGNED_PARTITIONS.set(len(assigned))
        log.info("partitions_assigned", partitions=sorted(str(tp) for tp in assigned))


class ConsumerService:
    """Owns the Kafka consumer, the dead-letter producer and the batch writer.

    ``settings``: the whole configuration; ``engine``: the database to write to
    (default: one from ``settings.database`` with its ``db_idle_timeout_s``,
    disposed by ``stop()``). No I/O before ``start()``; ``run()`` does it all.
    """

    def __init__(self, settings: Settings, *, engine: AsyncEngine | None = None) -> None:
        self.settings = settings
        self.engine = engine or create_engine(
            settings.database, idle_timeout_s=settings.db_idle_timeout_s
        )
        self._owns_engine = engine is None
        self.writer = BatchWriter.of(self.engine, settings)
        self.batch_lock = asyncio.Lock()
        self.generation = 0  # bumped by every rebalance
        self.abandoned = False  # a batch was left uncommitted on stop: commit nothing after it
        self.committed: dict[TopicPartition, int] = {}  # what this consumer last committed
        self.pipeline = WritePipeline()
        self.stopping = asyncio.Event()
        self.totals = Totals()
        self.last_turn = time.monotonic()
        self.db_ok = False
        self.identity = consumer_identity(settings.group_id)
        self.consumer: AIOKafkaConsumer | None = None  # created by start(): no I/O before it
        self.dead_letters = DeadLetterQueue(
            settings.kafka,
            self.identity,
            missing_grace_s=settings.dlq_missing_grace_s,
            retry_initial_s=settings.db_retry_initial_s,
            retry_max_s=settings.db_retry_max_s,
        )

    def _running(self) -> AIOKafkaConsumer:
        if self.consumer is None:
            raise RuntimeError("ConsumerService.start() has not run")
        return self.consumer

    def _client(self) -> AIOKafkaConsumer:
        settings = self.settings
        kafka = settings.kafka.client_kwargs()
        return reader(
            group_id=settings.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_interval_ms=settings.max_poll_interval_ms,
            session_timeout_ms=settings.session_timeout_ms,
            heartbeat_interval_ms=max(1000, settings.session_timeout_ms // 3),
            max_partition_fetch_bytes=settings.max_partition_fetch_bytes,
            **kafka,
        )

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Create the topics (or check the event topic exists), join the group.

        Raises:
            TopicMissing: ``create_topics`` is off and the event topic does not
                exist. aiokafka would wait for it, logging at every metadata
                refresh, and fail after ~40 s; a missing topic with topics managed
                elsewhere is a mistake to fix (a name, a deploy order), so it ends
                the start in one line instead. The dead-letter topic is not
                checked here: a DLQ that cannot be written is the dead-letter
                path's failure (exectrack.consumer.dlq.letter), not a reason to stop reading.
        """
        kafka = self.settings.kafka
        if self.settings.create_topics:
            created = await ensure_topics(kafka)
            if created:
                log.info("topics_created", topics=created)
        elif await missing_topics(kafka, [kafka.topic]):
            raise TopicMissing(
                f"kafka topic {kafka.topic!r} does not exist on {kafka.bootstrap_servers} "
                "and EXECTRACK_CREATE_TOPICS=false: create it, correct EXECTRACK_KAFKA__TOPIC, "
                "or set EXECTRACK_CREATE_TOPICS=true"
            )
        await self.dead_letters.start()
        self.consumer = self._client()
        self.consumer.subscribe([self.settings.kafka.topic], listener=_WaitForBatch(self))
        await self.consumer.start()
        accelerated = kafka_accelerated()
        metrics.KAFKA_C_EXTENSION.set(int(accelerated))
        if not accelerated:
            log.warning(
                "kafka_c_extension_missing",
                hint="aiokafka reads records in pure Python here: install its binary wheel "
                "for this platform, or unset AIOKAFKA_NO_EXTENSIONS",
            )
        log.info(
            "consumer_started",
            kafka_c_extension=accelerated,
            topic=self.settings.kafka.topic,
            dlq_topic=self.settings.kafka.dlq_topic,
            dlq_limit_bytes=self.dead_letters.limit,
            group=self.settings.group_id,
            db=self.settings.database.display_url,
        )

    async def stop(self) -> None:
        """Leave the group and close everything (safe to call twice)."""
        try:
            if self.consumer is not None:
                await self.consumer.stop()
        finally:
            await self.dead_letters.stop()
            if self._owns_engine:
                await self.engine.dispose()
        log.info("consumer_stopped", **vars(self.totals))

    def request_stop(self) -> None:
        """Ask ``run`` to finish: the batch in flight is written and committed, then it returns."""
        self.stopping.set()

    async def run(self) -> Totals:
        """Start, consume until ``request_stop()``, write and commit the last batch, stop.

        Returns:
            The totals of the run.

        Raises:
            TopicMissing: see ``start``.
            Exception: what a batch raised that the writer does not retry (a
                permanent database failure); the batch in flight is rolled back and
                not committed, so it is read again on the next start.
        """
        try:
            await self.start()
        except BaseException:
            await self.stop()  # what started before the failure (the DLQ producer, the pool)
            raise
        try:
            while not self.stopping.is_set():
                await self.poll_once()
            await self.pipeline.settle()  # the last batch commits before we leave
        finally:
            await self.pipeline.cancel()  # after a failure: uncommitted, read again
            await self.stop()
        return self.totals

    # ------------------------------------------------------------ one batch
    def _keep_going(self) -> bool:
        self.last_turn = time.monotonic()  # retrying is alive, not stuck
        self.db_ok = False
        return not self.stopping.is_set()

    async def poll_once(self) -> None:
        """Fetch and decode a batch while the previous one is written, then hand it over.

        Waits up to ``fetch_timeout_ms`` for at most ``batch_max_records``
        records (aiokafka ``getmany``). An empty fetch settles the write in
        flight and commits positions that moved over skipped offsets only.

        Raises:
            RuntimeError: ``start()`` has not run.
            Exception: what the previous batch's write raised (``WritePipeline.submit``).
        """
        consumer = self._running()
        fetched = await consumer.getmany(
            timeout_ms=self.settings.fetch_timeout_ms,
            max_records=self.settings.batch_max_records,
        )
        self.last_turn = time.monotonic()
        if not fetched:
            await self.pipeline.settle()
            await self._commit_skipped()
            return
        generation, started = self.generation, time.perf_counter()
        positions = await self._positions(fetched)  # before any other fetch moves them
        batch = await decode_yielding(fetched)
        for tp, position in positions.items():  # past skipped aborted batches and markers
            batch.offsets[tp] = max(batch.offsets.get(tp, 0), position)
        await self.pipeline.submit(self._write(batch, generation, started))

    async def _positions(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        """The consumer's position (next offset to fetch) of ``partitions``.

        Right after ``getmany`` it is the last returned record's offset + 1, or
        beyond it when aborted batches or transaction markers followed it in the
        fetched data (read_committed skips them). A fetched partition has a valid
        position, so this does not wait; one revoked meanwhile is left out.
        """
        consumer = self._running()
        found = {}
        for tp in partitions:
            with contextlib.suppress(IllegalStateError):
                found[tp] = await consumer.position(tp)
        return found

    async def _commit_skipped(self) -> None:
        """On an idle poll: commit positions that moved past offsets no record was
        returned for (a stretch of aborted records, a transaction marker fetched
        after its records), then refresh the per-partition gauges.

        Only partitions with a fetch answer (a known high watermark) are looked at:
        their position is known, so nothing here waits on the broker but the commit.
        """
        consumer = self._running()
        async with self.batch_lock:  # no rebalance in between, nothing in flight (settled)
            if self.abandoned:
                return
            fetched = [tp for tp in consumer.assignment() if consumer.highwater(tp) is not None]
            positions = await self._positions(fetched)
            ahead = {tp: p for tp, p in positions.items() if p > self.committed.get(tp, -1)}
            if ahead:
                try:
                    await consumer.commit(ahead)
                except (CommitFailedError, IllegalStateError) as exc:
                    log.warning("commit_failed", error=str(exc))
                    return
                self.committed.update(ahead)
            self._gauge_partitions()

    async def _write(self, batch: Batch, generation: int, started: float) -> None:
        async with self.batch_lock:
            if self.abandoned:
                return  # committing a later batch would skip the abandoned one's records
            if generation != self.generation:
                # A rebalance ran between this batch's fetch and now. Its partitions were
                # revoked and assigned anew, from their committed offsets: whichever
                # consumer owns them now reads these records again. Writing them would be
                # harmless (merges are idempotent) but their commit would be refused.
                log.info("batch_dropped_after_rebalance", records=batch.records)
                return
            await self._process(batch, started)

    async def _process(self, batch: Batch, started: float) -> None:
        try:
            outcome = await self.writer.write(batch.executions, batch.definitions, self._keep_going)
        except Stopped:
            self.abandoned = True
            log.warning("batch_abandoned_on_stop", records=batch.records)
            return  # not committed: the next owner replays it
        self.db_ok = True
        dead = batch.dead_letters + batch.refused(outcome.errors)
        try:
            dropped = await self._dead_letter(dead)
        except Stopped:
            self.abandoned = True
            log.warning("batch_abandoned_on_stop", records=batch.records, waiting_for="dlq")
            return  # a dead letter is unsent: not committed, the next owner replays it
        consumer = self._running()
        try:
            await consumer.commit(batch.offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            # lost the partitions in a rebalance: their new owner reads the batch again
            log.warning("commit_failed", error=str(exc))
            return
        self.committed.update(batch.offsets)
        metrics.EXECUTIONS_SKIPPED_PURGED.inc(outcome.skipped_purged)
        self._account(batch, dead, dropped, outcome.written, outcome.skipped_purged, started)

    def _keep_sending(self) -> bool:
        self.last_turn = time.monotonic()  # retrying is alive, not stuck
        return not self.stopping.is_set()

    async def _dead_letter(self, dead: list[DeadLetter]) -> int:
        """Send the batch's dead letters (dlq.send); return how many were dropped."""
        if not dead:
            return 0
        delivery = await self.dead_letters.send(dead, self._keep_sending)
        for letter in delivery.sent:
            metrics.EVENTS_DEAD_LETTERED.labels(reason=letter.reason).inc()
            log.debug(  # the batch line counts them by reason; details are in the DLQ headers
                "dead_lettered",
                reason=letter.reason,
                error=letter.error[:200],
                topic=letter.topic,
                partition=letter.partition,
                offset=letter.offset,
            )
        return len(delivery.dropped)

    def _account(
        self,
        batch: Batch,
        dead: list[DeadLetter],
        dropped: int,
        written: int,
        purged: int,
        started: float,
    ) -> None:
        applied = batch.records - len(dead)
        t = self.totals
        t.batches += 1
        t.records += batch.records
        t.applied += applied
        t.dead_lettered += len(dead) - dropped
        t.dead_letters_dropped += dropped
        t.written += written
        elapsed = time.perf_counter() - started
        metrics.EVENTS_CONSUMED.inc(batch.records)
        metrics.EVENTS_APPLIED.inc(applied)
        metrics.EXECUTIONS_WRITTEN.inc(written)
        metrics.BATCH_SIZE.observe(batch.records)
        metrics.BATCH_SECONDS.observe(elapsed)
        metrics.LAST_BATCH.set(time.time())
        self._gauge_partitions()
        log.info(
            "batch",
            records=batch.records,
            executions=len(batch.executions),
            reports=len(batch.definitions),
            written=written,
            dead_lettered=len(dead) - dropped,
            dead_letter_reasons=dict(Counter(letter.reason for letter in dead)) or None,
            dead_letters_dropped=dropped or None,
            skipped_purged=purged,
            partitions=len(batch.offsets),
            ms=round(elapsed * 1000, 1),
        )

    def _gauge_partitions(self) -> None:
        """Lag, transaction-held records and last stable offset of every assigned partition.

        From the last fetch answer (aiokafka ``highwater``/``last_stable_offset``):
        lag = LSO - committed offset (what a read_committed reader can read and this
        consumer has not finished); held = high watermark - LSO (offsets behind an
        undecided transaction, which nobody reads until it commits or aborts).
        A broker that sends no LSO (None, fetch API < v4) counts the high watermark.
        """
        consumer = self.consumer
        if consumer is None:
            return
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue  # not fetched yet
            stable = consumer.last_stable_offset(tp)
            readable = highwater if stable is None or stable < 0 else stable
            labels = (tp.topic, str(tp.partition))
            metrics.TRANSACTION_HELD.labels(*labels).set(highwater - readable)
            metrics.LAST_STABLE_OFFSET.labels(*labels).set(readable)
            if tp in self.committed:
                metrics.CONSUMER_LAG.labels(*labels).set(max(0, readable - self.committed[tp]))

    # ------------------------------------------------------------ health
    @property
    def live(self) -> bool:
        """True when the loop turned within max(60 s, 3 fetch timeouts): ``/livez``."""
        window = max(60.0, 3 * self.settings.fetch_timeout_ms / 1000)
        return time.monotonic() - self.last_turn < window

    async def ready(self) -> bool:
        """True when partitions are assigned and ``SELECT 1`` answers: ``/readyz``."""
        if self.consumer is None or not self.consumer.assignment():
            return False
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception:
            return False
        return True


async def run_service(settings: Settings, *, stop: asyncio.Event | None = None) -> Totals:
    """Run until ``stop`` is set (or forever), then finish the batch, commit and leave.

    Also serves the health endpoints (``health_port``; 0: none) and runs the
    scheduled retention jobs the settings ask for, both stopped on the way out.

    Returns:
        The service's ``Totals``.

    Raises:
        HealthServerFailed: the health port cannot be listened on.
        TopicMissing: see ``ConsumerService.start``.
    """
    tune_gc()
    service = ConsumerService(settings)

    runner = await serve_health(service, settings.health_host, settings.health_port)
    jobs = start_retention_jobs(settings)  # scheduled purge/reap; none unless configured
    watcher = None
    if stop is not None:
        watcher = asyncio.create_task(_forward(stop, service))
    try:  # a failure propagates: the command line reports it in one line (exectrack.consumer.cli)
        return await service.run()
    finally:
        await jobs.stop()
        if watcher is not None:
            watcher.cancel()
        if runner is not None:
            await runner.cleanup()


async def _forward(stop: asyncio.Event, service: ConsumerService) -> None:
    await stop.wait()
    service.request_stop()
