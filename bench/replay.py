"""Replay throughput and memory: ``python -m bench.replay --events 1000000``.

Against the broker and database of the environment (``EXECTRACK_KAFKA__*``,
``EXECTRACK_DATABASE__URL``: the local stack by default):

1. preload: a fresh topic (12 partitions) gets about ``--events`` simulated
   messages (``exectrack.producer.simulate.records``: duplicates, reordering, 1%
   invalid), sent raw and pipelined (one ``send_batch`` per partition and
   chunk, zstd as the publisher does). Times start ``span + 1 h`` ago so no
   execution is past retention and none is in the future;
2. replay: ``exectrack-consumer replay --no-progress --json`` into a fresh
   database, as a child process; its peak RSS is the child's own VmHWM (polled
   while it runs: see bench.peak_rss_mb), its rate from its own summary (reading
   and writing, without process start-up and migrations) and from the wall
   clock (everything);
3. verify (unless ``--no-verify``): ``exectrack-consumer verify`` of the rebuilt
   database against itself: every row read twice, merge-joined and compared,
   to measure the streaming comparison's rate and memory.

Prints the figures and writes ``bench/results/replay.json`` (git-ignored).
The topic and the database are deleted afterwards unless ``--keep``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from importlib.metadata import version
from itertools import islice
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.partitioner import DefaultPartitioner

from bench import peak_rss_mb, setup_logging, write_result
from bench.producer import executions_for
from exectrack.consumer.db.admin import create_database, drop_database
from exectrack.consumer.settings import Settings
from exectrack.producer.settings import KafkaSettings, PublisherSettings
from exectrack.producer.simulate import ADMIT_EVERY, SimConfig, records

RESULTS = Path(__file__).resolve().parent / "results" / "replay.json"
CONSUMER = Path(sys.executable).parent / "exectrack-consumer"
PARTITIONS = 12
CHUNK = 4000


async def preload(kafka: KafkaSettings, config: SimConfig) -> tuple[int, float]:
    """Publish the simulation to ``kafka.topic``; returns (messages, seconds)."""
    producer = AIOKafkaProducer(**kafka.client_kwargs(), **PublisherSettings().producer_kwargs())
    await producer.start()
    try:
        partitions = sorted(await producer.partitions_for(kafka.topic))
        partition_of = DefaultPartitioner()
        sent, futures, started = 0, [], time.perf_counter()
        stream = records(config)
        while chunk := list(islice(stream, CHUNK)):
            groups: dict[int, list[Any]] = {}
            for r in chunk:
                groups.setdefault(partition_of(r.key, partitions, partitions), []).append(r)
            for partition, group in groups.items():
                batch = producer.create_batch()
                for r in group:
                    if batch.append(key=r.key, value=r.value, timestamp=None, headers=r.headers):
                        continue
                    futures.append(await submit(producer, batch, kafka.topic, partition))
                    batch = producer.create_batch()
                    batch.append(key=r.key, value=r.value, timestamp=None, headers=r.headers)
                futures.append(await submit(producer, batch, kafka.topic, partition))
            sent += len(chunk)
            if len(futures) > 200:  # bound what is in flight
                await asyncio.gather(*futures)
                futures.clear()
        await asyncio.gather(*futures)
        return sent, time.perf_counter() - started
    finally:
        await producer.stop()


async def submit(producer: AIOKafkaProducer, batch: Any, topic: str, partition: int) -> Any:
    batch.close()
    return await producer.send_batch(batch, topic, partition=partition)


def run_child(args: list[str], env: dict[str, str]) -> tuple[str, float, float]:
    """Run ``exectrack-consumer ARGS``; returns (stdout, wall seconds, peak RSS in MB)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen([str(CONSUMER), *args], env=env, stdout=out, stderr=err)  # noqa: S603
        peak = 0.0
        while proc.poll() is None:  # VmHWM only grows: the last read is the closest
            with contextlib.suppress(OSError, RuntimeError):
                peak = max(peak, peak_rss_mb(proc.pid))
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        if proc.returncode not in (0, 1):
            raise RuntimeError(f"{args[0]} exited {proc.returncode}: {err.read()[-2000:]!r}")
        return out.read().decode(), elapsed, peak


async def bench(events: int, seed: int, verify: bool, keep: bool) -> dict[str, Any]:
    settings = Settings()
    suffix = uuid.uuid4().hex[:10]
    kafka = settings.kafka.model_copy(update={"topic": f"exectrack-bench-{suffix}"})
    executions = executions_for(events, seed)
    span = executions * ADMIT_EVERY
    start = datetime.now(UTC) - span - timedelta(hours=1)
    config = SimConfig(executions=executions, seed=seed, start=start, reorder_ratio=0.3)
    server = settings.database.url.get_secret_value()
    db_name = f"exectrack_bench_{suffix}"
    admin = AIOKafkaAdminClient(**kafka.client_kwargs())
    await admin.start()
    try:
        await admin.create_topics([NewTopic(kafka.topic, PARTITIONS, kafka.replication_factor)])
        target = await create_database(server, db_name)
        sent, preload_s = await preload(kafka, config)
        print(f"preloaded {sent:,} messages ({executions:,} executions) in {preload_s:.1f} s")
        env = {**os.environ, "EXECTRACK_KAFKA__TOPIC": kafka.topic, "EXECTRACK_LOG_FORMAT": "json"}
        out, replay_s, replay_mb = await asyncio.to_thread(
            run_child, ["replay", "--target-url", target, "--no-progress", "--json"], env
        )
        summary = json.loads(out)
        print(
            f"replay: {summary['events_read']:,} events in {summary['elapsed_s']:.1f} s: "
            f"{summary['events_per_s']:,.0f} events/s ({sent / replay_s:,.0f} events/s wall, "
            f"process included); peak RSS {replay_mb:.0f} MB"
        )
        result: dict[str, Any] = {
            "benchmark": "replay",
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "events": sent,
            "executions": executions,
            "seed": seed,
            "preload_events_per_s": round(sent / preload_s),
            "replay": {
                "events_per_s": round(summary["events_per_s"]),
                "events_per_s_wall": round(sent / replay_s),
                "elapsed_s": round(summary["elapsed_s"], 2),
                "wall_s": round(replay_s, 2),
                "peak_rss_mb": round(replay_mb, 1),
                "summary": summary,
            },
        }
        if verify:
            args = ["verify", "--live-url", target, "--rebuilt-url", target]
            out, verify_s, verify_mb = await asyncio.to_thread(run_child, args, env)
            rows = summary["executions"]
            print(
                f"verify: {rows:,} executions against themselves in {verify_s:.1f} s "
                f"({rows / verify_s:,.0f} rows/s, process included); peak RSS {verify_mb:.0f} MB"
            )
            ok = out.strip().endswith("OK: no differences")
            result["verify"] = {
                "rows": rows, "wall_s": round(verify_s, 2), "ok": ok,
                "rows_per_s_wall": round(rows / verify_s), "peak_rss_mb": round(verify_mb, 1),
            }  # fmt: skip
    finally:
        if not keep:
            await admin.delete_topics([kafka.topic])
            await drop_database(server, db_name)
        await admin.close()
    result["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "aiokafka": version("aiokafka"),
        "sqlalchemy": version("sqlalchemy"),
        "partitions": PARTITIONS,
        "batch_max_records": settings.batch_max_records,
    }
    return result


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    parser = argparse.ArgumentParser(prog="python -m bench.replay", description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000, help="about this many messages")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-verify", dest="verify", action="store_false")
    parser.add_argument("--keep", action="store_true", help="keep the topic and the database")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    result = asyncio.run(bench(args.events, args.seed, args.verify, args.keep))
    write_result(args.output, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
