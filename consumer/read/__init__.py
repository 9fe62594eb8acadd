"""The read side: what people use to see executions (docs/read/).

- ``watch``: a live terminal view: counts by status and the latest executions
- ``queries``: list, detail, statistics, duration series, stuck executions
- ``api``: the HTTP API (FastAPI) and ``build_app``, the server of ``serve``
- ``web``: the web page (templates/, static/); ``access``: tokens, the request context
- ``serve``: ``exectrack-consumer serve`` (uvicorn)
"""

__all__ = ["access", "api", "queries", "serve", "watch", "web"]
