"""HTTP endpoints for orchestrators: liveness, readiness, Prometheus metrics.

- ``GET /livez``: 200 while the loop turns (fetching, or retrying the
  database); 503 when it has not turned for a while (stuck: restart me).
- ``GET /readyz``: 200 when partitions are assigned and the database answers.
- ``GET /metrics``: Prometheus text format (exectrack.consumer.metrics).
"""

from __future__ import annotations

import errno
from typing import Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from exectrack.consumer.errors import HealthServerFailed


class Probed(Protocol):
    """What the endpoints ask of the process they serve (``ConsumerService`` is one)."""

    @property
    def live(self) -> bool:
        """True while the main loop turns."""

    async def ready(self) -> bool:
        """True when partitions are assigned and the database answers."""


def build_app(service: Probed) -> web.Application:
    """The aiohttp application: ``/livez``, ``/readyz`` (200 or 503) and ``/metrics``."""

    async def livez(_: web.Request) -> web.Response:
        return web.Response(status=200 if service.live else 503, text="live\n")

    async def readyz(_: web.Request) -> web.Response:
        ready = await service.ready()
        return web.Response(
            status=200 if ready else 503, text="ready\n" if ready else "not ready\n"
        )

    async def prometheus(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/livez", livez)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", prometheus)
    return app


async def serve_health(service: Probed, host: str, port: int) -> web.AppRunner | None:
    """Listen on ``host:port`` (None, and no server, when ``port`` is 0).

    Raises:
        HealthServerFailed: the address is in use, or not one of this host's
            (one line naming ``EXECTRACK_HEALTH_PORT``/``EXECTRACK_HEALTH_HOST``).
    """
    if port == 0:
        return None
    return await serve_app(build_app(service), host, port)


async def serve_app(app: web.Application, host: str, port: int) -> web.AppRunner:
    """Listen on ``host:port`` with ``app`` (the consumer's, or a supervisor's:
    exectrack.consumer.workers.health); the runner to ``cleanup()`` at the end.

    Raises:
        HealthServerFailed: as ``serve_health``.
    """
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        if exc.errno == errno.EADDRINUSE:
            raise HealthServerFailed(
                f"health server: {host}:{port} already in use (EXECTRACK_HEALTH_PORT)"
            ) from None
        raise HealthServerFailed(
            f"health server: cannot listen on {host}:{port}: {exc.strerror or exc} "
            "(EXECTRACK_HEALTH_HOST, EXECTRACK_HEALTH_PORT)"
        ) from None
    return runner
