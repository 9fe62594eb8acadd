"""The consumer's hot path alone, no I/O: ``python -m bench.hotpath --events 200000``.

What ``bench.profile`` splits out of a real run (decode + validate, fold, rows,
SQL literals), measured on the same simulated messages without the broker or
the database: the records are built in memory (``exectrack.producer.simulate``,
the profile's config: ~4.6 messages per execution, 1% duplicates, 10% of
executions reordered, 1% invalid), cut into batches of ``--batch`` records,
and each batch goes through ``Decoder.add`` (``YIELD_EVERY`` records at a time,
as ``decode_yielding``), ``Decoder.batch`` (the fold), ``ExecutionFold.to_row``
for every execution (new rows: the default retention policy's period) and
``fastsql.render_each``. CPU time (``time.process_time``) per stage, per
message, best of ``--repeat`` passes over the messages (the GC tuned as
``consume`` tunes it).

``--parts`` also times, over the same messages, what the fast path
(``exectrack.consumer.ingest.fast``) is made of, one at a time: what bounds it.

``--against PATH`` runs the same measurement with the code of another
checkout (``PATH/src`` first on ``PYTHONPATH``), alternately with this one,
``--rounds`` times each, in child processes: a ratio measured in one run,
under the same machine load (printed, from ``os.getloadavg``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

HERE = Path(__file__).resolve().parent.parent


class FakeRecord(NamedTuple):
    """What the decoder reads of an aiokafka ``ConsumerRecord``."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]


def messages(events: int, seed: int) -> list[FakeRecord]:
    from exectrack.producer.simulate import SimConfig, records

    start = datetime(2026, 11, 30, tzinfo=UTC) - timedelta(hours=6)
    config = SimConfig(executions=max(1, round(events / 4.6)), seed=seed, start=start,
                       reorder_ratio=0.1)  # fmt: skip
    return [
        FakeRecord("bench", 0, offset, 0, r.key, r.value, tuple(r.headers))
        for offset, r in enumerate(records(config))
    ]


def one_pass(records: list[FakeRecord], batch: int) -> dict[str, float]:
    from exectrack.consumer.db import fastsql
    from exectrack.consumer.db.repository import EXECUTION_COLUMNS
    from exectrack.consumer.ingest.decode import YIELD_EVERY, Decoder
    from exectrack.consumer.retention.policy import RetentionPolicy

    policy = RetentionPolicy()
    spent = dict.fromkeys(("parse_validate", "fold", "rows", "sql_literals"), 0.0)
    clock = time.process_time
    for start in range(0, len(records), batch):
        chunk = records[start : start + batch]
        decoder = Decoder()
        t0 = clock()
        for at in range(0, len(chunk), YIELD_EVERY):
            decoder.add("tp", chunk[at : at + YIELD_EVERY])
        t1 = clock()
        folded = decoder.batch().executions
        t2 = clock()
        rows = [fold.to_row(policy.period(fold.status)) for fold in folded.values()]
        t3 = clock()
        fastsql.render_each(EXECUTION_COLUMNS, rows)
        t4 = clock()
        spent["parse_validate"] += t1 - t0
        spent["fold"] += t2 - t1
        spent["rows"] += t3 - t2
        spent["sql_literals"] += t4 - t3
    return {stage: s / len(records) * 1e6 for stage, s in spent.items()}


def measure(events: int, seed: int, batch: int, repeat: int) -> dict[str, Any]:
    import exectrack
    from exectrack.consumer.ingest.decode import tune_gc

    records = messages(events, seed)
    tune_gc()
    passes = [one_pass(records, batch) for _ in range(repeat)]
    totals = [sum(p.values()) for p in passes]
    best = passes[totals.index(min(totals))]
    return {
        "code": str(Path(exectrack.__file__).resolve().parents[2]),
        "messages": len(records),
        "us_per_message": {k: round(v, 2) for k, v in best.items()},
        "total_us_per_message": round(min(totals), 2),
    }


def parts(events: int, seed: int, repeat: int) -> dict[str, float]:
    """CPU per message of the fast path's steps, each alone over every valid message."""
    from hashlib import blake2b

    import msgspec

    from exectrack.consumer.ingest import fast
    from exectrack.consumer.ingest.decode import tune_gc
    from exectrack.producer._models import CANONICAL_OPTIONS
    from exectrack.producer.events import dumps_json

    records = [r for r in messages(events, seed) if fast.fast_fact(r.value, r.headers, r.key)]
    values = [r.value or b"" for r in records]  # all set: the fast path took them
    envelopes = [fast._DECODER.decode(v) for v in values]
    sent = [msgspec.to_builtins(e.data, builtin_types=(msgspec.Raw,)) for e in envelopes]
    for fields in sent:  # as fast_fact makes them: times and JSON fields read
        for name, value in fields.items():
            if isinstance(value, msgspec.Raw):
                fields[name] = fast._json_object(value)
            elif name in fast._TIMES:
                fields[name] = fast._utc(value)
    canonical = [
        {"specversion": "1.0", "id": e.id, "source": e.source, "type": e.type,
         "subject": e.subject, "time": fast._utc(e.time), "datacontenttype": "application/json",
         "data": s}
        for e, s in zip(envelopes, sent, strict=True)
    ]  # fmt: skip
    texts = [dumps_json(c, option=CANONICAL_OPTIONS) for c in canonical]
    steps: dict[str, Callable[[], object]] = {
        "fast_fact, whole": lambda: [fast.fast_fact(r.value, r.headers, r.key) for r in records],
        "msgspec decode": lambda: [fast._DECODER.decode(v) for v in values],
        "envelope time (regex, fromisoformat)": lambda: [fast._utc(e.time) for e in envelopes],
        "data fields sent (to_builtins)": lambda: [
            msgspec.to_builtins(e.data, builtin_types=(msgspec.Raw,)) for e in envelopes
        ],
        "canonical JSON (orjson)": lambda: [
            dumps_json(c, option=CANONICAL_OPTIONS) for c in canonical
        ],
        "blake2b-128 of it": lambda: [blake2b(t, digest_size=16).hexdigest() for t in texts],
    }
    tune_gc()
    clock = time.process_time
    best: dict[str, float] = {}
    for _ in range(repeat):
        for name, step in steps.items():
            started = clock()
            step()
            spent = (clock() - started) / len(records) * 1e6
            best[name] = min(best.get(name, spent), spent)
    return {name: round(v, 2) for name, v in best.items()}


def child(code: Path, args: argparse.Namespace) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": f"{code / 'src'}:{HERE}"}
    argv = [sys.executable, "-m", "bench.hotpath", "--json", "--events", str(args.events),
            "--seed", str(args.seed), "--batch", str(args.batch),
            "--repeat", str(args.repeat)]  # fmt: skip
    out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout  # noqa: S603
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def show(result: dict[str, Any]) -> str:
    stages = " ".join(f"{k} {v:.2f}" for k, v in result["us_per_message"].items())
    return f"{result['total_us_per_message']:6.2f} us/message ({stages})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hotpath", description=__doc__)
    parser.add_argument("--events", type=int, default=100_000, help="about this many messages")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=5_000, help="records per batch")
    parser.add_argument("--repeat", type=int, default=3, help="passes; the best is kept")
    parser.add_argument("--against", type=Path, help="another checkout: A/B, interleaved")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print the result as one JSON line")
    parser.add_argument("--parts", action="store_true", help="also time the fast path's steps")
    args = parser.parse_args(argv)
    if args.parts:
        print(f"load average {os.getloadavg()[0]:.2f}")
        for name, micros in parts(args.events, args.seed, args.repeat).items():
            print(f"  {name:<38} {micros:6.2f} us/message")
    if args.against is None:
        result = measure(args.events, args.seed, args.batch, args.repeat)
        print(json.dumps(result) if args.json else show(result))
        return 0
    runs: dict[str, list[dict[str, Any]]] = {"baseline": [], "this": []}
    for round_ in range(args.rounds):
        for name, code in (("baseline", args.against.resolve()), ("this", HERE)):
            load = os.getloadavg()[0]
            runs[name].append(child(code, args))
            print(f"round {round_ + 1} {name:<8} {show(runs[name][-1])} load {load:.2f}")
    medians = {
        n: statistics.median(r["total_us_per_message"] for r in rs) for n, rs in runs.items()
    }
    print(f"median baseline {medians['baseline']:.2f}, this {medians['this']:.2f} us/message: "
          f"x{medians['baseline'] / medians['this']:.2f} faster")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
