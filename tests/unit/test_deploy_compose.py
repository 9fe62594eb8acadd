"""deploy/compose.yaml against the Compose specification, and what the issue asks of it.

The schema is the one check-jsonschema (a dev dependency) ships as
``check_jsonschema/builtin_schemas/vendor/compose-spec.json`` (Apache-2.0, from the
compose-spec project); nothing is vendored here. Compose is validated, never run,
in CI: there is no Docker engine.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import jsonschema
import pytest

from tests.support.deploy import COMPOSE, load_yaml


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = load_yaml(COMPOSE)  # PyYAML resolves the << merge keys
    return loaded


def test_matches_the_compose_specification(compose: dict[str, Any]) -> None:
    schema_file = resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema = json.loads(schema_file.read_text())
    validator = jsonschema.validators.validator_for(schema)
    errors = sorted(validator(schema).iter_errors(compose), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["kafka"]["image"] == "apache/kafka:4.1.1"
    assert services["mysql"]["image"] == "mysql:8.0"
    # durability kept; MySQL's default auth plugin works (aiomysql[rsa], docs/operations.md)
    assert "--innodb-flush-log-at-trx-commit=1" in services["mysql"]["command"]
    for name in ("kafka", "mysql"):
        assert "healthcheck" in services[name]

    migrate = services["migrate"]
    assert migrate["command"] == ["migrate"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"]["mysql"]["condition"] == "service_healthy"

    consumer = services["consumer"]
    assert consumer["deploy"]["replicas"] == 2
    assert consumer["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert "ports" not in consumer  # two replicas cannot share a host port
    env = consumer["environment"]
    assert env["EXECTRACK_HEALTH_HOST"] == "0.0.0.0"  # noqa: S104 (containers must)
    assert env["EXECTRACK_KAFKA__BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert "@mysql:3306/" in env["EXECTRACK_DATABASE__URL"]

    simulate = services["simulate"]
    assert simulate["profiles"] == ["simulate"]
    assert simulate["entrypoint"] == ["exectrack-producer"]
    assert simulate["command"][0] == "simulate"


def test_grace_period_outlasts_the_shutdown_timeout(compose: dict[str, Any]) -> None:
    grace = compose["services"]["consumer"]["stop_grace_period"]
    assert grace.endswith("s")
    assert int(grace[:-1]) > 30  # EXECTRACK_SHUTDOWN_TIMEOUT_S default
