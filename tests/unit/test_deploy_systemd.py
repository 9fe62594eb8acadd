"""deploy/systemd: the VM units. Their ExecStart commands are checked with the
others (test_deploy_commands.py); ``systemd-analyze verify`` runs when present,
ignoring only what a machine without the install cannot have (the
/opt/exectrack binary)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.deploy import SYSTEMD


def parse(unit: Path) -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> values (systemd repeats keys such as Environment=)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in unit.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
        else:
            key, _, value = line.partition("=")
            current.setdefault(key, []).append(value)
    return sections


UNITS = sorted(SYSTEMD.glob("*.service")) + sorted(SYSTEMD.glob("*.timer"))


def test_units_present() -> None:
    names = {u.name for u in UNITS}
    assert {"exectrack-consumer.service", "exectrack-purge.service", "exectrack-purge.timer"} <= (
        names
    )


def test_services_run_unprivileged_with_secrets_dir() -> None:
    for unit in SYSTEMD.glob("*.service"):
        service = parse(unit)["Service"]
        assert service["User"] == ["exectrack"], unit.name
        environment = " ".join(service["Environment"])
        assert "EXECTRACK_SECRETS_DIR=" in environment
        assert "EXECTRACK_RETENTION_FILE=" in environment
        assert service["NoNewPrivileges"] == ["true"]


def test_consumer_stops_gracefully() -> None:
    service = parse(SYSTEMD / "exectrack-consumer.service")["Service"]
    assert int(service["TimeoutStopSec"][0]) > 30  # EXECTRACK_SHUTDOWN_TIMEOUT_S
    assert service["KillSignal"] == ["SIGTERM"]
    assert service["Restart"] == ["on-failure"]


def test_timers_start_existing_oneshot_services() -> None:
    for timer in SYSTEMD.glob("*.timer"):
        service = SYSTEMD / timer.name.replace(".timer", ".service")
        assert service.is_file(), timer.name
        assert parse(service)["Service"]["Type"] == ["oneshot"]
        assert parse(timer)["Timer"]["OnCalendar"]


ANALYZE = shutil.which("systemd-analyze")


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not installed")
def test_systemd_analyze_verify() -> None:
    assert ANALYZE is not None
    result = subprocess.run(
        [ANALYZE, "verify", "--man=no", *map(str, UNITS)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    problems = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if line.strip() and "/opt/exectrack/bin/exectrack-consumer is not executable" not in line
    ]
    assert not problems, "\n".join(problems)
