"""Security basics: the consumer over SASL_SSL (SCRAM-SHA-512 on TLS) to a private broker.

With the right credentials and the CA, a consumer process converges exactly
like everywhere else (table == oracle, DLQ == invalid, lag 0). With a wrong
password it consumes nothing, writes nothing, and its log never shows the
password (the secret is a ``SecretStr`` end to end); it exits 1 with one
structured ``connect_failed`` line naming the broker and the cause
(authentication failed), no traceback; ``exectrack-producer`` likewise prints
one ``error:`` line. The broker is private to this module
(tests/faults/secure_broker.py): the deploy/local broker is not reconfigured.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine

from exectrack.consumer.kafka import reader
from exectrack.producer.settings import KafkaSettings
from tests.conftest import Topics
from tests.faults.secure_broker import PASSWORD, USER, SecureBroker, available, secure_broker
from tests.support.expect import dead_lettered, expected_rows, invalid_offsets
from tests.support.faults import Figures, Spawn, duplicates, spawner, stream
from tests.support.kafka import Sent, group_offsets
from tests.support.service import table

pytestmark = pytest.mark.integration
WRONG = "not-the-password-0xDEADBEEF"


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    why = available()
    if why:
        pytest.skip(f"secure broker: {why}")
    with secure_broker(tmp_path_factory.mktemp("secure-broker")) as found:
        yield found


def settings(broker: SecureBroker, topics: Topics, password: str = PASSWORD) -> KafkaSettings:
    return KafkaSettings(
        bootstrap_servers=broker.bootstrap, topic=topics.topic, dlq_topic=topics.dlq,
        security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512", sasl_username=USER,
        sasl_password=SecretStr(password), ssl_cafile=broker.cafile,
    )  # fmt: skip


def secure_env(broker: SecureBroker, password: str) -> dict[str, str]:
    return {
        "EXECTRACK_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
        "EXECTRACK_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512",
        "EXECTRACK_KAFKA__SASL_USERNAME": USER,
        "EXECTRACK_KAFKA__SASL_PASSWORD": password,
        "EXECTRACK_KAFKA__SSL_CAFILE": broker.cafile,
    }


@pytest.fixture
async def secure_topics(broker: SecureBroker) -> AsyncIterator[Topics]:
    suffix = uuid.uuid4().hex[:10]
    made = Topics(broker.bootstrap, f"exectrack-secure-{suffix}",
                  f"exectrack-secure-{suffix}.dlq", f"exectrack-secure-{suffix}", 6)  # fmt: skip
    admin = AIOKafkaAdminClient(**settings(broker, made).client_kwargs())
    await admin.start()
    try:
        await admin.create_topics([NewTopic(made.topic, 6, 1), NewTopic(made.dlq, 1, 1)])
        async with asyncio.timeout(30):  # usable once every partition has a leader
            while not all(
                t["error_code"] == 0
                and t["partitions"]
                and all(p["leader"] >= 0 for p in t["partitions"])
                for t in await admin.describe_topics([made.topic, made.dlq])
            ):
                await asyncio.sleep(0.1)
        yield made
    finally:
        await admin.close()


@pytest.fixture
def secure_spawn(secure_topics: Topics, database_url: str, tmp_path: Path) -> Iterator[Spawn]:
    yield from spawner(secure_topics, database_url, tmp_path)


async def publish(kafka: KafkaSettings, messages: list[Any]) -> list[Sent]:
    producer = AIOKafkaProducer(acks="all", enable_idempotence=True, **kafka.client_kwargs())
    await producer.start()
    try:
        futures = [await producer.send(kafka.topic, m.value, m.key, headers=m.headers)
                   for m in messages]  # fmt: skip
        metas = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return [Sent(m.key, m.value, m.headers, meta.partition, meta.offset)
            for m, meta in zip(messages, metas, strict=True)]  # fmt: skip


async def positions(kafka: KafkaSettings, topic: str, group: str) -> tuple[int, int, list[Any]]:
    """(sum of end offsets, sum of the group's committed offsets, records of ``topic``)."""
    consumer = reader(enable_auto_commit=False, **kafka.client_kwargs())
    await consumer.start()
    admin = AIOKafkaAdminClient(**kafka.client_kwargs())
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
        parts = [TopicPartition(topic, p["partition"]) for p in described["partitions"]]
        end = await consumer.end_offsets(parts)
        try:
            committed = await group_offsets(admin, group)
        except KafkaError as exc:  # a fresh broker is still creating __consumer_offsets
            if not exc.retriable:
                raise
            committed = {}
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        records: list[Any] = []
        while any([await consumer.position(tp) < end[tp] for tp in parts]):
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                records.extend(batch)
    finally:
        await admin.close()
        await consumer.stop()
    done = sum(committed[tp].offset for tp in parts if tp in committed)
    return sum(end.values()), done, records


async def test_consumer_over_sasl_ssl_converges(
    db: AsyncEngine, broker: SecureBroker, secure_topics: Topics, secure_spawn: Spawn,
    figures: Figures,
) -> None:  # fmt: skip
    kafka = settings(broker, secure_topics)
    messages = stream(1000, seed=106)
    sent = await publish(kafka, messages)
    proc = secure_spawn(**secure_env(broker, PASSWORD))
    async with asyncio.timeout(90):
        while True:
            end, done, _ = await positions(kafka, secure_topics.topic, secure_topics.group_id)
            if done == end:
                break
            assert proc.poll() is None, "the consumer exited"
            await asyncio.sleep(0.5)
    rows = await table(db)
    expected = expected_rows(messages, None)
    assert rows == expected
    _, _, dlq = await positions(kafka, secure_topics.dlq, secure_topics.group_id)
    assert dead_lettered(dlq) == invalid_offsets(sent, messages)
    figures.faults = ["SASL_SSL (SCRAM-SHA-512, TLS with a private CA)"]
    invalid = sum(m.invalid_reason is not None for m in messages)
    figures.counts = {
        "events_in": len(messages), "valid_events": len(messages) - invalid,
        "invalid_events": invalid, "dead_lettered": len(dead_lettered(dlq)),
        "duplicates_in_stream": duplicates(messages), "rows_expected": len(expected),
        "rows_out": len(rows), "missing": 0, "wrong": 0, "lost": 0,
    }  # fmt: skip


async def test_wrong_password_consumes_nothing_and_leaks_nothing(
    db: AsyncEngine, broker: SecureBroker, secure_topics: Topics, secure_spawn: Spawn,
    tmp_path: Path,
) -> None:  # fmt: skip
    kafka = settings(broker, secure_topics)
    await publish(kafka, stream(50, seed=107))
    proc = secure_spawn(**secure_env(broker, WRONG))
    try:
        code = await asyncio.to_thread(proc.wait, 60)
    except Exception:
        code = None  # still retrying: acceptable, as long as nothing moved
    _, done, _ = await positions(kafka, secure_topics.topic, secure_topics.group_id)
    assert done == 0
    assert await table(db) == {}
    log = (tmp_path / "consumer-0.log").read_text(errors="replace")
    assert WRONG not in log
    assert code == 1, f"exit status {code}; log: {log[-2000:]}"
    # no traceback: one structured line naming the broker and the cause (consumer.failures)
    assert "Traceback" not in log, log[-2000:]
    failed = [json.loads(line) for line in log.splitlines() if '"connect_failed"' in line]
    assert len(failed) == 1, log[-2000:]
    assert failed[0]["service"] == "kafka"
    assert failed[0]["target"] == broker.bootstrap
    assert failed[0]["reason"].startswith("authentication failed")
    assert "invalid credentials" in failed[0]["reason"]


def test_producer_cli_wrong_password_one_line(broker: SecureBroker, secure_topics: Topics) -> None:
    env = {**os.environ, **secure_env(broker, WRONG),
           "EXECTRACK_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap,
           "EXECTRACK_KAFKA__TOPIC": secure_topics.topic}  # fmt: skip
    done = subprocess.run(
        [str(Path(sys.executable).parent / "exectrack-producer"), "emit", "--report-id", "r1"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "Traceback" not in output
    assert WRONG not in output
    assert done.stderr.strip().splitlines() == [
        f"error: cannot connect to kafka {broker.bootstrap}: authentication failed during "
        "authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512"
    ]
