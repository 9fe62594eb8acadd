"""The supervisor's endpoints, on ``EXECTRACK_HEALTH_PORT`` (workers: the ports after it).

Worker ``i`` (from 0) serves the consumer's own ``/livez``, ``/readyz`` and
``/metrics`` on ``EXECTRACK_HEALTH_PORT + 1 + i``; the supervisor answers probes
for all of them on ``EXECTRACK_HEALTH_PORT``, so an orchestrator's probes are the
same with one worker or N:

- ``GET /livez``: 200 unless a worker answers its ``/livez`` with 503 or not
  within ``PROBE_TIMEOUT_S`` (its loop is stuck: restart the whole unit, as a
  single consumer is restarted). A worker not listening yet (starting, or
  waiting to be restarted) counts as live: the supervisor is handling it.
- ``GET /readyz``: 200 when all N workers run and each answers its ``/readyz``
  with 200 (partitions assigned, database answering).
- ``GET /metrics``: the supervisor's own metrics only (``exectrack_workers``,
  ``exectrack_workers_running``, ``exectrack_worker_restarts_total{worker}``); the
  consumer's metrics are each worker's, scraped on its own port (a per-worker
  ``instance``, as with replicas: the dashboards and alerts need no change).

Each body lists the workers, one line each: ``worker 0 pid 4242 port 8081: live``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)

__all__ = ["PROBE_TIMEOUT_S", "SupervisorMetrics", "WorkerView", "build_app", "probe_host"]

PROBE_TIMEOUT_S = 2.0
"""A worker's answer to one probe, at most (the Kubernetes probes allow 3 s)."""


@dataclass(frozen=True)
class WorkerView:
    """One worker as the endpoints see it: ``pid`` None while it is not running."""

    index: int
    pid: int | None
    port: int


class SupervisorMetrics:
    """The supervisor's metrics, in a registry of their own (not the consumer's)."""

    def __init__(self, workers: int) -> None:
        self.registry = CollectorRegistry()
        self.configured = Gauge(
            "exectrack_workers", "Workers the supervisor runs (--workers).", registry=self.registry
        )
        self.running = Gauge(
            "exectrack_workers_running", "Workers with a running process.", registry=self.registry
        )
        self.restarts = Counter(
            "exectrack_worker_restarts",
            "Unexpected exits of a worker (each followed by a restart), by worker index.",
            ["worker"],
            registry=self.registry,
        )
        self.configured.set(workers)
        for index in range(workers):
            self.restarts.labels(str(index))


def probe_host(host: str) -> str:
    """Where the supervisor reaches a worker listening on ``host`` (a wildcard: loopback)."""
    if host in ("", "0.0.0.0"):  # noqa: S104 - recognising the wildcard, not binding it
        return "127.0.0.1"
    if host in ("::", "[::]"):
        return "::1"
    return host


async def _probe(session: aiohttp.ClientSession, host: str, port: int, path: str) -> bool | None:
    """True: 200; False: another status or no answer in time; None: nothing listens."""
    try:
        async with session.get(f"http://{host}:{port}{path}") as response:
            return response.status == 200
    except aiohttp.ClientConnectorError:
        return None
    except (TimeoutError, aiohttp.ClientError):
        return False


_WORDS = {"/livez": ("live", "NOT LIVE"), "/readyz": ("ready", "not ready")}


async def _ask(host: str, workers: Sequence[WorkerView], path: str) -> list[bool | None]:
    timeout = aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        return list(
            await asyncio.gather(
                *(
                    _probe(session, host, w.port, path) if w.pid is not None else _none()
                    for w in workers
                )
            )
        )


async def _none() -> None:
    return None


def _body(workers: Sequence[WorkerView], answers: Sequence[bool | None], path: str) -> str:
    yes, no = _WORDS[path]
    lines = []
    for worker, answer in zip(workers, answers, strict=True):
        if worker.pid is None:
            state = "not running (restart pending)"
        else:
            state = {True: yes, False: no, None: "starting (not listening yet)"}[answer]
        lines.append(f"worker {worker.index} pid {worker.pid} port {worker.port}: {state}")
    return "\n".join(lines) + "\n"


def build_app(
    workers: Callable[[], Sequence[WorkerView]], host: str, metrics: SupervisorMetrics
) -> web.Application:
    """The supervisor's aiohttp application (see the module doc).

    Arguments:
        workers: the workers now (all of them, running or not).
        host: ``EXECTRACK_HEALTH_HOST``, where the workers listen.
        metrics: what ``/metrics`` serves.
    """
    target = probe_host(host)

    async def livez(_: web.Request) -> web.Response:
        now = workers()
        answers = await _ask(target, now, "/livez")
        live = all(answer is not False for answer in answers)
        return web.Response(status=200 if live else 503, text=_body(now, answers, "/livez"))

    async def readyz(_: web.Request) -> web.Response:
        now = workers()
        answers = await _ask(target, now, "/readyz")
        ready = all(answer is True for answer in answers)
        return web.Response(status=200 if ready else 503, text=_body(now, answers, "/readyz"))

    async def prometheus(_: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    app = web.Application()
    app.router.add_get("/livez", livez)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", prometheus)
    return app
