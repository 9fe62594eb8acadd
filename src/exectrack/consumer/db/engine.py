"""Engine and session factory: every connection speaks UTC and READ COMMITTED.

READ COMMITTED avoids InnoDB gap locks on the unique index, so consumers that
own different partitions never block each other on inserts of new executions.

``idle_timeout_s`` (the consumer's engine) sets the session's ``wait_timeout``:
the server closes a connection that sends nothing for that long, including one
whose process froze inside a batch transaction (SIGSTOP, a paused VM). Its
transaction rolls back and its row locks go, so the consumer that took over the
partitions is not stalled by a zombie (tests/faults/test_zombie_locks.py).
Idle pool connections closed that way are replaced on checkout (pre-ping), and
closed without a goodbye when the pool lets them go (``_forget_dropped``): a
polite close (COM_QUIT) on a socket the server already reset fails, and
SQLAlchemy logged that failure with a traceback at every shutdown that followed
more than ``idle_timeout_s`` of quiet.
Portable: MySQL 8.0 and MariaDB both have the variable.

TLS (``DatabaseSettings.ssl_mode``, MySQL's ``--ssl-mode``) is an
``ssl.SSLContext`` handed to aiomysql. Every engine is made here (the consumer,
migrations, replay, verify, the retention jobs and commands), so every
connection gets the same TLS settings, also those to ``--target-url`` and
friends. aiomysql, like PyMySQL, falls back to plaintext when the server does
not offer TLS; for ``required`` and stronger, each new connection therefore
checks ``Ssl_cipher`` and is refused when it is empty.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from exectrack.consumer.errors import DatabaseTlsError
from exectrack.consumer.settings import DatabaseSettings, database_url

T = TypeVar("T")

SESSION_INIT = "SET time_zone = '+00:00'"


def tls_context(settings: DatabaseSettings) -> ssl.SSLContext | None:
    """The client TLS context ``settings.ssl_mode`` asks for; None when TLS is disabled.

    - ``preferred``, ``required``: encrypt, do not verify the server (as MySQL's modes);
    - ``verify_ca``: the server's certificate must chain to ``ssl_ca`` (or the
      system's CAs when unset), whatever name it carries;
    - ``verify_identity``: and it must name the host of the URL (SAN DNS or IP).

    ``ssl_cert``/``ssl_key``: a client certificate (PEM) for servers that ask
    for one (MySQL reference manual, "Command Options for Encrypted Connections").

    Raises:
        DatabaseTlsError: ``ssl_ca``, ``ssl_cert`` or ``ssl_key`` cannot be read
            or is not a certificate/key.
    """
    mode = settings.ssl_mode
    if mode == "disabled":
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if mode in ("verify_ca", "verify_identity"):
        context.check_hostname = mode == "verify_identity"
        context.verify_mode = ssl.CERT_REQUIRED
        try:
            if settings.ssl_ca is None:
                context.load_default_certs(ssl.Purpose.SERVER_AUTH)
            else:
                context.load_verify_locations(cafile=str(settings.ssl_ca))
        except (OSError, ssl.SSLError) as exc:
            raise DatabaseTlsError(f"database ssl_ca {settings.ssl_ca}: {_reason(exc)}") from None
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if settings.ssl_cert is not None:
        try:
            context.load_cert_chain(str(settings.ssl_cert), str(settings.ssl_key))
        except (OSError, ssl.SSLError) as exc:
            raise DatabaseTlsError(
                f"database ssl_cert {settings.ssl_cert} / ssl_key {settings.ssl_key}: "
                f"{_reason(exc)}"
            ) from None
    return context


def _reason(exc: BaseException) -> str:
    return str(getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc)


def _require_tls(dbapi_connection: Any, _record: Any) -> None:
    """On each new connection: refuse it if the server did not agree to TLS."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
        row = cursor.fetchone()
    finally:
        cursor.close()
    if not row or not row[1]:
        raise DatabaseTlsError(
            "the database server did not agree to TLS, which EXECTRACK_DATABASE__SSL_MODE requires"
        )


IDLE_MARGIN_S = 1.0
"""Closed by the server 'at' wait_timeout: treat a connection this close to it as gone."""


def _mark_idle(_dbapi_connection: Any, record: Any) -> None:
    """Pool ``checkin``: the connection's last statement was (just) before now."""
    record.info["idle_since"] = time.monotonic()


def _forget_dropped(idle_timeout_s: int) -> Any:
    """Pool ``close`` (emitted before the pool closes a connection): a connection idle
    for the server's ``wait_timeout`` was dropped by the server, so close only our
    end of its socket (aiomysql ``Connection.close``, no COM_QUIT to fail)."""

    def close(dbapi_connection: Any, record: Any) -> None:
        since = record.info.get("idle_since") if record is not None else None
        if since is not None and time.monotonic() - since >= idle_timeout_s - IDLE_MARGIN_S:
            dbapi_connection.driver_connection.close()

    return close


def create_engine(
    settings: DatabaseSettings, *, url: str | None = None, idle_timeout_s: int | None = None
) -> AsyncEngine:
    """An engine for ``settings`` (or for ``url`` with the same TLS and timeouts).

    ``url`` goes through ``exectrack.consumer.settings.database_url`` as the setting does
    (``mysql://`` is completed; another database raises ``DatabaseUrlError``).
    ``idle_timeout_s``: the server drops a connection idle this long, in seconds
    (the session's ``wait_timeout``, MySQL reference manual, "Server System
    Variables"; see above). No connection is opened here.

    Raises:
        DatabaseUrlError: ``url`` is not a MySQL URL exectrack can use.
        DatabaseTlsError: the TLS files cannot be used (``tls_context``).
    """
    init = (
        SESSION_INIT
        if idle_timeout_s is None
        else f"{SESSION_INIT}, wait_timeout = {idle_timeout_s:d}"
    )
    connect_args: dict[str, Any] = {
        "init_command": init,
        "connect_timeout": settings.connect_timeout_s,
        "charset": "utf8mb4",
    }
    context = tls_context(settings)
    if context is not None:
        connect_args["ssl"] = context
    engine = create_async_engine(
        database_url(url)[0] if url else settings.url.get_secret_value(),
        pool_size=settings.pool_size,
        pool_pre_ping=True,
        pool_recycle=3600,
        isolation_level="READ COMMITTED",
        connect_args=connect_args,
    )
    if settings.echo:  # SQLAlchemy's echo=True adds a plain-text handler: log through ours
        logging.getLogger("sqlalchemy.engine").setLevel(logging.INFO)
    if settings.ssl_mode not in ("disabled", "preferred"):
        event.listen(engine.sync_engine, "connect", _require_tls)
    if idle_timeout_s is not None:
        event.listen(engine.sync_engine.pool, "checkin", _mark_idle)
        event.listen(engine.sync_engine.pool, "close", _forget_dropped(idle_timeout_s))
    return engine


async def with_engine(settings: DatabaseSettings, job: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    """``job``'s result on a new engine for ``settings``, disposed of afterwards (even on error).

    For one-shot commands; errors of ``create_engine`` and of ``job`` propagate.
    """
    engine = create_engine(settings)
    try:
        return await job(engine)
    finally:
        await engine.dispose()
