"""The supervisor of ``consume --workers N``: start N workers, keep them running, stop them.

Each worker is ``python -m exectrack.consumer consume --workers 1`` (an asyncio
subprocess, stdlib), with the supervisor's environment (settings, secrets dir,
policy file) but ``EXECTRACK_HEALTH_PORT`` moved to its own port
(``worker_port``); its stdout and stderr are the supervisor's, so its JSON lines
(carrying ``worker``) join the supervisor's in one stream.

- A worker that exits while the supervisor runs (a crash, kill -9, a start-up
  failure: Kafka unreachable, the schema not migrated yet) is logged in ONE line (``worker_exited``:
  worker, pid, exit_code or signal, how long it ran, failures in a row, the wait)
  and started again after the restart policy's wait (restarts.py); the others
  are not touched (the group rebalances around the gap, twice).
- A worker that exits 2 (invalid settings, a usage error: ``worker_unusable``)
  cannot heal: the supervisor stops the others and exits 2.
- SIGTERM or SIGINT: forwarded as SIGTERM to every worker, which finishes its
  batch, commits and leaves the group (the consumer's own graceful stop, within
  ``EXECTRACK_SHUTDOWN_TIMEOUT_S``). Exit 0 when every worker stopped cleanly
  (``restarts.clean_stop``), else 1 with one line (``workers_stop_failed``);
  a worker still running ``STOP_GRACE_S`` after its own timeout is killed.

The supervisor never exits on its own otherwise: it outlives any number of
failing workers (their restarts are capped at ``EXECTRACK_WORKER_RESTART_MAX_S``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import structlog
from aiohttp import web

from exectrack.consumer.health import serve_app
from exectrack.consumer.settings import Settings
from exectrack.consumer.workers.health import SupervisorMetrics, WorkerView, build_app
from exectrack.consumer.workers.restarts import (
    USAGE_EXIT,
    RestartPolicy,
    Restarts,
    clean_stop,
    describe_exit,
)

__all__ = ["STOP_GRACE_S", "Supervisor", "supervise", "worker_command", "worker_port"]

log = structlog.get_logger("exectrack.consumer.workers")

STOP_GRACE_S = 10.0
"""After SIGTERM, a worker gets ``shutdown_timeout_s`` (its own limit) plus this, then SIGKILL."""
FORWARDED = signal.SIGTERM

Command = Callable[[int], Sequence[str]]
"""Worker index -> the argv that runs it (tests put a stand-in process here)."""


def worker_command(index: int) -> list[str]:
    """The argv of worker ``index``: this interpreter, ``consume`` as one process."""
    return [
        sys.executable, "-m", "exectrack.consumer", "consume", "--workers", "1",
        "--worker-index", str(index), "--supervisor-pid", str(os.getpid()),
    ]  # fmt: skip


def worker_port(health_port: int, index: int) -> int:
    """Worker ``index``'s health/metrics port: ``health_port + 1 + index`` (0: none)."""
    return 0 if health_port == 0 else health_port + 1 + index


@dataclass
class Worker:
    """One worker slot: its index, port, restart count, and its process when running."""

    index: int
    port: int
    restarts: Restarts
    process: asyncio.subprocess.Process | None = None
    started: float = 0.0  # monotonic time of the last start
    last_exit: int | None = None  # returncode of the exit that ended the stop
    pids: list[int] = field(default_factory=list)  # every process it has had, in order

    def view(self) -> WorkerView:
        """What the health endpoints see of it."""
        pid = self.process.pid if self.process and self.process.returncode is None else None
        return WorkerView(self.index, pid, self.port)


class Supervisor:
    """N workers of ``consume`` under one process (see the module doc).

    Arguments:
        settings: the consumer's settings (the supervisor reads the health
            address, the shutdown timeout and the restart policy; the workers
            read theirs from the same environment).
        count: how many workers (>= 1).
        command: worker index -> argv (default ``worker_command``).
    """

    def __init__(
        self, settings: Settings, count: int, *, command: Command = worker_command
    ) -> None:
        if count < 1:
            raise ValueError(f"workers: {count} (at least 1)")
        self.settings = settings
        self.command = command
        policy = RestartPolicy.create(
            settings.worker_restart_initial_s,
            settings.worker_restart_max_s,
            settings.worker_stable_s,
        )
        self.workers = [
            Worker(i, worker_port(settings.health_port, i), Restarts(policy)) for i in range(count)
        ]
        self.metrics = SupervisorMetrics(count)
        self.stopping = asyncio.Event()
        self.unusable: Worker | None = None

    # ------------------------------------------------------------ the run
    async def run(self) -> int:
        """Run the workers until ``request_stop`` (or one is unusable); the exit status.

        Returns:
            0: every worker stopped cleanly; 1: one did not (logged); 2: a worker
            exited 2 (``worker_unusable``, logged).

        Raises:
            HealthServerFailed: ``EXECTRACK_HEALTH_PORT`` cannot be listened on.
        """
        runner = await self._serve()
        log.info(
            "workers_starting", workers=len(self.workers),
            health_ports=[w.port for w in self.workers] if runner else None,
        )  # fmt: skip
        keepers = [asyncio.create_task(self._keep(w)) for w in self.workers]
        try:
            await self.stopping.wait()
            self._signal_all(FORWARDED)
            await self._wait_or_kill(keepers)
        finally:
            for keeper in keepers:
                keeper.cancel()
            await asyncio.gather(*keepers, return_exceptions=True)
            await self._kill_all()  # only on a failure of the supervisor itself
            if runner is not None:
                await runner.cleanup()
        return self._status()

    def request_stop(self) -> None:
        """Stop every worker (SIGTERM: finish the batch, commit, leave), then return from
        ``run``. Safe to call more than once and from a signal handler."""
        self.stopping.set()

    async def _serve(self) -> web.AppRunner | None:
        if self.settings.health_port == 0:
            return None
        app = build_app(
            lambda: [w.view() for w in self.workers], self.settings.health_host, self.metrics
        )
        return await serve_app(app, self.settings.health_host, self.settings.health_port)

    # ------------------------------------------------------------ one worker
    async def _keep(self, worker: Worker) -> None:
        """Start ``worker``, and again after each unexpected exit, until the stop."""
        loop = asyncio.get_running_loop()
        while not self.stopping.is_set():
            try:
                process = await self._start(worker)
            except OSError as exc:  # fork/exec refused (resources): a failure like any
                returncode, pid = None, None
                error: str | None = f"cannot start: {exc}"
            else:
                returncode, pid, error = await process.wait(), process.pid, None
                self.metrics.running.dec()
            ran_s = loop.time() - worker.started
            if self.stopping.is_set():
                worker.last_exit = returncode
                return
            if returncode == USAGE_EXIT:
                self.unusable = worker
                log.error(
                    "worker_unusable", worker=worker.index, pid=pid, exit_code=returncode,
                    error=f"worker {worker.index} exited {USAGE_EXIT} (invalid settings or usage, "
                    "its own line says which): it cannot heal; stopping all workers",
                )  # fmt: skip
                self.request_stop()
                return
            await self._restart_later(worker, pid, returncode, error, ran_s)

    async def _start(self, worker: Worker) -> asyncio.subprocess.Process:
        env = {**os.environ, "EXECTRACK_HEALTH_PORT": str(worker.port)}
        env.pop("EXECTRACK_WORKERS", None)
        worker.started = asyncio.get_running_loop().time()
        process = await asyncio.create_subprocess_exec(*self.command(worker.index), env=env)
        worker.process = process
        worker.pids.append(process.pid)
        self.metrics.running.inc()
        log.info("worker_started", worker=worker.index, pid=process.pid, health_port=worker.port)
        if self.stopping.is_set():  # the stop came while it was being started
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(FORWARDED)
        return process

    async def _restart_later(
        self, worker: Worker, pid: int | None, returncode: int | None, error: str | None,
        ran_s: float,
    ) -> None:  # fmt: skip
        wait_s = worker.restarts.failed(ran_s)
        self.metrics.restarts.labels(str(worker.index)).inc()
        how = describe_exit(returncode) if returncode is not None else {"error": error}
        log.error(
            "worker_exited", worker=worker.index, pid=pid, **how, ran_s=round(ran_s, 1),
            failures_in_a_row=worker.restarts.failures, restart_in_s=round(wait_s, 2),
        )  # fmt: skip
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), timeout=wait_s)

    # ------------------------------------------------------------ the stop
    def _running(self) -> list[asyncio.subprocess.Process]:
        return [w.process for w in self.workers if w.process and w.process.returncode is None]

    def _signal_all(self, sig: signal.Signals) -> None:
        for process in self._running():
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(sig)

    async def _wait_or_kill(self, keepers: Sequence[asyncio.Task[None]]) -> None:
        deadline = self.settings.shutdown_timeout_s + STOP_GRACE_S
        _, late = await asyncio.wait(keepers, timeout=deadline)
        if late:
            stuck = [w for w in self.workers if w.process and w.process.returncode is None]
            log.error(
                "workers_killed", workers=[w.index for w in stuck],
                pids=[w.process.pid for w in stuck if w.process],
                error=f"still running {deadline:g} s after SIGTERM: killed (SIGKILL); "
                "their batches in flight are not committed and will be read again",
            )  # fmt: skip
            await self._kill_all()
            await asyncio.wait(late, timeout=STOP_GRACE_S)

    async def _kill_all(self) -> None:
        for process in self._running():
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), timeout=STOP_GRACE_S)

    def _status(self) -> int:
        if self.unusable is not None:
            return USAGE_EXIT
        unclean = {
            w.index: w.last_exit for w in self.workers if not clean_stop(w.last_exit, FORWARDED)
        }
        if unclean:
            log.error(
                "workers_stop_failed",
                exits={str(i): describe_exit(c) for i, c in unclean.items() if c is not None},
                error=f"{len(unclean)} of {len(self.workers)} workers did not stop cleanly "
                "(their own lines say why)",
            )  # fmt: skip
            return 1
        log.info("workers_stopped", workers=len(self.workers))
        return 0


async def supervise(settings: Settings, count: int, *, command: Command = worker_command) -> int:
    """Run ``count`` workers until SIGTERM/SIGINT; the exit status (``Supervisor.run``)."""
    supervisor = Supervisor(settings, count, command=command)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, supervisor.request_stop)
    try:
        return await supervisor.run()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
