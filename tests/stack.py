"""The one place that decides which real services the tests talk to.

- A reachable Docker engine (a laptop, a CI with Docker): testcontainers starts
  a Kafka 4 broker (KRaft) and MySQL 8.0 for the session.
- Otherwise: the deploy/local services (a real Kafka broker from the Maven jars,
  a real MariaDB from Debian's packages). When they are not running, the layer
  runs ``deploy/local/stack.sh up`` and stops them again at the end of the session.

Override with ``EXECTRACK_TEST_BACKEND=docker|local`` (default ``auto``). The
choice is printed in pytest's header and when the services start.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sqlalchemy.engine import make_url

from exectrack.consumer.settings import DEFAULT_DATABASE_URL

ROOT = Path(__file__).resolve().parent.parent
STACK_SCRIPT = ROOT / "deploy" / "local" / "stack.sh"
KAFKA_IMAGE = "confluentinc/cp-kafka:8.0.0"  # Apache Kafka 4.0 inside
MYSQL_IMAGE = "mysql:8.0"

Backend = Literal["testcontainers", "local"]


@dataclass(frozen=True)
class Services:
    backend: Backend
    kafka_bootstrap: str
    database_url: str  # a user that may create and drop exectrack_test_* databases

    def describe(self) -> str:
        db = make_url(self.database_url).render_as_string(hide_password=True)
        return f"exectrack tests use {self.backend} services: kafka={self.kafka_bootstrap} db={db}"


def docker_reachable() -> bool:
    """Ask the engine's ``/_ping`` over DOCKER_HOST (unix or tcp) with a short timeout."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if host.startswith("unix://"):
        family, address = socket.AF_UNIX, host.removeprefix("unix://")
    elif host.startswith("tcp://"):
        name, _, port = host.removeprefix("tcp://").partition(":")
        family, address = socket.AF_INET, (name, int(port or 2375))  # type: ignore[assignment]
    else:
        return False
    try:
        with socket.socket(family, socket.SOCK_STREAM) as conn:
            conn.settimeout(2)
            conn.connect(address)
            conn.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return b" 200 " in conn.recv(1024)
    except OSError:
        return False


def choose_backend() -> Backend:
    wanted = os.environ.get("EXECTRACK_TEST_BACKEND", "auto")
    if wanted == "docker":
        return "testcontainers"
    if wanted == "local":
        return "local"
    if wanted != "auto":
        raise ValueError(f"EXECTRACK_TEST_BACKEND={wanted!r}: use auto, docker or local")
    return "testcontainers" if docker_reachable() else "local"


def _port_open(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
        return True
    return False


def _local_addresses() -> tuple[str, str]:
    bootstrap = os.environ.get("EXECTRACK_KAFKA__BOOTSTRAP_SERVERS")
    if not bootstrap:
        bootstrap = f"127.0.0.1:{os.environ.get('EXECTRACK_LOCAL_KAFKA_PORT', '9092')}"
    url = os.environ.get("EXECTRACK_DATABASE__URL")
    if not url:
        port = int(os.environ.get("EXECTRACK_LOCAL_DB_PORT", "3306"))
        url = make_url(DEFAULT_DATABASE_URL).set(port=port).render_as_string(hide_password=False)
    return bootstrap, url


def _local_running(bootstrap: str, url: str) -> bool:
    host, port = bootstrap.split(",")[0].rsplit(":", 1)
    db = make_url(url)
    return _port_open(host, int(port)) and _port_open(db.host or "127.0.0.1", db.port or 3306)


@contextlib.contextmanager
def local_services() -> Iterator[Services]:
    bootstrap, url = _local_addresses()
    started = False
    if not _local_running(bootstrap, url):
        if os.environ.get("EXECTRACK_TEST_AUTOSTART", "1") == "0":
            raise RuntimeError(
                f"Kafka ({bootstrap}) or the database is not reachable and "
                "EXECTRACK_TEST_AUTOSTART=0: run `bash deploy/local/stack.sh up` first"
            )
        subprocess.run(["bash", str(STACK_SCRIPT), "up"], check=True)
        started = True
    try:
        yield Services("local", bootstrap, url)
    finally:
        if started:
            subprocess.run(["bash", str(STACK_SCRIPT), "down"], check=False)


@contextlib.contextmanager
def container_services() -> Iterator[Services]:
    from testcontainers.community.kafka import KafkaContainer
    from testcontainers.community.mysql import MySqlContainer

    mysql = MySqlContainer(
        MYSQL_IMAGE, dialect="aiomysql", username="root", password="exectrack", dbname="exectrack"
    )
    kafka = (
        KafkaContainer(KAFKA_IMAGE)
        .with_kraft()
        # one broker: the transaction log must fit it, or every transactional producer
        # waits for a coordinator forever (tests/integration/test_transactions.py)
        .with_env("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
    )
    with mysql, kafka:
        yield Services("testcontainers", kafka.get_bootstrap_server(), mysql.get_connection_url())


def services(backend: Backend) -> contextlib.AbstractContextManager[Services]:
    return container_services() if backend == "testcontainers" else local_services()
