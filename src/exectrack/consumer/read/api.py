"""The read side's HTTP API and the application that also serves the web page.

``build_app(settings)`` is the whole server of ``exectrack-consumer serve``:
read-only JSON under ``/api`` (OpenAPI at ``/openapi.json``, Swagger UI at
``/docs``, served from the package like every asset), the pages
(exectrack.consumer.read.web), ``/healthz`` (readiness: the read database
answers) and ``/livez``. Every answer is computed from the
database (or the dead-letter topic) at request time: no cache, no session, no
per-process state, so replicas behind a load balancer agree (docs/read/api.md).

Errors: a parameter out of its domain answers 422 in FastAPI's shape, ``loc``
naming the parameter (a ``BadQuery`` from the queries, a bad cursor included;
every number bounded and finite: no ``inf``, ``nan``, nor a value the queries'
date arithmetic cannot hold); an unknown execution 404. Ids are path parameters
that may hold ``/`` (``{execution_id:path}``): send them percent-encoded,
``urllib.parse.quote(id, safe="")``; the database unreachable 503 (``{"detail": ...}``, one
line, no traceback).
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import quote

import structlog
from aiokafka.errors import KafkaError
from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from pydantic import AwareDatetime, BeforeValidator
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from exectrack.consumer.db.engine import create_engine
from exectrack.consumer.dlq.browse import DeadLetterView, latest_dead_letters
from exectrack.consumer.errors import DeadLetterTopicMissing
from exectrack.consumer.read import queries, web
from exectrack.consumer.read.access import (
    OPEN_PATHS,
    ReadContext,
    bad_parameter,
    context,
    not_found,
    presented_token,
    token_ok,
)
from exectrack.consumer.read.queries import (
    SORT_DESCRIPTION,
    DurationBucket,
    ExecutionDetail,
    ExecutionFilter,
    ExecutionPage,
    ExecutionSummary,
    ReportStats,
    SortKey,
)
from exectrack.consumer.settings import Settings
from exectrack.producer.events import ExecutionStatus, ReportCategory, ReportType, TriggerType

__all__ = ["DEFAULT_STUCK_S", "DEFAULT_WINDOW", "build_app", "default_bucket_s", "run_query"]

log = structlog.get_logger("exectrack.consumer.read.api")

DEFAULT_WINDOW = timedelta(hours=24)
"""Statistics and duration series cover the last 24 hours unless ``since``/``until`` say."""
DEFAULT_STUCK_S = 900.0
"""``/api/stuck`` without ``older_than_s``: pending/running with no event for 15 minutes."""
BUCKETS_WANTED = 48
T = TypeVar("T")

# the parameter names of the queries' arguments where the API names them otherwise
PARAMETER_OF_ARGUMENT = {"descending": "order", "flt": "filter"}


async def run_query(call: Awaitable[T]) -> T:
    """Await a query; its ``ValueError`` (a ``BadQuery``) becomes a 422 naming the parameter."""
    try:
        return await call
    except ValueError as exc:
        argument = str(getattr(exc, "argument", "") or str(exc).partition(":")[0])
        raise bad_parameter(PARAMETER_OF_ARGUMENT.get(argument, argument), str(exc)) from None


def default_bucket_s(since: datetime, until: datetime) -> int:
    """A bucket width giving about 48 buckets over ``[since, until)``: at least 60 s."""
    return max(60, int((until - since).total_seconds()) // BUCKETS_WANTED)


def window(since: datetime | None, until: datetime | None) -> tuple[datetime, datetime]:
    """``[since, until)`` with the defaults: until now, since ``DEFAULT_WINDOW`` before.

    Raises a 422 naming ``until`` when ``DEFAULT_WINDOW`` before it is not a date
    (``until=0001-01-01T00:00:00Z``).
    """
    until = until or datetime.now(UTC)
    try:
        return since or until - DEFAULT_WINDOW, until
    except OverflowError:
        raise bad_parameter("until", "too early: the window before it is not a date") from None


# 2026-11-30T00:00:00 00:00: a "+hh:mm" offset sent unencoded ("+" is a space in a query)
_PLUS_AS_SPACE = re.compile(r"^\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d(:\d\d(\.\d+)?)? \d\d:?\d\d$")


def _plus_as_space(value: Any) -> Any:
    """Name the cause when a time's ``+`` offset arrived as a space (not percent-encoded)."""
    if isinstance(value, str) and _PLUS_AS_SPACE.match(value.strip("\t")):
        raise ValueError(
            "the offset's '+' arrived as a space: percent-encode '+' as %2B in a query string "
            "(2026-11-30T00:00:00%2B00:00), or give the time in UTC with Z"
        )
    return value


Ctx = Annotated[ReadContext, Depends(context)]
Times = Annotated[AwareDatetime | None, BeforeValidator(_plus_as_space), Query()]
Seconds = Annotated[float, Query(gt=0, lt=queries.MAX_SECONDS, allow_inf_nan=False)]
"""A number of seconds: > 0, finite, under 100 years (``queries.MAX_SECONDS``)."""
api = APIRouter(prefix="/api", tags=["read"])


@api.get("/executions", response_model=ExecutionPage)
async def list_executions(
    ctx: Ctx,
    status: Annotated[list[ExecutionStatus], Query(description="repeatable: any of")] = [],  # noqa: B006 - FastAPI copies defaults
    report_id: Annotated[list[str], Query(description="repeatable: any of")] = [],  # noqa: B006
    report_type: ReportType | None = None,
    category: ReportCategory | None = None,
    trigger_type: Annotated[list[TriggerType], Query(description="repeatable")] = [],  # noqa: B006
    started_by: Annotated[int | None, Query(ge=1, le=queries.MAX_USER_ID)] = None,
    created_from: Times = None,
    created_to: Times = None,
    started_from: Times = None,
    started_to: Times = None,
    ended_from: Times = None,
    ended_to: Times = None,
    last_event_from: Times = None,
    last_event_to: Times = None,
    stuck_for_s: Annotated[
        float | None, Query(gt=0, lt=queries.MAX_SECONDS, allow_inf_nan=False)
    ] = None,
    sort: Annotated[SortKey, Query(description=SORT_DESCRIPTION)] = "created_at",
    order: Literal["desc", "asc"] = "desc",
    limit: Annotated[int, Query(ge=1, le=queries.MAX_LIMIT)] = 50,
    cursor: str | None = None,
) -> ExecutionPage:
    """Executions matching every given filter (times: RFC 3339 with offset, ``[from, to)``).

    Keyset pagination: pass the answer's ``next_cursor`` as ``cursor`` (with the
    same filters, ``sort`` and ``order``) for the next page; null at the end.
    """
    flt = ExecutionFilter(
        status=status, report_id=report_id, report_type=report_type, category=category,
        trigger_type=trigger_type, started_by=started_by, created_from=created_from,
        created_to=created_to, started_from=started_from, started_to=started_to,
        ended_from=ended_from, ended_to=ended_to, last_event_from=last_event_from,
        last_event_to=last_event_to, stuck_for_s=stuck_for_s,
    )  # fmt: skip
    return await run_query(
        queries.list_executions(
            ctx.engine, flt, sort=sort, descending=order == "desc", limit=limit, cursor=cursor
        )
    )


@api.get("/executions/{execution_id:path}", response_model=ExecutionDetail)
async def get_execution(ctx: Ctx, execution_id: str) -> ExecutionDetail:
    """One execution, every column, and which event supplied each field (``provenance``).

    The id percent-encoded as one path segment (``quote(id, safe="")``: ``a/b`` is
    ``a%2Fb``); 404 ``{"detail": "no execution '<id>'"}`` when unknown.
    """
    found = await run_query(queries.get_execution(ctx.engine, execution_id))
    if found is None:
        raise not_found(f"execution {execution_id!r}")
    return found


@api.get("/reports", response_model=list[ReportStats])
async def report_stats(
    ctx: Ctx, since: Times = None, until: Times = None, report_id: str | None = None
) -> list[ReportStats]:
    """Per report: executions created in ``[since, until)`` (default: the last 24 h)."""
    start, end = window(since, until)
    return await run_query(
        queries.report_stats(ctx.engine, since=start, until=end, report_id=report_id)
    )


@api.get("/reports/{report_id:path}/durations", response_model=list[DurationBucket])
async def duration_series(
    ctx: Ctx,
    report_id: str,
    since: Times = None,
    until: Times = None,
    bucket_s: Annotated[int | None, Query(ge=1, le=queries.MAX_SECONDS)] = None,
) -> list[DurationBucket]:
    """Duration p50/p95 (ms) per time bucket of executions that ended in the window.

    ``bucket_s`` defaults to about 48 buckets over the window (at least 60 s).
    """
    start, end = window(since, until)
    width = bucket_s or default_bucket_s(start, end)
    return await run_query(
        queries.duration_series(ctx.engine, report_id, since=start, until=end, bucket_s=width)
    )


@api.get("/stuck", response_model=list[ExecutionSummary])
async def stuck_executions(
    ctx: Ctx,
    older_than_s: Seconds = DEFAULT_STUCK_S,
    limit: Annotated[int, Query(ge=1, le=queries.MAX_LIMIT)] = 50,
) -> list[ExecutionSummary]:
    """Pending or running executions with no event for ``older_than_s`` seconds, oldest first."""
    return await run_query(
        queries.stuck_executions(ctx.engine, older_than_s=older_than_s, limit=limit)
    )


@api.get("/dead-letters", response_model=list[DeadLetterView])
async def dead_letters(
    ctx: Ctx,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    reason: str | None = None,
) -> list[DeadLetterView] | JSONResponse:
    """The dead-letter topic's latest records, newest first, with their reason headers.

    404 when the topic does not exist; 503 when the broker cannot be read.
    """
    try:
        return await run_query(latest_dead_letters(ctx.settings.kafka, limit=limit, reason=reason))
    except DeadLetterTopicMissing as exc:
        return JSONResponse({"detail": str(exc)}, status_code=404)
    except KafkaError as exc:
        log.warning("dead_letters_unavailable", error=f"{type(exc).__name__}: {exc}")
        return JSONResponse({"detail": "the broker cannot be read"}, status_code=503)


def _probes(app: FastAPI) -> None:
    @app.get("/livez", include_in_schema=False, response_class=PlainTextResponse)
    async def livez() -> str:
        return "live\n"

    @app.get("/healthz", include_in_schema=False, response_class=PlainTextResponse)
    async def healthz(ctx: Ctx, response: Response) -> str:
        try:
            async with ctx.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except (SQLAlchemyError, OSError):
            response.status_code = 503
            return "database unavailable\n"
        return "ok\n"


SWAGGER_UI = "/static/vendor/swagger-ui-5.35.0"


def _docs(app: FastAPI) -> None:
    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json", title="exectrack read API",
            swagger_js_url=f"{SWAGGER_UI}/swagger-ui-bundle.js",
            swagger_css_url=f"{SWAGGER_UI}/swagger-ui.css",
            swagger_favicon_url=f"{SWAGGER_UI}/favicon-32x32.png",
        )  # fmt: skip


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.warning("database_unavailable", path=request.url.path, error=type(exc).__name__)
    return JSONResponse({"detail": "the database is unavailable"}, status_code=503)


def _guard(app: FastAPI, settings: Settings) -> None:
    """Tokens on every path but ``OPEN_PATHS``; one access log line per request."""

    @app.middleware("http")
    async def access(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        path = request.url.path
        # the path only: a query string may carry a token (/login?token=); probes at debug
        emit = log.debug if path in ("/healthz", "/livez") else log.info
        try:
            allowed = path.startswith(OPEN_PATHS) or token_ok(presented_token(request), settings)
            if not allowed:
                response: Response = _unauthorised(request)
            else:
                response = await call_next(request)
        except Exception as exc:
            # the answer is Starlette's 500; the traceback is the server's one JSON line
            # ("Exception in ASGI application"): this is the access line it would lack
            log.error(
                "request", method=request.method, path=path, status=500,
                ms=round((time.perf_counter() - started) * 1000, 1), error=one_line(exc),
            )  # fmt: skip
            raise
        emit(
            "request", method=request.method, path=path, status=response.status_code,
            ms=round((time.perf_counter() - started) * 1000, 1),
        )  # fmt: skip
        return response


def one_line(exc: BaseException) -> str:
    """``Type: first line of its message``, at most 300 characters: a crash's cause, one line."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def _unauthorised(request: Request) -> Response:
    if request.url.path.startswith(("/api/", "/openapi.json")):
        return JSONResponse(
            {"detail": "a bearer token is required (EXECTRACK_READ__TOKENS)"},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
    return RedirectResponse(f"/login?next={quote(asked_for(request), safe='')}", status_code=303)


def asked_for(request: Request) -> str:
    """The path and query string a request asked for, as sent (still percent-encoded).

    What ``/login`` returns to: the whole view, its filters included. Quoted as one
    ``next`` value, a ``&`` or ``?`` in it cannot become a parameter of ``/login``.
    """
    raw = request.scope.get("raw_path") or request.url.path.encode()
    target = raw.decode("latin-1")
    query = request.scope.get("query_string", b"").decode("latin-1")
    return f"{target}?{query}" if query else target


def build_app(settings: Settings) -> FastAPI:
    """The ``serve`` application for ``settings`` (engine opened at start-up, disposed at stop).

    The engine reads ``EXECTRACK_READ__DATABASE_URL`` when set (a read replica), else
    ``EXECTRACK_DATABASE__URL``, with the database group's pool and TLS settings.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        url = settings.read.database_url
        engine = create_engine(
            settings.database, url=None if url is None else url.get_secret_value()
        )
        app.state.read = ReadContext(settings=settings, engine=engine)
        try:
            yield
        finally:
            await engine.dispose()

    app = FastAPI(
        title="exectrack read API",
        version=_version(),
        summary="Report executions, their statistics and dead letters (read-only).",
        lifespan=lifespan,
        docs_url=None,  # served below from the vendored Swagger UI: no CDN
        redoc_url=None,
    )
    app.add_exception_handler(SQLAlchemyError, _database_unavailable)
    _guard(app, settings)
    _probes(app)
    _docs(app)
    app.include_router(api)
    app.include_router(web.pages)
    app.mount("/static", StaticFiles(packages=[("exectrack.consumer.read", "static")]))
    return app


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("exectrack")
    except PackageNotFoundError:
        return "0"
