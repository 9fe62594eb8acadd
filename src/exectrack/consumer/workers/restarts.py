"""When the supervisor starts a worker again, and what a worker's exit means (pure).

The wait before a restart is the consumer's one backoff (exectrack.consumer.retry.
``Backoff``: doubling from ``initial_s``, capped at ``max_s``, +-20% jitter so
workers that failed together do not come back in step) over the worker's
failures in a row. A run that lasted ``stable_s`` or more ends the row: its exit
is failure number 1 again, waited ``initial_s``. Kubernetes treats a crashing
container alike (10 s doubling to 5 min, reset after 10 min of running); the
defaults (``EXECTRACK_WORKER_RESTART_*``, docs/configuration.md) are shorter
because a worker's restart costs one rebalance of the group, not a pod.

Exit statuses (``asyncio.subprocess.Process.returncode``):

- ``2`` (``USAGE_EXIT``): invalid settings or a usage error (exectrack.consumer.cli):
  the same environment fails the same way on every start, so it cannot heal;
- anything else (1: Kafka or the database unusable, a crash; a signal: killed)
  may heal, and is restarted with backoff;
- during a stop, 0, or the forwarded signal's default action (a worker still
  starting, before its handler was installed: no batch in flight), is clean.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import Any

from exectrack.consumer.retry import Backoff

__all__ = ["USAGE_EXIT", "RestartPolicy", "Restarts", "clean_stop", "describe_exit"]

USAGE_EXIT = 2
"""The exit status of ``invalid_settings`` and click's usage errors (exectrack.consumer.cli)."""


@dataclass(frozen=True)
class RestartPolicy:
    """How long to wait before restarting a worker that exited unexpectedly.

    Attributes:
        backoff: the waits, in seconds, by failure in a row (1: the first).
        stable_s: a run at least this long (seconds) resets the failures in a row.
    """

    backoff: Backoff
    stable_s: float

    @classmethod
    def create(cls, initial_s: float, max_s: float, stable_s: float) -> RestartPolicy:
        """The policy of ``EXECTRACK_WORKER_RESTART_INITIAL_S``/``_MAX_S``/``_STABLE_S``."""
        return cls(Backoff(initial_s=initial_s, max_s=max_s), stable_s)


@dataclass
class Restarts:
    """One worker's failures in a row under ``policy``.

    Attributes:
        policy: the waits and the stable period.
        failures: unexpected exits since the last run that lasted ``stable_s``.
    """

    policy: RestartPolicy
    failures: int = 0

    def failed(self, ran_s: float) -> float:
        """Count an unexpected exit after ``ran_s`` seconds of running; the seconds to
        wait before the next start (with jitter)."""
        if ran_s >= self.policy.stable_s:
            self.failures = 0
        self.failures += 1
        return self.policy.backoff.wait(self.failures)


def describe_exit(returncode: int) -> dict[str, Any]:
    """A process's exit as log fields: ``{"exit_code": 1}`` or ``{"signal": "SIGKILL"}``.

    ``returncode`` is asyncio's/subprocess's: negative when a signal ended the process.
    """
    if returncode >= 0:
        return {"exit_code": returncode}
    try:
        return {"signal": signal.Signals(-returncode).name}
    except ValueError:
        return {"signal": str(-returncode)}


def clean_stop(returncode: int | None, forwarded: signal.Signals) -> bool:
    """Whether a worker that was asked to stop with ``forwarded`` ended cleanly.

    ``None`` (no process: waiting for a restart), 0 (finished its batch and
    committed), or killed by ``forwarded`` itself: a worker dies of it only while
    starting, before ``consume`` installs its handler, so before any batch.
    """
    return returncode is None or returncode in (0, -forwarded)
