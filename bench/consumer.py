"""The consumer end to end, beside a drain ceiling and a naive baseline.

``python -m bench.consumer`` (1,000,000 events by default; ``--events 200000`` for a shorter run)

One process, one run, against the services of ``EXECTRACK_KAFKA__BOOTSTRAP_SERVERS``
and ``EXECTRACK_DATABASE__URL`` (the local stack by default):

1. preload a fresh 12-partition topic with about N events from the simulator
   (recent times, 1% duplicates, reordering, 1% invalid), before any clock;
2. drain ceiling: a bare aiokafka consumer reads the whole topic and does
   nothing with the records (events/s): what reading alone costs here;
3. exectrack: ``ConsumerService`` with a fresh group into a fresh, migrated
   database, from start until every record is committed (events/s and rows/s),
   then a check that the table has one row per simulated execution;
4. ``exectrack-consumer consume`` as a child process (fresh group, fresh
   database) until the group's lag is 0: events/s with start-up, and the
   child's peak RSS with the whole topic as its backlog;
5. ``--processes`` (default 2) such children in one group: how far scaling
   out on the same machine goes (the group spreads the partitions);
6. ``exectrack-consumer replay`` of the same topic into an empty database, as a
   child: events/s with start-up (compared with phase 4) and peak RSS;
7. naive baseline: what a tutorial does, one event at a time: parse, one
   ``INSERT ... ON DUPLICATE KEY UPDATE`` of that event's fields, one commit,
   on the first ``--naive-sample`` records; its rate is extrapolated as is
   (events/s of the sample), which flatters it if anything (small table).

Each phase also records how busy the machine's CPUs were (``/proc/stat``): the
broker and the database run on the same cores.

Prints the rates and the ratios (exectrack / ceiling, exectrack / naive) and
writes ``bench/results/consumer.json`` (git-ignored). Durability stays on:
``innodb_flush_log_at_trx_commit=1`` (deploy/local/mariadb/my.cnf.in).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError
from pydantic import SecretStr
from sqlalchemy import func, select
from sqlalchemy.dialects.mysql import insert as mysql_insert
from sqlalchemy.engine import make_url

from bench import MachineCpu, consumer_env, peak_rss_mb, setup_logging, write_result
from bench.replay import CONSUMER, run_child
from exectrack.consumer.db import migrate
from exectrack.consumer.db.admin import create_database, drop_database
from exectrack.consumer.db.engine import create_engine
from exectrack.consumer.db.repository import EXECUTIONS, REPORTS, USERS
from exectrack.consumer.ingest.decode import tune_gc
from exectrack.consumer.kafka import reader
from exectrack.consumer.service import ConsumerService
from exectrack.consumer.settings import DatabaseSettings, Settings
from exectrack.producer.errors import InvalidEvent
from exectrack.producer.events import ExecutionEvent, parse_event
from exectrack.producer.publisher import Publisher
from exectrack.producer.settings import KafkaSettings
from exectrack.producer.simulate import SimConfig, generate, run_simulation

RESULTS = Path(__file__).resolve().parent / "results" / "consumer.json"
PARTITIONS = 12


async def preload(kafka: KafkaSettings, config: SimConfig) -> tuple[int, int]:
    """Publish the simulation; returns (messages, distinct valid executions)."""
    executions = {
        m.event.data.execution_id for m in generate(config) if isinstance(m.event, ExecutionEvent)
    }
    async with Publisher(kafka) as pub:
        report = await run_simulation(pub, config, progress=False)
    if report.failed:
        raise RuntimeError(f"preload: {report.failed} messages failed")
    return report.sent, len(executions)


async def drain_ceiling(kafka: KafkaSettings, total: int) -> float:
    consumer = reader(
        bootstrap_servers=kafka.bootstrap_servers,
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 << 20,
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(kafka.topic, p) for p in range(PARTITIONS)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        seen, started = 0, time.perf_counter()
        while seen < total:
            for batch in (await consumer.getmany(timeout_ms=1000, max_records=5000)).values():
                seen += len(batch)
        return time.perf_counter() - started
    finally:
        await consumer.stop()


async def exectrack(settings: Settings, total: int) -> tuple[float, float]:
    """Returns (seconds from start to the last commit, steady events/s after the first batch)."""
    tune_gc()  # as `exectrack-consumer consume` does (exectrack.consumer.service.run_service)
    service = ConsumerService(settings)
    started = time.perf_counter()
    task = asyncio.create_task(service.run())
    first: tuple[float, int] | None = None
    try:
        while service.totals.records < total:
            if task.done():
                await task
                raise RuntimeError("the consumer stopped early")
            if first is None and service.totals.batches:
                first = (time.perf_counter(), service.totals.records)
            await asyncio.sleep(0.01)
        ended = time.perf_counter()
    finally:
        service.request_stop()
        await task
    assert first is not None
    steady = (total - first[1]) / max(ended - first[0], 1e-9)
    return ended - started, steady


async def group_lag(kafka: KafkaSettings, group: str) -> int:
    consumer = reader(bootstrap_servers=kafka.bootstrap_servers)
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers)
    await consumer.start()
    await admin.start()
    try:
        partitions = [TopicPartition(kafka.topic, p) for p in range(PARTITIONS)]
        end = await consumer.end_offsets(partitions)
        try:
            committed = await admin.list_consumer_group_offsets(group)
        except KafkaError as exc:  # a fresh broker's coordinator may not be ready yet
            if not exc.retriable:
                raise
            return -1  # unknown: the caller polls again
    finally:
        await consumer.stop()
        await admin.close()
    return sum(end[tp] - (committed[tp].offset if tp in committed else 0) for tp in partitions)


async def consumer_processes(
    kafka: KafkaSettings, url: str, group: str, count: int
) -> tuple[float, list[float]]:
    """``count`` x ``exectrack-consumer consume`` in one group until its lag is 0, then SIGTERM.

    Returns (seconds, each child's own peak RSS in MB, read just before SIGTERM)."""
    env = consumer_env(kafka, url, group)
    started = time.perf_counter()
    procs = [
        subprocess.Popen(  # noqa: S603, ASYNC220 - our own console script, polled below
            [str(CONSUMER), "consume"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(count)
    ]
    try:
        await asyncio.sleep(1)
        while await group_lag(kafka, group) != 0:
            if any(proc.poll() is not None for proc in procs):
                raise RuntimeError("a consumer process exited early")
            await asyncio.sleep(0.25)
        elapsed = time.perf_counter() - started
        peaks = [peak_rss_mb(proc.pid) for proc in procs]
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            await asyncio.to_thread(proc.wait, 30)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    return elapsed, peaks


def replay_process(kafka: KafkaSettings, url: str) -> tuple[float, float, bool]:
    """``exectrack-consumer replay`` of the same topic into an empty database, as a child.

    Returns (wall seconds, start-up included; its peak RSS in MB; every event applied)."""
    env = {**os.environ, "EXECTRACK_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
           "EXECTRACK_KAFKA__TOPIC": kafka.topic, "EXECTRACK_LOG_LEVEL": "warning"}  # fmt: skip
    out, seconds, peak = run_child(["replay", "--target-url", url, "--no-progress", "--json"], env)
    summary = json.loads(out)
    return seconds, peak, summary["events_read"] == summary["applied"] + summary["invalid"]


async def naive(kafka: KafkaSettings, url: str, sample: int) -> float:
    """One event at a time: parse, upsert its fields, commit."""
    consumer = reader(bootstrap_servers=kafka.bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    fetched: list[Any] = []
    try:
        partitions = [TopicPartition(kafka.topic, p) for p in range(PARTITIONS)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        while len(fetched) < sample:
            for batch in (await consumer.getmany(timeout_ms=1000, max_records=sample)).values():
                fetched.extend(batch)
    finally:
        await consumer.stop()
    engine = create_engine(DatabaseSettings(), url=url)
    try:
        started = time.perf_counter()
        for record in fetched[:sample]:
            try:
                event = parse_event(record.value, record.headers, record.key)
            except InvalidEvent:
                continue
            if not isinstance(event, ExecutionEvent):
                continue
            data = event.data
            fields = {
                k: v for k, v in data.model_dump().items() if v is not None and k != "sequence"
            }
            row = {**fields, "status": event.status, "created_at": event.time,
                   "last_event_at": event.time, "fold_keys": {}}  # fmt: skip
            async with engine.begin() as conn:
                if data.started_by is not None:
                    user = mysql_insert(USERS).values(id=data.started_by)
                    await conn.execute(user.on_duplicate_key_update(id=USERS.c.id))
                report = mysql_insert(REPORTS).values(report_id=data.report_id, name=data.report_id)
                await conn.execute(report.on_duplicate_key_update(report_id=REPORTS.c.report_id))
                stmt = mysql_insert(EXECUTIONS).values(row)
                await conn.execute(stmt.on_duplicate_key_update({k: stmt.inserted[k] for k in row}))
        return time.perf_counter() - started
    finally:
        await engine.dispose()


async def fresh_database(server_url: str) -> str:
    url = await create_database(server_url, f"exectrack_bench_{uuid.uuid4().hex[:8]}")
    await migrate.upgrade(url)
    return url


async def count_rows(url: str) -> int:
    engine = create_engine(DatabaseSettings(), url=url)
    try:
        async with engine.connect() as conn:
            return int(
                (await conn.execute(select(func.count()).select_from(EXECUTIONS))).scalar_one()
            )
    finally:
        await engine.dispose()


@dataclass(frozen=True)
class Topic:
    kafka: KafkaSettings  # the base settings, pointed at the preloaded topic and its DLQ
    suffix: str  # unique to this run: for group ids
    messages: int
    executions: int  # distinct valid executions: the rows a correct table has


@asynccontextmanager
async def simulated_topic(
    base: Settings, prefix: str, events: int, seed: int
) -> AsyncIterator[Topic]:
    """A fresh 12-partition topic (and DLQ) preloaded with about ``events`` simulated
    messages; deleted afterwards."""
    suffix = uuid.uuid4().hex[:8]
    kafka = base.kafka.model_copy(
        update={"topic": f"{prefix}-{suffix}", "dlq_topic": f"{prefix}-{suffix}.dlq"}
    )
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(kafka.topic, PARTITIONS, 1), NewTopic(kafka.dlq_topic, 1, 1)]
        )
        try:
            start = datetime.now(UTC) - timedelta(hours=6)
            executions = max(1, round(events / 4.6))  # ~4.6 messages per execution
            config = SimConfig(executions=executions, seed=seed, start=start, reorder_ratio=0.1)
            total, expected_rows = await preload(kafka, config)
            print(f"preloaded {total:,} messages ({expected_rows:,} executions) into {kafka.topic}")
            yield Topic(kafka, suffix, total, expected_rows)
        finally:
            await admin.delete_topics([kafka.topic, kafka.dlq_topic])
    finally:
        await admin.close()


@asynccontextmanager
async def scratch_databases(server_url: str) -> AsyncIterator[Callable[[], Awaitable[str]]]:
    """``new_database()`` makes a fresh, migrated database; all are dropped afterwards."""
    urls: list[str] = []

    async def new_database() -> str:
        urls.append(await fresh_database(server_url))
        return urls[-1]

    try:
        yield new_database
    finally:
        for url in urls:
            await drop_database(server_url, str(make_url(url).database))


def in_process_settings(base: Settings, topic: Topic, group: str, url: str) -> Settings:
    """What ``ConsumerService`` runs with in the benchmark's own process."""
    return base.model_copy(update={
        "kafka": topic.kafka, "group_id": group, "health_port": 0, "create_topics": False,
        "database": DatabaseSettings(url=SecretStr(url)),
    })  # fmt: skip


async def bench(events: int, seed: int, naive_sample: int, processes: int) -> dict[str, Any]:
    base = Settings()
    server_url = base.database.url.get_secret_value()
    async with (
        simulated_topic(base, "bench", events, seed) as topic,
        scratch_databases(server_url) as new_database,
    ):
        kafka, suffix = topic.kafka, topic.suffix
        total, expected_rows = topic.messages, topic.executions
        cpu, busy = MachineCpu(), {}
        ceiling_s = await drain_ceiling(kafka, total)
        busy["drain_ceiling"] = cpu.busy()
        print(f"drain ceiling (bare aiokafka):   {total / ceiling_s:>9,.0f} events/s")

        url = await new_database()
        settings = in_process_settings(base, topic, f"bench-{suffix}", url)
        cpu.start()
        consumer_s, steady = await exectrack(settings, total)
        busy["exectrack"] = cpu.busy()
        rows = await count_rows(url)
        correct = rows == expected_rows
        print(
            f"exectrack consumer (end to end): {total / consumer_s:>9,.0f} events/s, "
            f"{rows / consumer_s:,.0f} rows/s; rows {rows:,} (expected {expected_rows:,})"
        )
        print(f"exectrack after the first batch: {steady:>9,.0f} events/s (group join excluded)")

        url = await new_database()
        cpu.start()
        process_s, (peak_mb,) = await consumer_processes(kafka, url, f"bench-{suffix}-p1", 1)
        busy["exectrack_process"] = cpu.busy()
        print(
            f"exectrack consumer as a process: {total / process_s:>9,.0f} events/s "
            f"(start-up included), peak RSS {peak_mb:,.0f} MB with a {total:,}-event backlog"
        )

        url = await new_database()
        cpu.start()
        group_s, group_peaks = await consumer_processes(
            kafka, url, f"bench-{suffix}-p{processes}", processes
        )
        busy["exectrack_processes"] = cpu.busy()
        group_rows = await count_rows(url)
        print(
            f"exectrack, {processes} processes, one group: {total / group_s:>9,.0f} events/s "
            f"(start-up included); rows {group_rows:,}; peak RSS "
            + " + ".join(f"{mb:,.0f}" for mb in group_peaks)
            + " MB"
        )

        url = await new_database()
        cpu.start()
        replay_s, replay_mb, replay_ok = await asyncio.to_thread(replay_process, kafka, url)
        busy["replay_process"] = cpu.busy()
        replay_rows = await count_rows(url)
        print(
            f"replay of the same topic:        {total / replay_s:>9,.0f} events/s "
            f"(start-up included), peak RSS {replay_mb:,.0f} MB; rows {replay_rows:,}"
        )

        url = await new_database()
        sample = min(naive_sample, total)
        naive_s = await naive(kafka, url, sample)
        print(f"naive baseline (1 event/commit): {sample / naive_s:>9,.0f} events/s "
              f"(sample of {sample:,})")  # fmt: skip
    rates = {
        "drain_ceiling": total / ceiling_s,
        "exectrack": total / consumer_s,
        "exectrack_steady": steady,
        "exectrack_process": total / process_s,
        f"exectrack_{processes}_processes": total / group_s,
        "replay_process": total / replay_s,
        "naive": sample / naive_s,
    }
    ratios = {
        "exectrack_to_ceiling": rates["exectrack"] / rates["drain_ceiling"],
        "exectrack_steady_to_ceiling": steady / rates["drain_ceiling"],
        f"exectrack_{processes}_processes_to_ceiling": total / group_s / rates["drain_ceiling"],
        "exectrack_to_naive": rates["exectrack"] / rates["naive"],
        "replay_to_consumer_process": process_s / replay_s,
    }
    print("ratios: " + ", ".join(f"{k} = {v:.2f}" for k, v in ratios.items()))
    print("machine CPU busy (both cores): " + ", ".join(f"{k} {v:.0%}" for k, v in busy.items()))
    return {
        "benchmark": "consumer",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "events": total,
        "executions": expected_rows,
        "table_correct": correct
        and group_rows == expected_rows
        and replay_rows == expected_rows
        and replay_ok,
        "events_per_s": {k: round(v) for k, v in rates.items()},
        "rows_per_s": round(rows / consumer_s),
        "process": {"events_per_s": round(total / process_s), "peak_rss_mb": round(peak_mb)},
        "processes": {
            "count": processes,
            "events_per_s": round(total / group_s),
            "peak_rss_mb": [round(mb) for mb in group_peaks],
        },
        "replay": {"events_per_s": round(total / replay_s), "peak_rss_mb": round(replay_mb)},
        "ratios": {k: round(v, 3) for k, v in ratios.items()},
        "machine_cpu_busy": {k: round(v, 3) for k, v in busy.items()},
        "batch_max_records": base.batch_max_records,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    parser = argparse.ArgumentParser(prog="python -m bench.consumer", description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000, help="about this many messages")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--naive-sample", type=int, default=3_000)
    parser.add_argument("--processes", type=int, default=2, help="consumers in the group phase")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    result = asyncio.run(bench(args.events, args.seed, args.naive_sample, args.processes))
    write_result(args.output, result)
    return 0 if result["table_correct"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
