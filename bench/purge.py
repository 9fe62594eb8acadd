"""The purge beside a live writer: ``python -m bench.purge --rows 1000000``.

Against the database of ``EXECTRACK_DATABASE__URL`` (the local stack by default),
in a fresh database created for the run and dropped afterwards (unless ``--keep``):

1. fill: ``--rows`` executions whose ``retention_until`` has passed, written
   straight into ``report_executions`` with ``INSERT ... SELECT`` from a
   number table (100,000 rows a statement), not through Kafka;
2. baseline: the consumer's batch writer (``BatchWriter.write``, the code the
   service runs for every batch) writes ``--batches`` fixed synthetic batches
   (``--batch-executions`` executions each: half new ``pending``+``started``, half
   completing the previous batch's) and each write is timed;
3. with purge: ``exectrack-consumer purge --json`` runs as a child process (as
   a CronJob would) while the same writer keeps writing batches, timed the
   same way, until the purge exits;
4. check: every expired row is gone and every row the writer wrote is there.

Prints p50/p99 of the write latency without and with the purge, their ratio,
and the purge's rows/s (from its own summary); writes ``bench/results/purge.json``
(git-ignored).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from bench import setup_logging, write_result
from exectrack.consumer.db import migrate
from exectrack.consumer.db.admin import create_database, drop_database
from exectrack.consumer.db.engine import create_engine
from exectrack.consumer.db.repository import EXECUTIONS
from exectrack.consumer.ingest.fold import fold_events
from exectrack.consumer.ingest.writer import BatchWriter
from exectrack.consumer.retention.policy import RetentionPolicy
from exectrack.consumer.settings import DatabaseSettings, Settings
from exectrack.producer.events import EventType, ExecutionEvent, execution_event

RESULTS = Path(__file__).resolve().parent / "results" / "purge.json"
CONSUMER = Path(sys.executable).parent / "exectrack-consumer"
SEQ = 100_000  # rows per INSERT ... SELECT


async def fill_expired(engine: AsyncEngine, rows: int, *, report_id: str = "bench-report") -> float:
    """Insert ``rows`` completed executions past retention; returns seconds."""
    started = time.perf_counter()
    async with engine.begin() as conn:
        await conn.execute(
            text("INSERT IGNORE INTO reports (report_id, name) VALUES (:r, :r)"), {"r": report_id}
        )
        await conn.execute(text("CREATE TABLE IF NOT EXISTS bench_seq (n INT PRIMARY KEY)"))
        await conn.execute(text("TRUNCATE TABLE bench_seq"))
        await conn.execute(text("CREATE TEMPORARY TABLE d (x INT)"))
        await conn.execute(text("INSERT INTO d VALUES (0),(1),(2),(3),(4),(5),(6),(7),(8),(9)"))
        # a temporary table can be opened once per statement: copy it four times first
        for i in range(1, 5):
            await conn.execute(text(f"CREATE TEMPORARY TABLE d{i} AS SELECT x FROM d"))
        await conn.execute(
            text(
                "INSERT INTO bench_seq SELECT d.x + 10*d1.x + 100*d2.x + 1000*d3.x + 10000*d4.x "
                "FROM d, d1, d2, d3, d4"
            )
        )
        await conn.execute(text("DROP TEMPORARY TABLE d, d1, d2, d3, d4"))
    base = datetime.now(UTC) - timedelta(days=400)
    for offset in range(0, rows, SEQ):
        count = min(SEQ, rows - offset)
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO report_executions (execution_id, report_id, status, end_time, "
                    "retention_until, created_at, last_event_at, fold_keys) "
                    "SELECT CONCAT('expired-', :o + n), :r, 'completed', "
                    "TIMESTAMPADD(SECOND, (:o + n) DIV 10, :base), "
                    "TIMESTAMPADD(SECOND, (:o + n) DIV 10, :until), "
                    "TIMESTAMPADD(SECOND, (:o + n) DIV 10, :base), "
                    "TIMESTAMPADD(SECOND, (:o + n) DIV 10, :base), "
                    "CONCAT('{\"k\": [[2, -1, 0, \"e', :o + n, '\"]], \"f\": {\"status\": 0, "
                    "\"report_id\": 0}}') "
                    "FROM bench_seq WHERE n < :c"
                ),
                {
                    "o": offset, "r": report_id, "c": count,
                    "base": base.replace(tzinfo=None),
                    "until": (base + timedelta(days=30)).replace(tzinfo=None),
                },
            )  # fmt: skip
    async with engine.begin() as conn:
        await conn.execute(text("DROP TABLE bench_seq"))
    return time.perf_counter() - started


def _events(eids: list[str], kind: str, now: datetime) -> list[ExecutionEvent]:
    made = []
    for eid in eids:
        steps: list[tuple[EventType, int, dict[str, Any]]] = (
            [(EventType.PENDING, 0, {"trigger_type": "scheduled"}),
             (EventType.STARTED, 1, {"start_time": now})]
            if kind == "open"
            else [(EventType.COMPLETED, 2, {"end_time": now, "records_processed": 7})]
        )  # fmt: skip
        for type_, seq, fields in steps:
            made.append(
                execution_event(
                    type_,
                    execution_id=eid,
                    report_id="bench-live",
                    source="/bench",
                    sequence=seq,
                    time=now,
                    **fields,
                )
            )
    return made


class Writer:
    """Fixed synthetic batches through the consumer's BatchWriter, each write timed."""

    def __init__(self, engine: AsyncEngine, size: int) -> None:
        self.writer = BatchWriter(engine, RetentionPolicy(), retry_initial_s=0.01)
        self.half = max(1, size // 2)
        self.previous: list[str] = []
        self.written: set[str] = set()
        self.n = 0

    async def batch(self) -> float:
        now = datetime.now(UTC)
        fresh = [f"live-{self.n}-{i}" for i in range(self.half)]
        self.n += 1
        events = _events(fresh, "open", now) + _events(self.previous, "done", now)
        folds = fold_events(events)
        started = time.perf_counter()
        outcome = await self.writer.write(folds, {})
        elapsed = time.perf_counter() - started
        assert not outcome.errors, outcome.errors
        self.written.update(fresh)
        self.previous = fresh
        return elapsed


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    cut = statistics.quantiles(ordered, n=100, method="inclusive")
    return {
        "n": len(ordered), "p50_ms": cut[49] * 1000, "p99_ms": cut[98] * 1000,
        "max_ms": ordered[-1] * 1000, "mean_ms": statistics.fmean(ordered) * 1000,
    }  # fmt: skip


async def run(args: argparse.Namespace) -> dict[str, Any]:
    server = Settings().database.url.get_secret_value()
    name = f"exectrack_bench_purge_{uuid.uuid4().hex[:8]}"
    url = await create_database(server, name)
    engine = create_engine(DatabaseSettings(pool_size=4), url=url)
    try:
        await migrate.upgrade(url)
        print(f"fill: {args.rows:,} expired rows into {name} ...", flush=True)
        fill_s = await fill_expired(engine, args.rows)
        print(f"fill: {fill_s:.1f} s ({args.rows / fill_s:,.0f} rows/s)", flush=True)
        writer = Writer(engine, args.batch_executions)
        for _ in range(5):  # warm-up: pool, caches
            await writer.batch()
        baseline = [await writer.batch() for _ in range(args.batches)]
        print(f"baseline: {percentiles(baseline)}", flush=True)

        env = {**os.environ, "EXECTRACK_DATABASE__URL": url, "EXECTRACK_LOG_LEVEL": "warning"}
        command = [
            *(str(CONSUMER), "purge", "--json", "--no-progress"),
            *("--chunk-size", str(args.chunk_size), "--pause-ms", str(args.pause_ms)),
        ]
        proc = await asyncio.create_subprocess_exec(
            *command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        during: list[float] = []
        wait = asyncio.create_task(proc.communicate())
        while not wait.done():
            during.append(await writer.batch())
        out, err = await wait
        if proc.returncode != 0:
            raise RuntimeError(f"purge failed ({proc.returncode}): {err.decode()[-2000:]}")
        summary = json.loads(out.decode().strip().splitlines()[-1])
        print(f"with purge: {percentiles(during)}", flush=True)

        async with engine.connect() as conn:
            left = (
                await conn.execute(
                    select(func.count()).where(EXECUTIONS.c.execution_id.like("expired-%"))
                )
            ).scalar_one()
            live = (
                await conn.execute(
                    select(func.count()).where(EXECUTIONS.c.execution_id.like("live-%"))
                )
            ).scalar_one()
        assert left == 0, f"{left} expired rows left"
        assert live == len(writer.written), (live, len(writer.written))
        base_p, with_p = percentiles(baseline), percentiles(during)
        return {
            "rows": args.rows,
            "fill_s": fill_s,
            "fill_rows_per_s": args.rows / fill_s,
            "batch_executions": args.batch_executions,
            "chunk_size": args.chunk_size,
            "pause_ms": args.pause_ms,
            "baseline": base_p,
            "with_purge": with_p,
            "ratio_p50": with_p["p50_ms"] / base_p["p50_ms"],
            "ratio_p99": with_p["p99_ms"] / base_p["p99_ms"],
            "purge": summary,
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "when": datetime.now(UTC).isoformat(),
        }
    finally:
        await engine.dispose()
        if not args.keep:
            await drop_database(server, name)


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    parser = argparse.ArgumentParser(prog="python -m bench.purge", description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batches", type=int, default=200, help="baseline batches")
    parser.add_argument("--batch-executions", type=int, default=500)
    parser.add_argument("--chunk-size", type=int, default=1000)
    parser.add_argument("--pause-ms", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the database")
    args = parser.parse_args(argv)
    result = asyncio.run(run(args))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    write_result(RESULTS, result)
    print(
        f"purge: {result['purge']['deleted']:,} rows in {result['purge']['chunks']} chunks, "
        f"{result['purge']['rows_per_s']:,.0f} rows/s; write latency with/without purge: "
        f"p50 x{result['ratio_p50']:.2f}, p99 x{result['ratio_p99']:.2f} -> {RESULTS}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
