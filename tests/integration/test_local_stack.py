"""deploy/local/stack.sh on its own ports and state folder: up, crash, up restarts, down.

Runs a second, throw-away Kafka broker and MariaDB beside the suite's, so it
never disturbs the services other tests use.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.stack import STACK_SCRIPT

pytestmark = pytest.mark.skipif(
    not (shutil.which("java") and shutil.which("mvn") and shutil.which("mariadbd")),
    reason="needs Java, Maven and MariaDB installed (deploy/local installs MariaDB on `up`)",
)


@pytest.fixture
def stack_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    env = {
        **os.environ,
        "EXECTRACK_LOCAL_DIR": str(tmp_path / "state"),
        "EXECTRACK_LOCAL_KAFKA_PORT": "19092",
        "EXECTRACK_LOCAL_KAFKA_CONTROLLER_PORT": "19093",
        "EXECTRACK_LOCAL_DB_PORT": "13306",
    }
    yield env
    subprocess.run(["bash", str(STACK_SCRIPT), "down"], env=env, check=False)


def stack(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(STACK_SCRIPT), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def pid(env: dict[str, str], name: str) -> int:
    state = Path(env["EXECTRACK_LOCAL_DIR"])
    found = [p for p in state.rglob("*.pid") if name in str(p)]
    assert found, f"no pid file for {name} under {state}"
    return int(found[0].read_text().strip())


def test_up_is_idempotent_and_restarts_what_crashed(stack_env: dict[str, str]) -> None:
    assert stack(stack_env, "status").returncode == 3  # nothing runs yet
    up = stack(stack_env, "up")
    assert up.returncode == 0, up.stdout + up.stderr
    assert stack(stack_env, "status").returncode == 0
    again = stack(stack_env, "up")  # a second up is a no-op
    assert again.returncode == 0, again.stdout + again.stderr
    kafka, mariadb = pid(stack_env, "kafka"), pid(stack_env, "mariadb")
    os.kill(kafka, signal.SIGKILL)
    os.kill(mariadb, signal.SIGKILL)
    status = stack(stack_env, "status")
    assert status.returncode == 3
    assert "stopped" in status.stdout
    restarted = stack(stack_env, "up")
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    assert (pid(stack_env, "kafka"), pid(stack_env, "mariadb")) != (kafka, mariadb)
    env_lines = stack(stack_env, "env").stdout
    assert "127.0.0.1:19092" in env_lines
    assert "127.0.0.1:13306" in env_lines
    assert stack(stack_env, "down").returncode == 0
    assert stack(stack_env, "status").returncode == 3
    assert stack(stack_env, "down").returncode == 0  # down twice is fine
