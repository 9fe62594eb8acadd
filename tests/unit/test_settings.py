"""Settings: environment names, secrets masked, and the docs list every setting."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import BaseModel

from exectrack.consumer.settings import Settings
from exectrack.producer.events import ExecutionStatus, ReportType
from exectrack.producer.settings import ProducerSettings

DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def env_names(model: type[BaseModel], prefix: str = "EXECTRACK_") -> list[str]:
    names = []
    for name, field in model.model_fields.items():
        nested = field.annotation
        if (
            name in ("kafka", "database", "read")
            and isinstance(nested, type)
            and issubclass(nested, BaseModel)
        ):
            names += env_names(nested, f"{prefix}{name.upper()}__")
        else:
            names.append(prefix + name.upper())
    return names


def test_every_setting_is_documented() -> None:
    text = DOCS.read_text()
    names = env_names(Settings) + env_names(ProducerSettings)
    missing = [n for n in names if f"`{n}" not in text]
    assert not missing, f"document these in docs/configuration.md: {missing}"


def test_environment_and_nested_retention(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXECTRACK_KAFKA__TOPIC", "t1")
    monkeypatch.setenv("EXECTRACK_BATCH_MAX_RECORDS", "42")
    monkeypatch.setenv("EXECTRACK_RETENTION__DEFAULT__COMPLETED", "P30D")
    monkeypatch.setenv(
        "EXECTRACK_RETENTION__REPORT_TYPES", '{"vpc_inventory": {"failed": "P365D"}}'
    )
    settings = Settings()
    assert (settings.kafka.topic, settings.batch_max_records) == ("t1", 42)
    policy = settings.retention
    assert policy.period(ExecutionStatus.COMPLETED) == timedelta(days=30)
    assert policy.period(ExecutionStatus.FAILED, report_type=ReportType.VPC_INVENTORY) == timedelta(
        days=365
    )
    assert policy.period(ExecutionStatus.FAILED) == timedelta(days=180)


def test_secrets_never_print(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXECTRACK_DATABASE__URL", "mysql+aiomysql://u:hunter2@db:3306/x")
    monkeypatch.setenv("EXECTRACK_KAFKA__SASL_PASSWORD", "hunter3")
    settings = Settings()
    shown = repr(settings) + str(settings.model_dump()) + settings.database.display_url
    assert "hunter2" not in shown
    assert "hunter3" not in shown
    assert settings.database.display_url == "mysql+aiomysql://u:***@db:3306/x"


def test_secret_files(tmp_path: Path) -> None:
    (tmp_path / "database__url").write_text("mysql+aiomysql://u:fromfile@db/x")
    settings = Settings(_secrets_dir=tmp_path)
    assert settings.database.url.get_secret_value().endswith("fromfile@db/x")
