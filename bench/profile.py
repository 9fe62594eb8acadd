"""Where the consumer's CPU goes, per event: ``python -m bench.profile --events 100000``.

Preloads a fresh topic like bench.consumer, then runs ``ConsumerService``
in-process into a fresh database (the same code as ``exectrack-consumer
consume``) and splits the process's CPU time (``time.process_time``) by stage,
timing the synchronous functions that make up each one:

- parse + validate: ``exectrack.consumer.ingest.decode.Decoder.add`` (the fast path,
  msgspec, with the order key's digest; orjson + pydantic for what it is not sure of);
- fold: ``exectrack.consumer.ingest.fold.fold_events`` (per-field last-writer-wins by K);
- rows: ``ExecutionFold.to_row`` (derived fields, ``fold_keys`` encoding);
- SQL literals: ``exectrack.consumer.db.fastsql.render_each``;
- statement bytes: ``exectrack.consumer.db.packet.runs`` (splitting rows into statements
  under ``max_allowed_packet``: the byte count of each rendered row);
- the rest: reading records (aiokafka), the driver (pymysql's protocol,
  result rows), SQLAlchemy, asyncio, dead letters, commits, logging.

Also how busy the whole machine was (the broker and the database share its
cores) and the process's share of it. ``--pyinstrument`` writes a call tree
to bench/results/profile.txt as well (slower: the rates are then not the real ones).
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import MachineCpu, setup_logging, write_result
from bench.consumer import (
    count_rows,
    exectrack,
    in_process_settings,
    scratch_databases,
    simulated_topic,
)
from exectrack.consumer.db import fastsql, packet
from exectrack.consumer.ingest import decode as batch_module
from exectrack.consumer.ingest.fold import ExecutionFold
from exectrack.consumer.settings import Settings

RESULTS = Path(__file__).resolve().parent / "results" / "profile.json"
STAGES = {
    "parse_validate": (batch_module.Decoder, "add"),
    "fold": (batch_module, "fold_events"),
    "rows": (ExecutionFold, "to_row"),
    "sql_literals": (fastsql, "render_each"),
    "statement_bytes": (packet, "runs"),
}


def instrument(spent: dict[str, float]) -> Callable[[], None]:
    """Wrap each stage's function to add its CPU time to ``spent``; returns an undo."""
    undo: list[tuple[Any, str, Any]] = []
    for stage, (owner, name) in STAGES.items():
        original = getattr(owner, name)
        spent[stage] = 0.0

        def timed(*args: Any, _f: Any = original, _s: str = stage, **kwargs: Any) -> Any:
            started = time.process_time()
            try:
                return _f(*args, **kwargs)
            finally:
                spent[_s] += time.process_time() - started

        def timed_steps(*args: Any, _f: Any = original, _s: str = stage, **kwargs: Any) -> Any:
            steps = _f(*args, **kwargs)  # a generator: time each step, not its consumer
            while True:
                started = time.process_time()
                try:
                    step = next(steps)
                except StopIteration:
                    return
                finally:
                    spent[_s] += time.process_time() - started
                yield step

        setattr(owner, name, timed_steps if inspect.isgeneratorfunction(original) else timed)
        undo.append((owner, name, original))

    def restore() -> None:
        for owner, name, original in undo:
            setattr(owner, name, original)

    return restore


async def profile(events: int, seed: int, tree: bool) -> dict[str, Any]:
    base = Settings()
    server = base.database.url.get_secret_value()
    async with (
        simulated_topic(base, "profile", events, seed) as topic,
        scratch_databases(server) as new_database,
    ):
        total, url = topic.messages, await new_database()
        settings = in_process_settings(base, topic, f"profile-{topic.suffix}", url)
        spent: dict[str, float] = {}
        restore = instrument(spent)
        profiler = None
        if tree:
            from pyinstrument import Profiler

            profiler = Profiler()
            profiler.start()
        cpu, machine = time.process_time(), MachineCpu()
        try:
            seconds, steady = await exectrack(settings, total)
        finally:
            restore()
        process_cpu, busy = time.process_time() - cpu, machine.busy()
        if profiler is not None:
            profiler.stop()
            RESULTS.parent.mkdir(parents=True, exist_ok=True)
            RESULTS.with_suffix(".txt").write_text(profiler.output_text(unicode=False))
        correct = await count_rows(url) == topic.executions
    per_event = {stage: s / total * 1e6 for stage, s in spent.items()}
    per_event["rest"] = process_cpu / total * 1e6 - sum(per_event.values())
    print(f"{total:,} events in {seconds:.1f} s: {total / seconds:,.0f} events/s "
          f"(steady {steady:,.0f}); table correct: {correct}")  # fmt: skip
    print(f"process CPU {process_cpu / total * 1e6:.1f} us/event = {process_cpu / seconds:.0%} "
          f"of one core; whole machine busy {busy:.0%} of its cores")  # fmt: skip
    for stage, micros in per_event.items():
        print(f"  {stage:<15} {micros:6.1f} us/event")
    return {
        "benchmark": "profile",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "events": total,
        "events_per_s": round(total / seconds),
        "table_correct": correct,
        "process_cpu_us_per_event": round(process_cpu / total * 1e6, 2),
        "process_share_of_one_core": round(process_cpu / seconds, 3),
        "machine_cpu_busy": round(busy, 3),
        "us_per_event": {k: round(v, 2) for k, v in per_event.items()},
        "pyinstrument": tree,
    }


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--events", type=int, default=100_000, help="about this many messages")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pyinstrument", action="store_true", help="also write a call tree")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    result = asyncio.run(profile(args.events, args.seed, args.pyinstrument))
    write_result(args.output, result)
    return 0 if result["table_correct"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
