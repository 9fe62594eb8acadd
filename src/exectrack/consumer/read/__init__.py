"""The read side: what people use to see executions (docs/operations.md, docs/read/).

- ``queries``: list, detail, per-report statistics, duration series, stuck executions
  (``stats``: the statistics and series; ``cursor``: the keyset pagination cursors)
- ``cli``: ``exectrack-consumer list``, ``stats``, ``watch``
- ``watch``: a live terminal view: counts by status and the latest executions
- ``gauges``: executions active and stuck, read from the database on an interval (metrics)
- ``api``: the HTTP API (FastAPI) and ``build_app``, the server of ``serve``
- ``web``: the web page (templates/, static/); ``access``: tokens, the request context
- ``serve``: ``exectrack-consumer serve`` (uvicorn)
"""

__all__ = ["access", "api", "cli", "cursor", "gauges", "queries", "serve", "stats", "watch", "web"]
