"""The ``consumer`` extra: is it installed, and the ``exectrack-consumer`` entry point.

``pip install exectrack`` installs the producer only; the consumer's dependencies
come with ``pip install 'exectrack[consumer]'`` (pyproject.toml). This module
imports none of them, so it can say in one line what is missing.
"""

from __future__ import annotations

import importlib.util
import sys

__all__ = ["CONSUMER_MODULES", "INSTALL_HINT", "consumer_main", "missing_consumer_modules"]

CONSUMER_MODULES = (
    "sqlalchemy", "aiomysql", "alembic", "prometheus_client", "aiohttp", "rich", "tenacity",
)  # fmt: skip
"""Import names of the ``consumer`` extra's distributions (pyproject.toml)."""

INSTALL_HINT = "pip install 'exectrack[consumer]'"


def missing_consumer_modules() -> list[str]:
    """The names of ``CONSUMER_MODULES`` that cannot be imported here (``[]``: all present)."""
    return [name for name in CONSUMER_MODULES if importlib.util.find_spec(name) is None]


def consumer_main() -> None:
    """``exectrack-consumer``: the consumer's CLI, or one line and exit 1 without the extra."""
    missing = missing_consumer_modules()
    if missing:
        sys.stderr.write(
            f"exectrack-consumer needs the consumer extra ({', '.join(missing)} missing): "
            f"{INSTALL_HINT}\n"
        )
        raise SystemExit(1)
    from exectrack.consumer.cli import main

    main()
