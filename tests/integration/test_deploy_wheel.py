"""The container image's install path, without Docker: the built wheel and
deploy/requirements.lock in a fresh venv (as deploy/Dockerfile does), then
``exectrack-consumer migrate`` from outside the source tree must find the alembic
scripts the wheel carries (consumer/_migrations) and create the schema.

About 20 s with pip's cache warm (as after `make venv`: the same pinned versions),
about a minute from an empty cache.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import inspect

from exectrack.consumer.db.engine import create_engine
from exectrack.consumer.settings import DatabaseSettings
from tests.support.deploy import DEPLOY, ROOT


def run(*argv: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"{argv}:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def install_image_venv(work: Path) -> Path:
    """What the Dockerfile's build stage does: lock, then the wheel, both --no-deps."""
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
        "-w", work / "wheels", ROOT, cwd=work)  # fmt: skip
    (wheel,) = (work / "wheels").glob("exectrack-*.whl")
    venv = work / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=work)
    pip = venv / "bin" / "pip"
    run(pip, "install", "-q", "--no-deps", "--require-hashes", "-r", DEPLOY / "requirements.lock",
        cwd=work)  # fmt: skip
    run(pip, "install", "-q", "--no-deps", wheel, cwd=work)
    run(pip, "check", cwd=work)
    return venv


async def test_wheel_installs_and_migrates(tmp_path: Path, scratch_database: str) -> None:
    venv = await asyncio.to_thread(install_image_venv, tmp_path)
    python = venv / "bin" / "python"
    located = await asyncio.to_thread(
        run, python, "-c",
        "from exectrack.consumer.db.migrate import script_location; print(script_location())",
        cwd=tmp_path,
    )  # fmt: skip
    scripts = Path(located.strip())
    assert scripts.name == "_migrations"
    assert venv in scripts.parents  # the installed copy, not the checkout's migrations/
    assert (scripts / "env.py").is_file()

    env = {
        "PATH": f"{venv / 'bin'}:{os.environ['PATH']}",
        "EXECTRACK_DATABASE__URL": scratch_database,
        "EXECTRACK_LOG_FORMAT": "json",
    }
    out = await asyncio.to_thread(
        run, venv / "bin" / "exectrack-consumer", "migrate", cwd=tmp_path, env=env
    )
    assert '"event": "migrated"' in out

    engine = create_engine(DatabaseSettings(), url=scratch_database)
    try:
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda sync: set(inspect(sync).get_table_names()))
    finally:
        await engine.dispose()
    assert {"report_executions", "reports", "users", "alembic_version"} <= tables
