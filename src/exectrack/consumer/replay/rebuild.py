"""Replay: rebuild the tables from the topic, through the live consumer's own batch path.

``exectrack-consumer replay`` (docs/replay.md: reference and runbook). It captures
the end offset of every partition at the start and reads from the earliest offset
(or ``--from-time``) up to those ends, assigning partitions by hand: no group, no
commits, the live group's offsets are never touched. Every ``getmany(max_records=
batch_max_records)`` goes through ``ingest.decode.decode_yielding`` and ``BatchWriter.write``
(one transaction, the same retention policy, retries and bisection); nothing but
counters outlives a batch, so memory is flat whatever the topic size. Invalid
records are counted, not dead-lettered again, unless ``--dead-letter``.

A replay never resurrects an execution past retention (CONTRACT.md). The writer
writes every fold whole, whatever its ``retention_until`` (a batch is a partial
fold: a later event may still move it, so no rule may judge it expired), and
skips only executions with a tombstone. At the end, the replay deletes the rows
it inserted (``id`` above the greatest id at the start) whose ``retention_until``
has passed, in bounded chunks, each leaving a tombstone as the purge does: the
summary's "skipped as expired". If it is interrupted first, the purge removes
them (their ``retention_until`` has passed).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from alembic.script import ScriptDirectory
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from exectrack.consumer.db import migrate
from exectrack.consumer.db.engine import create_engine
from exectrack.consumer.db.repository import CHUNK, EXECUTIONS
from exectrack.consumer.dlq.letter import consumer_identity
from exectrack.consumer.dlq.send import DeadLetterQueue
from exectrack.consumer.ingest.decode import Batch, decode_yielding, tune_gc
from exectrack.consumer.ingest.pipeline import WritePipeline
from exectrack.consumer.ingest.writer import BatchWriter
from exectrack.consumer.kafka import reader
from exectrack.consumer.replay._report import (
    Mode,
    ReplayError,
    ReplayOptions,
    ReplayPlan,
    ReplayProgress,
    ReplaySummary,
    Span,
    parse_time,
)
from exectrack.consumer.retention.policy import RetentionPolicy
from exectrack.consumer.retention.purge import delete_with_tombstones, not_held
from exectrack.consumer.settings import Settings

__all__ = ["Replay", "ReplayError", "ReplayOptions", "ReplaySummary", "parse_time", "replay"]
STALL_S = 120.0  # no record for this long while positions are short of their ends: give up


class Replay:
    """``async with Replay(settings, options) as job``: prepare_target, plan, run."""

    def __init__(self, settings: Settings, options: ReplayOptions | None = None) -> None:
        self.settings = settings
        self.options = options or ReplayOptions()
        self.target_url = self.options.target_url or settings.database.url.get_secret_value()
        self.engine: AsyncEngine = create_engine(settings.database, url=self.target_url)
        self.mode: Mode = "rebuild"
        self.max_id = 0  # the greatest report_executions.id before the replay
        kafka = {**settings.kafka.client_kwargs(), "client_id": "exectrack-replay"}
        self.consumer = reader(
            group_id=None,  # manual assignment: no group, no offsets committed anywhere
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=settings.max_partition_fetch_bytes,
            **kafka,
        )
        self.identity = consumer_identity("replay")
        self.dead_letters = (
            DeadLetterQueue(
                settings.kafka,
                self.identity,
                client_id="exectrack-replay",
                missing_grace_s=settings.dlq_missing_grace_s,
            )
            if self.options.dead_letter
            else None
        )

    @property
    def target(self) -> str:
        """The target database's URL, password hidden (for messages and the summary)."""
        return make_url(self.target_url).render_as_string(hide_password=True)

    async def __aenter__(self) -> Replay:
        try:
            await self.consumer.start()
            if self.dead_letters is not None:
                await self.dead_letters.start()
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self.consumer.stop()
            if self.dead_letters is not None:
                await self.dead_letters.stop()
        finally:
            await self.engine.dispose()

    # ------------------------------------------------------------ before reading
    async def prepare_target(self) -> Mode:
        """Migrate an empty target; refuse one with executions unless merging.

        Returns:
            ``"rebuild"`` (the target had no executions) or ``"merge"``.

        Raises:
            ReplayError: the target cannot be read, is at another schema revision
                than this code's head, or holds executions without ``merge``
                (docs/replay.md).
        """
        count_tables = text(
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE()"
        )
        scripts = ScriptDirectory.from_config(migrate.alembic_config(self.target_url))
        head = scripts.get_current_head()
        try:
            async with self.engine.connect() as conn:
                tables = (await conn.execute(count_tables)).scalar_one()
                if tables:
                    version = text("SELECT version_num FROM alembic_version")
                    revision = (await conn.execute(version)).scalar()
                    max_id = select(func.max(EXECUTIONS.c.id))
                    self.max_id = (await conn.execute(max_id)).scalar_one() or 0
        except DBAPIError as exc:
            raise ReplayError(f"target {self.target}: {exc.orig or exc}") from exc
        if tables and revision != head:
            raise ReplayError(
                f"target {self.target} has schema revision {revision}, this code writes "
                f"{head}: run exectrack-consumer migrate on it first"
            )
        if not tables:
            await migrate.upgrade(self.target_url)
        elif self.max_id:
            if not self.options.merge:
                raise ReplayError(
                    f"target {self.target} already holds executions; replay rebuilds into "
                    "an empty database (--target-url), or pass --merge to merge the topic "
                    "into its rows (docs/replay.md)"
                )
            self.mode = "merge"
        return self.mode

    async def plan(self) -> ReplayPlan:
        """Capture the end offsets now, and where each partition starts.

        Each span starts at the partition's beginning, or with ``from_time`` at
        the first offset whose timestamp is at or after it (Kafka
        ``ListOffsets`` by timestamp, aiokafka ``offsets_for_times``), and ends
        at the end offset read now: records published later are not replayed.

        Raises:
            ReplayError: ``options.partitions`` names a partition the topic lacks.
        """
        topic = self.settings.kafka.topic
        known = await self._partitions(topic)
        wanted = list(dict.fromkeys(self.options.partitions or known))
        unknown = sorted(set(wanted) - set(known))
        if unknown:
            raise ReplayError(f"topic {topic!r} has no partition {unknown} (it has {len(known)})")
        tps = [TopicPartition(topic, p) for p in wanted]
        captured_at = datetime.now(UTC)
        end = await self.consumer.end_offsets(tps)
        if self.options.from_time is None:
            start = await self.consumer.beginning_offsets(tps)
        else:
            millis = int(self.options.from_time.timestamp() * 1000)
            found = await self.consumer.offsets_for_times(dict.fromkeys(tps, millis))
            start = {tp: end[tp] if found[tp] is None else found[tp].offset for tp in tps}
        spans = tuple(Span(tp, start[tp], end[tp]) for tp in tps)
        return ReplayPlan(topic, spans, self.options.sequential, captured_at)

    async def _partitions(self, topic: str) -> list[int]:
        admin = AIOKafkaAdminClient(**self.settings.kafka.client_kwargs())
        await admin.start()
        try:
            (described,) = await admin.describe_topics([topic])
        finally:
            await admin.close()
        if described["error_code"] or not described["partitions"]:
            raise ReplayError(f"topic {topic!r} does not exist (error {described['error_code']})")
        return sorted(p["partition"] for p in described["partitions"])

    # ------------------------------------------------------------ reading
    async def run(self, plan: ReplayPlan, progress: ReplayProgress | None = None) -> ReplaySummary:
        """Read every span through the consume loop's batch path, then sweep what expired.

        Partitions are read all at once, or one after another when
        ``plan.sequential``. Ends like the live table: executions whose
        ``retention_until`` passed are deleted with tombstones (``sweep_expired``).

        Raises:
            ReplayError: no records came for ``STALL_S`` seconds from partitions
                not yet at their end offset.
        """
        started = time.perf_counter()
        summary = ReplaySummary(
            plan.topic, self.target, self.mode, len(plan.spans), plan.captured_at,
            end_offsets={s.tp.partition: s.end for s in plan.spans},
        )  # fmt: skip
        writer = BatchWriter.of(self.engine, self.settings)
        groups = [(s,) for s in plan.spans] if plan.sequential else [plan.spans]
        for group in groups:
            await self._read(group, writer, summary, progress)
        now = datetime.now(UTC)
        summary.skipped_expired += await sweep_expired(
            self.engine, now, above_id=self.max_id, policy=self.settings.retention
        )
        async with self.engine.connect() as conn:
            count = select(func.count()).select_from(EXECUTIONS)
            summary.executions = (await conn.execute(count)).scalar_one()
        summary.elapsed_s = time.perf_counter() - started
        return summary

    async def _read(
        self,
        spans: tuple[Span, ...],
        writer: BatchWriter,
        summary: ReplaySummary,
        progress: ReplayProgress | None,
    ) -> None:
        todo = {s.tp: s for s in spans if s.start < s.end}
        if not todo:
            return
        self.consumer.assign(list(todo))
        for tp, span in todo.items():
            self.consumer.seek(tp, span.start)
        pipeline = WritePipeline()  # the next batch decodes while this one is written
        try:
            await self._fetch_all(todo, writer, summary, progress, pipeline)
            await pipeline.settle()
        finally:
            await pipeline.cancel()

    async def _fetch_all(
        self,
        todo: dict[TopicPartition, Span],
        writer: BatchWriter,
        summary: ReplaySummary,
        progress: ReplayProgress | None,
        pipeline: WritePipeline,
    ) -> None:
        last_record = time.monotonic()
        while todo:
            fetched = await self.consumer.getmany(
                *todo,
                timeout_ms=self.settings.fetch_timeout_ms,
                max_records=self.settings.batch_max_records,
            )
            batch = {}
            for tp, records in fetched.items():
                end = todo[tp].end
                if records and records[-1].offset >= end:  # published after the start
                    records = [r for r in records if r.offset < end]
                if records:
                    batch[tp] = records
            if batch:
                decoded = await decode_yielding(batch)
                await pipeline.submit(self._apply(decoded, writer, summary))
                last_record = time.monotonic()
            elif time.monotonic() - last_record > STALL_S:
                raise ReplayError(f"no records for {STALL_S:.0f} s from {sorted(map(str, todo))}")
            for tp in list(todo):
                position = await self.consumer.position(tp)
                if progress is not None:
                    progress.update(tp, min(position, todo[tp].end))
                if position >= todo[tp].end:
                    self.consumer.pause(tp)
                    del todo[tp]

    async def _apply(self, batch: Batch, writer: BatchWriter, summary: ReplaySummary) -> None:
        outcome = await writer.write(batch.executions, batch.definitions)
        refused = batch.refused(outcome.errors)
        if (
            self.dead_letters is not None
        ):  # exectrack.consumer.dlq.send: a letter it cannot carry is dropped
            delivery = await self.dead_letters.send(batch.dead_letters + refused)
            summary.dead_lettered += len(delivery.sent)
            summary.dead_letters_dropped += len(delivery.dropped)
        summary.batches += 1
        summary.events_read += batch.records
        summary.invalid += len(batch.dead_letters)
        summary.refused += len(refused)
        summary.applied += batch.records - len(batch.dead_letters) - len(refused)
        summary.row_writes += outcome.written
        summary.skipped_purged += outcome.skipped_purged
        summary.reports_defined += outcome.reports_defined
        room = 5 - len(summary.first_errors)
        summary.first_errors += [f"{k}: {e[:200]}" for k, e in outcome.errors.items()][:room]


async def sweep_expired(
    engine: AsyncEngine,
    now: datetime,
    *,
    above_id: int = 0,
    policy: RetentionPolicy | None = None,
    chunk: int = CHUNK,
) -> int:
    """Delete executions with ``id > above_id`` whose retention_until <= now, ``chunk``
    rows a transaction, never one on hold in ``policy``, each leaving a tombstone,
    exactly as the purge does. Returns how many.

    CONTRACT.md, "Retention": a replay into an empty database ends with the same
    purge, so it agrees with the live table."""
    c = EXECUTIONS.c
    held = not_held(policy) if policy is not None else []  # the purge's own hold rule
    expired = [c.retention_until <= now, c.id > above_id, *held]
    query = select(c.id).where(*expired).order_by(c.retention_until).limit(chunk)
    removed = 0
    while True:
        async with engine.begin() as conn:
            ids = (await conn.execute(query)).scalars().all()
            if not ids:
                return removed
            removed += await delete_with_tombstones(conn, list(ids), now)


async def replay(
    settings: Settings, options: ReplayOptions | None = None, *, progress: bool = False
) -> ReplaySummary:
    """The whole command: prepare the target, capture the ends, read them, sum up.

    ``progress``: draw the progress bars on stderr (``ReplayProgress``).

    Raises:
        ReplayError: see ``Replay.prepare_target``, ``Replay.plan`` and ``Replay.run``.
    """
    tune_gc()  # the consume loop's GC settings: replay runs the same batch path
    async with Replay(settings, options) as job:
        await job.prepare_target()
        plan = await job.plan()
        with ReplayProgress(plan.spans, enabled=progress) as bar:
            return await job.run(plan, bar)
