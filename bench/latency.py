"""Publish-to-row latency at a steady rate: ``python -m bench.latency --rate 2000 --seconds 30``.

A publisher sends lifecycle events (pending, started, completed) at a steady
rate, each stamped with its wall-clock publish time; the exectrack consumer
runs as its own process (``exectrack-consumer consume``, default settings, a
fresh group and database), as in production, so the measuring code does not
share its event loop; a poller reads ``report_executions`` every 10 ms and
records, for every (execution, ``last_event_at``) it sees for the first time,
``now - last_event_at``: the time from publishing that execution's latest
event to the row showing it. The poller reads only rows whose latest event is
under ``WINDOW_S`` old (reading the whole growing table every 10 ms would
make the poller the bottleneck), so a latency above that would go unseen: the
benchmark checks that every published execution was seen. The poll interval
bounds the resolution (~10 ms). Prints p50/p90/p99/max and writes
``bench/results/latency.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from sqlalchemy import select
from sqlalchemy.engine import make_url

from bench import setup_logging, write_result
from exectrack.consumer.db import migrate
from exectrack.consumer.db.admin import create_database, drop_database
from exectrack.consumer.db.engine import create_engine
from exectrack.consumer.db.repository import EXECUTIONS
from exectrack.consumer.settings import DatabaseSettings, Settings
from exectrack.producer.events import EventType, execution_event
from exectrack.producer.publisher import Publisher

RESULTS = Path(__file__).resolve().parent / "results" / "latency.json"
LIFECYCLE = (EventType.PENDING, EventType.STARTED, EventType.COMPLETED)
WINDOW_S = 30.0
CONSUMER = Path(sys.executable).parent / "exectrack-consumer"


async def publish_steadily(pub: Publisher, rate: float, seconds: float, published: set[str]) -> int:
    """Interleave executions so every tick sends one event of some execution."""
    sent, started = 0, time.perf_counter()
    in_flight: list[tuple[str, int]] = []
    while (elapsed := time.perf_counter() - started) < seconds:
        due = int(elapsed * rate) - sent
        for _ in range(due):
            if len(in_flight) < 50:
                in_flight.append((uuid.uuid4().hex, 0))
            index = sent % len(in_flight)
            execution_id, step = in_flight[index]
            event = execution_event(
                LIFECYCLE[step], execution_id=execution_id, report_id="latency-bench",
                source="/bench/latency", sequence=step, time=datetime.now(UTC),
            )  # fmt: skip
            await pub.send(event)
            published.add(execution_id)
            sent += 1
            if step + 1 < len(LIFECYCLE):
                in_flight[index] = (execution_id, step + 1)
            else:
                in_flight.pop(index)
        await asyncio.sleep(0.002)
    await pub.flush()
    return sent


async def poll_latencies(
    url: str, stop: asyncio.Event, seen: dict[str, datetime], since: datetime
) -> list[float]:
    engine = create_engine(DatabaseSettings(), url=url)
    latencies: list[float] = []
    cols = (EXECUTIONS.c.execution_id, EXECUTIONS.c.last_event_at)
    try:
        while not stop.is_set():
            window = max(since, datetime.now(UTC) - timedelta(seconds=WINDOW_S))
            async with engine.connect() as conn:
                rows = (
                    await conn.execute(select(*cols).where(EXECUTIONS.c.last_event_at >= window))
                ).all()
            now = datetime.now(UTC)
            for execution_id, last_event_at in rows:
                if seen.get(execution_id) != last_event_at:
                    seen[execution_id] = last_event_at
                    latencies.append((now - last_event_at).total_seconds())
            await asyncio.sleep(0.01)
    finally:
        await engine.dispose()
    return latencies


async def warm_up(pub: Publisher, url: str, consumer: subprocess.Popen[bytes]) -> None:
    """Wait until the consumer process writes a first event (group joined, connections up)."""
    engine = create_engine(DatabaseSettings(), url=url)
    query = select(EXECUTIONS.c.id).where(EXECUTIONS.c.execution_id == "latency-warm-up")
    try:
        await pub.send(execution_event(
            EventType.PENDING, execution_id="latency-warm-up", report_id="latency-bench",
            source="/bench/latency",
        ))  # fmt: skip
        await pub.flush()
        deadline = time.monotonic() + 60
        while True:
            async with engine.connect() as conn:
                if (await conn.execute(query)).first() is not None:
                    return
            if consumer.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the consumer process did not write the warm-up event")
            await asyncio.sleep(0.05)
    finally:
        await engine.dispose()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def bench(rate: float, seconds: float) -> dict[str, Any]:
    base = Settings()
    suffix = uuid.uuid4().hex[:8]
    kafka = base.kafka.model_copy(
        update={"topic": f"latency-{suffix}", "dlq_topic": f"latency-{suffix}.dlq"}
    )
    server_url = base.database.url.get_secret_value()
    url = await create_database(server_url, f"exectrack_bench_latency_{suffix}")
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers)
    await admin.start()
    try:
        await migrate.upgrade(url)
        await admin.create_topics([NewTopic(kafka.topic, 12, 1), NewTopic(kafka.dlq_topic, 1, 1)])
        env = {
            **os.environ, "EXECTRACK_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "EXECTRACK_KAFKA__TOPIC": kafka.topic, "EXECTRACK_KAFKA__DLQ_TOPIC": kafka.dlq_topic,
            "EXECTRACK_DATABASE__URL": url, "EXECTRACK_GROUP_ID": f"latency-{suffix}",
            "EXECTRACK_HEALTH_PORT": "0", "EXECTRACK_CREATE_TOPICS": "false",
            "EXECTRACK_LOG_LEVEL": "warning",
        }  # fmt: skip
        consumer = subprocess.Popen(  # noqa: S603, ASYNC220 - our own console script
            [str(CONSUMER), "consume"], env=env, stdout=subprocess.DEVNULL
        )
        try:
            seen: dict[str, datetime] = {}
            published: set[str] = set()
            async with Publisher(kafka) as pub:
                await warm_up(pub, url, consumer)
                stop = asyncio.Event()
                since = datetime.now(UTC)
                poller = asyncio.create_task(poll_latencies(url, stop, seen, since))
                sent = await publish_steadily(pub, rate, seconds, published)
            deadline = time.monotonic() + WINDOW_S
            while not published <= seen.keys() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.2)
            stop.set()
            latencies = await poller
            unseen = len(published - seen.keys())
        finally:
            consumer.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(consumer.wait, 30)
            except subprocess.TimeoutExpired:
                consumer.kill()
        await admin.delete_topics([kafka.topic, kafka.dlq_topic])
    finally:
        await admin.close()
        await drop_database(server_url, str(make_url(url).database))
    result: dict[str, Any] = {
        "benchmark": "latency",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "rate": rate,
        "events": sent,
        "achieved_rate": round(sent / seconds),
        "samples": len(latencies),
        "executions_unseen": unseen,
        "ms": {
            "p50": round(statistics.median(latencies) * 1000, 1),
            "p90": round(percentile(latencies, 0.90) * 1000, 1),
            "p99": round(percentile(latencies, 0.99) * 1000, 1),
            "max": round(max(latencies) * 1000, 1),
        },
    }
    print(
        f"{sent:,} events at {result['achieved_rate']:,}/s; publish -> row visible over "
        f"{len(latencies):,} samples: p50 {result['ms']['p50']} ms, p90 {result['ms']['p90']} ms, "
        f"p99 {result['ms']['p99']} ms, max {result['ms']['max']} ms; "
        f"executions never seen: {unseen}"
    )
    return result


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    parser = argparse.ArgumentParser(prog="python -m bench.latency", description=__doc__)
    parser.add_argument("--rate", type=float, default=2000.0, help="events per second")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    result = asyncio.run(bench(args.rate, args.seconds))
    write_result(args.output, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
