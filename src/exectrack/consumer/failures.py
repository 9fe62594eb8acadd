"""Connection failures at the command-line boundary: one line, never a traceback.

A wrong Kafka password or certificate (``exectrack.producer.diagnose``), a database that
refuses the credentials or the transport (no TLS where the server requires it,
a certificate that does not verify) end ``exectrack-consumer`` commands with
one line naming the service, where it is (the database URL with its password
masked) and why, and exit status 1, as one log line (exectrack.consumer.cli).
``check_database`` runs before ``consume`` starts: credentials, TLS, an unknown
database (1049) or a schema never migrated (1146) stop it at once (a database
that is merely down does not: the consumer retries, as it always did).
"""

from __future__ import annotations

import ssl

import structlog
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from exectrack.consumer.db.engine import create_engine
from exectrack.consumer.db.repository import mysql_error_code
from exectrack.consumer.errors import DatabaseTlsError
from exectrack.consumer.settings import DatabaseSettings, Settings
from exectrack.producer.diagnose import causes, explain_kafka
from exectrack.producer.errors import ConnectFailed

log = structlog.get_logger(__name__)

ACCESS_DENIED = frozenset({1044, 1045, 1698})  # database, password, unix_socket plugin
TLS_REQUIRED = frozenset({1941, 3159})  # require_secure_transport: MariaDB, MySQL
UNKNOWN_DATABASE = 1049  # ER_BAD_DB_ERROR: the URL names a database the server does not have
NO_SUCH_TABLE = 1146  # ER_NO_SUCH_TABLE: the database was never migrated


def database_reason(exc: BaseException, settings: DatabaseSettings) -> tuple[str, bool]:
    """(a short reason, whether it is permanent: credentials or TLS, not a server away).

    Walks ``exc`` and its causes (``exectrack.producer.diagnose.causes``): TLS
    errors, then the MySQL error numbers above (MySQL reference manual, "Server
    Error Message Reference": 1044/1045 access denied, 1049 unknown database,
    1146 no such table, 3159 secure transport required; MariaDB 1941 for the
    last). Never raises.
    """
    for cause in causes(exc):
        if isinstance(cause, DatabaseTlsError):
            return str(cause), True
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"TLS certificate verification failed: {cause.verify_message or cause}", True
        if isinstance(cause, ssl.SSLError):
            return f"TLS handshake failed: {cause.reason or cause}", True
        code = mysql_error_code(cause)
        if code in ACCESS_DENIED:
            reason = f"access denied ({code}): {cause.args[1]}"
            if settings.ssl_mode == "disabled":
                reason += " (if the server requires TLS, set EXECTRACK_DATABASE__SSL_MODE)"
            return reason, True
        if code in TLS_REQUIRED:
            return f"the server requires TLS ({code}): set EXECTRACK_DATABASE__SSL_MODE", True
        if code == UNKNOWN_DATABASE:
            return (
                f"unknown database ({code}): {cause.args[1]}: create it, then run "
                "`exectrack-consumer migrate`"
            ), True
        if code == NO_SUCH_TABLE:
            return (
                f"the schema is missing ({code}): {cause.args[1]}: run `exectrack-consumer migrate`"
            ), True
    for cause in causes(exc):
        code = mysql_error_code(cause)
        if code is not None and len(cause.args) > 1:
            return f"({code}) {cause.args[1]}", False
    return f"{type(exc).__name__}: {exc}", False


def database_failure(exc: BaseException, settings: DatabaseSettings) -> ConnectFailed:
    """The one-line ``ConnectFailed`` for a database error: masked URL, ``database_reason``."""
    return ConnectFailed("database", settings.display_url, database_reason(exc, settings)[0])


def explain(exc: BaseException, settings: Settings) -> ConnectFailed | None:
    """The one-line failure an exception stands for, or None when it is not one of ours."""
    if isinstance(exc, ConnectFailed):
        return exc
    if isinstance(exc, SQLAlchemyError | DatabaseTlsError):
        return database_failure(exc, settings.database)
    return explain_kafka(exc, settings.kafka)


async def check_database(settings: DatabaseSettings) -> None:
    """Connect once and look for the table; raise ``ConnectFailed`` when the credentials,
    TLS, the database name or the schema are wrong (the writer would retry them forever).

    A server that is merely away (refused connection, timeout, 2003...) is
    logged (``database_unavailable``) and not raised: the consumer retries it.

    Raises:
        ConnectFailed: a permanent failure (``database_reason``), as one line.
        DatabaseTlsError: the TLS files cannot be used (``create_engine``, before connecting).
    """
    engine = create_engine(settings)
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1 FROM report_executions WHERE 1 = 0"))
    except (SQLAlchemyError, DatabaseTlsError, OSError) as exc:
        reason, permanent = database_reason(exc, settings)
        if permanent:
            raise ConnectFailed("database", settings.display_url, reason) from None
        log.warning("database_unavailable", db=settings.display_url, error=reason)
    finally:
        await engine.dispose()
