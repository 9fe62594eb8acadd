r"""Commands ``list``, ``stats`` and ``watch``: the read side in a terminal (docs/read/queries.md).

Thin over exectrack.consumer.read.queries: options become an ``ExecutionFilter``,
``asyncio.run`` runs the query, the result is a rich table or, with ``--json``,
one JSON document on stdout for scripts. A bad option value (a time, a duration,
a cursor; a time or duration beyond what a datetime holds, ``99999999d``) ends in
click's usage error naming the option (exit 2), never a traceback.

Output: on a terminal, a rich table (cells may be shortened to fit). When stdout
is not a terminal (``| grep``, ``| cut``, ``> file``), tab-separated lines: a
header line of the column names, then one line per row, every cell whole; a tab,
newline, carriage return or backslash inside a cell is written ``\t``, ``\n``,
``\r``, ``\\`` (PostgreSQL COPY's text format), so a row is always one line and
``cut -f`` counts right. Titles and ``more: --cursor ...`` go to stderr then.
``TTY_COMPATIBLE=1`` forces the table, ``TTY_COMPATIBLE=0`` the lines (rich's
variable). ``--json`` is the same either way.

Times: ISO 8601 (``2026-11-30T08:00:00Z``; without an offset it is UTC; a date
alone is its midnight UTC) or relative to now: ``90s``, ``15m``, ``2h``, ``7d``,
``1w`` (that long ago). Durations (``--stuck-for``): ``15m``, ``2h``, seconds, ``PT1H``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncEngine

from exectrack.consumer.db.engine import with_engine
from exectrack.consumer.errors import BadPeriod, BadQuery
from exectrack.consumer.read.queries import (
    DEFAULT_SORT,
    MAX_LIMIT,
    MAX_WINDOW_S,
    SORT_DESCRIPTION,
    SORT_KEYS,
    ExecutionFilter,
    ExecutionPage,
    ReportStats,
    SortKey,
    list_executions,
    report_stats,
)
from exectrack.consumer.read.watch import watch
from exectrack.consumer.retention.policy import parse_period
from exectrack.consumer.settings import Settings
from exectrack.producer.events import ExecutionStatus, ReportCategory, ReportType, TriggerType

T = TypeVar("T")
# the option each query argument comes from, to name it in a usage error
OPTION_OF = {"cursor": "--cursor", "limit": "--limit", "sort": "--sort", "until": "--until",
             "since": "--since"}  # fmt: skip


class TimeParam(click.ParamType[datetime, Any]):
    """An aware UTC datetime from ISO 8601 or a duration before now (``2h``, ``7d``)."""

    name = "time"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> datetime:
        """The datetime; click's usage error naming the option when ``value`` is neither form."""
        if isinstance(value, datetime):
            return value
        text = str(value).strip()
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            try:
                ago = parse_period(text)
            except BadPeriod:
                ago = None
            if ago is None:
                self.fail(f"{value!r} is neither an ISO 8601 time nor a time ago (2h)", param, ctx)
            try:
                return datetime.now(UTC) - ago
            except OverflowError:
                self.fail(f"{value!r} ago is before the year 1", param, ctx)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        try:
            return parsed.astimezone(UTC)
        except OverflowError:
            self.fail(f"{value!r} is outside the years 1..9999 in UTC", param, ctx)


class DurationParam(click.ParamType[float, Any]):
    """A positive duration in seconds (float) from ``15m``, ``2h``, ``3600``, ``PT1H``."""

    name = "duration"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        """Seconds > 0; click's usage error naming the option otherwise."""
        if isinstance(value, float):
            return value
        try:
            period = parse_period(str(value))
        except BadPeriod as exc:
            self.fail(str(exc), param, ctx)
        if period is None or period <= timedelta(0):
            self.fail(f"{value!r} is not a duration > 0 (like 15m)", param, ctx)
        if period.total_seconds() >= MAX_WINDOW_S:
            self.fail(f"{value!r} is longer than 100 years", param, ctx)
        return period.total_seconds()


TIME = TimeParam()
DURATION = DurationParam()


def _choice(enum: Any) -> click.Choice[str]:
    return click.Choice([member.value for member in enum], case_sensitive=False)


def filter_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The filter options of ``list`` and ``watch`` (``ExecutionFilter``'s fields)."""
    options = [
        click.option("--status", multiple=True, type=_choice(ExecutionStatus),
                     help="Only this status (repeat for several)."),
        click.option("--report", "report_id", multiple=True,
                     help="Only this report_id (repeat for several)."),
        click.option("--report-type", type=_choice(ReportType), help="Only this report type."),
        click.option("--category", type=_choice(ReportCategory), help="Only this category."),
        click.option("--trigger", "trigger_type", multiple=True, type=_choice(TriggerType),
                     help="Only this trigger type (repeat for several)."),
        click.option("--started-by", type=int, help="Only started by this user id."),
        click.option("--created-since", "created_from", type=TIME,
                     help="Created (first event) at or after (ISO 8601 or 2h, 7d: ago)."),
        click.option("--created-until", "created_to", type=TIME, help="Created before."),
        click.option("--started-since", "started_from", type=TIME, help="Started at or after."),
        click.option("--started-until", "started_to", type=TIME, help="Started before."),
        click.option("--ended-since", "ended_from", type=TIME, help="Ended at or after."),
        click.option("--ended-until", "ended_to", type=TIME, help="Ended before."),
        click.option("--stuck-for", "stuck_for_s", type=DURATION,
                     help="Only pending/running with no event for longer than this (15m, 2h)."),
    ]  # fmt: skip
    for option in reversed(options):
        command = option(command)
    return command


def build_filter(options: dict[str, Any]) -> ExecutionFilter:
    """The ``ExecutionFilter`` of ``filter_options``' values (the others are ignored)."""
    fields = {name: options[name] for name in ExecutionFilter.model_fields if name in options}
    for name in ("status", "report_id", "trigger_type"):
        fields[name] = list(fields.get(name) or ())
    return ExecutionFilter(**fields)


def _run(job: Callable[[AsyncEngine], Awaitable[T]]) -> tuple[Settings, T]:
    settings = Settings()

    try:
        return settings, asyncio.run(with_engine(settings.database, job))
    except BadQuery as exc:
        hint = OPTION_OF.get(exc.argument, exc.argument)
        raise click.BadParameter(
            str(exc).removeprefix(f"{exc.argument}: "), param_hint=f"'{hint}'"
        ) from None


@click.command("list")
@filter_options
@click.option("--sort", type=click.Choice(SORT_KEYS), default=DEFAULT_SORT, show_default=True,
              help=SORT_DESCRIPTION)  # fmt: skip
@click.option("--asc", is_flag=True, help="Ascending (oldest, shortest first).")
@click.option("--limit", type=click.IntRange(1, MAX_LIMIT), default=50, show_default=True)
@click.option("--cursor", help="Continue after a page: its next_cursor.")
@click.option("--json", "as_json", is_flag=True, help="Print {items, next_cursor} as JSON.")
def list_command(
    sort: SortKey, asc: bool, limit: int, cursor: str | None, as_json: bool, **options: Any
) -> None:
    """List executions, filtered and sorted, a page at a time (newest first).

    Piped (stdout not a terminal): tab-separated lines with a header, cells whole.
    """
    flt = build_filter(options)
    _, page = _run(
        lambda engine: list_executions(
            engine,
            flt,
            sort=sort,
            descending=not asc,
            limit=limit,
            cursor=cursor,
        )
    )
    if as_json:
        click.echo(page.model_dump_json())
        return
    _print_table(_page_table(page))
    if page.next_cursor:
        click.echo(f"more: --cursor {page.next_cursor}", err=not on_terminal())


_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def tsv_line(cells: list[str]) -> str:
    """One tab-separated line; ``\\``, tab, newline and CR inside a cell escaped (COPY text)."""
    return "\t".join(cell.translate(_ESCAPES) for cell in cells)


def on_terminal() -> bool:
    """Whether stdout is a terminal (``TTY_COMPATIBLE`` 1/0 overrides, as for rich)."""
    forced = os.environ.get("TTY_COMPATIBLE", "")
    if forced in ("0", "1"):
        return forced == "1"
    return sys.stdout.isatty()


def _print_table(table: Table) -> None:
    """``table`` drawn on a terminal; piped, its header and rows as whole-cell TSV lines.

    The title goes to stderr when piped, so stdout is only the header and the rows.
    """
    if on_terminal():
        Console(force_terminal=True).print(table)
        return
    if table.title:
        click.echo(str(table.title), err=True)
    click.echo(tsv_line([str(column.header) for column in table.columns]))
    cells = [[str(cell) for cell in column.cells] for column in table.columns]
    for row in zip(*cells, strict=True):
        click.echo(tsv_line(list(row)))


def _when(value: datetime | None) -> str:
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


def _page_table(page: ExecutionPage) -> Table:
    table = Table(title=f"{len(page.items)} executions")
    for name in ("execution_id", "report_id", "status", "trigger", "user", "started (UTC)",
                 "ended (UTC)", "duration_ms", "records", "last event (UTC)"):  # fmt: skip
        table.add_column(name, justify="right" if name in ("duration_ms", "records") else "left")
    for e in page.items:
        table.add_row(
            e.execution_id, e.report_id, e.status.value, e.trigger_type or "",
            "" if e.started_by is None else str(e.started_by), _when(e.start_time),
            _when(e.end_time), "" if e.duration_ms is None else str(e.duration_ms),
            "" if e.records_processed is None else str(e.records_processed),
            _when(e.last_event_at),
        )  # fmt: skip
    return table


@click.command("stats")
@click.option("--since", type=TIME, default="24h", show_default=True,
              help="Executions created at or after (ISO 8601 or 2h, 7d: ago).")  # fmt: skip
@click.option("--until", type=TIME, help="Created before. [default: now]")
@click.option("--report", "report_id", help="Only this report_id.")
@click.option("--json", "as_json", is_flag=True, help="Print {since, until, reports} as JSON.")
def stats_command(
    since: datetime, until: datetime | None, report_id: str | None, as_json: bool
) -> None:
    """Per-report statistics: counts by status, success rate, duration p50/p95/max, records."""
    end = until or datetime.now(UTC)
    _, found = _run(
        lambda engine: report_stats(engine, since=since, until=end, report_id=report_id)
    )
    if as_json:
        document = {"since": since.isoformat(), "until": end.isoformat(),
                    "reports": [s.model_dump(mode="json") for s in found]}  # fmt: skip
        click.echo(json.dumps(document))
        return
    _print_table(_stats_table(found, since, end))


def _stats_table(found: list[ReportStats], since: datetime, until: datetime) -> Table:
    table = Table(title=f"executions created {_when(since)} .. {_when(until)} UTC")
    columns = ["report_id", "name", "total", *(s.value for s in ExecutionStatus),
               "success", "p50 ms", "p95 ms", "max ms", "records"]  # fmt: skip
    for name in columns:
        table.add_column(name, justify="left" if name in ("report_id", "name") else "right")

    def number(value: int | None) -> str:
        return "" if value is None else str(value)

    for s in found:
        rate = "" if s.success_rate is None else f"{s.success_rate:.1%}"
        table.add_row(
            s.report_id, s.name or "", str(s.total), *(str(s.counts[k]) for k in ExecutionStatus),
            rate, number(s.duration_p50_ms), number(s.duration_p95_ms),
            number(s.duration_max_ms), str(s.records_processed),
        )  # fmt: skip
    return table


@click.command("watch")
@click.option("--interval", default=1.0, show_default=True, help="Seconds between refreshes.")
@click.option("--duration", type=float, default=None, help="Stop after this many seconds.")
@click.option(
    "--until-idle",
    type=float,
    default=None,
    help="Stop once the table has not changed for this long.",
)
@filter_options
def watch_command(
    interval: float, duration: float | None, until_idle: float | None, **options: Any
) -> None:
    """Show executions arriving in the table: counts by status and the latest rows.

    With filters: only the executions they select (the options of ``list``).
    """
    flt = build_filter(options)
    settings, counts = _run(
        lambda engine: watch(
            engine, interval_s=interval, duration_s=duration, until_idle_s=until_idle, flt=flt
        )
    )
    click.echo(f"{sum(counts.values())} executions in {settings.database.display_url}: {counts}")


COMMANDS = (list_command, stats_command, watch_command)
"""The read side's commands, added to ``exectrack-consumer`` (exectrack.consumer.cli)."""
