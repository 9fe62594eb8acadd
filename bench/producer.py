"""The simulator's publishing rate next to raw aiokafka's: ``python -m bench.producer``.

In one process, against the broker of ``EXECTRACK_KAFKA__BOOTSTRAP_SERVERS``
(the local stack by default), each phase on a fresh topic (12 partitions,
deleted afterwards), with the same producer settings (``PublisherSettings``:
acks=all, idempotent, lz4, linger 5 ms) and the same pre-serialized payloads
(the simulator's own, generated before the clock starts):

- ceiling/send: ``await producer.send(...)`` per message, pipelined (futures
  awaited at the end), aiokafka's default partitioner: raw aiokafka as most
  code uses it.
- ceiling/batch: ``create_batch``/``send_batch`` per partition, partitions
  computed before the clock starts: the fastest path aiokafka offers, doing
  nothing but sending; the ceiling proper.
- simulate: ``run_simulation`` through ``Publisher``, generation included.

Prints the rates and simulate's ratio to each ceiling, and writes
``bench/results/producer.json`` (git-ignored).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.partitioner import DefaultPartitioner

from bench import setup_logging, write_result
from exectrack.producer._traffic import Record
from exectrack.producer.publisher import Publisher
from exectrack.producer.settings import KafkaSettings, ProducerSettings, PublisherSettings
from exectrack.producer.simulate import SimConfig, records, run_simulation

RESULTS = Path(__file__).resolve().parent / "results" / "producer.json"
PARTITIONS = 12
PER_EXECUTION_SAMPLE = 2_000


def executions_for(events: int, seed: int) -> int:
    """How many executions make about ``events`` messages (measured on a sample)."""
    sample = sum(1 for _ in records(SimConfig(executions=PER_EXECUTION_SAMPLE, seed=seed)))
    return max(1, round(events * PER_EXECUTION_SAMPLE / sample))


async def with_topic(
    kafka: KafkaSettings, run: Callable[[KafkaSettings], Awaitable[float]]
) -> float:
    """Run one phase on a fresh topic; returns its elapsed seconds."""
    name = f"exectrack-bench-{uuid.uuid4().hex[:10]}"
    admin = AIOKafkaAdminClient(**kafka.client_kwargs())
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, PARTITIONS, kafka.replication_factor)])
        try:
            return await run(kafka.model_copy(update={"topic": name}))
        finally:
            await admin.delete_topics([name])
    finally:
        await admin.close()


def raw_producer(kafka: KafkaSettings, options: PublisherSettings) -> AIOKafkaProducer:
    return AIOKafkaProducer(**kafka.client_kwargs(), **options.producer_kwargs())


async def ceiling_send(
    kafka: KafkaSettings, options: PublisherSettings, data: list[Record]
) -> float:
    producer = raw_producer(kafka, options)
    await producer.start()
    try:
        await producer.partitions_for(kafka.topic)
        started = time.perf_counter()
        futures = [
            await producer.send(kafka.topic, r.value, key=r.key, headers=r.headers) for r in data
        ]
        await asyncio.gather(*futures)
        return time.perf_counter() - started
    finally:
        await producer.stop()


async def ceiling_batch(
    kafka: KafkaSettings, options: PublisherSettings, data: list[Record]
) -> float:
    producer = raw_producer(kafka, options)
    await producer.start()
    try:
        partitions = sorted(await producer.partitions_for(kafka.topic))
        partition_of = DefaultPartitioner()
        chunks = []
        for start in range(0, len(data), 4000):  # the chunk run_simulation uses
            groups: dict[int, list[Record]] = {}
            for r in data[start : start + 4000]:
                groups.setdefault(partition_of(r.key, partitions, partitions), []).append(r)
            chunks.append(groups)
        started = time.perf_counter()
        futures = []
        for groups in chunks:
            for partition, group in groups.items():
                batch = producer.create_batch()
                for r in group:
                    if (
                        batch.append(key=r.key, value=r.value, timestamp=None, headers=r.headers)
                        is None
                    ):
                        batch.close()
                        futures.append(
                            await producer.send_batch(batch, kafka.topic, partition=partition)
                        )
                        batch = producer.create_batch()
                        batch.append(key=r.key, value=r.value, timestamp=None, headers=r.headers)
                batch.close()
                futures.append(await producer.send_batch(batch, kafka.topic, partition=partition))
        await asyncio.gather(*futures)
        return time.perf_counter() - started
    finally:
        await producer.stop()


async def submit(producer: AIOKafkaProducer, batch: Any, topic: str, partition: int) -> Any:
    batch.close()
    return await producer.send_batch(batch, topic, partition=partition)


async def simulate(
    kafka: KafkaSettings, options: PublisherSettings, config: SimConfig
) -> tuple[float, int]:
    async with Publisher(kafka, options=options) as pub:
        report = await run_simulation(pub, config, progress=False)
    if report.failed:
        raise RuntimeError(f"{report.failed} messages failed")
    return report.elapsed_s, report.sent


async def ceilings(
    kafka: KafkaSettings, options: PublisherSettings, config: SimConfig
) -> tuple[float, float]:
    data = list(records(config))  # the same payloads for both, made before any clock
    print(f"{len(data):,} messages from {config.executions:,} executions, seed {config.seed}")
    send_s = await with_topic(kafka, lambda k: ceiling_send(k, options, data))
    print(f"ceiling/send  (aiokafka send per message):  {len(data) / send_s:>9,.0f} events/s")
    batch_s = await with_topic(kafka, lambda k: ceiling_batch(k, options, data))
    print(f"ceiling/batch (aiokafka send_batch):        {len(data) / batch_s:>9,.0f} events/s")
    return send_s, batch_s


async def bench(events: int, seed: int) -> dict[str, Any]:
    settings = ProducerSettings()
    kafka, options = settings.kafka, settings.publisher
    config = SimConfig(executions=executions_for(events, seed), seed=seed)
    send_s, batch_s = await ceilings(kafka, options, config)
    gc.collect()  # the ceilings' payloads are gone: the simulation starts from a clean heap
    sent = 0

    async def sim_phase(k: KafkaSettings) -> float:
        nonlocal sent
        elapsed, sent = await simulate(k, options, config)
        return elapsed

    sim_s = await with_topic(kafka, sim_phase)
    rates = {"ceiling_send": 0.0, "ceiling_batch": 0.0, "simulate": sent / sim_s}
    rates["ceiling_send"] = sent / send_s
    rates["ceiling_batch"] = sent / batch_s
    print(f"simulate      (run_simulation, generating): {rates['simulate']:>9,.0f} events/s")
    print(
        f"simulate / ceiling/batch = {rates['simulate'] / rates['ceiling_batch']:.2f}; "
        f"simulate / ceiling/send = {rates['simulate'] / rates['ceiling_send']:.2f}"
    )
    return {
        "benchmark": "producer",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "events": sent,
        "executions": config.executions,
        "seed": seed,
        "events_per_s": {name: round(rate) for name, rate in rates.items()},
        "ratio_simulate_to_ceiling_batch": round(rates["simulate"] / rates["ceiling_batch"], 3),
        "ratio_simulate_to_ceiling_send": round(rates["simulate"] / rates["ceiling_send"], 3),
        "settings": options.model_dump(),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "aiokafka": version("aiokafka"),
            "bootstrap": kafka.bootstrap_servers,
            "partitions": PARTITIONS,
        },
    }


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    parser = argparse.ArgumentParser(prog="python -m bench.producer", description=__doc__)
    parser.add_argument("--events", type=int, default=200_000, help="about this many messages")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    result = asyncio.run(bench(args.events, args.seed))
    write_result(args.output, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
