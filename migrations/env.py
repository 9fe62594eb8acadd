"""alembic environment (async): the URL comes from the consumer's settings.

Programmatic callers (exectrack.consumer.db.migrate, the tests) may pass a URL in
``config.attributes["database_url"]``; otherwise ``Settings()`` reads it from the
environment, exactly as the consumer does.
"""

from __future__ import annotations

import asyncio
from typing import Any

from alembic import context
from sqlalchemy import Column
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Connection
from sqlalchemy.types import JSON, TypeEngine

from exectrack.consumer.db.engine import create_engine
from exectrack.consumer.db.models import Base
from exectrack.consumer.settings import Settings

config = context.config
target_metadata = Base.metadata


def _database_url() -> str:
    url = config.attributes.get("database_url")
    if url:
        return str(url)
    return Settings().database.url.get_secret_value()


def compare_type(
    ctx: Any,
    inspected_column: Column[Any],
    metadata_column: Column[Any],
    inspected_type: TypeEngine[Any],
    metadata_type: TypeEngine[Any],
) -> bool | None:
    """MariaDB implements JSON as LONGTEXT plus a json_valid() CHECK: not drift."""
    if isinstance(metadata_type, JSON) and isinstance(inspected_type, mysql.LONGTEXT | JSON):
        return False
    return None  # alembic's default comparison


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=compare_type,
        render_as_batch=False,
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    engine = create_engine(Settings().database, url=_database_url())
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


def run_migrations_offline() -> None:
    """`alembic upgrade head --sql`: print the DDL (MySQL dialect) instead of running it."""
    context.configure(
        url=_database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
    else:
        asyncio.run(_run_async())
