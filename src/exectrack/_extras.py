"""The ``consumer`` extra: is it installed, and the ``exectrack-consumer`` entry point.

``pip install exectrack`` installs the producer only; the consumer's dependencies
come with ``pip install 'exectrack[consumer]'`` (pyproject.toml). This module
imports none of them, so it can say in one line what is missing.

The check reads the installed distribution's own metadata (``Requires-Dist`` with
``extra == "consumer"``) and follows the extras those requirements ask for in turn
(``SQLAlchemy[asyncio]`` needs greenlet), version ranges included: the same rule
pip applies when it installs the extra, so a hand-picked subset is caught too.
"""

from __future__ import annotations

import sys
from importlib import metadata

from packaging.requirements import Requirement

__all__ = [
    "CONSUMER_MODULES",
    "INSTALL_HINT",
    "consumer_main",
    "missing_consumer_requirements",
]

CONSUMER_MODULES = (
    "sqlalchemy",
    "aiomysql",
    "alembic",
    "prometheus_client",
    "aiohttp",
    "rich",
    "tenacity",
    "msgspec",
    "fastapi",
    "uvicorn",
    "jinja2",
)
"""Import names of the ``consumer`` extra's direct requirements (what the producer
must never import: tests/unit/test_layering.py)."""

INSTALL_HINT = "pip install 'exectrack[consumer]'"
DISTRIBUTION = "exectrack"
EXTRA = "consumer"


def _only_with(req: Requirement, extra: str) -> bool:
    """Whether ``req`` applies with ``extra`` and not without it (this platform's markers)."""
    if req.marker is None:
        return False
    return req.marker.evaluate({"extra": extra}) and not req.marker.evaluate({"extra": ""})


def _unsatisfied(req: Requirement, seen: set[str]) -> list[str]:
    """``req`` and what its extras need, as "name" / "name>=x (y installed)" when not met."""
    key = f"{req.name.lower()}[{','.join(sorted(req.extras))}]"
    if key in seen:
        return []
    seen.add(key)
    try:
        version = metadata.version(req.name)
    except metadata.PackageNotFoundError:
        return [req.name]
    if req.specifier and not req.specifier.contains(version, prereleases=True):
        return [f"{req.name}{req.specifier} ({version} installed)"]
    missing: list[str] = []
    for extra in sorted(req.extras):
        for text in metadata.requires(req.name) or []:
            nested = Requirement(text)
            if _only_with(nested, extra):
                missing += _unsatisfied(nested, seen)
    return missing


def missing_consumer_requirements() -> list[str]:
    """What ``pip install 'exectrack[consumer]'`` would add or change here (``[]``: nothing).

    Each item names a distribution, with the required range when an installed version is
    outside it. Reads the metadata of the installed ``exectrack`` distribution; a source
    tree on ``sys.path`` without any install cannot be checked and counts as complete.
    """
    try:
        requires = metadata.requires(DISTRIBUTION) or []
    except metadata.PackageNotFoundError:
        return []
    seen: set[str] = set()
    missing: list[str] = []
    for text in requires:
        req = Requirement(text)
        if _only_with(req, EXTRA):
            missing += _unsatisfied(req, seen)
    return missing


def consumer_main() -> None:
    """``exectrack-consumer``: the consumer's CLI, or one line and exit 1 without the extra.

    ``--version`` answers without the extra (it needs only the metadata).
    """
    if sys.argv[1:] == ["--version"]:
        print(f"exectrack-consumer, version {metadata.version(DISTRIBUTION)}")
        return
    missing = missing_consumer_requirements()
    if missing:
        sys.stderr.write(
            f"exectrack-consumer needs the consumer extra ({', '.join(missing)} missing): "
            f"{INSTALL_HINT}\n"
        )
        raise SystemExit(1)
    from exectrack.consumer.cli import main

    main()
