"""Why a Kafka client could not connect, in one line (for the command-line boundary).

aiokafka reports a failed bootstrap as ``KafkaConnectionError: Unable to
bootstrap from [...]``; the reason (a wrong SASL password, a certificate that
does not verify, a refused connection) is only in its log. ``explain_kafka``
recognises that failure and probes the brokers once more with the same
settings to name the reason, as a ``ConnectFailed``. The probe never logs or
returns the password.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from aiokafka.conn import create_conn
from aiokafka.errors import (
    AuthenticationFailedError,
    IllegalSaslStateError,
    KafkaConnectionError,
    KafkaError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)

from exectrack.producer.errors import ConnectFailed, PublishError
from exectrack.producer.settings import KafkaSettings

__all__ = ["causes", "explain_kafka", "kafka_reason", "probe_kafka"]


def causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it wraps, outermost first: a DB-API error's ``orig`` (SQLAlchemy),
    then ``__cause__`` or ``__context__``; each once."""
    found: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in found:
        found.append(current)
        current = getattr(current, "orig", None) or current.__cause__ or current.__context__
    return found


def kafka_reason(exc: BaseException) -> str:
    """A short human reason for a connection failure (the first telling cause)."""
    for cause in causes(exc):
        if isinstance(cause, SaslAuthenticationFailed | AuthenticationFailedError):
            detail = str(cause).split(": ", 1)[-1]
            if detail.lower().startswith("authentication failed"):
                return "a" + detail[1:]
            return f"authentication failed: {detail}"
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"TLS certificate verification failed: {cause.verify_message or cause}"
        if isinstance(cause, ssl.SSLError):
            return f"TLS handshake failed: {cause.reason or cause}"
        if isinstance(cause, IllegalSaslStateError):
            return (
                "the broker refused the SASL handshake: this listener does not speak SASL "
                "(check EXECTRACK_KAFKA__SECURITY_PROTOCOL and the port)"
            )
        if isinstance(cause, UnsupportedSaslMechanismError):
            detail = str(cause).split(": ", 1)[-1]
            return (
                f"SASL mechanism not enabled on the broker: {detail} "
                "(EXECTRACK_KAFKA__SASL_MECHANISM)"
            )
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, ConnectionResetError):
            return (
                "connection reset by the server: not a Kafka listener, or TLS against a "
                "plaintext one (check the port and EXECTRACK_KAFKA__SECURITY_PROTOCOL)"
            )
        if isinstance(cause, TimeoutError | asyncio.TimeoutError):
            return "timed out"
        if isinstance(cause, OSError) and not isinstance(cause, KafkaError):
            return str(cause.strerror or cause)
    return f"{type(exc).__name__}: {exc}".rstrip(": ")


async def probe_kafka(settings: KafkaSettings, *, timeout_s: float = 10.0) -> str | None:
    """Connect (and authenticate) to each bootstrap broker once: the first reason it fails.

    Args:
        settings: the brokers (``bootstrap_servers``, ``host:port`` comma-separated;
            port 9092 when absent) and how to authenticate.
        timeout_s: seconds allowed for each broker.

    Returns:
        None when every broker accepted the connection (and SASL, TLS), else a
        short reason (``kafka_reason``) for the first that did not.
    """
    kwargs: dict[str, Any] = settings.client_kwargs()
    options = {
        "client_id": kwargs["client_id"],
        "security_protocol": kwargs["security_protocol"],
        "ssl_context": kwargs.get("ssl_context"),
        "sasl_mechanism": kwargs.get("sasl_mechanism"),
        "sasl_plain_username": kwargs.get("sasl_plain_username"),
        "sasl_plain_password": kwargs.get("sasl_plain_password"),
        "request_timeout_ms": int(timeout_s * 1000),
    }
    for server in settings.bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            async with asyncio.timeout(timeout_s):
                conn = await create_conn(host.strip("[]") or server, int(port or 9092), **options)
        except (OSError, KafkaError, TimeoutError, ValueError) as exc:
            return kafka_reason(exc)
        conn.close()
    return None


def _is_connect_failure(exc: BaseException) -> bool:
    return any(isinstance(c, KafkaConnectionError | OSError) for c in causes(exc)) or (
        "Unable to bootstrap" in str(exc)
    )


def _unreadable_tls_file(exc: BaseException, settings: KafkaSettings) -> bool:
    """An error of ``KafkaSettings.client_kwargs`` reading ``ssl_cafile``/``ssl_certfile``/
    ``ssl_keyfile``: only with TLS on, and only a file error or a bad PEM (an address
    in use or any other OSError is not a TLS setting)."""
    if isinstance(exc, KafkaError) or not settings.security_protocol.endswith("SSL"):
        return False
    return isinstance(exc, ssl.SSLError | FileNotFoundError | PermissionError | IsADirectoryError)


def explain_kafka(exc: BaseException, settings: KafkaSettings) -> ConnectFailed | None:
    """A ``ConnectFailed`` for a Kafka error that is a connection failure, else None.

    Runs its own event loop for the probe: call it after ``asyncio.run`` returned.
    """
    if isinstance(exc, ConnectFailed):
        return exc
    if _unreadable_tls_file(exc, settings):
        # the settings' own files (ssl_cafile, ssl_certfile) could not be read
        return ConnectFailed("kafka", settings.bootstrap_servers, f"TLS settings: {exc}")
    if not isinstance(exc, KafkaError | PublishError) or not _is_connect_failure(exc):
        return None
    try:
        reason = asyncio.run(probe_kafka(settings))
    except Exception as probe_error:  # the probe only refines the message
        reason = kafka_reason(probe_error)
    return ConnectFailed("kafka", settings.bootstrap_servers, reason or kafka_reason(exc))
