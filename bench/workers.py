"""``consume --workers 2`` against ``consume --workers 1``, interleaved on one topic.

``python -m bench.workers`` (300,000 events and 3 rounds by default)

One preloaded 12-partition topic (the simulator, as bench.consumer: recent times,
1% duplicates, 10% reordered, 1% invalid); then rounds of A, B (A = ``--workers 1``,
B = ``--workers 2``), each run a child ``exectrack-consumer consume`` with a fresh
group into a fresh, migrated database, timed from its start until the group's
committed offsets reach the end of the topic, then SIGTERM (exit 0 expected) and
a row count (one row per simulated execution). Each run records:

- ``events_per_s``: events / seconds from the start (start-up and group join included);
- ``steady_events_per_s``: the events committed after the first commit was seen,
  over the time from then to the end (start-up and join excluded);
- ``machine_cpu_busy``: both cores, the broker and the database included (/proc/stat);
- ``load_1m``: the 1-minute load average when the run began;
- ``peak_rss_mb``: the supervisor's and each worker's peak RSS (VmHWM) at the end.

The ratio reported is B / A per round and its median (same topic, same machine,
interleaved: drift in the machine's load hits both). Writes
``bench/results/workers.json`` (git-ignored).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import statistics
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from bench import MachineCpu, consumer_env, peak_rss_mb, setup_logging, write_result
from bench.consumer import PARTITIONS, Topic, count_rows, scratch_databases, simulated_topic
from bench.replay import CONSUMER
from exectrack.consumer.kafka import reader
from exectrack.consumer.settings import Settings

RESULTS = Path(__file__).resolve().parent / "results" / "workers.json"


class Progress:
    """The group's committed total and the topic's end, from one admin and one reader."""

    def __init__(self, topic: Topic, group: str) -> None:
        self.topic, self.group = topic, group
        servers = topic.kafka.bootstrap_servers
        self.admin = AIOKafkaAdminClient(bootstrap_servers=servers)
        self.reader = reader(bootstrap_servers=servers)
        self.partitions = [TopicPartition(topic.kafka.topic, p) for p in range(PARTITIONS)]
        self.end = 0

    async def __aenter__(self) -> Progress:
        await self.admin.start()
        await self.reader.start()
        ends = await self.reader.end_offsets(self.partitions)
        self.end = sum(ends.values())
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.reader.stop()
        await self.admin.close()

    async def committed(self) -> int:
        """Records the group has committed (0 while its coordinator is not ready)."""
        try:
            offsets = await self.admin.list_consumer_group_offsets(self.group)
        except KafkaError as exc:
            if not exc.retriable:
                raise
            return 0
        return sum(offsets[tp].offset for tp in self.partitions if tp in offsets)


def children(pid: int) -> list[int]:
    """The direct children of ``pid`` (Linux /proc)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


async def run(topic: Topic, url: str, workers: int, run_id: str) -> dict[str, Any]:
    """One ``consume --workers N`` from start to the end of the topic; its figures."""
    group = f"bench-workers-{topic.suffix}-{run_id}"
    kafka = topic.kafka
    env = consumer_env(kafka, url, group, EXECTRACK_CREATE_TOPICS="false")
    load_1m = os.getloadavg()[0]
    async with Progress(topic, group) as progress:
        cpu = MachineCpu()
        started = time.perf_counter()
        proc = subprocess.Popen(  # noqa: S603, ASYNC220 - our own console script, polled below
            [str(CONSUMER), "consume", "--workers", str(workers)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            first: tuple[float, int] | None = None
            while (done := await progress.committed()) < progress.end:
                if proc.poll() is not None:
                    raise RuntimeError(f"consume --workers {workers} exited {proc.returncode}")
                if first is None and done > 0:
                    first = (time.perf_counter(), done)
                await asyncio.sleep(0.1)
            ended = time.perf_counter()
            busy = cpu.busy()
            pids = [proc.pid, *children(proc.pid)]
            peaks = [round(peak_rss_mb(pid)) for pid in pids]
            proc.send_signal(signal.SIGTERM)
            status = await asyncio.to_thread(proc.wait, 60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    first = first or (started, 0)
    seconds = ended - started
    steady = (progress.end - first[1]) / max(ended - first[0], 1e-9)
    return {
        "workers": workers,
        "seconds": round(seconds, 2),
        "events_per_s": round(progress.end / seconds),
        "steady_events_per_s": round(steady),
        "machine_cpu_busy": round(busy, 3),
        "load_1m": round(load_1m, 2),
        "peak_rss_mb": peaks,
        "exit_status": status,
        "rows": await count_rows(url),
    }


async def bench(events: int, seed: int, rounds: int, workers: int) -> dict[str, Any]:
    base = Settings()
    server_url = base.database.url.get_secret_value()
    runs: list[dict[str, Any]] = []
    async with (
        simulated_topic(base, "bench-workers", events, seed) as topic,
        scratch_databases(server_url) as new_database,
    ):
        for number in range(rounds):
            for count in (1, workers):
                result = await run(topic, await new_database(), count, f"r{number}w{count}")
                result["round"] = number
                result["correct"] = result["rows"] == topic.executions and not result["exit_status"]
                runs.append(result)
                print(
                    f"round {number} --workers {count}: {result['events_per_s']:>7,} events/s "
                    f"({result['steady_events_per_s']:,} after the first commit), "
                    f"CPU busy {result['machine_cpu_busy']:.0%}, load {result['load_1m']}, "
                    f"RSS {'+'.join(map(str, result['peak_rss_mb']))} MB, rows {result['rows']:,}"
                    f"{'' if result['correct'] else ' WRONG'}"
                )
        total, executions = topic.messages, topic.executions
    ratios = [
        b["events_per_s"] / a["events_per_s"] for a, b in zip(runs[::2], runs[1::2], strict=True)
    ]
    steady = [
        b["steady_events_per_s"] / a["steady_events_per_s"]
        for a, b in zip(runs[::2], runs[1::2], strict=True)
    ]
    print(
        f"--workers {workers} / --workers 1: per round "
        + ", ".join(f"{r:.2f}" for r in ratios)
        + f"; median {statistics.median(ratios):.2f} "
        f"(after the first commit: median {statistics.median(steady):.2f})"
    )
    return {
        "benchmark": "workers",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "events": total,
        "executions": executions,
        "workers": workers,
        "runs": runs,
        "ratio_per_round": [round(r, 3) for r in ratios],
        "ratio_median": round(statistics.median(ratios), 3),
        "steady_ratio_per_round": [round(r, 3) for r in steady],
        "steady_ratio_median": round(statistics.median(steady), 3),
        "table_correct": all(r["correct"] for r in runs),
        "batch_max_records": base.batch_max_records,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    parser = argparse.ArgumentParser(prog="python -m bench.workers", description=__doc__)
    parser.add_argument("--events", type=int, default=300_000, help="about this many messages")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=3, help="A/B pairs, interleaved")
    parser.add_argument("--workers", type=int, default=2, help="B's --workers (A is 1)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    result = asyncio.run(bench(args.events, args.seed, args.rounds, args.workers))
    write_result(args.output, result)
    return 0 if result["table_correct"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
