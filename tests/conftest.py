"""Shared fixtures. Unit tests need none of these; integration tests get real services.

Scopes follow the cost of things: the services and a fresh, migrated database
per session; tables truncated and a fresh topic + consumer group per test.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from hypothesis import HealthCheck, settings
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from exectrack.consumer.db import migrate
from exectrack.consumer.db.admin import create_database, drop_database
from exectrack.consumer.db.admin import url_for as database_url_for
from exectrack.consumer.db.engine import create_engine
from exectrack.consumer.settings import DatabaseSettings
from tests.stack import Services, choose_backend, services
from tests.support.kafka import wait_for_leaders

__all__ = ["Topics", "create_database", "database_url_for", "drop_database"]

# Property tests check results, not speed (that is bench/'s job): no per-example
# wall-clock deadline, which fails at random on a loaded 2-core CI machine.
settings.register_profile("exectrack", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("exectrack")

TABLES = ("report_executions", "reports", "users", "purged_executions")
INTEGRATION_DIR = Path(__file__).parent / "integration"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if INTEGRATION_DIR in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)


def pytest_report_header(config: pytest.Config) -> str:
    return (
        f"exectrack services backend: {choose_backend()} (EXECTRACK_TEST_BACKEND=auto|docker|local)"
    )


@pytest.fixture(scope="session")
def stack(request: pytest.FixtureRequest) -> Iterator[Services]:
    with services(choose_backend()) as found:
        reporter = request.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(found.describe())
        yield found


@pytest.fixture(scope="session")
async def scratch_database(stack: Services) -> AsyncIterator[str]:
    """A fresh, empty database; returns its URL. Tests may migrate it as they like."""
    name = f"exectrack_test_{uuid.uuid4().hex[:12]}"
    url = await create_database(stack.database_url, name)
    try:
        yield url
    finally:
        await drop_database(stack.database_url, name)


MakeDatabase = Callable[[], Awaitable[str]]


async def _databases(stack: Services) -> AsyncIterator[MakeDatabase]:
    """Yields a maker of fresh, empty databases (no tables); drops them all when resumed."""
    names: list[str] = []

    async def make() -> str:
        names.append(f"exectrack_test_{uuid.uuid4().hex[:12]}")
        await create_database(stack.database_url, names[-1])
        return database_url_for(stack.database_url, names[-1])

    yield make
    for name in names:
        await drop_database(stack.database_url, name)


@pytest.fixture
async def new_database(stack: Services) -> AsyncIterator[MakeDatabase]:
    """Makes fresh, empty databases (no tables); all dropped at teardown."""
    async for make in _databases(stack):
        yield make


@pytest.fixture(scope="module")
async def new_database_module(stack: Services) -> AsyncIterator[MakeDatabase]:
    """``new_database`` for a module's tests to share: all dropped after the module."""
    async for make in _databases(stack):
        yield make


@pytest.fixture(scope="session")
async def database_url(stack: Services) -> AsyncIterator[str]:
    """A fresh database for the session, migrated to head."""
    name = f"exectrack_test_{uuid.uuid4().hex[:12]}"
    url = await create_database(stack.database_url, name)
    try:
        await migrate.upgrade(url)
        yield url
    finally:
        await drop_database(stack.database_url, name)


@pytest.fixture(scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(DatabaseSettings(), url=database_url)
    yield eng
    await eng.dispose()


@pytest.fixture
async def db(engine: AsyncEngine) -> AsyncEngine:
    """The session's engine on emptied tables."""
    async with engine.begin() as conn:
        await conn.execute(text("SET FOREIGN_KEY_CHECKS = 0"))
        for table in TABLES:
            await conn.execute(text(f"TRUNCATE TABLE {table}"))
        await conn.execute(text("SET FOREIGN_KEY_CHECKS = 1"))
    return engine


@pytest.fixture
async def refusing_trigger(db: AsyncEngine) -> AsyncIterator[None]:
    """The database refuses any execution whose id starts with 'poison' (a trigger)."""
    async with db.begin() as conn:
        for when in ("INSERT", "UPDATE"):
            await conn.execute(text(
                f"CREATE TRIGGER refuse_poison_{when.lower()} BEFORE {when} ON report_executions "
                "FOR EACH ROW BEGIN IF NEW.execution_id LIKE 'poison%' THEN "
                "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'refused by test trigger'; "
                "END IF; END"
            ))  # fmt: skip
    yield
    async with db.begin() as conn:
        await conn.execute(text("DROP TRIGGER IF EXISTS refuse_poison_insert"))
        await conn.execute(text("DROP TRIGGER IF EXISTS refuse_poison_update"))


@dataclass(frozen=True)
class Topics:
    bootstrap: str
    topic: str
    dlq: str
    group_id: str
    partitions: int


@pytest.fixture
async def topics(stack: Services) -> AsyncIterator[Topics]:
    """A fresh topic (12 partitions), its dead-letter topic and a fresh consumer group."""
    suffix = uuid.uuid4().hex[:10]
    made = Topics(
        bootstrap=stack.kafka_bootstrap,
        topic=f"exectrack-test-{suffix}",
        dlq=f"exectrack-test-{suffix}.dlq",
        group_id=f"exectrack-test-{suffix}",
        partitions=12,
    )
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(made.topic, num_partitions=made.partitions, replication_factor=1),
                NewTopic(made.dlq, num_partitions=1, replication_factor=1),
            ]
        )
        await wait_for_leaders(stack.kafka_bootstrap, [made.topic, made.dlq])
        yield made
        await admin.delete_topics([made.topic, made.dlq])
    finally:
        await admin.close()
