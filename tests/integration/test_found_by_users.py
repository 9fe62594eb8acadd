"""Inputs from public bug reports of similar systems that break exectrack's promises.

Each test publishes what a real producer sends (raw JSON bytes, as a foreign
client would, not through ``exectrack.producer.events``), consumes it with the real
consumer on the real broker and database, and asserts what CONTRACT.md says
the table and the dead-letter topic must hold. Each cites the public report
that inspired it.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from structlog.testing import capture_logs

from exectrack.consumer.retention.policy import RetentionPolicy
from exectrack.consumer.service import ConsumerService
from exectrack.producer.events import MAX_JSON_DEPTH, ExecutionEvent, parse_event
from tests.conftest import Topics
from tests.support.kafka import committed_lag, publish, read_all, wait_for_leaders
from tests.support.oracle import expected_row
from tests.support.service import consumer_settings, run_until, table

STRUCTURED = [("content-type", b"application/cloudevents+json")]


def event(kind: str, execution_id: str, *, id: str, **data: Any) -> bytes:
    """A structured-mode execution event as a foreign producer writes it."""
    return orjson.dumps(
        {
            "specversion": "1.0",
            "id": id,
            "source": "/services/found-by-users",
            "type": f"exectrack.execution.{kind}",
            "subject": execution_id,
            "time": "2026-01-01T12:00:00Z",
            "data": {"execution_id": execution_id, "report_id": "r-users", **data},
        }
    )


def nested(depth: int) -> dict[str, Any]:
    """A JSON object ``depth`` levels deep: {"a": {"a": ... {"leaf": 1}}}."""
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


async def consume(topics: Topics, database_url: str, db: AsyncEngine, records: int) -> None:
    await run_until(ConsumerService(consumer_settings(topics, database_url), engine=db), records)


def out_of_range(field: str) -> float:
    labels = {"field": field}
    return REGISTRY.get_sample_value("exectrack_fields_out_of_range_total", labels) or 0.0


def out_of_range_lines(logs: Iterable[Mapping[str, Any]]) -> list[tuple[str, str, str, Any, Any]]:
    return sorted(
        (line.get("execution_id") or line["report_id"], line["id"], line["field"], line["sent"],
         line["stored"])
        for line in logs
        if line["event"] == "field_out_of_range"
    )  # fmt: skip


async def json_text(db: AsyncEngine, execution_id: str, column: str) -> Any:
    """The column's stored JSON text, parsed by the stdlib (exact integers of any size)."""
    async with db.connect() as conn:
        stored = (
            await conn.execute(
                text(f"SELECT {column} FROM report_executions WHERE execution_id = :e"),
                {"e": execution_id},
            )
        ).scalar_one()
    return None if stored is None else json.loads(stored)


# Inspired by facebook/mysql-5.6#95 "SELECT query using JSON_VALID fails" (JSON
# nesting limits of MySQL-family servers) and MariaDB's MDEV-32854 "Make
# JSON_DEPTH_LIMIT unlimited" (mariadb-corporation/mariadb-columnstore-engine
# pull request #3674): MariaDB 10.11's JSON_VALID, the CHECK constraint of every
# JSON column, answers 0 for a document nested 32 levels or more. A
# `result_summary` 32 deep is a valid JSON object of 400 bytes (CONTRACT.md:
# JSON objects, each at most 64 KiB); today the whole `completed` event is
# dead-lettered `db_refused` (error 4025, CONSTRAINT ... failed) and the
# execution never completes: a valid event lost.
# The rule (docs/events.md, "Values outside the columns' range"; measured:
# MariaDB 10.11 holds 31 nested arrays/objects, MySQL 8.0 100): a JSON field
# nested deeper than MAX_JSON_DEPTH = 31 is not carried, like an out-of-range
# count: the status and the other fields count, the column is NULL, the field
# is counted in exectrack_fields_out_of_range_total{field} and logged. (The
# test first asked for the deep objects stored: no MariaDB JSON column holds
# them.) One level less is stored as sent.
async def test_json_field_nested_32_deep_does_not_lose_the_completed_event(
    db: AsyncEngine, database_url: str, topics: Topics
) -> None:
    summary, details = nested(32), nested(100)
    fitting = nested(MAX_JSON_DEPTH)
    before = (out_of_range("result_summary"), out_of_range("error_details"))
    await publish(
        topics.bootstrap,
        topics.topic,
        [
            (b"deep-32", event("completed", "deep-32", id="d32", result_summary=summary,
                               records_processed=5), STRUCTURED),
            (b"deep-100", event("failed", "deep-100", id="d100", error_details=details),
             STRUCTURED),
            (b"deep-31", event("completed", "deep-31", id="d31", result_summary=fitting),
             STRUCTURED),
        ],
    )  # fmt: skip
    with capture_logs() as logs:
        await consume(topics, database_url, db, 3)
    rows = await table(db)
    assert sorted(rows) == ["deep-100", "deep-31", "deep-32"], await read_all(
        topics.bootstrap, topics.dlq
    )
    assert (rows["deep-32"]["status"], rows["deep-32"]["records_processed"]) == ("completed", 5)
    assert rows["deep-100"]["status"] == "failed"
    assert rows["deep-31"]["status"] == "completed"
    assert await json_text(db, "deep-32", "result_summary") is None
    assert await json_text(db, "deep-100", "error_details") is None
    assert await json_text(db, "deep-31", "result_summary") == fitting
    assert await read_all(topics.bootstrap, topics.dlq) == []
    assert (out_of_range("result_summary"), out_of_range("error_details")) == (
        before[0] + 1,
        before[1] + 1,
    )
    assert out_of_range_lines(logs) == [
        ("deep-100", "d100", "error_details", "JSON nested 100 deep (limit 31)", None),
        ("deep-32", "d32", "result_summary", "JSON nested 32 deep (limit 31)", None),
    ]


# Same kind, a report definition (found with the command-line consumer and an
# lz4-compressed batch): `query_config` 33 deep is dead-lettered `db_refused`
# today, so the report keeps its placeholder row (name = report_id, no type).
# The rule above: the definition is applied, query_config is not carried
# (NULL), counted and logged; the other JSON field, 31 deep, is stored.
async def test_report_definition_with_json_nested_33_deep_is_applied(
    db: AsyncEngine, database_url: str, topics: Topics
) -> None:
    query, params = nested(33), nested(MAX_JSON_DEPTH)
    before = out_of_range("query_config")
    definition = orjson.dumps(
        {
            "specversion": "1.0", "id": "rd-deep", "source": "/services/catalog",
            "type": "exectrack.report.defined", "subject": "rep-deep",
            "time": "2026-01-01T12:00:00Z",
            "data": {
                "report_id": "rep-deep", "version": 1, "name": "Deep \U0001f600",
                "report_type": "vpc_inventory", "category": "security", "provider": "aws",
                "query_config": query, "parameters_schema": params,
            },
        }
    )  # fmt: skip
    await publish(topics.bootstrap, topics.topic, [(b"rep-deep", definition, STRUCTURED)])
    with capture_logs() as logs:
        await consume(topics, database_url, db, 1)
    async with db.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT name, report_type, query_config, scheduling_config,"
                    " parameters_schema FROM reports WHERE report_id = :r"
                ),
                {"r": "rep-deep"},
            )
        ).one_or_none()
    assert row is not None, await read_all(topics.bootstrap, topics.dlq)
    assert (row.name, row.report_type) == ("Deep \U0001f600", "vpc_inventory")
    # not carried: stored as an absent field is (scheduling_config), which SQLAlchemy's
    # JSON type writes as JSON null on the reports table
    assert row.query_config == row.scheduling_config == "null"
    assert json.loads(row.parameters_schema) == params
    assert await read_all(topics.bootstrap, topics.dlq) == []
    assert out_of_range("query_config") == before + 1
    assert out_of_range_lines(logs) == [
        ("rep-deep", "rd-deep", "query_config", "JSON nested 33 deep (limit 31)", None)
    ]


# Inspired by ijl/orjson#308 "Too large integers are not rejected" and
# ijl/orjson#53 "Support 65+ bit integers": orjson reads a JSON integer beyond
# 64 bits as a float, silently. A JSON integer of any size is valid JSON (and
# MariaDB's JSON column stores it exactly); CONTRACT.md says the field holds
# the value the event carried. Today execution_parameters holds
# 1.2345678901234568e+29 instead of 123456789012345678901234567890 (and two
# events differing only in such a number get the same digest).
async def test_integers_beyond_64_bits_in_json_fields_are_stored_exactly(
    db: AsyncEngine, database_url: str, topics: Topics
) -> None:
    raw = event("started", "big-int", id="big-1", execution_parameters={"p": 0}).replace(
        b'{"p":0}', b'{"account":123456789012345678901234567890,"q":18446744073709551616}'
    )
    await publish(topics.bootstrap, topics.topic, [(b"big-int", raw, STRUCTURED)])
    await consume(topics, database_url, db, 1)
    assert await json_text(db, "big-int", "execution_parameters") == {
        "account": 123456789012345678901234567890,
        "q": 18446744073709551616,
    }


# The same kind, one step on: the stored row is read back (locked, merged) and
# written again by the next batch, and a producer re-uses the event id with
# another big integer. The row keeps every digit through the rewrite, and the
# two contents under one id are told apart by their digests (one conflict
# counted), which they were not when orjson read both as one float.
async def test_big_integers_stay_exact_when_the_row_is_rewritten(
    db: AsyncEngine, database_url: str, topics: Topics
) -> None:
    def started(account: bytes) -> bytes:
        raw = event("started", "big-rw", id="rw-1", execution_parameters={"p": 0})
        return raw.replace(b'{"p":0}', b'{"account":' + account + b"}")

    conflicts = REGISTRY.get_sample_value("exectrack_event_id_conflicts_total") or 0.0
    await publish(topics.bootstrap, topics.topic, [(b"big-rw", started(b"2" * 40), STRUCTURED)])
    await consume(topics, database_url, db, 1)
    assert await json_text(db, "big-rw", "execution_parameters") == {"account": int("2" * 40)}
    completed = event("completed", "big-rw", id="rw-2", records_processed=7)
    await publish(topics.bootstrap, topics.topic, [(b"big-rw", completed, STRUCTURED)])
    await consume(topics, database_url, db, 1)  # the group resumes after the first
    row = (await table(db))["big-rw"]
    assert (row["status"], row["records_processed"]) == ("completed", 7)
    assert await json_text(db, "big-rw", "execution_parameters") == {"account": int("2" * 40)}
    duplicate = started(b"2" * 39 + b"3")
    await publish(topics.bootstrap, topics.topic, [(b"big-rw", duplicate, STRUCTURED)])
    await consume(topics, database_url, db, 1)
    stored = await json_text(db, "big-rw", "execution_parameters")
    assert stored in ({"account": int("2" * 40)}, {"account": int("2" * 39 + "3")})
    assert REGISTRY.get_sample_value("exectrack_event_id_conflicts_total") == conflicts + 1
    assert await read_all(topics.bootstrap, topics.dlq) == []


# Inspired by cloudevents/spec pull request #727 "Clarify the role of
# partitioning extension in Kafka" (the key is opt-in: CloudEvents SDKs send a
# null key unless told otherwise) and knative-extensions/eventing-kafka-broker#49
# "Set partitionkey value as ProducerRecord key" (whose default was the empty
# string). The empty key used to be dead-lettered `key_mismatch` while a null
# key was applied: one mistake, two outcomes. Decided (docs/events.md,
# "Transport"): a missing key, null or empty, is not a key that disagrees; both
# are applied (the fold is order-free and concurrent writers converge, so the
# lost partition affinity costs no correctness) and counted in
# exectrack_events_without_key_total. A present key that differs stays
# `key_mismatch` (tests/unit/test_events.py::test_kafka_key).
async def test_null_and_empty_keys_are_applied_and_counted(
    db: AsyncEngine, database_url: str, topics: Topics
) -> None:
    sent = {
        "no-key": (None, event("started", "no-key", id="nk-1", sequence=1)),
        "empty-key": (b"", event("completed", "empty-key", id="ek-1", records_processed=7)),
    }
    before = REGISTRY.get_sample_value("exectrack_events_without_key_total") or 0.0
    await publish(
        topics.bootstrap, topics.topic, [(key, raw, STRUCTURED) for key, raw in sent.values()]
    )
    await consume(topics, database_url, db, 2)
    assert await read_all(topics.bootstrap, topics.dlq) == []
    policy = RetentionPolicy()
    expected = {}
    for execution_id, (_, raw) in sent.items():
        parsed = parse_event(raw, STRUCTURED)
        assert isinstance(parsed, ExecutionEvent)
        expected[execution_id] = expected_row([parsed], policy.default.get(parsed.status))
    assert await table(db) == expected
    assert (expected["no-key"]["status"], expected["empty-key"]["status"]) == (
        "running",
        "completed",
    )
    after = REGISTRY.get_sample_value("exectrack_events_without_key_total") or 0.0
    assert after - before == 2


# The producer of a header whose NAME is not UTF-8 (Kafka header names are
# bytes on the wire; librdkafka clients such as confluent-kafka-python write
# them unchecked). Run in a child process with aiokafka's pure-Python record
# builder and a str whose encode() returns those bytes: aiokafka itself only
# ever writes UTF-8 names.
BAD_HEADER_PRODUCER = """
import asyncio, sys
from aiokafka import AIOKafkaProducer

class RawName(str):
    def encode(self, *args, **kwargs):
        return b"x-trace-\\xff\\xfe"

async def main(topic, first, second):
    producer = AIOKafkaProducer(bootstrap_servers=sys.argv[1], linger_ms=0)
    await producer.start()
    try:
        ct = ("content-type", b"application/cloudevents+json")
        await producer.send_and_wait(topic, first, key=b"hdr-a", partition=0,
                                     headers=[ct, (RawName("x"), b"v")])
        await producer.send_and_wait(topic, second, key=b"hdr-b", partition=0, headers=[ct])
    finally:
        await producer.stop()

asyncio.run(main(sys.argv[2], sys.argv[3].encode(), sys.argv[4].encode()))
"""


# Inspired by ag2ai/faststream#2458 "FastStream fails to decode non-UTF-8 Kafka
# message headers" and napalm-automation/napalm-logs pull request #390 "fix
# kafka decoding error blocking consumption". One record whose header name is
# not UTF-8, then a valid event of another execution on the same partition:
# today aiokafka's record decoder raises UnicodeDecodeError inside the fetch,
# ConsumerService.run() dies with it, nothing is committed, and a restart dies
# again on the same offset: a crash on a message and a blocked partition.
# Right: the consumer keeps running; the second event is applied; the first is
# applied or dead-lettered (never silently lost); lag 0.
async def test_header_name_that_is_not_utf8_does_not_crash_or_block_the_partition(
    db: AsyncEngine, database_url: str, topics: Topics
) -> None:
    first = event("started", "hdr-a", id="hdr-a-1").decode()
    second = event("started", "hdr-b", id="hdr-b-1").decode()
    env = dict(os.environ, AIOKAFKA_NO_EXTENSIONS="1")
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", BAD_HEADER_PRODUCER, topics.bootstrap, topics.topic, first, second,
        env=env,
    )  # fmt: skip
    assert await asyncio.wait_for(child.wait(), timeout=60) == 0
    service = ConsumerService(consumer_settings(topics, database_url), engine=db)
    await run_until(service, 2, timeout_s=60)
    rows = await table(db)
    assert rows["hdr-b"]["status"] == "running"
    dead = await read_all(topics.bootstrap, topics.dlq)
    assert ("hdr-a" in rows) + len(dead) == 1, (sorted(rows), dead)
    assert await committed_lag(topics.bootstrap, topics.topic, topics.group_id) == 0


# Found by the same user: 2 partitions added (12 -> 14) while `consume` ran, an
# event produced to the new partition was applied only after 299 s, at
# aiokafka's periodic metadata refresh (metadata_max_age_ms, 300,000 by
# default, like the Java client's metadata.max.age.ms). Not a lost event (a new
# partition is read from its start) but a delay no setting could shorten: now
# EXECTRACK_KAFKA__METADATA_MAX_AGE_MS (docs/operations.md, "Scaling"). Here 2 s:
# the event is applied within seconds, not minutes.
async def test_partitions_added_while_consuming_are_read_at_the_metadata_refresh(
    db: AsyncEngine, database_url: str, topics: Topics
) -> None:
    settings = consumer_settings(topics, database_url)
    settings.kafka.metadata_max_age_ms = 2_000
    service = ConsumerService(settings, engine=db)
    running = asyncio.create_task(run_until(service, 1, timeout_s=60))
    try:
        async with asyncio.timeout(30):
            while service.consumer is None or not service.consumer.assignment():
                assert not running.done(), running
                await asyncio.sleep(0.1)
        admin = AIOKafkaAdminClient(bootstrap_servers=topics.bootstrap)
        await admin.start()
        try:
            await admin.create_partitions({topics.topic: NewPartitions(total_count=14)})
        finally:
            await admin.close()
        await wait_for_leaders(topics.bootstrap, [topics.topic])
        added = asyncio.get_running_loop().time()
        producer = AIOKafkaProducer(bootstrap_servers=topics.bootstrap, acks="all")
        await producer.start()
        try:
            raw = event("started", "new-part", id="np-1")
            meta = await producer.send_and_wait(
                topics.topic, raw, key=b"new-part", partition=13, headers=STRUCTURED
            )
        finally:
            await producer.stop()
        assert meta.partition == 13
        await running
        waited = asyncio.get_running_loop().time() - added
    finally:
        if not running.done():
            service.request_stop()
            await asyncio.wait_for(running, timeout=30)
    rows = await table(db)
    assert rows["new-part"]["status"] == "running"
    assert waited < 30, waited  # 299 s with the default
    assert await committed_lag(topics.bootstrap, topics.topic, topics.group_id) == 0


def binary(execution_id: str, id: str, *extra: tuple[str, bytes]) -> tuple[bytes, list[Any]]:
    """A binary-mode started event: ce_* headers, then ``extra``; the value is the data."""
    headers = [
        ("ce_specversion", b"1.0"), ("ce_id", id.encode()),
        ("ce_source", b"/services/found-by-users"), ("ce_type", b"exectrack.execution.started"),
        ("ce_subject", execution_id.encode()), ("ce_time", b"2026-01-01T12:00:00Z"), *extra,
    ]  # fmt: skip
    return orjson.dumps({"execution_id": execution_id, "report_id": "r-users"}), headers


# The envelope inputs of tests/unit/test_found_by_users.py through the real
# consumer: RFC 3339's leap second examples (golang/go#77072, time-rs/time#404),
# two content-type headers (redpanda-data/connect#1478), content-type plus
# ce_datacontenttype (spring-cloud/spring-cloud-function#1401) agreeing in
# either order, and disagreeing (dead-lettered, both values named).
async def test_leap_seconds_and_repeated_content_types_on_the_real_consumer(
    db: AsyncEngine, database_url: str, topics: Topics
) -> None:
    leap = event("started", "leap-z", id="lp-1").replace(
        b"2026-01-01T12:00:00Z", b"1990-12-31T23:59:60Z"
    )
    leap_offset = event("completed", "leap-z", id="lp-2", end_time="1990-12-31T15:59:60-08:00")
    leap_offset = leap_offset.replace(b"2026-01-01T12:00:00Z", b"1990-12-31T15:59:60-08:00")
    json_type = ("content-type", b"application/json")
    messages = [
        (b"leap-z", leap, STRUCTURED),
        (b"leap-z", leap_offset, STRUCTURED),
        (b"two-ct", *binary("two-ct", "ct-1", json_type, ("content-type", b"text/plain"))),
        (b"dct-1", *binary("dct-1", "d-1", json_type, ("ce_datacontenttype", b"application/json"))),
        (b"dct-2", *binary("dct-2", "d-2", ("ce_datacontenttype", b"Application/JSON; charset=UTF-8"), json_type)),  # noqa: E501
        (b"dct-3", *binary("dct-3", "d-3", json_type, ("ce_datacontenttype", b"text/plain"))),
    ]  # fmt: skip
    await publish(topics.bootstrap, topics.topic, messages)
    await consume(topics, database_url, db, len(messages))
    rows = await table(db)
    assert sorted(rows) == ["dct-1", "dct-2", "leap-z", "two-ct"]
    leap_row = rows["leap-z"]
    last = datetime(1990, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    assert leap_row["status"] == "completed"
    assert (leap_row["created_at"], leap_row["last_event_at"], leap_row["end_time"]) == (
        last,
        last,
        last,
    )
    assert all(rows[e]["status"] == "running" for e in ("two-ct", "dct-1", "dct-2"))
    (dead,) = await read_all(topics.bootstrap, topics.dlq)
    headers = dict(dead.headers)
    assert (dead.key, headers["exectrack.dlq.reason"]) == (b"dct-3", b"not_cloudevent")
    error = headers["exectrack.dlq.error"].decode()
    assert "'application/json'" in error, error
    assert "'text/plain'" in error, error
