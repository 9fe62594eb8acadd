"""Engine and session factory: every connection speaks UTC and READ COMMITTED.

READ COMMITTED avoids InnoDB gap locks on the unique index, so consumers that
own different partitions never block each other on inserts of new executions.
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


def create_engine(settings: DatabaseSettings, *, url: str | None = None) -> AsyncEngine:
    return create_async_engine(
        url or settings.url.get_secret_value(),
        pool_size=settings.pool_size,
        pool_pre_ping=True,
        pool_recycle=3600,
        isolation_level="READ COMMITTED",
        echo=settings.echo,
        connect_args={
            "init_command": SESSION_INIT,
            "connect_timeout": settings.connect_timeout_s,
            "charset": "utf8mb4",
        },
    )


def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
