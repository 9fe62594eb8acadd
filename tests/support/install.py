"""Installing the built wheel into fresh virtual environments, as users and the image do.

The versions come from the repository's locks, never from what a registry serves
today: ``pip install --no-deps --require-hashes -r <lock>`` first, then the wheel
with ``--no-deps`` (deploy/Dockerfile's build stage), then ``pip check``. The
producer's lock is the subset of requirements.lock that ``pip install exectrack``
needs (tests/support/lock.py ``closure`` of pyproject's dependencies).

Every command runs with ``clean_env``: no ``PYTHONPATH`` (which would put the
checkout on the venv's ``sys.path`` and test it instead of the wheel), no
``VIRTUAL_ENV``, no ``EXECTRACK_*`` settings of the calling shell.

A venv takes about 15 s (the producer's 14 distributions) to 25 s (the image's
38) on a loaded 2-core machine, most of it pip's own work (the installs are
``--no-compile``); a cold download cache adds the downloads.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import canonicalize_name

from tests.support.deploy import ROOT

CLIS = ("exectrack-consumer", "exectrack-producer")


def clean_env(venv: Path | None = None, **extra: str) -> dict[str, str]:
    """This process's environment without what would leak the checkout or the dev venv
    into a child, with ``venv``'s bin/ first on ``PATH``, plus ``extra``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "MYPYPATH"}
        and not key.startswith("EXECTRACK_")
    }
    if venv is not None:
        env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return {**env, **extra}


def run(
    *argv: str | Path, cwd: Path, env: dict[str, str] | None = None, ok: bool = True,
    timeout_s: float = 600,
) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """Run ``argv`` (environment ``env``, default ``clean_env()``); with ``ok``, fail the
    test unless it exits 0. Returns the finished process (text stdout and stderr)."""
    done = subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=env if env is not None else clean_env(),
        capture_output=True, text=True, timeout=timeout_s, check=False,
    )  # fmt: skip
    if ok:
        assert done.returncode == 0, (
            f"{argv} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
        )
    return done


def build_wheel(dest: Path) -> Path:
    """``pip wheel`` of the checkout (no build isolation: hatchling is the lock's) into
    ``dest``; returns the wheel's path."""
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
        "-w", dest, ROOT, cwd=dest.parent)  # fmt: skip
    (wheel,) = dest.glob("exectrack-*.whl")
    return wheel


@dataclass(frozen=True)
class Venv:
    """A virtual environment at ``path`` holding the wheel and a lock's pins."""

    path: Path

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    def bin(self, name: str) -> Path:
        return self.path / "bin" / name

    def env(self, extra: Mapping[str, str] = {}) -> dict[str, str]:
        """``clean_env`` with this venv first on ``PATH``, ``extra`` added, and bytecode
        written: the venv is installed ``--no-compile``, so the modules a command
        imports are compiled once, by the first command that imports them."""
        env = clean_env(self.path, **extra)
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        return env

    def run(
        self, *argv: str | Path, cwd: Path, ok: bool = True, env: Mapping[str, str] = {}
    ) -> subprocess.CompletedProcess[str]:
        """``run`` in ``self.env(env)``."""
        return run(*argv, cwd=cwd, env=self.env(env), ok=ok)

    def distributions(self) -> dict[str, str]:
        """{canonical name: version} of what ``pip list`` shows, pip and setuptools aside."""
        listed = json.loads(
            self.run(self.python, "-m", "pip", "list", "--format=json", cwd=self.path).stdout
        )
        found = {canonicalize_name(d["name"]): d["version"] for d in listed}
        return {n: v for n, v in found.items() if n not in {"pip", "setuptools", "wheel"}}

    def installed_files(self) -> list[str]:
        """The ``Files:`` section of ``pip show -f exectrack`` (paths relative to
        site-packages, as pip prints them)."""
        shown = self.run(self.python, "-m", "pip", "show", "-f", "exectrack", cwd=self.path).stdout
        _, found, files = shown.partition("\nFiles:\n")
        assert found, shown
        return [line.strip() for line in files.splitlines() if line.startswith("  ")]

    def site_packages(self) -> Path:
        (found,) = (self.path / "lib").glob("python3*/site-packages")
        return found


def make_venv(path: Path, lock: Path, wheel: Path) -> Venv:
    """A fresh venv at ``path``: ``lock``'s pins (hashes required, no dependency
    resolution), then ``wheel`` without dependencies, then ``pip check``."""
    run(sys.executable, "-m", "venv", path, cwd=path.parent)
    venv = Venv(path)
    # --no-compile: compiling every module of every distribution costs a third of
    # the install; the commands the tests run compile what they import (Venv.env)
    pip = (venv.python, "-m", "pip", "install", "-q", "--no-deps", "--no-compile")
    venv.run(*pip, "--require-hashes", "-r", lock, cwd=path.parent)
    venv.run(*pip, wheel, cwd=path.parent)
    venv.run(venv.python, "-m", "pip", "check", cwd=path.parent)
    return venv


DIST_INFO = re.compile(r"^exectrack-[^/]+\.dist-info/")


def outside_the_package(venv: Venv, files: list[str]) -> list[str]:
    """The installed files of ``pip show -f exectrack`` that are neither under
    ``exectrack/``, nor its dist-info, nor the two console scripts in bin/."""
    site = venv.site_packages()
    scripts = {venv.bin(name) for name in CLIS}
    return [
        name
        for name in files
        if not name.startswith("exectrack/")
        and not DIST_INFO.match(name)
        and Path(os.path.normpath(site / name)) not in scripts
    ]
