"""Database TLS settings -> ssl.SSLContext, and connection failures told in one line (pure)."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path
from typing import Any

import pymysql
import pytest
from aiokafka.errors import KafkaConnectionError, SaslAuthenticationFailed
from pydantic import SecretStr, ValidationError
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import create_async_engine

from exectrack.consumer.db.engine import create_engine, tls_context
from exectrack.consumer.errors import DatabaseTlsError
from exectrack.consumer.failures import database_failure, database_reason
from exectrack.consumer.settings import DatabaseSettings, Settings
from exectrack.producer.diagnose import kafka_reason
from exectrack.producer.errors import PublishError

URL = SecretStr("mysql+aiomysql://u:hunter2@db.example:3306/x")


@pytest.fixture(scope="module")
def pem(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A self-signed certificate and its key (openssl), used as CA and as client cert."""
    directory = tmp_path_factory.mktemp("pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "key.pem",
         "-out", "cert.pem", "-days", "1", "-subj", "/CN=exectrack-unit"],
        cwd=directory, check=True, capture_output=True,
    )  # fmt: skip
    return {"cert": directory / "cert.pem", "key": directory / "key.pem"}


def test_default_is_no_tls() -> None:
    settings = DatabaseSettings()
    assert settings.ssl_mode == "disabled"
    assert tls_context(settings) is None


@pytest.mark.parametrize("mode", ["preferred", "required"])
def test_encrypt_without_verifying(mode: str) -> None:
    context = tls_context(DatabaseSettings(ssl_mode=mode))  # type: ignore[arg-type]
    assert context is not None
    assert (context.verify_mode, context.check_hostname) == (ssl.CERT_NONE, False)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2


def test_verify_ca_checks_the_chain_not_the_name(pem: dict[str, Path]) -> None:
    context = tls_context(DatabaseSettings(ssl_mode="verify_ca", ssl_ca=pem["cert"]))
    assert context is not None
    assert (context.verify_mode, context.check_hostname) == (ssl.CERT_REQUIRED, False)
    assert [c["subject"] for c in context.get_ca_certs()] == [
        ((("commonName", "exectrack-unit"),),)
    ]


def test_verify_identity_checks_the_name_too(pem: dict[str, Path]) -> None:
    settings = DatabaseSettings(ssl_mode="verify_identity", ssl_ca=pem["cert"])
    context = tls_context(settings)
    assert context is not None
    assert (context.verify_mode, context.check_hostname) == (ssl.CERT_REQUIRED, True)


def test_verify_identity_without_ca_uses_the_system_store() -> None:
    context = tls_context(DatabaseSettings(ssl_mode="verify_identity"))
    assert context is not None
    assert context.check_hostname


def test_client_certificate_is_loaded(pem: dict[str, Path]) -> None:
    settings = DatabaseSettings(
        ssl_mode="verify_identity", ssl_ca=pem["cert"], ssl_cert=pem["cert"], ssl_key=pem["key"]
    )
    assert tls_context(settings) is not None


def test_the_context_reaches_aiomysql(
    pem: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, Any] = {}
    real = create_async_engine

    def spy(url: str, **kwargs: Any) -> Any:
        seen.update(kwargs["connect_args"])
        return real(url, **kwargs)

    monkeypatch.setattr("exectrack.consumer.db.engine.create_async_engine", spy)
    create_engine(DatabaseSettings(url=URL, ssl_mode="verify_ca", ssl_ca=pem["cert"]))
    assert isinstance(seen["ssl"], ssl.SSLContext)
    assert seen["ssl"].verify_mode == ssl.CERT_REQUIRED


def test_environment_names(monkeypatch: pytest.MonkeyPatch, pem: dict[str, Path]) -> None:
    monkeypatch.setenv("EXECTRACK_DATABASE__SSL_MODE", "verify_identity")
    monkeypatch.setenv("EXECTRACK_DATABASE__SSL_CA", str(pem["cert"]))
    settings = Settings().database
    assert (settings.ssl_mode, settings.ssl_ca) == ("verify_identity", pem["cert"])


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"ssl_mode": "verify_identity", "ssl_cert": "c.pem"}, "SSL_KEY go together"),
        ({"ssl_mode": "verify_identity", "ssl_key": "k.pem"}, "go together"),
        ({"ssl_ca": "ca.pem"}, "SSL_MODE is disabled"),
        ({"ssl_cert": "c.pem", "ssl_key": "k.pem"}, "SSL_MODE is disabled"),
        ({"ssl_mode": "required", "ssl_ca": "ca.pem"}, "use verify_identity or verify_ca"),
        ({"ssl_mode": "tls"}, "ssl_mode"),
    ],
)  # fmt: skip
def test_combinations_that_would_mislead_are_refused(fields: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        DatabaseSettings(**fields)  # type: ignore[arg-type]


def test_unreadable_files_say_which(tmp_path: Path, pem: dict[str, Path]) -> None:
    missing = tmp_path / "nope.pem"
    with pytest.raises(DatabaseTlsError, match=f"ssl_ca {missing}: No such file"):
        tls_context(DatabaseSettings(ssl_mode="verify_ca", ssl_ca=missing))
    with pytest.raises(DatabaseTlsError, match=r"ssl_cert .* / ssl_key"):
        tls_context(
            DatabaseSettings(ssl_mode="required", ssl_cert=pem["cert"], ssl_key=pem["cert"])
        )


def _operational(code: int, message: str, cause: BaseException | None = None) -> OperationalError:
    orig = pymysql.err.OperationalError(code, message)
    orig.__cause__ = cause
    return OperationalError("SELECT 1", {}, orig)


def test_database_failures_in_one_line_without_the_password() -> None:
    settings = DatabaseSettings(url=URL)
    denied = _operational(1045, "Access denied for user 'u'@'10.0.0.1' (using password: YES)")
    reason, permanent = database_reason(denied, settings)
    assert permanent
    assert reason.startswith("access denied (1045)")
    assert "EXECTRACK_DATABASE__SSL_MODE" in reason  # the hint: maybe the server wants TLS
    line = str(database_failure(denied, settings))
    assert line.startswith("cannot connect to database mysql+aiomysql://u:***@db.example:3306/x")
    assert "hunter2" not in line
    assert "\n" not in line

    verify = ssl.SSLCertVerificationError(1, "certificate verify failed")
    verify.verify_message = "unable to get local issuer certificate"
    bad_ca = _operational(2003, "Can't connect to MySQL server on 'db.example'", verify)
    assert database_reason(bad_ca, settings) == (
        "TLS certificate verification failed: unable to get local issuer certificate",
        True,
    )
    assert database_reason(_operational(3159, "insecure transport"), settings)[1]
    away = _operational(
        2003, "Can't connect to MySQL server on 'db.example'", ConnectionRefusedError()
    )
    assert database_reason(away, settings) == (
        "(2003) Can't connect to MySQL server on 'db.example'",
        False,
    )


def test_kafka_reasons() -> None:
    sasl = SaslAuthenticationFailed(
        "Authentication failed during authentication due to invalid credentials"
    )
    assert kafka_reason(sasl).startswith("authentication failed during authentication")
    bootstrap = KafkaConnectionError("Unable to bootstrap from [('b', 9093)]")
    wrapped = PublishError("KafkaConnectionError: Unable to bootstrap")
    wrapped.__cause__ = bootstrap
    bootstrap.__cause__ = ConnectionRefusedError(111, "Connection refused")
    assert kafka_reason(wrapped) == "connection refused"
    verify = ssl.SSLCertVerificationError(1, "certificate verify failed")
    verify.verify_message = "self-signed certificate"
    assert kafka_reason(verify) == "TLS certificate verification failed: self-signed certificate"
