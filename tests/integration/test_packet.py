"""Statements bounded by max_allowed_packet, and lost connections that recur (issue #13, item 4).

The issue's input: 200 valid ``completed`` events of distinct executions, each
with ``execution_parameters``, ``result_summary`` and ``error_details`` of
64,000 bytes serialized (strings of backslashes: each is two bytes in JSON and
doubles again as a SQL literal), so one batch renders ~77 MB of SQL, over the
server's ``max_allowed_packet`` (64 MiB here). The server hung up on the one
statement, 2013 was retried forever, nothing after it was applied.

No test here changes the server's global ``max_allowed_packet`` (other suites
share the server): a smaller limit is the writer's ``max_statement_bytes``.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import aiomysql
import orjson
import pymysql
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from exectrack.consumer.db import fastsql
from exectrack.consumer.errors import Stopped
from exectrack.consumer.ingest.fold import fold_events
from exectrack.consumer.ingest.writer import BatchWriter
from exectrack.consumer.retention.policy import RetentionPolicy
from exectrack.consumer.service import ConsumerService
from exectrack.producer._fields import MAX_JSON_FIELD_BYTES
from exectrack.producer.events import (
    CloudProvider,
    EventType,
    ExecutionEvent,
    ReportCategory,
    ReportType,
    execution_event,
    kafka_headers,
    report_defined_event,
    to_json,
)
from tests.conftest import Topics
from tests.support.kafka import committed_lag, publish, read_all
from tests.support.oracle import expected_row
from tests.support.proxy import TcpProxy
from tests.support.service import consumer_settings, run_until, table

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 2, tzinfo=UTC)
FIELD_BYTES = 64_000  # serialized, just under the contract's 64 KiB (producer/_fields.py)
FIELDS = ("execution_parameters", "result_summary", "error_details")


def backslashes(tag: str, size: int = FIELD_BYTES) -> dict[str, str]:
    """``{tag: "\\\\..."}`` of exactly ``size`` bytes as compact JSON."""
    value = {tag: "\\" * ((size - len(orjson.dumps({tag: ""}))) // 2)}
    assert len(orjson.dumps(value)) == size <= MAX_JSON_FIELD_BYTES
    return value


def big_completed(execution_id: str, size: int = FIELD_BYTES) -> ExecutionEvent:
    return execution_event(
        EventType.COMPLETED, execution_id=execution_id, report_id="rep-big", source="/tests",
        id=f"{execution_id}-done", sequence=2, time=T0, end_time=T0,
        **{name: backslashes(name[0], size) for name in FIELDS},
    )  # fmt: skip


def small_lifecycle(execution_id: str) -> list[ExecutionEvent]:
    kinds = (EventType.PENDING, EventType.STARTED, EventType.COMPLETED)
    return [
        execution_event(
            kind,
            execution_id=execution_id,
            report_id="rep-small",
            source="/tests",
            id=f"{execution_id}-{n}",
            sequence=n,
            time=T0 + timedelta(seconds=n),
            records_processed=n,
            result_summary={"n": n},
        )
        for n, kind in enumerate(kinds)
    ]


def assert_rows(rows: dict[str, dict[str, Any]], events: list[ExecutionEvent]) -> None:
    by_execution: dict[str, list[ExecutionEvent]] = {}
    for event in events:
        by_execution.setdefault(event.data.execution_id, []).append(event)
    assert set(rows) == set(by_execution)
    policy = RetentionPolicy()
    for eid, mine in by_execution.items():
        assert rows[eid] == expected_row(mine, policy.default[rows[eid]["status"]]), eid


async def stored_json(engine: AsyncEngine, execution_id: str, column: str) -> Any:
    async with engine.connect() as conn:
        raw = await conn.scalar(
            text(f"SELECT {column} FROM report_executions WHERE execution_id = :e"),
            {"e": execution_id},
        )
    return orjson.loads(raw)


def stop_after(attempts: int) -> Any:
    """keep_going for a writer: fails the write (Stopped) after ``attempts`` retries."""
    calls = [0]

    def keep_going() -> bool:
        calls[0] += 1
        return calls[0] < attempts

    return keep_going


# ---------------------------------------------------------------- the issue's input
async def test_the_issue_batch_is_written_in_statements_under_the_packet_limit(
    db: AsyncEngine,
) -> None:
    """The 200 events in ONE batch: a single statement would be ~77 MB."""
    events = [big_completed(f"big-{i:03}") for i in range(200)]
    async with db.connect() as conn:
        limit = int(await conn.scalar(text("SELECT @@max_allowed_packet")))
    writer = BatchWriter(db, RetentionPolicy(), retry_initial_s=0.01)
    outcome = await writer.write(fold_events(events), {}, stop_after(3))
    assert (outcome.written, outcome.attempts, outcome.poisoned_executions) == (200, 1, [])
    assert limit < 200 * 6 * FIELD_BYTES, "the batch no longer exceeds the server's limit"
    assert_rows(await table(db), events)
    for column in FIELDS:  # byte for byte: every backslash survived both escapings
        assert await stored_json(db, "big-123", column) == backslashes(column[0])


async def test_the_issue_input_through_the_consumer(
    db: AsyncEngine, database_url: str, topics: Topics
) -> None:
    """Published on the real broker, then other valid events on the same partitions."""
    big = [big_completed(f"big-{i:03}") for i in range(200)]
    later = [e for n in range(36) for e in small_lifecycle(f"later-{n}")]
    sent = await publish(
        topics.bootstrap, topics.topic, [(e.key, to_json(e), kafka_headers(e)) for e in big]
    )
    sent_later = await publish(
        topics.bootstrap, topics.topic, [(e.key, to_json(e), kafka_headers(e)) for e in later]
    )
    assert {s.partition for s in sent_later} <= {s.partition for s in sent}
    # whole partitions in one fetch: the batch holds as many of the big events as it can
    settings = consumer_settings(topics, database_url, max_partition_fetch_bytes=64 * 2**20)
    totals = await run_until(ConsumerService(settings, engine=db), len(big) + len(later))
    assert (totals.applied, totals.dead_lettered) == (len(big) + len(later), 0)
    assert_rows(await table(db), big + later)
    assert await stored_json(db, "big-007", "error_details") == backslashes("e")
    assert await read_all(topics.bootstrap, topics.dlq) == []
    assert await committed_lag(topics.bootstrap, topics.topic, topics.group_id) == 0


# ---------------------------------------------------------------- one row over the limit
async def test_a_row_over_the_statement_limit_is_refused_alone(
    db: AsyncEngine, database_url: str, topics: Topics
) -> None:
    """A limit of 300,000 bytes (as a server with a small max_allowed_packet would have):
    the row with three 64,000-byte fields needs ~385 KB and cannot be sent; a row with
    one such field (~130 KB) goes in a statement of its own; the small ones are packed."""
    limit = 300_000
    too_big = big_completed("too-big")
    one_field = execution_event(
        EventType.COMPLETED, execution_id="one-field", report_id="rep-big", source="/tests",
        id="one-field-done", time=T0, error_details=backslashes("e"),
    )  # fmt: skip
    small = [e for n in range(40) for e in small_lifecycle(f"small-{n}")]
    events = [*small[:60], too_big, one_field, *small[60:]]
    await publish(
        topics.bootstrap, topics.topic, [(e.key, to_json(e), kafka_headers(e)) for e in events]
    )
    settings = consumer_settings(topics, database_url, db_max_statement_bytes=limit)
    totals = await run_until(ConsumerService(settings, engine=db), len(events))
    assert totals.dead_lettered == 1
    assert_rows(await table(db), [one_field, *small])
    (dead,) = await read_all(topics.bootstrap, topics.dlq)
    headers = dict(dead.headers)
    assert (dead.key, headers["exectrack.dlq.reason"]) == (b"too-big", b"db_refused")
    error = headers["exectrack.dlq.error"].decode()
    assert "max_allowed_packet" in error
    assert f"over the {limit}-byte limit" in error
    assert await committed_lag(topics.bootstrap, topics.topic, topics.group_id) == 0


async def test_many_rows_over_the_limit_are_refused_in_one_attempt(db: AsyncEngine) -> None:
    """Every row over the limit is named by the first failure: no retry per row."""
    too_big = [big_completed(f"too-big-{n}") for n in range(30)]
    small = [e for n in range(30) for e in small_lifecycle(f"small-{n}")]
    writer = BatchWriter(db, RetentionPolicy(), max_statement_bytes=300_000)
    outcome = await writer.write(fold_events(too_big + small), {}, stop_after(2))
    assert sorted(outcome.poisoned_executions) == sorted(f"too-big-{n}" for n in range(30))
    assert outcome.attempts == 2
    assert "'too-big-7' needs a" in outcome.errors["too-big-7"]
    assert_rows(await table(db), small)


async def test_every_statement_of_a_batch_stays_under_the_limit(db: AsyncEngine) -> None:
    """Every statement sent to the server, counted at the driver: none over the limit,
    for the executions (fastsql) and the report definitions, placeholders (Core)."""
    limit = 20_000
    events = [e for n in range(120) for e in small_lifecycle(f"e-{n}-" + "x" * 200)]
    reports = {
        f"rep-{n}": report_defined_event(
            source="/tests",
            report_id=f"rep-{n}",
            version=1,
            name="n" * 200,
            report_type=ReportType("vpc_inventory"),
            category=ReportCategory("security"),
            provider=CloudProvider("aws"),
            query_config={"q": "é\\'" * 700},
        )
        for n in range(30)
    }
    sizes: list[int] = []
    original = aiomysql.Connection._execute_command

    async def counting(self: Any, command: int, sql: bytes) -> Any:
        sizes.append(len(sql))
        return await original(self, command, sql)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(aiomysql.Connection, "_execute_command", counting)
        writer = BatchWriter(db, RetentionPolicy(), max_statement_bytes=limit)
        first = await writer.write(fold_events(events[::2]), reports)
        second = await writer.write(fold_events(events[1::2]), {})  # locks, upserts
    assert (first.written, second.written, first.reports_defined) == (120, 120, 30)
    assert_rows(await table(db), events)
    assert len(sizes) > 20, "the batch was not split"
    assert max(sizes) <= limit
    async with db.connect() as conn:
        stored = await conn.scalar(
            text("SELECT query_config FROM reports WHERE report_id = 'rep-7'")
        )
    assert orjson.loads(stored) == {"q": "é\\'" * 700}


# ---------------------------------------------------------------- recurring lost connections
async def test_a_statement_the_server_hangs_up_on_ends_in_bisection(db: AsyncEngine) -> None:
    """The writer believes it may send 1 GiB (a wrong override), so it sends the issue's
    ~77 MB statement: the real server drops the connection (2013) at every attempt while
    answering new ones. After three in a row the batch is bisected; its halves fit."""
    events = [big_completed(f"big-{i:03}") for i in range(200)]
    writer = BatchWriter(db, RetentionPolicy(), retry_initial_s=0.01, max_statement_bytes=2**30)
    outcome = await writer.write(fold_events(events), {}, stop_after(12))
    assert outcome.poisoned_executions == []
    assert outcome.written == 200
    assert outcome.attempts >= 3 + 2  # three lost connections, then at least two halves
    assert_rows(await table(db), events)


def dropping(victim: str) -> Any:
    """A fastsql.write_rows whose statements with ``victim``'s row lose their connection."""
    original = fastsql.write_rows

    async def write_rows(conn: AsyncConnection, columns: Any, rows: Any, **kw: Any) -> None:
        if any(row["execution_id"] == victim for row in rows):
            lost = pymysql.err.OperationalError(2013, "Lost connection to MySQL server")
            raise OperationalError("INSERT ...", {}, lost)
        await original(conn, columns, rows, **kw)

    return write_rows


async def test_a_row_that_always_loses_the_connection_is_dead_lettered_alone(
    db: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fastsql, "write_rows", dropping("victim"))
    events = [e for n in range(15) for e in small_lifecycle(f"ok-{n}")]
    events += small_lifecycle("victim")
    writer = BatchWriter(db, RetentionPolicy(), retry_initial_s=0.001)
    outcome = await writer.write(fold_events(events), {}, stop_after(200))
    assert outcome.poisoned_executions == ["victim"]
    assert "lost 3 times in a row" in outcome.errors["victim"]
    assert_rows(await table(db), [e for e in events if e.data.execution_id != "victim"])


async def test_lost_connections_during_an_outage_are_retried_not_bisected(
    db: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same failures while the server does not answer a probe (an outage): retried
    until the caller stops, nothing refused, nothing bisected."""

    class Outage(BatchWriter):
        async def _server_answers(self) -> bool:
            return False

    monkeypatch.setattr(fastsql, "write_rows", dropping("victim"))
    events = [e for n in range(15) for e in small_lifecycle(f"ok-{n}")]
    events += small_lifecycle("victim")
    writer = Outage(db, RetentionPolicy(), retry_initial_s=0.001, retry_max_s=0.001)
    with pytest.raises(Stopped, match="connection lost"):
        await writer.write(fold_events(events), {}, stop_after(20))
    assert await table(db) == {}  # the whole batch waits: nothing written, nothing refused


@pytest.mark.parametrize("reset", [False, True], ids=["refused", "reset"])
async def test_an_outage_mid_stream_is_retried_never_dead_lettered(
    db: AsyncEngine, database_url: str, topics: Topics, reset: bool
) -> None:
    """The consumer reaches the database through a proxy that the test cuts for 8 s in
    the middle of a statement with 400 KB rows: a lost connection (2013), then refused
    connections (2003) or, ``reset``, connections lost before the server's greeting
    (2013 at every attempt, as a crash-looping server gives). The server does not answer
    the writer's probe: an outage, retried; nothing is bisected into dead letters, and
    everything is written once the proxy is back."""
    url = make_url(database_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 3306, reset=reset)
    port = await proxy.start()
    via_proxy = url.set(port=port).render_as_string(hide_password=False)
    first = [big_completed(f"first-{n:02}") for n in range(30)]
    first += [e for n in range(60) for e in small_lifecycle(f"first-small-{n}")]
    second = [big_completed(f"second-{n:02}") for n in range(30)]
    second += [e for n in range(60) for e in small_lifecycle(f"second-small-{n}")]

    def messages(events: list[ExecutionEvent]) -> list[tuple[bytes, bytes, Any]]:
        return [(e.key, to_json(e), kafka_headers(e)) for e in events]

    settings = consumer_settings(
        topics, via_proxy, batch_max_records=40, db_retry_initial_s=0.05, db_retry_max_s=0.5
    )
    lost = REGISTRY.get_sample_value("exectrack_db_errors_total", {"kind": "ConnectionLost"})
    service = ConsumerService(settings)
    task = asyncio.create_task(service.run())
    try:
        await publish(topics.bootstrap, topics.topic, messages(first))
        async with asyncio.timeout(60):
            while service.totals.records == 0:
                await asyncio.sleep(0.01)
        proxy.cut_after(1_000_000)  # in the middle of a statement with a few 400 KB rows
        await publish(topics.bootstrap, topics.topic, messages(second))
        async with asyncio.timeout(60):
            await proxy.was_cut.wait()
        during = service.totals.records
        await asyncio.sleep(8)
        assert not task.done(), "the consumer stopped during the outage"
        assert service.totals.records <= during + settings.batch_max_records  # one in flight
        assert service.totals.dead_lettered == 0
        await proxy.restore()
        async with asyncio.timeout(90):
            while service.totals.records < len(first) + len(second):
                assert not task.done()
                await asyncio.sleep(0.05)
    finally:
        service.request_stop()
        await asyncio.wait_for(task, timeout=30)
        await proxy.close()
    assert service.totals.dead_lettered == 0
    now_lost = REGISTRY.get_sample_value("exectrack_db_errors_total", {"kind": "ConnectionLost"})
    assert (now_lost or 0) > (lost or 0), "no statement was cut: the test missed its point"
    assert_rows(await table(db), first + second)
    assert await read_all(topics.bootstrap, topics.dlq) == []
    assert await committed_lag(topics.bootstrap, topics.topic, topics.group_id) == 0
