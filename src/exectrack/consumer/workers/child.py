"""What a ``consume`` process does because it is worker ``index`` of a supervisor.

- Its log lines carry ``worker`` (structlog's context, merged into every event).
- It dies with its supervisor: on Linux the kernel sends it SIGTERM when the
  supervisor ends (``prctl(PR_SET_PDEATHSIG)``), so a supervisor killed with -9
  leaves no orphans consuming unwatched; SIGTERM lets each worker finish its
  batch and commit as usual. Elsewhere a worker outlives a killed supervisor.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys

import structlog

__all__ = ["become_worker"]

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def become_worker(index: int, supervisor_pid: int | None) -> None:
    """Tag the log lines with ``worker=index``; end with the supervisor (see module doc).

    ``supervisor_pid``: the supervisor's pid, to notice one that already died
    between this process's start and the ``prctl`` (then: SIGTERM to ourselves).
    """
    structlog.contextvars.bind_contextvars(worker=index)
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if supervisor_pid is not None and os.getppid() != supervisor_pid:
        os.kill(os.getpid(), signal.SIGTERM)
