"""exectrack beside the peer a Kafka shop would pick: ``python -m bench.peer`` (on demand, not CI).

The peer is Kafka Connect 4.1.1 standalone with the Debezium JDBC sink 3.3.1
(``io.debezium.connector.jdbc.JdbcSinkConnector``, upsert by ``execution_id``).
Its jars come from Maven Central with Maven, once, into
``$EXECTRACK_CACHE_DIR/connect-4.1.1`` (``~/.cache/exectrack`` by default), as
deploy/local/stack.sh fetches the broker's: the worker through
bench/connect/pom.xml (``dependency:copy-dependencies``), the connector as its
published plugin archive (classifier ``plugin``, type ``tar.gz``) unpacked into
the worker's ``plugin.path``. Needs ``java`` (17+) and ``mvn``.

One run, against the broker and database of ``EXECTRACK_KAFKA__BOOTSTRAP_SERVERS``
and ``EXECTRACK_DATABASE__URL`` (the local stack by default):

1. the simulation (``exectrack.producer.simulate``, fixed ``--seed``, about
   ``--events`` messages, 10% of executions reordered, 1% duplicates, 1%
   invalid) is published twice, to two fresh 12-partition topics keyed by
   ``execution_id``: as CloudEvents for exectrack (the bytes ``bench.replay``
   publishes), and flattened for the peer: one row-shaped record per valid
   execution event (``flat_record``: the row's columns as the producer's
   lifecycle stands after that event, i.e. the fold of the execution's events
   up to it in lifecycle order; JsonConverter schema in every message, times as
   ``io.debezium.time.MicroTimestamp``, JSON columns as strings), in the same
   order (duplicates re-sent as the same record, invalid messages and report
   definitions left out: they have no row);
2. ``--rounds`` rounds (default 3), interleaved: ``exectrack-consumer consume``
   as a child (fresh group, fresh migrated database), then Connect standalone
   with the sink, tuned (``TUNED``: batch 5000, reduction buffer; fresh
   database holding the same ``report_executions`` table without exectrack's
   bookkeeping column ``fold_keys`` and without foreign keys), each until its
   consumer group's lag is 0, then stopped. Per run: events/s (messages on its
   topic / wall seconds from the process start, start-up included), CPU
   seconds per 100k events (the child's utime + stime from ``/proc``), peak RSS
   (``VmHWM``) and wrong rows: each table against the fold's rows
   (``expected_rows``: ``exectrack.consumer.ingest.fold`` over every valid
   event, retention by the default policy), column by column;
3. ``--defaults-runs`` (default 1) Connect runs with the sink's defaults;
4. database ceiling: the exectrack table's final rows (the correct ones), read
   back, then loaded with multi-row ``INSERT`` (the driver's ``executemany``,
   5000 rows a transaction) into an empty table of the peer's shape: rows/s.

Every process started is stopped (TERM, then KILL) even on failure, the JVM
included; topics and databases are dropped. Prints the figures, the ratios
exectrack / tuned peer of each round and the machine's load (``os.getloadavg``)
before each run, and writes ``bench/results/peer.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from itertools import islice
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.partitioner import DefaultPartitioner
from sqlalchemy import text
from sqlalchemy.engine import make_url

from bench import MachineCpu, consumer_env, peak_rss_mb, setup_logging, write_result
from bench.consumer import PARTITIONS, group_lag
from bench.producer import executions_for
from bench.replay import CONSUMER, preload, submit
from exectrack.consumer.db import migrate
from exectrack.consumer.db.admin import create_database, drop_database
from exectrack.consumer.db.engine import create_engine
from exectrack.consumer.db.repository import EXECUTIONS
from exectrack.consumer.ingest.fold import EPOCH, ExecutionFold
from exectrack.consumer.retention.policy import RetentionPolicy
from exectrack.consumer.settings import DatabaseSettings, Settings
from exectrack.producer.events import ExecutionEvent, dumps_json, parse_event
from exectrack.producer.settings import KafkaSettings, PublisherSettings
from exectrack.producer.simulate import ADMIT_EVERY, SimConfig, generate

RESULTS = Path(__file__).resolve().parent / "results" / "peer.json"
POM = Path(__file__).resolve().parent / "connect" / "pom.xml"
KAFKA_VERSION = "4.1.1"
CONNECTOR = "io.debezium:debezium-connector-jdbc:3.3.1.Final:tar.gz:plugin"
CONNECT_MAIN = "org.apache.kafka.connect.cli.ConnectStandalone"
JVM_HEAP = "-Xmx2G"  # what connect-standalone.sh (kafka-run-class.sh) gives Connect
TABLE = "report_executions"
MICRO_TIMESTAMP = "io.debezium.time.MicroTimestamp"
ONE_US = timedelta(microseconds=1)
CHUNK = 4000  # records per publishing round
CEILING_CHUNK = 5000  # rows per multi-row INSERT transaction
STOP_TIMEOUT_S = 30.0

# ------------------------------------------------------------------ the record
# The row's columns (report_executions without ``id`` and ``fold_keys``), in table
# order, with their Kafka Connect schema type: what the peer's producer would send.
# (column, Connect type, optional, logical name)
COLUMNS: tuple[tuple[str, str, bool, str | None], ...] = (
    ("execution_id", "string", False, None),
    ("report_id", "string", False, None),
    ("status", "string", False, None),
    ("trigger_type", "string", True, None),
    ("started_by", "int32", True, None),
    ("start_time", "int64", True, MICRO_TIMESTAMP),
    ("end_time", "int64", True, MICRO_TIMESTAMP),
    ("duration_ms", "int64", True, None),
    ("records_processed", "int64", True, None),
    ("output_size_bytes", "int64", True, None),
    ("execution_parameters", "string", True, None),  # JSON, as a string (module doc)
    ("result_summary", "string", True, None),
    ("error_details", "string", True, None),
    ("output_location", "string", True, None),
    ("retention_until", "int64", True, MICRO_TIMESTAMP),
    ("created_at", "int64", False, MICRO_TIMESTAMP),
    ("last_event_at", "int64", False, MICRO_TIMESTAMP),
)
ROW_COLUMNS = tuple(name for name, *_ in COLUMNS)
TIME_COLUMNS = frozenset(name for name, _, _, logical in COLUMNS if logical == MICRO_TIMESTAMP)
JSON_COLUMNS = frozenset({"execution_parameters", "result_summary", "error_details"})


def connect_schema() -> dict[str, Any]:
    """The JsonConverter schema of every flat record (``schemas.enable=true``).

    A non-optional struct ``exectrack.report_executions`` with one field per
    ``COLUMNS`` entry; times are ``int64`` named ``io.debezium.time.MicroTimestamp``
    (microseconds since the epoch, UTC), JSON columns plain ``string``s: the
    ``io.debezium.data.Json`` logical type binds ``cast(? as json)``, which
    MariaDB 10.11 refuses.
    """
    fields = []
    for name, kind, optional, logical in COLUMNS:
        field: dict[str, Any] = {"field": name, "type": kind, "optional": optional}
        if logical is not None:
            field.update(name=logical, version=1)
        fields.append(field)
    return {"type": "struct", "optional": False, "name": f"exectrack.{TABLE}", "fields": fields}


SCHEMA_JSON = orjson.dumps(connect_schema())


def micros(value: datetime) -> int:
    """Microseconds since 1970-01-01T00:00:00Z of an aware datetime."""
    return (value - EPOCH) // ONE_US


def compact(data: bytes) -> bytes:
    """A copy of ``data`` in a buffer of its own size: orjson's output keeps the ~4 KiB
    buffer it was written into, so a million of them kept would hold ~4 GB."""
    return bytes(memoryview(data))


def flat_payload(row: Mapping[str, Any]) -> dict[str, Any]:
    """A fold row (``ExecutionFold.to_row``) as the flat record's payload: ``COLUMNS`` only,
    times in microseconds, enums by value, JSON columns serialized (``dumps_json``)."""
    payload: dict[str, Any] = {}
    for name in ROW_COLUMNS:
        value = row.get(name)
        if value is None:
            payload[name] = None
        elif name in TIME_COLUMNS:
            payload[name] = micros(value)
        elif name in JSON_COLUMNS:
            payload[name] = dumps_json(value).decode()
        elif isinstance(value, Enum):
            payload[name] = value.value
        else:
            payload[name] = value
    return payload


def flat_record(row: Mapping[str, Any]) -> bytes:
    """The JsonConverter message of a row: ``{"schema": connect_schema(), "payload": ...}``."""
    return with_schema(orjson.dumps(flat_payload(row)))


def with_schema(payload: bytes) -> bytes:
    """A serialized payload wrapped with the schema (kept apart until publishing: ~1.4 KB)."""
    return b'{"schema":' + SCHEMA_JSON + b',"payload":' + payload + b"}"


def period_of(policy: RetentionPolicy, fold: ExecutionFold) -> timedelta | None:
    """The retention period the writer gives this state (default policy, no report types)."""
    if not fold.terminal:
        return None
    return policy.period(
        fold.status, report_id=fold.value("report_id"), execution_id=fold.execution_id
    )


def lifecycle_rows(
    events: Sequence[ExecutionEvent], policy: RetentionPolicy
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """One execution's events -> (event id -> the row as that event leaves it, final row).

    The row after event ``e`` is the fold of the distinct events whose order
    key is at most ``e``'s: the row as the producer's lifecycle stands once ``e``
    happened, whatever order the events travel in. The final row is the fold of
    all of them: what the table must hold.
    """
    ordered = sorted({e.id: e for e in events}.values(), key=lambda e: e.order_key)
    fold = ExecutionFold.of(ordered[0])
    rows = {ordered[0].id: fold.to_row(period_of(policy, fold))}
    for event in ordered[1:]:
        fold.add(event)
        rows[event.id] = fold.to_row(period_of(policy, fold))
    return rows, rows[ordered[-1].id]


def comparable(row: Mapping[Any, Any]) -> tuple[Any, ...]:
    """A row (from the fold or read from either table) as a tuple to compare: ``ROW_COLUMNS``,
    times as microseconds (naive = UTC), enums by value, JSON parsed (strings are parsed)."""
    out: list[Any] = []
    for name in ROW_COLUMNS:
        value = row[name]
        if value is None:
            out.append(None)
        elif name in TIME_COLUMNS:
            out.append(micros(value if value.tzinfo else value.replace(tzinfo=UTC)))
        elif name in JSON_COLUMNS:
            parsed = orjson.loads(value) if isinstance(value, str | bytes) else value
            out.append(compact(orjson.dumps(parsed, option=orjson.OPT_SORT_KEYS)))
        elif isinstance(value, Enum):
            out.append(value.value)
        else:
            out.append(value)
    return tuple(out)


@dataclass
class Workload:
    """The simulation, flattened: what both topics get and what the tables must hold."""

    config: SimConfig
    flat: list[tuple[bytes, bytes]]  # (key, payload: with_schema() makes the value), in order
    expected: dict[str, tuple[Any, ...]]  # execution_id -> comparable(final row)


def flatten(config: SimConfig, policy: RetentionPolicy) -> Workload:
    """The peer's records and the expected rows, from one pass over ``generate(config)``.

    Keeps each execution's valid messages (bytes) until the end, then parses
    them (``parse_event``, as the consumer does) execution by execution.
    """
    arrivals: list[tuple[bytes, str]] = []  # (key, event id) of each valid execution message
    by_execution: defaultdict[str, dict[bytes, None]] = defaultdict(dict)
    for message in generate(config):
        event = message.event
        if isinstance(event, ExecutionEvent):  # None for invalid messages
            arrivals.append((message.key, event.id))
            by_execution[event.data.execution_id][compact(message.value)] = None
    records: dict[str, bytes] = {}
    expected: dict[str, tuple[Any, ...]] = {}
    while by_execution:
        execution_id, values = by_execution.popitem()
        events = [parse_event(value, [], execution_id.encode()) for value in values]
        rows, final = lifecycle_rows([e for e in events if isinstance(e, ExecutionEvent)], policy)
        expected[execution_id] = comparable(final)
        records.update((eid, compact(orjson.dumps(flat_payload(row)))) for eid, row in rows.items())
    return Workload(config, [(key, records[eid]) for key, eid in arrivals], expected)


async def publish(kafka: KafkaSettings, pairs: Iterable[tuple[bytes, bytes]]) -> int:
    """Publish (key, value) pairs to ``kafka.topic`` as ``bench.replay.preload`` does
    (the default partitioner on the key, one batch per partition and chunk)."""
    producer = AIOKafkaProducer(**kafka.client_kwargs(), **PublisherSettings().producer_kwargs())
    await producer.start()
    try:
        partitions = sorted(await producer.partitions_for(kafka.topic))
        partition_of = DefaultPartitioner()
        sent, futures = 0, []
        stream = iter(pairs)
        while chunk := list(islice(stream, CHUNK)):
            groups: dict[int, list[tuple[bytes, bytes]]] = {}
            for key, value in chunk:
                groups.setdefault(partition_of(key, partitions, partitions), []).append(
                    (key, value)
                )
            for partition, group in groups.items():
                batch = producer.create_batch()
                for key, value in group:
                    if batch.append(key=key, value=value, timestamp=None):
                        continue
                    futures.append(await submit(producer, batch, kafka.topic, partition))
                    batch = producer.create_batch()
                    batch.append(key=key, value=value, timestamp=None)
                futures.append(await submit(producer, batch, kafka.topic, partition))
            sent += len(chunk)
            if len(futures) > 200:
                await asyncio.gather(*futures)
                futures.clear()
        await asyncio.gather(*futures)
        return sent
    finally:
        await producer.stop()


# --------------------------------------------------------------- the peer's jars
def cache_dir() -> Path:
    """``$EXECTRACK_CACHE_DIR``, else ``$XDG_CACHE_HOME/exectrack``, else ``~/.cache/exectrack``
    (where deploy/local/stack.sh caches the broker's jars)."""
    if os.environ.get("EXECTRACK_CACHE_DIR"):
        return Path(os.environ["EXECTRACK_CACHE_DIR"]).resolve()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "exectrack"


def mvn(args: list[str], cwd: Path) -> None:
    """Run Maven quietly; on failure raise with the first ``[ERROR]`` lines of its output."""
    done = subprocess.run(  # noqa: S603 - mvn from PATH, our own arguments
        ["mvn", "-q", "-B", "-Dstyle.color=never", "-f", str(POM), *args],  # noqa: S607
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        errors = [line for line in done.stdout.splitlines() if line.startswith("[ERROR]")]
        raise RuntimeError("Maven failed: " + " | ".join(errors[:3] or [done.stdout[-500:]]))


def ensure_connect() -> tuple[Path, Path]:
    """Kafka Connect's jars and the Debezium JDBC sink plugin, fetched once (cached).

    Returns (the worker's ``libs`` folder, its ``plugin.path``). The cache
    folder appears whole (``.complete`` stamp inside) or not at all.
    """
    root = cache_dir() / f"connect-{KAFKA_VERSION}"
    if (root / ".complete").is_file():
        return root / "libs", root / "plugins"
    if shutil.which("mvn") is None or shutil.which("java") is None:
        raise RuntimeError(
            "the peer needs java (17+) and mvn (apt-get install openjdk-17-jre-headless maven)"
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    print(f"fetching Kafka Connect {KAFKA_VERSION} and {CONNECTOR} with Maven (once) ...")
    tmp = Path(tempfile.mkdtemp(prefix=f".connect-{KAFKA_VERSION}.partial.", dir=root.parent))
    try:
        mvn(
            [
                f"-Dkafka.version={KAFKA_VERSION}",
                "dependency:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={tmp / 'libs'}",
            ],
            tmp,
        )
        mvn(["dependency:copy", f"-Dartifact={CONNECTOR}", f"-DoutputDirectory={tmp}"], tmp)
        (archive,) = tmp.glob("debezium-connector-jdbc-*-plugin.tar.gz")
        with tarfile.open(archive) as tar:
            tar.extractall(tmp / "plugins", filter="data")
        archive.unlink()
        (tmp / ".complete").write_text(f"fetched={datetime.now(UTC).isoformat()}\n")
        tmp.chmod(0o755)
        shutil.rmtree(root, ignore_errors=True)
        tmp.rename(root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root / "libs", root / "plugins"


TUNED = {  # /work/shared/notes/peer-debezium-jdbc.md: what matters on this machine
    "batch.size": "5000",
    "consumer.override.max.poll.records": "5000",
    "use.reduction.buffer": "true",
}


def connector_properties(name: str, topic: str, database_url: str, tuned: bool) -> dict[str, str]:
    """The sink's configuration: upsert by ``execution_id`` into ``report_executions``."""
    url = make_url(database_url)
    props = {
        "name": name,
        "connector.class": "io.debezium.connector.jdbc.JdbcSinkConnector",
        "tasks.max": "1",
        "topics": topic,
        "connection.url": f"jdbc:mariadb://{url.host}:{url.port or 3306}/{url.database}",
        "connection.username": str(url.username),
        "connection.password": str(url.password),
        "insert.mode": "upsert",
        "primary.key.mode": "record_value",
        "primary.key.fields": "execution_id",
        "schema.evolution": "none",
        "collection.name.format": TABLE,
        "use.time.zone": "UTC",
    }
    return {**props, **TUNED} if tuned else props


def worker_properties(bootstrap: str, plugins: Path, offsets: Path, port: int) -> dict[str, str]:
    """A standalone worker: string keys, JsonConverter values with schemas, offsets in a file."""
    return {
        "bootstrap.servers": bootstrap,
        "key.converter": "org.apache.kafka.connect.storage.StringConverter",
        "value.converter": "org.apache.kafka.connect.json.JsonConverter",
        "value.converter.schemas.enable": "true",
        "offset.storage.file.filename": str(offsets),
        "offset.flush.interval.ms": "1000",  # only to see the end of a run quickly
        "plugin.path": str(plugins),
        "listeners": f"http://127.0.0.1:{port}",
        "connector.client.config.override.policy": "All",
    }


def write_properties(path: Path, props: Mapping[str, str]) -> Path:
    path.write_text("".join(f"{k}={v}\n" for k, v in props.items()), encoding="utf-8")
    return path


LOG4J2 = """\
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = %d %p %c{{1}} - %m%n
rootLogger.level = warn
rootLogger.appenderRef.file.ref = file
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ------------------------------------------------------------------ measuring
def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process (``/proc/<pid>/stat``, all its threads)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Run:
    """One drain: who, how long, what it cost, how right the table is."""

    who: str
    round: int
    messages: int
    seconds: float
    cpu_s: float
    peak_rss_mb: float
    rows: int
    wrong_rows: int
    missing_rows: int
    load_1m: float  # os.getloadavg()[0] just before the run
    machine_busy: float  # both CPUs, /proc/stat, over the run
    wrong_columns: dict[str, int]  # column -> wrong rows differing in it

    def as_json(self) -> dict[str, Any]:
        return {
            "who": self.who,
            "round": self.round,
            "messages": self.messages,
            "seconds": round(self.seconds, 2),
            "events_per_s": round(self.messages / self.seconds),
            "cpu_s": round(self.cpu_s, 2),
            "cpu_s_per_100k_events": round(self.cpu_s * 100_000 / self.messages, 2),
            "peak_rss_mb": round(self.peak_rss_mb),
            "rows": self.rows,
            "wrong_rows": self.wrong_rows,
            "missing_rows": self.missing_rows,
            "load_1m_before": round(self.load_1m, 2),
            "machine_cpu_busy": round(self.machine_busy, 3),
            "wrong_columns": self.wrong_columns,
        }


async def drain(
    argv: list[str], env: Mapping[str, str], kafka: KafkaSettings, group: str, log: Path
) -> tuple[float, float, float]:
    """Start ``argv``; poll ``group``'s lag on ``kafka.topic`` until 0; read the child's CPU
    seconds and peak RSS; stop it (TERM, then KILL), whatever happens.

    Returns (wall seconds from the start to lag 0, CPU seconds, peak RSS in MB)."""
    with log.open("ab") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, env=dict(env), stdout=out, stderr=subprocess.STDOUT)  # noqa: S603, ASYNC220
    try:
        await asyncio.sleep(1)
        while await group_lag(kafka, group) != 0:
            if proc.poll() is not None:
                raise RuntimeError(f"{argv[0]} exited {proc.returncode} early; see {log}")
            await asyncio.sleep(0.25)
        elapsed = time.perf_counter() - started
        return elapsed, cpu_seconds(proc.pid), peak_rss_mb(proc.pid)
    finally:
        await stop(proc)


async def stop(proc: subprocess.Popen[bytes]) -> None:
    """TERM, wait up to ``STOP_TIMEOUT_S``, then KILL."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(proc.wait, STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            await asyncio.to_thread(proc.wait)


async def table_rows(url: str) -> dict[str, tuple[Any, ...]]:
    """``report_executions`` of a database: execution_id -> ``comparable(row)``."""
    engine = create_engine(DatabaseSettings(), url=url)
    columns = [EXECUTIONS.c[name] for name in ROW_COLUMNS]
    rows: dict[str, tuple[Any, ...]] = {}
    try:
        async with engine.connect() as conn:
            result = await conn.stream(EXECUTIONS.select().with_only_columns(*columns))
            async for row in result.mappings():
                rows[row["execution_id"]] = comparable(row)
    finally:
        await engine.dispose()
    return rows


def wrong_rows(
    expected: Mapping[str, tuple[Any, ...]], found: Mapping[str, tuple[Any, ...]]
) -> tuple[int, int]:
    """(rows that differ from the fold's in any column, or are extra; rows missing)."""
    missing = sum(1 for eid in expected if eid not in found)
    wrong = sum(1 for eid, row in found.items() if expected.get(eid) != row)
    return wrong, missing


def differing_columns(
    expected: Mapping[str, tuple[Any, ...]], found: Mapping[str, tuple[Any, ...]]
) -> dict[str, int]:
    """Column -> how many found rows (of executions expected) differ from the fold's in it."""
    counts: Counter[str] = Counter()
    for eid, row in found.items():
        want = expected.get(eid)
        if want is not None and want != row:
            counts.update(n for n, a, b in zip(ROW_COLUMNS, want, row, strict=True) if a != b)
    return dict(counts.most_common())


PEER_TABLE_CHANGES = (  # exectrack's table, without what only exectrack's fold writes
    f"ALTER TABLE {TABLE} DROP FOREIGN KEY fk_report_executions_report_id_reports, "
    "DROP FOREIGN KEY fk_report_executions_started_by_users",
    f"ALTER TABLE {TABLE} DROP COLUMN fold_keys",
)


class Databases:
    """Fresh databases on one server, all dropped by ``drop_all``."""

    def __init__(self, server_url: str) -> None:
        self.server_url = server_url
        self.urls: list[str] = []

    async def fresh(self, *, peer: bool) -> str:
        """A migrated database; ``peer``: its ``report_executions`` reshaped for the peer
        (same columns and indexes, no ``fold_keys``, no foreign keys)."""
        url = await create_database(self.server_url, f"exectrack_peer_{uuid.uuid4().hex[:8]}")
        self.urls.append(url)
        await migrate.upgrade(url)
        if peer:
            engine = create_engine(DatabaseSettings(), url=url)
            try:
                async with engine.begin() as conn:
                    for statement in PEER_TABLE_CHANGES:
                        await conn.execute(text(statement))
            finally:
                await engine.dispose()
        return url

    async def drop_all(self) -> None:
        for url in self.urls:
            await drop_database(self.server_url, str(make_url(url).database))


async def ceiling(url: str, rows: Sequence[Mapping[str, Any]]) -> float:
    """Seconds to load ``rows`` into the empty table at ``url`` with multi-row INSERTs."""
    columns = ", ".join(ROW_COLUMNS)
    marks = ", ".join(["%s"] * len(ROW_COLUMNS))
    statement = f"INSERT INTO {TABLE} ({columns}) VALUES ({marks})"
    params = [tuple(row[name] for name in ROW_COLUMNS) for row in rows]
    engine = create_engine(DatabaseSettings(), url=url)
    try:
        async with engine.connect() as conn:
            raw = await conn.get_raw_connection()
            driver = raw.driver_connection
            assert driver is not None
            started = time.perf_counter()
            for start in range(0, len(params), CEILING_CHUNK):
                async with driver.cursor() as cursor:  # aiomysql: one multi-row INSERT per ~1 MB
                    await cursor.executemany(statement, params[start : start + CEILING_CHUNK])
                await driver.commit()
            return time.perf_counter() - started
    finally:
        await engine.dispose()


async def raw_rows(url: str) -> list[dict[str, Any]]:
    """``report_executions`` rows as the driver binds them back (JSON as text, naive UTC)."""
    engine = create_engine(DatabaseSettings(), url=url)
    try:
        async with engine.connect() as conn:
            result = await conn.execute(text(f"SELECT {', '.join(ROW_COLUMNS)} FROM {TABLE}"))
            return [dict(row) for row in result.mappings()]
    finally:
        await engine.dispose()


# ------------------------------------------------------------------ the run
@asynccontextmanager
async def topics(
    kafka: KafkaSettings, suffix: str
) -> AsyncIterator[tuple[KafkaSettings, KafkaSettings]]:
    """Two fresh 12-partition topics (exectrack's with its DLQ, the peer's); deleted after."""
    ours = kafka.model_copy(
        update={"topic": f"peer-ce-{suffix}", "dlq_topic": f"peer-ce-{suffix}.dlq"}
    )
    theirs = kafka.model_copy(update={"topic": f"peer-rows-{suffix}"})
    names = [ours.topic, ours.dlq_topic, theirs.topic]
    admin = AIOKafkaAdminClient(**kafka.client_kwargs())
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(ours.topic, PARTITIONS, 1),
                NewTopic(ours.dlq_topic, 1, 1),
                NewTopic(theirs.topic, PARTITIONS, 1),
            ]
        )
        try:
            yield ours, theirs
        finally:
            await admin.delete_topics(names)
    finally:
        await admin.close()


@dataclass
class Bench:
    base: Settings
    databases: Databases
    work: Path  # scratch folder: properties, offsets, logs
    libs: Path
    plugins: Path
    expected: dict[str, tuple[Any, ...]]

    async def exectrack(self, kafka: KafkaSettings, messages: int, round_: int) -> tuple[Run, str]:
        url = await self.databases.fresh(peer=False)
        group = f"peer-bench-{uuid.uuid4().hex[:8]}"
        env = consumer_env(kafka, url, group)
        load, cpu = os.getloadavg()[0], MachineCpu()
        seconds, cpu_s, rss = await drain(
            [str(CONSUMER), "consume"], env, kafka, group, self.work / "exectrack.log"
        )
        busy = cpu.busy()
        return await self._judge(
            "exectrack", round_, messages, url, seconds, cpu_s, rss, load, busy
        ), url

    async def peer(self, kafka: KafkaSettings, messages: int, round_: int, tuned: bool) -> Run:
        url = await self.databases.fresh(peer=True)
        name = f"peer-{uuid.uuid4().hex[:8]}"
        folder = self.work / name
        folder.mkdir()
        worker = write_properties(
            folder / "worker.properties",
            worker_properties(
                kafka.bootstrap_servers, self.plugins, folder / "offsets", free_port()
            ),
        )
        sink = write_properties(
            folder / "sink.properties", connector_properties(name, kafka.topic, url, tuned)
        )
        log4j = folder / "log4j2.properties"
        log4j.write_text(LOG4J2.format(log=folder / "connect.log"), encoding="utf-8")
        java = shutil.which("java") or "java"
        argv = [
            java,
            JVM_HEAP,
            "-XX:+UseG1GC",
            f"-Dlog4j2.configurationFile={log4j}",
            "-cp",
            f"{self.libs}/*",
            CONNECT_MAIN,
            str(worker),
            str(sink),
        ]
        load, cpu = os.getloadavg()[0], MachineCpu()
        seconds, cpu_s, rss = await drain(
            argv, os.environ, kafka, f"connect-{name}", folder / "out.log"
        )
        busy = cpu.busy()
        who = "peer_tuned" if tuned else "peer_defaults"
        return await self._judge(who, round_, messages, url, seconds, cpu_s, rss, load, busy)

    async def _judge(
        self,
        who: str,
        round_: int,
        messages: int,
        url: str,
        seconds: float,
        cpu_s: float,
        rss: float,
        load: float,
        busy: float,
    ) -> Run:
        found = await table_rows(url)
        wrong, missing = wrong_rows(self.expected, found)
        columns = differing_columns(self.expected, found)
        run = Run(
            who, round_, messages, seconds, cpu_s, rss, len(found), wrong, missing, load, busy,
            columns,
        )  # fmt: skip
        print(
            f"round {round_} {who:<14} {messages / seconds:>9,.0f} events/s, "
            f"{cpu_s * 100_000 / messages:5.2f} CPU s/100k, peak RSS {rss:,.0f} MB, "
            f"rows {len(found):,}, wrong {wrong:,}, missing {missing:,} (load {load:.2f}, "
            f"machine busy {busy:.0%})" + (f"; wrong columns: {columns}" if columns else ""),
            flush=True,
        )
        return run


def summary(runs: Sequence[Run]) -> dict[str, Any]:
    """Per contender: median events/s, CPU s/100k, peak RSS, and the wrong rows."""
    out: dict[str, Any] = {}
    for who in dict.fromkeys(run.who for run in runs):
        mine = [run.as_json() for run in runs if run.who == who]
        out[who] = {
            "runs": len(mine),
            "events_per_s_median": round(statistics.median(r["events_per_s"] for r in mine)),
            "events_per_s_range": [
                min(r["events_per_s"] for r in mine),
                max(r["events_per_s"] for r in mine),
            ],
            "cpu_s_per_100k_median": statistics.median(r["cpu_s_per_100k_events"] for r in mine),
            "peak_rss_mb_max": max(r["peak_rss_mb"] for r in mine),
            "wrong_rows": sorted({r["wrong_rows"] for r in mine}),
            "missing_rows": sorted({r["missing_rows"] for r in mine}),
        }
    return out


async def bench(events: int, seed: int, rounds: int, defaults_runs: int) -> dict[str, Any]:
    base = Settings()
    libs, plugins = ensure_connect()
    executions = executions_for(events, seed)
    start = datetime.now(UTC) - executions * ADMIT_EVERY - timedelta(hours=1)
    config = SimConfig(executions=executions, seed=seed, start=start, reorder_ratio=0.1)
    started = time.perf_counter()
    workload = flatten(config, base.retention)
    print(
        f"flattened {len(workload.flat):,} row-shaped records for {len(workload.expected):,} "
        f"executions in {time.perf_counter() - started:.0f} s",
        flush=True,
    )
    databases = Databases(base.database.url.get_secret_value())
    runs: list[Run] = []
    work = Path(tempfile.mkdtemp(prefix="exectrack-peer-"))
    try:
        async with topics(base.kafka, uuid.uuid4().hex[:8]) as (ours, theirs):
            ours_n, _ = await preload(ours, config)
            theirs_n = await publish(theirs, ((k, with_schema(v)) for k, v in workload.flat))
            flat_bytes = sum(len(with_schema(v)) for _, v in workload.flat) / theirs_n
            del workload.flat
            print(
                f"published {ours_n:,} CloudEvents to {ours.topic}, {theirs_n:,} row-shaped "
                f"records ({flat_bytes:,.0f} bytes each) to {theirs.topic}",
                flush=True,
            )
            bench_ = Bench(base, databases, work, libs, plugins, workload.expected)
            correct_url = ""
            for round_ in range(1, rounds + 1):
                run, url = await bench_.exectrack(ours, ours_n, round_)
                runs.append(run)
                if run.wrong_rows == 0 and run.missing_rows == 0:
                    correct_url = url
                runs.append(await bench_.peer(theirs, theirs_n, round_, tuned=True))
            for i in range(1, defaults_runs + 1):
                runs.append(await bench_.peer(theirs, theirs_n, i, tuned=False))
            ceiling_rows: dict[str, Any] = {}
            if correct_url:
                rows = await raw_rows(correct_url)
                url = await databases.fresh(peer=True)
                load = os.getloadavg()[0]
                seconds = await ceiling(url, rows)
                found = await table_rows(url)
                wrong, missing = wrong_rows(workload.expected, found)
                ceiling_rows = {
                    "rows": len(rows),
                    "seconds": round(seconds, 2),
                    "rows_per_s": round(len(rows) / seconds),
                    "wrong_rows": wrong,
                    "missing_rows": missing,
                    "chunk_rows": CEILING_CHUNK,
                    "load_1m_before": round(load, 2),
                }
                print(
                    f"database ceiling: {len(rows):,} rows in {seconds:.1f} s: "
                    f"{len(rows) / seconds:,.0f} rows/s (multi-row INSERT, {CEILING_CHUNK} "
                    f"rows a transaction; load {load:.2f})",
                    flush=True,
                )
    finally:
        await databases.drop_all()
        shutil.rmtree(work, ignore_errors=True)
    ratios = []
    for round_ in range(1, rounds + 1):
        ours_run = next(r for r in runs if r.who == "exectrack" and r.round == round_)
        theirs_run = next(r for r in runs if r.who == "peer_tuned" and r.round == round_)
        ratios.append(
            (ours_run.messages / ours_run.seconds) / (theirs_run.messages / theirs_run.seconds)
        )
    print("exectrack / tuned peer, events/s, by round: " + ", ".join(f"{r:.2f}" for r in ratios))
    return {
        "benchmark": "peer",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m bench.peer " + " ".join(sys.argv[1:]),
        "seed": seed,
        "executions": executions,
        "messages": {"exectrack_topic": ours_n, "peer_topic": theirs_n},
        "peer_record_bytes_mean": round(flat_bytes),
        "peer": {
            "connect": KAFKA_VERSION,
            "connector": CONNECTOR,
            "jvm_heap": JVM_HEAP,
            "tuned": TUNED,
        },
        "summary": summary(runs),
        "ratio_exectrack_to_tuned_peer_by_round": [round(r, 3) for r in ratios],
        "database_ceiling": ceiling_rows,
        "runs": [run.as_json() for run in runs],
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_at_end": [round(v, 2) for v in os.getloadavg()],
        },
    }


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    logging.getLogger("alembic").setLevel(logging.WARNING)  # a migration per fresh database
    parser = argparse.ArgumentParser(
        prog="python -m bench.peer",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--events", type=int, default=1_000_000, help="about this many messages")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved exectrack/peer rounds")
    parser.add_argument("--defaults-runs", type=int, default=1, help="peer runs with its defaults")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    result = asyncio.run(bench(args.events, args.seed, args.rounds, args.defaults_runs))
    write_result(args.output, result)
    exectrack_ok = result["summary"]["exectrack"]["wrong_rows"] == [0]
    return 0 if exectrack_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
