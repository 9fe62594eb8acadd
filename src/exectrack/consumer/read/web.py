"""The web page: server-rendered views of executions (Jinja2 templates, htmx, uPlot).

Every view is a GET whose state lives in the URL query string, so a link
reproduces it: the executions list (``/``, filters as the API's parameters,
pages by cursor), one execution (``/execution?id=``: fields, the event that
supplied each, error details), reports (``/reports``, ``/report?id=``:
success rate, duration p50/p95 chart), what needs attention (``/attention``:
stuck, failed today). Ids travel in the query string, percent-encoded whole
(the ``q`` filter: ``quote(id, safe="")``), so any id the contract accepts
(``/``, ``..``, ``?``, ``#``, ``%``, spaces) reaches its own page; the old
``/executions/{id}`` and ``/reports/{id}`` redirect there. Shown ids and values
have their bidirectional controls (U+202E...) made visible (``vis``: ``⟨U+202E⟩``)
and sit in ``unicode-bidi: isolate`` cells, so an id cannot pose as another.
The list's first page refreshes its rows every 3 s (htmx polls
``/executions/rows`` with the same query string and swaps the table body: no
full reload). Scripts and styles are served from the package's
``static/`` (vendored, no CDN; versions in docs/read/api.md).

Form fields left empty are ignored; a ``datetime-local`` value (no offset, to the
minute or the second) is UTC. A filter that does not validate (numbers included:
ASCII digits only, bounded) is shown above an empty table, naming the field.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, PackageLoader, select_autoescape
from pydantic import ValidationError

from exectrack.consumer.read import queries
from exectrack.consumer.read.access import COOKIE, context, token_ok
from exectrack.consumer.read.queries import (
    MAX_LIMIT,
    MAX_SECONDS,
    DurationBucket,
    ExecutionFilter,
    ExecutionPage,
)
from exectrack.producer.events import ExecutionStatus, ReportCategory, ReportType, TriggerType

__all__ = [
    "WINDOWS", "chart_data", "duration_text", "pages", "parse_filter", "parse_number",
    "safe_next", "visible",
]  # fmt: skip

LIST_FIELDS = ("status", "report_id", "trigger_type")
TIME_FIELDS = ("created_from", "created_to", "started_from", "started_to", "ended_from", "ended_to",
               "last_event_from", "last_event_to")  # fmt: skip
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
    env.filters.update(
        ts=_ts,
        ago=_ago,
        dur=duration_text,
        pct=_percent,
        num=_number,
        q=_quote,
        seg=_segment,
        vis=visible,
    )
    env.globals.update(
        statuses=list(ExecutionStatus), triggers=list(TriggerType),
        report_types=list(ReportType), categories=list(ReportCategory),
        sort_keys=queries.SORT_KEYS, windows=list(WINDOWS), poll=POLL,
    )  # fmt: skip
    return env


def _quote(value: object) -> str:
    """``value`` percent-encoded whole, ``/`` included: one query value."""
    return quote(str(value), safe="")


def _segment(value: object) -> str:
    """``value`` as one path segment: quoted whole, and ``.``/``..`` as ``%2E``/``%2E%2E``.

    (A client that follows RFC 3986 keeps ``%2E%2E``; browsers read it as ``..``,
    which is why the pages take ids in the query string.)
    """
    quoted = _quote(value)
    return quoted.replace(".", "%2E") if quoted in (".", "..") else quoted


# bidirectional formatting characters (Unicode's Bidi_Control): shown, never obeyed
_BIDI = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def visible(value: object) -> str:
    """``value`` as text with each bidi control shown as ``⟨U+202E⟩`` (escaped later).

    ``bidi\u202egnp.exe`` would display as ``bidiexe.png``; shown, it reads
    ``bidi⟨U+202E⟩gnp.exe``. None is the empty string.
    """
    if value is None:
        return ""
    return _BIDI.sub(lambda m: f"\u27e8U+{ord(m.group()):04X}\u27e9", str(value))


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


def duration_text(ms: int | None) -> str:
    """A duration for a card or a cell: ``850 ms``, ``4.2 s``, ``3 min 05 s``, ``2 h 10 min``,
    ``3 d 4 h``; a year or more is ``> 1 year`` (no card holds 2562047788015 h)."""
    if ms is None:
        return ""
    if ms < 1000:
        return f"{ms} ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest:02d} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if days < 365 else "> 1 year"


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
        if name in data and _LOCAL_TIME.match(data[name]):  # datetime-local: no offset, UTC
            data[name] += ":00+00:00" if len(data[name]) == 16 else "+00:00"
    if "started_by" in data:
        number, error = parse_number(data["started_by"], "started_by", 1, queries.MAX_USER_ID)
        if error is not None:
            return ExecutionFilter(), form, error
        data["started_by"] = number
    if "stuck_for_s" in data:
        seconds, error = parse_number(
            data["stuck_for_s"], "stuck_for_s", 0, MAX_SECONDS, fraction=True
        )
        if error is not None:
            return ExecutionFilter(), form, error
        data["stuck_for_s"] = seconds
    try:
        return ExecutionFilter.model_validate(data), form, None
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"][:1])
        return ExecutionFilter(), form, f"{field}: {first['msg']}"


# 2026-11-30T07:42 or 2026-11-30T07:42:30(.5): a datetime-local value, read as UTC
_LOCAL_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d{1,6})?)?$")
_DECIMAL = re.compile(r"^[0-9]{1,20}(\.[0-9]{1,9})?$")


def parse_number(
    raw: str, name: str, low: float, high: float, *, fraction: bool = False
) -> tuple[float | int | None, str | None]:
    """A page's number parameter: ASCII digits only (``int("²")`` fails though
    ``"²".isdigit()``), a decimal point if ``fraction``, in ``low..high``.

    ``low`` is exclusive for a ``fraction`` (> 0 seconds), inclusive for an integer.
    Returns ``(value, None)`` or ``(None, "<name>: <why>")``, the page's error line.
    """
    text = raw.strip()
    pattern = _DECIMAL if fraction else re.compile(r"^[0-9]{1,20}$")
    why = f"{name}: {raw!r} is not a {'number' if fraction else 'whole number'}"
    if not pattern.match(text):
        return None, why + " (ASCII digits)"
    value: float | int = float(text) if fraction else int(text)
    inside = low < value <= high if fraction else low <= value <= high
    if not inside:
        bounds = f"> {low:g} and <= {high:g}" if fraction else f"in {low:g}..{high:g}"
        return None, f"{why} {bounds}"
    return value, None


def _limit(raw: str) -> int:
    """The list's ``limit``: 50 when it is not a whole number in 1..``MAX_LIMIT``."""
    value, _ = parse_number(raw, "limit", 1, MAX_LIMIT)
    return int(value) if value is not None else 50


def _list_options(params: Any) -> dict[str, Any]:
    sort = params.get("sort") or queries.DEFAULT_SORT
    order = params.get("order") or "desc"
    limit = params.get("limit") or "50"
    return {"sort": sort, "order": order, "limit": _limit(limit),
            "cursor": params.get("cursor") or None}  # fmt: skip


async def _list_page(request: Request) -> dict[str, Any]:
    params = request.query_params
    flt, form, error = parse_filter(params)
    options = _list_options(params)
    error = error or parse_number(params.get("limit") or "50", "limit", 1, MAX_LIMIT)[1]
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


def _not_found(request: Request, what: str) -> Response:
    return templates.TemplateResponse(request, "notfound.html", {"what": what}, status_code=404)


@pages.get("/execution", response_class=HTMLResponse)
async def execution(request: Request, id: str = "") -> Response:
    """One execution (``?id=``, any id): its fields, the event that supplied each, its errors."""
    found = await queries.get_execution(context(request).engine, id) if id else None
    if found is None:
        return _not_found(request, f"execution {id!r}")
    as_json = {name: json.dumps(getattr(found, name), indent=2, sort_keys=True)
               for name in ("execution_parameters", "result_summary", "error_details")
               if getattr(found, name) is not None}  # fmt: skip
    message = (found.error_details or {}).get("message")
    if message is not None and not isinstance(message, str):  # an object: JSON, not a repr
        message = json.dumps(message, sort_keys=True, ensure_ascii=False)
    return templates.TemplateResponse(
        request, "execution.html",
        {"x": found, "as_json": as_json, "message": message, "now": datetime.now(UTC)},
    )  # fmt: skip


@pages.get("/executions/{execution_id:path}", response_class=HTMLResponse)
async def execution_by_path(execution_id: str) -> Response:
    """The old address of an execution: redirects to ``/execution?id=`` (simple ids)."""
    return RedirectResponse(f"/execution?id={_quote(execution_id)}", status_code=307)


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


@pages.get("/report", response_class=HTMLResponse)
async def report(request: Request, id: str = "") -> Response:
    """One report (``?id=``, any id): success rate, durations (p50/p95 chart), its latest."""
    if not id:
        return _not_found(request, "report ''")
    report_id = id
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


@pages.get("/reports/{report_id:path}", response_class=HTMLResponse)
async def report_by_path(request: Request, report_id: str) -> Response:
    """The old address of a report: redirects to ``/report?id=`` (simple ids), window kept."""
    window = request.query_params.get("window")
    tail = f"&window={_quote(window)}" if window else ""
    return RedirectResponse(f"/report?id={_quote(report_id)}{tail}", status_code=307)


@pages.get("/attention", response_class=HTMLResponse)
async def attention(request: Request) -> Response:
    """Stuck executions (``?stuck_min=``, default 15) and executions that failed today (UTC).

    "Failed today": failed or timed out with their latest event (when the failure
    was recorded) since midnight UTC, ``end_time`` or not: the contract accepts a
    ``failed`` event without one.
    """
    raw = request.query_params.get("stuck_min") or "15"
    minutes, error = parse_number(raw, "stuck_min", 0, MAX_SECONDS / 60, fraction=True)
    minutes = 15.0 if minutes is None else float(minutes)
    engine = context(request).engine
    stuck = await queries.stuck_executions(engine, older_than_s=minutes * 60, limit=100)
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    failed_filter = ExecutionFilter(
        status=[ExecutionStatus.FAILED, ExecutionStatus.TIMEOUT], last_event_from=today
    )
    failed = await queries.list_executions(engine, failed_filter, sort="last_event_at", limit=100)
    return templates.TemplateResponse(
        request, "attention.html",
        {"stuck": stuck, "failed": failed.items, "stuck_min": minutes, "today": today,
         "error": error,
         "failed_query": urlencode([("status", "failed"), ("status", "timeout"),
                                    ("last_event_from", today.strftime("%Y-%m-%dT%H:%M"))]),
         "now": datetime.now(UTC)},
    )  # fmt: skip


def safe_next(target: str) -> str:
    """Where ``/login`` may send the browser: a path of this site, else ``/``.

    Not ``//host`` nor ``/\\host`` (browsers read both as another host), nothing
    with a control character or white space (browsers drop tabs and newlines, so
    ``/\\t/host`` would become ``//host``).
    """
    if not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/"
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in target):
        return "/"
    return target


@pages.get("/login", response_class=HTMLResponse)
async def login(request: Request, token: str | None = None, next: str = "/") -> Response:
    """``?token=``: a valid token sets the cookie and goes to ``next``; else the form (401).

    ``next`` is the path and query string the browser asked for (exectrack.consumer.read.api
    puts it there percent-encoded as one value), so the view comes back whole.
    """
    target = safe_next(next)
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
