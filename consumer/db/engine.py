"""Engine and session factory: every connection speaks UTC and READ COMMITTED.

READ COMMITTED avoids InnoDB gap locks on the unique index, so consumers that
own different partitions never block each other on inserts of new executions.

``idle_timeout_s`` (the consumer's engine) sets the session's ``wait_timeout``:
the server closes a connection that sends nothing for that long, including one
whose process froze inside a batch transaction (SIGSTOP, a paused VM). Its
transaction rolls back and its row locks go, so the consumer that took over the
partitions is not stalled by a zombie (tests/faults/test_zombie_locks.py).
Idle pool connections closed that way are replaced on checkout (pre-ping).
Portable: MySQL 8.0 and MariaDB both have the variable.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from consumer.settings import DatabaseSettings

SESSION_INIT = "SET time_zone = '+00:00'"


def create_engine(
    settings: DatabaseSettings, *, url: str | None = None, idle_timeout_s: int | None = None
) -> AsyncEngine:
    init = (
        SESSION_INIT
        if idle_timeout_s is None
        else f"{SESSION_INIT}, wait_timeout = {idle_timeout_s:d}"
    )
    return create_async_engine(
        url or settings.url.get_secret_value(),
        pool_size=settings.pool_size,
        pool_pre_ping=True,
        pool_recycle=3600,
        isolation_level="READ COMMITTED",
        echo=settings.echo,
        connect_args={
            "init_command": init,
            "connect_timeout": settings.connect_timeout_s,
            "charset": "utf8mb4",
        },
    )


def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
