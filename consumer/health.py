"""HTTP endpoints for orchestrators: liveness, readiness, Prometheus metrics.

- ``GET /livez``: 200 while the loop turns (fetching, or retrying the
  database); 503 when it has not turned for a while (stuck: restart me).
- ``GET /readyz``: 200 when partitions are assigned and the database answers.
- ``GET /metrics``: Prometheus text format (consumer.metrics).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

if TYPE_CHECKING:
    from consumer.service import ConsumerService


def build_app(service: ConsumerService) -> web.Application:
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


async def serve_health(service: ConsumerService, host: str, port: int) -> web.AppRunner | None:
    if port == 0:
        return None
    runner = web.AppRunner(build_app(service), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
