"""The failure surface, pure parts: database URLs, one-line reasons, JSON logging, --version.

The same behaviours on real commands, broker and database:
tests/integration/test_failure_surface.py.
"""

from __future__ import annotations

import errno
import json
import logging
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from aiokafka.errors import IllegalSaslStateError, KafkaConnectionError
from click.testing import CliRunner
from pydantic import ValidationError

from exectrack.consumer import logs
from exectrack.consumer.cli import main as consumer_cli
from exectrack.consumer.cli import settings_problems
from exectrack.consumer.failures import database_reason
from exectrack.consumer.settings import DatabaseSettings, DatabaseUrlError, Settings, database_url
from exectrack.producer.cli import main as producer_cli
from exectrack.producer.diagnose import explain_kafka, kafka_reason
from exectrack.producer.settings import KafkaSettings

BIN = Path(sys.executable).parent


@pytest.mark.parametrize(
    ("given", "expected", "completed"),
    [
        ("mysql+aiomysql://u:p@h:3306/d", "mysql+aiomysql://u:p@h:3306/d", False),
        ("mysql://u:p@h:3306/d?charset=utf8", "mysql+aiomysql://u:p@h:3306/d?charset=utf8", True),
        ("mariadb://u:p@h/d", "mysql+aiomysql://u:p@h/d", True),
        ("mariadb+aiomysql://u:p@h/d", "mysql+aiomysql://u:p@h/d", True),
        ("MySQL://u:p@h/d", "mysql+aiomysql://u:p@h/d", True),
    ],
)
def test_mysql_urls_are_used_with_aiomysql(given: str, expected: str, completed: bool) -> None:
    assert database_url(given) == (expected, completed)
    settings = DatabaseSettings.model_validate({"url": given})
    assert settings.url.get_secret_value() == expected
    assert settings.url_rewritten is completed


@pytest.mark.parametrize(
    "given",
    ["postgresql://u:p@h/d", "sqlite:///x.db", "sqllite:///x.db", "jdbc:mysql://h/d", "", "x"],
)
def test_other_databases_are_refused_without_echoing_the_url(given: str) -> None:
    with pytest.raises(DatabaseUrlError) as raised:
        database_url(given)
    assert str(raised.value) == (
        "exectrack stores in MySQL/MariaDB; use mysql+aiomysql://user:pass@host:3306/db"
    )


def test_other_drivers_are_refused_naming_the_driver() -> None:
    with pytest.raises(DatabaseUrlError, match="the pymysql driver is not supported"):
        database_url("mysql+pymysql://u:p@h/d")


def test_settings_problems_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXECTRACK_DATABASE__URL", "postgresql://u:hunter2@h/d")
    monkeypatch.setenv("EXECTRACK_BATCH_MAX_RECORDS", "0")
    with pytest.raises(ValidationError) as raised:
        Settings()
    line = settings_problems(raised.value)
    assert line == (
        "EXECTRACK_DATABASE__URL: exectrack stores in MySQL/MariaDB; use "
        "mysql+aiomysql://user:pass@host:3306/db; "
        "EXECTRACK_BATCH_MAX_RECORDS: Input should be greater than or equal to 1"
    )
    assert "hunter2" not in line


def test_a_busy_port_is_not_a_kafka_tls_failure() -> None:
    busy = OSError(errno.EADDRINUSE, "address already in use")
    assert explain_kafka(busy, KafkaSettings()) is None
    assert explain_kafka(busy, KafkaSettings(security_protocol="SSL")) is None
    unreadable = FileNotFoundError(2, "No such file or directory")
    failure = explain_kafka(unreadable, KafkaSettings(security_protocol="SSL"))
    assert failure is not None
    assert failure.reason.startswith("TLS settings: ")


def test_kafka_listener_mismatches_have_a_reason() -> None:
    sasl = KafkaConnectionError("Unable to bootstrap")
    sasl.__cause__ = IllegalSaslStateError("<AIOKafkaConnection host=h port=9092>")
    assert kafka_reason(sasl).startswith("the broker refused the SASL handshake")
    assert kafka_reason(ConnectionResetError()).startswith("connection reset by the server")


class _ServerError(Exception):
    """Stands for a pymysql error: args = (code, message)."""


@pytest.mark.parametrize(
    ("code", "start"),
    [(1049, "unknown database (1049): "), (1146, "the schema is missing (1146): ")],
)
def test_unknown_database_and_missing_schema_are_permanent(code: int, start: str) -> None:
    reason, permanent = database_reason(
        _ServerError(code, "the server's words"), DatabaseSettings()
    )
    assert permanent
    assert reason.startswith(start)
    assert reason.endswith("`exectrack-consumer migrate`")


@pytest.mark.parametrize(("cli", "name"), [(consumer_cli, "exectrack-consumer"),
                                           (producer_cli, "exectrack-producer")])  # fmt: skip
def test_version(cli: object, name: str) -> None:
    from importlib.metadata import version

    result = CliRunner().invoke(cli, ["--version"])  # type: ignore[arg-type]
    assert result.exit_code == 0
    assert result.output == f"{name}, version {version('exectrack')}\n"
    installed = subprocess.run(
        [str(BIN / name), "--version"], capture_output=True, text=True, timeout=60, check=True
    )
    assert installed.stdout == result.output


# ------------------------------------------------------------------ logging
@pytest.fixture
def json_logs() -> Iterator[None]:
    # an earlier test's CLI run left warnings captured, and pytest restored its own
    # showwarning since: start from "not captured" so configure_logging installs it
    logging.captureWarnings(False)
    logging.getLogger("aiokafka").setLevel(logging.NOTSET)  # exectrack-producer quiets it
    logs.configure_logging("json", "info")
    try:
        yield
    finally:
        root = logging.getLogger()
        for handler in [h for h in root.handlers if isinstance(h, logs._Stderr)]:
            root.removeHandler(handler)
        root.setLevel(logging.WARNING)
        logging.captureWarnings(False)
        structlog.reset_defaults()


def lines(err: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in err.splitlines() if line.strip()]


def test_library_lines_and_tracebacks_are_json(
    json_logs: None, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        raise ConnectionResetError(104, "Connection reset by peer")
    except ConnectionResetError:
        logging.getLogger("sqlalchemy.pool.impl.AsyncAdaptedQueuePool").error(
            "Exception closing connection %r", "<conn>", exc_info=True
        )
    logging.getLogger("aiokafka.conn").info("per-connection chatter")  # below WARNING: dropped
    structlog.get_logger("exectrack.consumer.service").info("batch", records=3)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("deprecated thing", DeprecationWarning, stacklevel=1)
    found = lines(capsys.readouterr().err)
    assert [e["event"] for e in found[:2]] == ["Exception closing connection '<conn>'", "batch"]
    pool = found[0]
    assert pool["logger"] == "sqlalchemy.pool.impl.AsyncAdaptedQueuePool"
    assert pool["level"] == "error"
    assert isinstance(pool["exception"], str)
    assert pool["exception"].startswith("Traceback (most recent call last)")
    assert found[1]["records"] == 3
    assert found[2]["logger"] == "py.warnings"
    assert "deprecated thing" in str(found[2]["event"])
    assert len(found) == 3


def test_a_repeating_library_line_is_cut_to_one_a_window(
    json_logs: None, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1000.0]
    monkeypatch.setattr("exectrack.consumer.logs.time.monotonic", lambda: clock[0])
    cluster = logging.getLogger("aiokafka.cluster")
    for _ in range(300):  # aiokafka at every metadata refresh
        cluster.error("Topic %s not found in cluster metadata", "t")
        clock[0] += 0.1
    clock[0] += logs.REPEAT_WINDOW_S
    cluster.error("Topic %s not found in cluster metadata", "t")
    for _ in range(5):  # ours are never cut
        structlog.get_logger("exectrack.consumer.service").warning("same")
    found = lines(capsys.readouterr().err)
    topic = [e for e in found if e.get("logger") == "aiokafka.cluster"]
    assert len(topic) == 2  # 300 lines in 30 s: the first; then one a window later
    assert "repeated" not in topic[0]
    assert topic[1]["repeated"] == 299  # the lines left out in between
    assert [e["event"] for e in found].count("same") == 5


def test_sql_echo_goes_through_the_log(json_logs: None, capsys: pytest.CaptureFixture[str]) -> None:
    """SQLAlchemy's own ``echo=True`` would add a plain-text handler; the setting logs instead."""
    from exectrack.consumer.db.engine import create_engine

    engine = create_engine(DatabaseSettings(echo=True))
    try:
        assert not engine.echo  # no handler of its own
        assert logging.getLogger("sqlalchemy.engine").level == logging.INFO
        logging.getLogger("sqlalchemy.engine.Engine").info("SELECT %s", 1)
        (line,) = lines(capsys.readouterr().err)
        assert line["event"] == "SELECT 1"
        assert line["logger"] == "sqlalchemy.engine.Engine"
    finally:
        logging.getLogger("sqlalchemy.engine").setLevel(logging.NOTSET)
