"""The web page: server-rendered views of executions (Jinja2 templates, htmx, uPlot).

Every view is a GET whose state lives in the URL query string, so a link
reproduces it: the executions list (``/``, filters as the API's parameters,
pages by cursor), one execution (``/executions/{id}``: fields, the event that
supplied each, error details), reports (``/reports``, ``/reports/{id}``:
success rate, duration p50/p95 chart), what needs attention (``/attention``:
stuck, failed today). The list's first page refreshes its rows every 3 s
(htmx polls ``/executions/rows`` with the same query string and swaps the table
body: no full reload). Scripts and styles are served from the package's
``static/`` (vendored, no CDN; versions in docs/read/api.md).

Form fields left empty are ignored; a ``datetime-local`` value (no offset) is UTC.
A filter that does not validate is shown above an empty table, naming the field.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, PackageLoader, select_autoescape
from pydantic import ValidationError

from exectrack.consumer.read import queries
from exectrack.consumer.read.access import COOKIE, context, token_ok
from exectrack.consumer.read.queries import DurationBucket, ExecutionFilter, ExecutionPage
from exectrack.producer.events import ExecutionStatus, ReportCategory, ReportType, TriggerType

__all__ = ["WINDOWS", "chart_data", "pages", "parse_filter"]

LIST_FIELDS = ("status", "report_id", "trigger_type")
TIME_FIELDS = ("created_from", "created_to", "started_from", "started_to", "ended_from", "ended_to")
SCALAR_FIELDS = ("report_type", "category", "started_by", "stuck_for_s", *TIME_FIELDS)
WINDOWS = {"1h": timedelta(hours=1), "24h": timedelta(hours=24), "7d": timedelta(days=7),
           "30d": timedelta(days=30)}  # fmt: skip
"""The report pages' windows (``?window=``)."""
POLL = "every 3s"

pages = APIRouter(include_in_schema=False)


def _env() -> Environment:
    env = Environment(
        loader=PackageLoader("exectrack.consumer.read", "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(ts=_ts, ago=_ago, dur=_duration, pct=_percent, num=_number)
    env.globals.update(
        statuses=list(ExecutionStatus), triggers=list(TriggerType),
        report_types=list(ReportType), categories=list(ReportCategory),
        sort_keys=queries.SORT_KEYS, windows=list(WINDOWS), poll=POLL,
    )  # fmt: skip
    return env


def _ts(value: datetime | None) -> str:
    return "" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _ago(value: datetime | None) -> str:
    if value is None:
        return ""
    seconds = (datetime.now(UTC) - value).total_seconds()
    if seconds < 0:
        return "in " + _span(-seconds)
    return _span(seconds) + " ago"


def _span(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"


def _duration(ms: int | None) -> str:
    if ms is None:
        return ""
    if ms < 1000:
        return f"{ms} ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    return (
        f"{minutes} min {rest:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"
    )


def _percent(rate: float | None) -> str:
    return "\u2013" if rate is None else f"{rate * 100:.1f} %"


def _number(value: int | None) -> str:
    return "" if value is None else f"{value:,}".replace(",", "\u202f")


templates = Jinja2Templates(env=_env())


def parse_filter(params: Any) -> tuple[ExecutionFilter, dict[str, Any], str | None]:
    """An ``ExecutionFilter`` from a query string (``request.query_params``).

    Returns ``(filter, form, error)``: ``form`` is what the filter form shows
    (the values as given), ``error`` a line naming the field that did not
    validate (then the filter is the empty one and the page shows no rows).
    """
    form: dict[str, Any] = {name: [v for v in params.getlist(name) if v] for name in LIST_FIELDS}
    for name in SCALAR_FIELDS:
        if value := (params.get(name) or "").strip():
            form[name] = value
    data = dict(form)
    for name in TIME_FIELDS:
        if name in data and len(data[name]) == 16:  # datetime-local: 2026-11-30T07:42, UTC
            data[name] += ":00+00:00"
    try:
        return ExecutionFilter.model_validate(data), form, None
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"][:1])
        return ExecutionFilter(), form, f"{field}: {first['msg']}"


def _list_options(params: Any) -> dict[str, Any]:
    sort = params.get("sort") or queries.DEFAULT_SORT
    order = params.get("order") or "desc"
    limit = params.get("limit") or "50"
    return {"sort": sort, "order": order, "limit": int(limit) if limit.isdigit() else 50,
            "cursor": params.get("cursor") or None}  # fmt: skip


async def _list_page(request: Request) -> dict[str, Any]:
    params = request.query_params
    flt, form, error = parse_filter(params)
    options = _list_options(params)
    page = ExecutionPage(items=[], next_cursor=None)
    if error is None:
        try:
            page = await queries.list_executions(
                context(request).engine, flt, sort=options["sort"],
                descending=options["order"] != "asc", limit=options["limit"],
                cursor=options["cursor"],
            )  # fmt: skip
        except ValueError as exc:
            error = str(exc)
    kept = [(k, v) for k, v in params.multi_items() if v and k != "cursor"]
    after = page.next_cursor
    return {
        "page": page, "form": form, "options": options, "error": error,
        "query": urlencode(kept), "first_page": options["cursor"] is None,
        "next_query": urlencode([*kept, ("cursor", after)]) if after else None,
        "now": datetime.now(UTC),
    }  # fmt: skip


@pages.get("/", response_class=HTMLResponse)
async def executions(request: Request) -> Response:
    """The executions list: the filter form, the table, pages by cursor."""
    return templates.TemplateResponse(request, "executions.html", await _list_page(request))


@pages.get("/executions/rows", response_class=HTMLResponse)
async def execution_rows(request: Request) -> Response:
    """The list's table body and pager alone (what the page's polling swaps in)."""
    page = await _list_page(request)
    return templates.TemplateResponse(request, "_rows.html", {**page, "oob": True})


@pages.get("/executions/{execution_id}", response_class=HTMLResponse)
async def execution(request: Request, execution_id: str) -> Response:
    """One execution: its fields, the event that supplied each, its error details."""
    found = await queries.get_execution(context(request).engine, execution_id)
    if found is None:
        return templates.TemplateResponse(
            request, "notfound.html", {"what": f"execution {execution_id!r}"}, status_code=404
        )
    as_json = {name: json.dumps(getattr(found, name), indent=2, sort_keys=True)
               for name in ("execution_parameters", "result_summary", "error_details")
               if getattr(found, name) is not None}  # fmt: skip
    return templates.TemplateResponse(
        request, "execution.html", {"x": found, "as_json": as_json, "now": datetime.now(UTC)}
    )


def _window(request: Request) -> tuple[str, datetime, datetime]:
    name = request.query_params.get("window", "24h")
    name = name if name in WINDOWS else "24h"
    until = datetime.now(UTC)
    return name, until - WINDOWS[name], until


def chart_data(
    series: list[DurationBucket], since: datetime, until: datetime, bucket_s: int
) -> dict[str, Any]:
    """The duration chart's data (seconds): x, p50, p95, and the window's ends.

    A bucket without executions between two with some becomes a null point, so
    the lines break there instead of bridging the gap (uPlot's default).
    """
    x: list[float] = []
    p50: list[float | None] = []
    p95: list[float | None] = []
    for bucket in series:
        start = bucket.start.timestamp()
        if x and start - x[-1] > bucket_s:
            x.append(x[-1] + bucket_s)
            p50.append(None)
            p95.append(None)
        x.append(start)
        p50.append(bucket.p50_ms / 1000)
        p95.append(bucket.p95_ms / 1000)
    return {"since": since.timestamp(), "until": until.timestamp(), "x": x, "p50": p50, "p95": p95}


@pages.get("/reports", response_class=HTMLResponse)
async def reports(request: Request) -> Response:
    """Every report's statistics over the window (``?window=1h|24h|7d|30d``)."""
    name, since, until = _window(request)
    stats = await queries.report_stats(context(request).engine, since=since, until=until)
    return templates.TemplateResponse(request, "reports.html", {"stats": stats, "window": name})


@pages.get("/reports/{report_id}", response_class=HTMLResponse)
async def report(request: Request, report_id: str) -> Response:
    """One report: success rate, durations (p50/p95 chart), its latest executions."""
    name, since, until = _window(request)
    engine = context(request).engine
    stats = await queries.report_stats(engine, since=since, until=until, report_id=report_id)
    bucket_s = max(60, int((until - since).total_seconds()) // 48)
    series = await queries.duration_series(
        engine, report_id, since=since, until=until, bucket_s=bucket_s
    )
    latest = await queries.list_executions(engine, ExecutionFilter(report_id=[report_id]), limit=15)
    chart = chart_data(series, since, until, bucket_s)
    return templates.TemplateResponse(
        request, "report.html",
        {"report_id": report_id, "stats": stats[0] if stats else None, "window": name,
         "chart": chart, "bucket_s": bucket_s, "latest": latest, "now": datetime.now(UTC)},
    )  # fmt: skip


@pages.get("/attention", response_class=HTMLResponse)
async def attention(request: Request) -> Response:
    """Stuck executions (``?stuck_min=``, default 15) and executions that failed today (UTC)."""
    raw = request.query_params.get("stuck_min", "15")
    minutes = float(raw) if raw.replace(".", "", 1).isdigit() and float(raw) > 0 else 15.0
    engine = context(request).engine
    stuck = await queries.stuck_executions(engine, older_than_s=minutes * 60, limit=100)
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    failed_filter = ExecutionFilter(
        status=[ExecutionStatus.FAILED, ExecutionStatus.TIMEOUT], ended_from=today
    )
    failed = await queries.list_executions(engine, failed_filter, sort="end_time", limit=100)
    return templates.TemplateResponse(
        request, "attention.html",
        {"stuck": stuck, "failed": failed.items, "stuck_min": minutes, "today": today,
         "failed_query": urlencode([("status", "failed"), ("status", "timeout"),
                                    ("ended_from", today.strftime("%Y-%m-%dT%H:%M"))]),
         "now": datetime.now(UTC)},
    )  # fmt: skip


@pages.get("/login", response_class=HTMLResponse)
async def login(request: Request, token: str | None = None, next: str = "/") -> Response:
    """``?token=``: a valid token sets the cookie and goes to ``next``; else the form (401)."""
    # only a path of this site: not //host, nor /\host (which browsers read as //host)
    target = next if next.startswith("/") and not next.startswith(("//", "/\\")) else "/"
    settings = context(request).settings
    if token and token_ok(token, settings):
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            COOKIE, token, httponly=True, samesite="strict",
            secure=request.url.scheme == "https", max_age=30 * 86400,
        )  # fmt: skip
        return response
    return templates.TemplateResponse(
        request, "login.html", {"next": target, "refused": bool(token)}, status_code=401
    )
