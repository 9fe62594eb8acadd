"""All benchmarks, one command: ``python -m bench --profile quick|full``.

- ``quick`` (about 20,000 events each): a smoke run that proves the benchmarks
  work; its numbers are noisy and nothing asserts on them.
- ``full`` (about 1,000,000 events for the consumer, 200,000 for the producer):
  the figures quoted in docs/performance.md. Takes several minutes.

Each benchmark writes its JSON result to bench/results/ (git-ignored) and
prints its rates and ratios against baselines measured in the same run.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable

from bench import setup_logging

PROFILES: dict[str, list[tuple[str, list[str]]]] = {
    "quick": [
        ("bench.producer", ["--events", "20000"]),
        ("bench.consumer", ["--events", "20000", "--naive-sample", "1000"]),
        ("bench.replay", ["--events", "20000"]),
        ("bench.purge", ["--rows", "20000", "--batches", "50"]),
        ("bench.latency", ["--rate", "2000", "--seconds", "5"]),
        ("bench.workers", ["--events", "20000", "--rounds", "1"]),
    ],
    "full": [
        ("bench.producer", ["--events", "200000"]),
        ("bench.consumer", ["--events", "1000000", "--naive-sample", "5000"]),
        ("bench.replay", ["--events", "1000000"]),
        ("bench.purge", ["--rows", "1000000"]),
        ("bench.latency", ["--rate", "2000", "--seconds", "60"]),
        ("bench.workers", ["--events", "1000000", "--rounds", "3"]),
    ],
}


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    args = parser.parse_args(argv)
    failed = []
    for module_name, module_args in PROFILES[args.profile]:
        print(f"\n=== {module_name} {' '.join(module_args)}")
        run: Callable[[list[str]], int] = importlib.import_module(module_name).main
        if run(module_args) != 0:
            failed.append(module_name)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
