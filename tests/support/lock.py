"""Reading the locks (requirements.lock, deploy/requirements.lock) against pyproject.toml.

A lock line is ``name==version [; marker] \\`` followed by ``--hash=sha256:...`` lines,
as ``uv pip compile --generate-hashes`` writes them (Makefile ``lock``). The closure
of a set of requirements is read from this environment's installed metadata, which
is the lock's (tests/unit/test_lock.py checks that), so no registry is asked.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name

from tests.support.deploy import DEPLOY, ROOT

ENV_LOCK = ROOT / "requirements.lock"
IMAGE_LOCK = DEPLOY / "requirements.lock"
PIN = re.compile(
    r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;\\]+)"
    r"(?: ; (?P<marker>[^\\]+?))?\s*\\?$"
)


@dataclass(frozen=True)
class Pin:
    version: str
    marker: str | None
    hashes: frozenset[str]

    def applies(self) -> bool:
        if self.marker is None:
            return True
        return Requirement(f"x ; {self.marker}").marker.evaluate()  # type: ignore[union-attr]


def read_lock(path: Path) -> dict[NormalizedName, Pin]:
    pins: dict[NormalizedName, Pin] = {}
    name: NormalizedName | None = None
    for line in path.read_text().splitlines():
        if match := PIN.match(line):
            name = canonicalize_name(match["name"])
            assert name not in pins, f"{path.name}: {name} pinned twice"
            pins[name] = Pin(match["version"], match["marker"], frozenset())
        elif (stripped := line.strip()).startswith("--hash=") and name is not None:
            digest = stripped.removesuffix("\\").strip().split("=", 1)[1]  # "sha256:<hex>"
            pin = pins[name]
            pins[name] = Pin(pin.version, pin.marker, pin.hashes | {digest})
        elif line and not line.startswith((" ", "#")):
            raise AssertionError(f"{path.name}: unexpected line {line!r}")
    return pins


PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
EXTRAS = PROJECT["optional-dependencies"]
PRODUCER = [Requirement(r) for r in PROJECT["dependencies"]]  # `pip install exectrack`
CONSUMER = [Requirement(r) for r in EXTRAS["consumer"]]  # `exectrack[consumer]`, the image
SIMULATE = [Requirement(r) for r in EXTRAS["simulate"]]
# dev names exectrack's own extras (exectrack[consumer,simulate]): those are listed above
DEV = [r for r in map(Requirement, EXTRAS["dev"]) if r.name != "exectrack"]
ALL = PRODUCER + CONSUMER + SIMULATE + DEV


def closure(roots: list[Requirement]) -> set[NormalizedName]:
    """Names of the distributions the roots need, transitively, on this platform,
    read from the installed metadata (which is the lock's: tests/unit/test_lock.py)."""
    found: set[NormalizedName] = set()
    todo = [(r, frozenset[str]()) for r in roots]
    while todo:
        req, parent_extras = todo.pop()
        if req.marker and not any(req.marker.evaluate({"extra": e}) for e in parent_extras | {""}):
            continue
        name = canonicalize_name(req.name)
        if name == "exectrack":  # its extras' requirements are among the roots
            continue
        key_new = name not in found
        found.add(name)
        if key_new or req.extras:
            todo.extend(
                (Requirement(text), frozenset(req.extras))
                for text in metadata.requires(req.name) or []
            )
    return found


def write_subset(lock: Path, names: Iterable[str], dest: Path) -> Path:
    """Write the pins of ``names`` from ``lock`` (same versions, markers and hashes)
    to ``dest``, a requirements file for ``pip install --require-hashes``; returns
    ``dest``. Fails if the lock has no pin for one of them."""
    pins = read_lock(lock)
    wanted = sorted({canonicalize_name(n) for n in names})
    missing = [n for n in wanted if n not in pins]
    assert not missing, f"{lock.name} pins none of {missing}"
    lines = [f"# the pins of {len(wanted)} distributions, from {lock.name}"]
    for name in wanted:
        pin = pins[name]
        marker = f" ; {pin.marker}" if pin.marker else ""
        lines.append(f"{name}=={pin.version}{marker} \\")
        hashes = [f"    --hash={h}" for h in sorted(pin.hashes)]
        lines.append(" \\\n".join(hashes))
    dest.write_text("\n".join(lines) + "\n")
    return dest
