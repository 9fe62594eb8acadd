"""Database TLS: the consumer against a private MariaDB that only accepts TLS.

The server (tests/faults/secure_database.py) has ``require_secure_transport=ON``
and the user ``REQUIRE SSL``, with a throwaway CA. With
``EXECTRACK_DATABASE__SSL_MODE=verify_identity`` and that CA, ``migrate`` and a
real ``consume`` process (fed by the deploy/local broker) work and converge,
and a session opened with the same settings is encrypted (``Ssl_cipher``).
Without TLS settings, or with another CA, the commands stop with one line
that says why, no traceback, never the password.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from exectrack.consumer.db.engine import create_engine
from exectrack.consumer.settings import DatabaseSettings
from tests.conftest import Topics
from tests.faults.secure_database import PASSWORD, SecureDatabase, available, secure_database
from tests.support.faults import CONSUMER, assert_converged, drained, publish_stream, spawner
from tests.support.faults import stream as simulated

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tls_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureDatabase]:
    why = available()
    if why:
        pytest.skip(f"TLS database: {why}")
    with secure_database(tmp_path_factory.mktemp("tls-db")) as found:
        yield found


def tls_settings(db: SecureDatabase, **extra: str) -> dict[str, str]:
    return {
        "EXECTRACK_DATABASE__URL": db.url(),
        "EXECTRACK_DATABASE__SSL_MODE": "verify_identity",
        "EXECTRACK_DATABASE__SSL_CA": db.cafile,
        **extra,
    }


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("EXECTRACK_DATABASE__")}
    return subprocess.run(
        [str(CONSUMER), *args], env={**clean, "EXECTRACK_HEALTH_PORT": "0", **env},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def assert_one_clear_line(
    done: subprocess.CompletedProcess[str], *expected: str, code: int = 1
) -> str:
    """Exit ``code``, no traceback, no password, and one stderr line saying ``expected``."""
    output = done.stdout + done.stderr
    assert done.returncode == code, output
    assert "Traceback" not in output
    assert PASSWORD not in output
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, output
    for words in expected:
        assert words in lines[0], lines[0]
    return lines[0]


async def test_consumer_over_tls_converges(
    tls_db: SecureDatabase, topics: Topics, tmp_path: Path
) -> None:
    done = await asyncio.to_thread(run_cli, "migrate", env=tls_settings(tls_db))
    assert done.returncode == 0, done.stdout + done.stderr

    messages = simulated(200, seed=211)
    sent = await publish_stream(topics, messages)
    spawn = spawner(topics, tls_db.url(), tmp_path)
    start = next(spawn)
    proc = start(**tls_settings(tls_db))
    settings = DatabaseSettings(ssl_mode="verify_identity", ssl_ca=Path(tls_db.cafile))
    engine = create_engine(settings, url=tls_db.url())
    try:
        await drained(topics, timeout_s=60)
        assert proc.poll() is None, "the consumer exited"
        counts = await assert_converged(engine, topics, messages, sent)
        assert counts["rows_out"] == counts["rows_expected"] > 0
        async with engine.connect() as conn:  # the same settings give an encrypted session
            status = (await conn.execute(text("SHOW SESSION STATUS LIKE 'Ssl_cipher'"))).one()
            version = (await conn.execute(text("SHOW SESSION STATUS LIKE 'Ssl_version'"))).one()
        assert status[1], "the session is not encrypted"
        assert version[1] in ("TLSv1.2", "TLSv1.3")
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0
    finally:
        await engine.dispose()
        next(spawn, None)  # kills what is still running
    log = (tmp_path / "consumer-0.log").read_text(errors="replace")
    assert PASSWORD not in log
    # the server only lets TLS sessions in: every one the consumer opened was encrypted
    accepted = tls_db.sql("SHOW GLOBAL STATUS LIKE 'Ssl_accepts'").split()
    assert int(accepted[1]) >= 3  # migrate, the consumer's pool, this test's engine


async def test_mutual_tls_client_certificate(tls_db: SecureDatabase) -> None:
    settings = DatabaseSettings(
        ssl_mode="verify_identity", ssl_ca=Path(tls_db.cafile),
        ssl_cert=Path(tls_db.client_cert), ssl_key=Path(tls_db.client_key),
    )  # fmt: skip
    engine = create_engine(settings, url=tls_db.url())
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT 1"))).scalar() == 1
    finally:
        await engine.dispose()


def test_without_tls_the_server_refuses_in_one_line(tls_db: SecureDatabase) -> None:
    plain = {"EXECTRACK_DATABASE__URL": tls_db.url()}
    line = assert_one_clear_line(
        run_cli("migrate", env=plain), "cannot connect to database", "access denied",
        "EXECTRACK_DATABASE__SSL_MODE", f":***@{tls_db.host}:{tls_db.port}",
    )  # fmt: skip
    assert json.loads(line)["event"] == "connect_failed"  # a log event: stderr is not a TTY
    # consume stops at once too (credentials and TLS are not retried): one JSON log line
    done = run_cli("consume", env={**plain, "EXECTRACK_LOG_FORMAT": "json"})
    line = assert_one_clear_line(done, '"event": "connect_failed"', '"service": "database"')
    assert "access denied" in line


def test_wrong_ca_fails_verification_in_one_line(tls_db: SecureDatabase) -> None:
    env = tls_settings(tls_db, EXECTRACK_DATABASE__SSL_CA=tls_db.wrong_cafile)
    assert_one_clear_line(
        run_cli("migrate", env=env), "cannot connect to database",
        "TLS certificate verification failed",
    )  # fmt: skip
    for extra in ({"EXECTRACK_DATABASE__SSL_CERT": tls_db.client_cert},):  # a setting mistake
        assert_one_clear_line(
            run_cli("migrate", env={**env, **extra}),
            '"invalid_settings"',
            "go together",
            code=2,  # a usage error
        )
