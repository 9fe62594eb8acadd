"""The environment lock: requirements.lock (runtime + dev) and its runtime subset
deploy/requirements.lock (the image's), checked against pyproject.toml.

These tests never ask a registry what it serves today: a fresh clone installs
exactly the lock (`make venv`: pip --require-hashes --no-deps), so a newer upload
cannot change a run. They fail when pyproject.toml and the lock disagree (someone
edited one without `make lock`), when the image's lock drifts from the
environment's, or when this venv holds something the lock does not say.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support.deploy import ROOT
from tests.support.lock import (
    ALL,
    CONSUMER,
    ENV_LOCK,
    EXTRAS,
    IMAGE_LOCK,
    PRODUCER,
    closure,
    read_lock,
    write_subset,
)


def test_every_pin_has_hashes_and_no_index_address() -> None:
    for path in (ENV_LOCK, IMAGE_LOCK):
        pins = read_lock(path)
        assert len(pins) > 20
        assert all(pin.hashes for pin in pins.values()), path
        for name, pin in pins.items():
            assert all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in pin.hashes), (name, pin)
        assert "://" not in path.read_text(), f"{path.name} names an index: keep locks host-free"


def test_the_lock_satisfies_every_requirement_of_pyproject() -> None:
    lock = read_lock(ENV_LOCK)
    for req in ALL:
        name = canonicalize_name(req.name)
        assert name in lock, f"{req} is not in requirements.lock: run `make lock`"
        assert req.specifier.contains(lock[name].version, prereleases=True), (
            f"requirements.lock pins {name}=={lock[name].version}, pyproject.toml says {req}:"
            " run `make lock`"
        )


def test_this_environment_is_the_lock() -> None:
    """`make venv` installed requirements.lock and nothing else (exectrack aside)."""
    lock = {n: p for n, p in read_lock(ENV_LOCK).items() if p.applies()}
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}
    installed.pop(canonicalize_name("exectrack"), None)
    for tool in ("pip", "setuptools", "wheel"):  # the venv's own installer, not a dependency
        installed.pop(canonicalize_name(tool), None)
    differ = {
        n: (p.version, installed.get(n)) for n, p in lock.items() if installed.get(n) != p.version
    }
    assert not differ, f"lock vs installed (run `make venv`): {differ}"
    assert installed.keys() <= lock.keys(), (
        f"installed but not locked: {installed.keys() - lock.keys()}"
    )


def test_the_lock_holds_exactly_what_pyproject_needs() -> None:
    lock = {n for n, p in read_lock(ENV_LOCK).items() if p.applies()}
    needed = closure(ALL)
    assert lock == needed, f"extra: {lock - needed}, missing: {needed - lock}: run `make lock`"


def test_dev_installs_the_consumer_and_simulate_extras() -> None:
    (own,) = [Requirement(r) for r in EXTRAS["dev"] if Requirement(r).name == "exectrack"]
    assert own.extras == {"consumer", "simulate"}


def test_the_image_lock_is_the_runtime_subset_of_the_lock() -> None:
    env, image = read_lock(ENV_LOCK), read_lock(IMAGE_LOCK)
    for name, pin in image.items():
        assert name in env, f"deploy/requirements.lock pins {name}, requirements.lock does not"
        assert (pin.version, pin.hashes) == (env[name].version, env[name].hashes), name
    on_this_platform = {n for n, p in image.items() if p.applies()}
    assert on_this_platform == closure(PRODUCER + CONSUMER)
    assert {"aiokafka", "sqlalchemy", "greenlet", "cramjam"} <= on_this_platform
    assert not {"pytest", "ruff", "mypy", "hatchling"} & image.keys()


def test_the_locks_were_made_by_make_lock() -> None:
    """The command in each header is the Makefile's, so `make lock` reproduces them."""
    makefile = (ROOT / "Makefile").read_text()
    compile_flags = re.search(r"^COMPILE := \$\(UV\) (.+)$", makefile, re.M)
    assert compile_flags is not None
    flags = compile_flags[1].replace(" --quiet", "")
    assert f"uv {flags} --extra dev -o requirements.lock" in ENV_LOCK.read_text()
    assert (
        f"uv {flags} --extra consumer --constraint requirements.lock -o deploy/requirements.lock"
        in IMAGE_LOCK.read_text()
    )


def test_the_producer_lock_is_a_subset_of_the_lock(tmp_path: Path) -> None:
    """What tests/integration/test_install.py installs for `pip install exectrack`:
    the lock's own pins (versions, markers, hashes) of the producer's closure."""
    env = read_lock(ENV_LOCK)
    names = closure(PRODUCER)
    written = read_lock(write_subset(ENV_LOCK, names, tmp_path / "producer.lock"))
    assert written == {name: env[name] for name in names}
    assert {"aiokafka", "cramjam", "pydantic", "orjson", "click", "structlog"} <= written.keys()
    assert not {"sqlalchemy", "aiomysql", "alembic", "aiohttp", "rich"} & written.keys()
