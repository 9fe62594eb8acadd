"""Creating and dropping whole databases (tests, benchmarks, replays into a fresh database).

The URL given is any URL on the server whose user may create databases; the
result is the same URL pointing at the new database.
"""

from __future__ import annotations

import re

from sqlalchemy import text
from sqlalchemy.engine import make_url

from exectrack.consumer.db.engine import create_engine
from exectrack.consumer.settings import DatabaseSettings

_NAME = re.compile(r"[A-Za-z0-9_]{1,64}")


def _checked(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ValueError(f"database name {name!r}: letters, digits and _ only, at most 64")
    return name


def url_for(server_url: str, database: str) -> str:
    """``server_url`` pointing at ``database`` instead, password kept (a working URL)."""
    return make_url(server_url).set(database=database).render_as_string(hide_password=False)


async def _execute(server_url: str, statement: str) -> None:
    engine = create_engine(DatabaseSettings(), url=server_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


async def create_database(server_url: str, name: str) -> str:
    """CREATE DATABASE (utf8mb4, utf8mb4_unicode_ci); returns its URL (``url_for``).

    Raises:
        ValueError: ``name`` is not 1..64 letters, digits and ``_`` (it is quoted
            as a MySQL identifier, not bound).
        sqlalchemy.exc.DBAPIError: the server refused (it exists, no privilege...).
    """
    await _execute(
        server_url,
        f"CREATE DATABASE `{_checked(name)}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci",
    )
    return url_for(server_url, name)


async def drop_database(server_url: str, name: str) -> None:
    """DROP DATABASE IF EXISTS ``name`` (gone already is fine).

    Raises:
        ValueError: ``name`` is not 1..64 letters, digits and ``_``.
        sqlalchemy.exc.DBAPIError: the server refused.
    """
    await _execute(server_url, f"DROP DATABASE IF EXISTS `{_checked(name)}`")
