"""The failure surface, as an operator meets it: real commands in subprocesses.

Every line a command writes (stdout and stderr) is a JSON log event when
stderr is not a terminal, library lines included (aiokafka, SQLAlchemy,
alembic); a command that cannot do its job ends, within a bound time, with ONE
error event naming the cause and a non-zero exit status, never a traceback.
Issue #13 item 9; docs/reliability/failure-surface.md.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy.engine import make_url

from exectrack.producer.events import EventType, execution_event, kafka_headers, to_json
from tests.conftest import Topics, create_database, drop_database
from tests.stack import Services
from tests.support.faults import CONSUMER, consumer_env
from tests.support.kafka import publish
from tests.support.tls import free_port

URL_ADVICE = (
    "EXECTRACK_DATABASE__URL: exectrack stores in MySQL/MariaDB; "
    "use mysql+aiomysql://user:pass@host:3306/db"
)
SECRET = "s3cret-not-to-print"
FAILS_WITHIN_S = 20.0  # each failure below ends in ~1-2 s; generous for a loaded CI machine


@dataclass
class Run:
    code: int
    events: list[dict[str, Any]]
    seconds: float
    output: str

    @property
    def errors(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("level") == "error"]

    def one_error(self) -> dict[str, Any]:
        """The failure: exactly one error event in all, and it is the last event."""
        assert len(self.errors) == 1, self.output
        assert self.events[-1] is self.errors[0], self.output
        assert "exception" not in self.errors[0], self.output  # no traceback, even as a field
        return self.errors[0]


def events_of(output: str) -> list[dict[str, Any]]:
    """Every non-empty line parsed as a JSON object (fails on the first that is not one)."""
    found = []
    for line in output.splitlines():
        if line.strip():
            event = json.loads(line)  # a plain-text line or a traceback fails here
            assert isinstance(event, dict), line
            assert "event" in event, line
            assert "level" in event, line
            found.append(event)
    return found


def run(args: list[str], env: dict[str, str], *, timeout_s: float = 60) -> Run:
    started = time.monotonic()
    done = subprocess.run(
        [str(CONSUMER), *args], env=env, capture_output=True, text=True, timeout=timeout_s
    )
    seconds = time.monotonic() - started
    output = done.stdout + done.stderr
    return Run(done.returncode, events_of(output), seconds, output)


def base_env(**extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("EXECTRACK_")}
    return {**clean, "EXECTRACK_LOG_FORMAT": "json", "EXECTRACK_HEALTH_PORT": "0", **extra}


def consume_idle_then_stop(env: dict[str, str], idle_s: float) -> tuple[int, str]:
    """Run ``consume`` until its first batch, idle ``idle_s``, SIGTERM: (exit status, output)."""
    proc = subprocess.Popen(
        [str(CONSUMER), "consume"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while not any('"batch"' in line for line in lines):
            assert time.monotonic() < deadline, "".join(lines)
            line = proc.stdout.readline()
            assert line, f"the consumer exited: {''.join(lines)}"
            lines.append(line)
        time.sleep(idle_s)  # the server drops the idle pool connections meanwhile
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    return proc.returncode, "".join(lines) + rest


@pytest.fixture
async def migrated(stack: Services) -> AsyncIterator[str]:
    """A fresh database (not migrated: the test runs ``migrate``)."""
    name = f"exectrack_surface_{uuid.uuid4().hex[:10]}"
    url = await create_database(stack.database_url, name)
    try:
        yield url
    finally:
        await drop_database(stack.database_url, name)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        (f"postgresql://exectrack:{SECRET}@127.0.0.1:5432/exectrack", URL_ADVICE),
        ("sqlite:///exectrack.db", URL_ADVICE),
        (f"jdbc:mysql://127.0.0.1:3306/exectrack?password={SECRET}", URL_ADVICE),
        ("not a url", URL_ADVICE),
        (
            f"mysql+pymysql://exectrack:{SECRET}@127.0.0.1:3306/exectrack",
            "EXECTRACK_DATABASE__URL: the pymysql driver is not supported (exectrack writes "
            "asynchronously, with aiomysql); use mysql+aiomysql://user:pass@host:3306/db",
        ),
    ],
)
@pytest.mark.parametrize("command", ["consume", "migrate", "status x"])
def test_database_url_of_another_kind_is_one_line(url: str, reason: str, command: str) -> None:
    done = run(command.split(), base_env(EXECTRACK_DATABASE__URL=url))
    assert done.code == 2, done.output  # a usage error
    assert done.seconds < FAILS_WITHIN_S
    failed = done.one_error()
    assert failed["event"] == "invalid_settings"
    assert failed["error"] == reason
    assert SECRET not in done.output
    assert len(done.events) == 1, done.output  # nothing else was tried


async def test_mysql_url_without_driver_is_completed(migrated: str) -> None:
    """``mysql://`` (what most tools write) is completed to mysql+aiomysql, and said once."""
    bare = make_url(migrated).set(drivername="mysql").render_as_string(hide_password=False)
    done = await asyncio.to_thread(run, ["migrate"], base_env(EXECTRACK_DATABASE__URL=bare))
    assert done.code == 0, done.output
    assert done.errors == []
    names = [e["event"] for e in done.events]
    assert names[0] == "database_url_completed"
    assert names.count("database_url_completed") == 1
    assert names[-1] == "migrated"
    assert done.events[-1]["db"].startswith("mysql+aiomysql://")


async def test_migrate_logs_only_json(migrated: str) -> None:
    """alembic's own lines (each revision applied) are JSON events with ``logger``."""
    done = await asyncio.to_thread(run, ["migrate"], base_env(EXECTRACK_DATABASE__URL=migrated))
    assert done.code == 0, done.output
    upgrades = [e for e in done.events if e["event"].startswith("Running upgrade")]
    assert upgrades, done.output
    assert {e.get("logger") for e in upgrades} == {"alembic.runtime.migration"}
    assert done.events[-1]["event"] == "migrated"
    assert ":***@" in done.events[-1]["db"]
    again = await asyncio.to_thread(run, ["migrate"], base_env(EXECTRACK_DATABASE__URL=migrated))
    assert again.code == 0, again.output
    assert not [e for e in again.events if e["event"].startswith("Running upgrade")]


async def test_health_port_in_use_is_one_line(topics: Topics, database_url: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = consumer_env(topics, database_url, EXECTRACK_HEALTH_PORT=str(port))
        done = await asyncio.to_thread(run, ["consume"], env)
    assert done.code == 1, done.output
    assert done.seconds < FAILS_WITHIN_S
    failed = done.one_error()
    assert failed["event"] == "health_server_failed"
    assert (
        failed["error"] == f"health server: 127.0.0.1:{port} already in use (EXECTRACK_HEALTH_PORT)"
    )
    assert "kafka" not in failed["error"].lower()  # it was reported as a Kafka TLS failure


async def test_missing_topic_without_create_topics_is_one_line(
    topics: Topics, database_url: str
) -> None:
    missing = f"exectrack-missing-{uuid.uuid4().hex[:10]}"
    env = consumer_env(
        topics, database_url, EXECTRACK_KAFKA__TOPIC=missing, EXECTRACK_CREATE_TOPICS="false"
    )
    done = await asyncio.to_thread(run, ["consume"], env)
    assert done.code == 1, done.output
    assert done.seconds < FAILS_WITHIN_S  # aiokafka alone: ~390 lines, then a traceback at 41 s
    failed = done.one_error()
    assert failed["event"] == "topic_missing"
    assert failed["error"] == (
        f"kafka topic {missing!r} does not exist on {topics.bootstrap} and "
        "EXECTRACK_CREATE_TOPICS=false: create it, correct EXECTRACK_KAFKA__TOPIC, "
        "or set EXECTRACK_CREATE_TOPICS=true"
    )
    assert len(done.events) <= 3, done.output  # no flood of metadata errors
    admin = AIOKafkaAdminClient(bootstrap_servers=topics.bootstrap)
    await admin.start()
    try:
        assert missing not in await admin.list_topics()  # looking did not create it
    finally:
        await admin.close()


async def test_idle_consume_then_sigterm_logs_only_json(topics: Topics, database_url: str) -> None:
    """Consume, idle past the server's wait_timeout (the consumer's pool connections
    are dropped by the server), then SIGTERM: a clean stop, JSON only, no pool error."""
    event = execution_event(EventType.STARTED, execution_id="idle-1", report_id="r", source="/t")
    await publish(
        topics.bootstrap, topics.topic, [(event.key, to_json(event), kafka_headers(event))]
    )
    idle_timeout_s = 5  # the smallest EXECTRACK_DB_IDLE_TIMEOUT_S allowed
    env = consumer_env(topics, database_url, EXECTRACK_DB_IDLE_TIMEOUT_S=str(idle_timeout_s))
    code, output = await asyncio.to_thread(consume_idle_then_stop, env, idle_timeout_s + 3)
    assert code == 0, output
    events = events_of(output)
    assert [e for e in events if e["level"] in ("error", "warning")] == [], output
    assert events[-1]["event"] == "consumer_stopped"
    assert events[-1]["records"] == 1


@pytest.mark.parametrize(
    ("setting", "value", "reason"),
    [
        ("EXECTRACK_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:{free}", "connection refused"),
        ("EXECTRACK_KAFKA__BOOTSTRAP_SERVERS", "no-such-host.invalid:9092", "not known"),
        ("EXECTRACK_KAFKA__BOOTSTRAP_SERVERS", "{database}", "not a Kafka listener"),
        ("EXECTRACK_KAFKA__SECURITY_PROTOCOL", "SSL", "TLS against a plaintext one"),
        ("EXECTRACK_KAFKA__SECURITY_PROTOCOL", "SASL_PLAINTEXT", "does not speak SASL"),
    ],
)
async def test_kafka_start_failures_are_one_line(
    topics: Topics, database_url: str, setting: str, value: str, reason: str
) -> None:
    """Startup failures from public reports (wrong bootstrap server, DNS, a MySQL port,
    TLS or SASL against a plaintext listener): one ``connect_failed`` event of ours,
    the last; aiokafka's own ``Unable connect`` line before it is JSON too."""
    db = make_url(database_url)
    value = value.format(free=free_port(), database=f"{db.host}:{db.port}")
    extra = {setting: value}
    if value == "SASL_PLAINTEXT":
        extra |= {
            "EXECTRACK_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512",
            "EXECTRACK_KAFKA__SASL_USERNAME": "u",
            "EXECTRACK_KAFKA__SASL_PASSWORD": SECRET,
        }
    done = await asyncio.to_thread(run, ["consume"], consumer_env(topics, database_url, **extra))
    assert done.code == 1, done.output
    assert done.seconds < FAILS_WITHIN_S
    ours = [e for e in done.errors if "logger" not in e]
    assert len(ours) == 1, done.output
    assert done.events[-1] is ours[0]
    assert ours[0]["event"] == "connect_failed"
    assert ours[0]["service"] == "kafka"
    assert reason in ours[0]["reason"]
    assert SECRET not in done.output
    assert {e.get("logger") for e in done.errors if e is not ours[0]} <= {"aiokafka"}


@pytest.mark.parametrize(
    ("database", "reason"),
    [
        ("exectrack_test_no_such_{id}", "unknown database (1049)"),
        ("{unmigrated}", "the schema is missing (1146)"),
    ],
)
async def test_database_start_failures_are_one_line(
    topics: Topics, stack: Services, database: str, reason: str
) -> None:
    """A database the server does not have, or one never migrated: the writer would
    retry forever in silence; ``consume`` stops at once, naming what to do."""
    name = f"exectrack_surface_{uuid.uuid4().hex[:10]}"
    unmigrated = await create_database(stack.database_url, name)
    try:
        url = (
            unmigrated
            if database == "{unmigrated}"
            else make_url(stack.database_url)
            .set(database=database.format(id=uuid.uuid4().hex[:8]))
            .render_as_string(hide_password=False)
        )
        done = await asyncio.to_thread(run, ["consume"], consumer_env(topics, url))
    finally:
        await drop_database(stack.database_url, name)
    assert done.code == 1, done.output
    assert done.seconds < FAILS_WITHIN_S
    failed = done.one_error()
    assert failed["event"] == "connect_failed"
    assert failed["service"] == "database"
    assert failed["reason"].startswith(reason)
    assert "exectrack-consumer migrate" in failed["reason"]
