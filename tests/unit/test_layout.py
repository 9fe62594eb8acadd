"""The repository's layout and what an install exposes (docs/development.md#one-import-package).

Found by a user (the install breaker, docs/reliability/found-by-users.md): an editable
install that put the whole checkout on sys.path (``tests``, ``bench`` and a second copy
of the modules as ``producer``/``consumer`` became importable), code that ran from
symlinked paths (breakpoints on the real files never fired), an sdist that could not
be installed editable, a consumer-extra check that missed a nested extra (greenlet).
"""

from __future__ import annotations

import importlib
import importlib.util
import site
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import exectrack._extras as extras
from tests.support.deploy import ROOT

SRC = ROOT / "src" / "exectrack"


def test_the_design_cards_folders_are_the_packages() -> None:
    for name in ("consumer", "producer"):
        link = ROOT / name
        assert link.is_symlink(), f"{name}/ should be a symlink into src/exectrack"
        assert link.resolve() == SRC / name


@pytest.mark.parametrize(
    "module", ["exectrack.consumer.ingest.fold", "exectrack.producer.events", "exectrack._extras"]
)
def test_modules_run_from_their_real_files(module: str) -> None:
    path = Path(importlib.import_module(module).__file__ or "")
    assert path.resolve() == path, f"{module} runs from a symlinked path {path}"
    assert SRC in path.parents


def _pth_dirs() -> Iterator[Path]:
    for directory in site.getsitepackages():
        for pth in Path(directory).glob("*exectrack*.pth"):
            for line in pth.read_text().splitlines():
                if line and not line.startswith(("#", "import ")):
                    yield Path(line)


def test_the_editable_install_exposes_only_exectrack() -> None:
    dirs = list(_pth_dirs())
    assert dirs, "no exectrack .pth in site-packages: is this the editable install of `make venv`?"
    exposed = {
        entry.name.removesuffix(".py")
        for directory in dirs
        for entry in directory.iterdir()
        if entry.suffix == ".py" or (entry / "__init__.py").is_file()
    }
    assert exposed == {"exectrack"}, f"the .pth exposes {sorted(exposed)}"


def test_old_top_level_names_are_not_importable_from_elsewhere(tmp_path: Path) -> None:
    probe = (
        "import importlib.util as u; "
        "print([n for n in ('producer', 'consumer', 'tests', 'bench') if u.find_spec(n)])"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_the_sdist_holds_the_real_files_only(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-t", "sdist", "-d", str(tmp_path)],
        cwd=ROOT, capture_output=True, check=True,
    )  # fmt: skip
    (sdist,) = tmp_path.glob("exectrack-*.tar.gz")
    with tarfile.open(sdist) as archive:
        members = archive.getmembers()
    names = {m.name.split("/", 1)[1] for m in members if "/" in m.name}
    assert "src/exectrack/consumer/ingest/fold.py" in names
    assert "src/exectrack/py.typed" in names
    assert "migrations/env.py" in names
    assert not any(m.issym() or m.islnk() for m in members)
    assert not {n for n in names if n.startswith(("consumer/", "producer/", "tests/"))}


class FakeMetadata:
    """importlib.metadata's two calls the check makes, over a dict of distributions."""

    def __init__(self, dists: dict[str, tuple[str, list[str]]]) -> None:
        self.dists = dists
        self.PackageNotFoundError = importlib.metadata.PackageNotFoundError

    def version(self, name: str) -> str:
        if name.lower() not in self.dists:
            raise self.PackageNotFoundError(name)
        return self.dists[name.lower()][0]

    def requires(self, name: str) -> list[str]:
        self.version(name)  # PackageNotFoundError as the real one
        return self.dists[name.lower()][1]


EXECTRACK_REQUIRES = [
    "pydantic>=2.11",
    'sqlalchemy[asyncio]>=2.0.36; extra == "consumer"',
    'alembic>=1.14; extra == "consumer"',
    'rich>=13.9; extra == "simulate"',
]
SQLALCHEMY_REQUIRES = ['greenlet>=1; extra == "asyncio"', "typing-extensions>=4"]


def test_the_extra_check_follows_nested_extras_and_ranges(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    complete = {
        "exectrack": ("0.1.0", EXECTRACK_REQUIRES),
        "sqlalchemy": ("2.0.40", SQLALCHEMY_REQUIRES),
        "greenlet": ("3.1.0", []),
        "alembic": ("1.16.0", []),
        "pydantic": ("2.11.0", []),
    }
    monkeypatch.setattr(extras, "metadata", FakeMetadata(complete))
    assert extras.missing_consumer_requirements() == []

    without_greenlet = {k: v for k, v in complete.items() if k != "greenlet"}
    monkeypatch.setattr(extras, "metadata", FakeMetadata(without_greenlet))
    assert extras.missing_consumer_requirements() == ["greenlet"]

    old_alembic = {**complete, "alembic": ("1.13.0", [])}
    monkeypatch.setattr(extras, "metadata", FakeMetadata(old_alembic))
    assert extras.missing_consumer_requirements() == ["alembic>=1.14 (1.13.0 installed)"]

    producer_only = {"exectrack": complete["exectrack"], "pydantic": complete["pydantic"]}
    monkeypatch.setattr(extras, "metadata", FakeMetadata(producer_only))
    assert extras.missing_consumer_requirements() == ["sqlalchemy", "alembic"]


def test_this_environment_has_the_consumer_extra() -> None:
    assert extras.missing_consumer_requirements() == []
    assert importlib.util.find_spec("exectrack.consumer") is not None


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["-m", "exectrack.consumer", "--version"], "exectrack-consumer, version "),
        (["-m", "exectrack.consumer.cli", "--help"], "Usage: python -m exectrack.consumer.cli"),
        (["-m", "exectrack.producer", "--version"], "exectrack-producer, version "),
        (["-m", "exectrack.producer.cli", "--help"], "Usage: python -m exectrack.producer.cli"),
    ],
)
def test_python_m_runs_the_commands(argv: list[str], expected: str, tmp_path: Path) -> None:
    """Found by a user: `python -m exectrack.consumer.cli consume` did nothing, exit 0."""
    done = subprocess.run(
        [sys.executable, *argv], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(expected)


def test_version_answers_without_the_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(extras, "missing_consumer_requirements", lambda: ["sqlalchemy"])
    monkeypatch.setattr(sys, "argv", ["exectrack-consumer", "--version"])
    extras.consumer_main()
    assert capsys.readouterr().out.startswith("exectrack-consumer, version ")
    monkeypatch.setattr(sys, "argv", ["exectrack-consumer", "consume"])
    with pytest.raises(SystemExit) as exited:
        extras.consumer_main()
    assert exited.value.code == 1
    assert capsys.readouterr().err == (
        "exectrack-consumer needs the consumer extra (sqlalchemy missing): "
        "pip install 'exectrack[consumer]'\n"
    )
