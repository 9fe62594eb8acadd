"""Commands ``purge``, ``reap`` and ``retention show|check|reapply`` (docs/retention.md).

Thin, like the rest of exectrack.consumer.cli: build the settings, ``asyncio.run`` a
library function, print its summary (text, or ``--json``). Progress goes to
stderr (rich) and is off when stderr is not a terminal unless asked for.
Errors are one line: a bad policy file (``PolicyFileError`` is a click
exception), a database or broker that cannot be reached.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from aiokafka.errors import KafkaError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from exectrack.consumer.db.engine import with_engine
from exectrack.consumer.failures import database_failure, database_reason
from exectrack.consumer.logs import configure_logging
from exectrack.consumer.retention.policy import RetentionPolicy, parse_period
from exectrack.consumer.retention.policy_file import load_policy_file
from exectrack.consumer.retention.purge import PurgeOptions, PurgeSummary, purge
from exectrack.consumer.retention.reap import reap
from exectrack.consumer.retention.reapply import count_rows, reapply
from exectrack.consumer.settings import Settings
from exectrack.producer.diagnose import explain_kafka
from exectrack.producer.errors import PublishError

T = TypeVar("T")
progress_option = click.option(
    "--progress/--no-progress",
    default=None,
    help="Progress bar on stderr. [default: when stderr is a terminal]",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")


def _settings() -> Settings:
    settings = Settings()  # a bad policy file raises a one-line click error here
    configure_logging(settings.log_format, "warning" if sys.stderr.isatty() else settings.log_level)
    return settings


def _run(settings: Settings, job: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    try:
        return asyncio.run(with_engine(settings.database, job))
    except SQLAlchemyError as exc:
        error = getattr(exc, "orig", None) or exc
        if database_reason(exc, settings.database)[1]:  # credentials or TLS: say which
            error = database_failure(exc, settings.database)
        raise click.ClickException(f"database {settings.database.display_url}: {error}") from None
    except (KafkaError, PublishError) as exc:
        error = explain_kafka(exc, settings.kafka) or exc
        raise click.ClickException(f"kafka {settings.kafka.bootstrap_servers}: {error}") from None


def _progress(enabled: bool | None, what: str) -> Progress:
    shown = sys.stderr.isatty() if enabled is None else enabled
    return Progress(
        TextColumn(what), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"), TimeRemainingColumn(),
        console=Console(stderr=True), disable=not shown, transient=False,
    )  # fmt: skip


def _echo(summary: Any, as_json: bool) -> None:
    click.echo(json.dumps(summary.as_dict(), default=str) if as_json else summary.render())


# ---------------------------------------------------------------- purge
@click.command("purge")
@click.option("--chunk-size", type=click.IntRange(1, 50_000), help="Rows per DELETE transaction.")
@click.option("--pause-ms", type=click.IntRange(0), help="Sleep between chunks.")
@click.option("--max-rows", type=click.IntRange(1), help="Stop after deleting this many rows.")
@click.option(
    "--dry-run", is_flag=True, help="Count what would be deleted, per report_type/status."
)
@progress_option
@json_option
def purge_command(
    chunk_size: int | None, pause_ms: int | None, max_rows: int | None, dry_run: bool,
    progress: bool | None, as_json: bool,
) -> None:  # fmt: skip
    """Delete executions whose retention_until has passed (held ones stay), in short chunks.

    Defaults come from EXECTRACK_PURGE_CHUNK_SIZE and EXECTRACK_PURGE_PAUSE_MS.
    Exit 0 also when another purge holds the lock (outcome busy).
    """
    settings = _settings()
    options = PurgeOptions(
        chunk_size=chunk_size or settings.purge_chunk_size,
        pause_ms=settings.purge_pause_ms if pause_ms is None else pause_ms,
        max_rows=max_rows,
        dry_run=dry_run,
        tombstone_ttl_s=settings.tombstone_ttl_s or None,
    )
    bar = _progress(False if dry_run else progress, "purging")
    with bar:
        task = bar.add_task("purge", total=None, rate="")

        def started(summary: PurgeSummary) -> None:
            total = summary.expired if max_rows is None else min(max_rows, summary.expired)
            bar.update(task, total=total)

        def chunk(deleted: int) -> None:
            elapsed = bar.tasks[0].elapsed or 0
            rate = f"{deleted / elapsed:,.0f} rows/s" if elapsed > 0 else ""
            bar.update(task, completed=deleted, rate=rate)

        summary = _run(
            settings,
            lambda engine: purge(
                engine,
                settings.retention,
                options,
                on_start=started if not bar.disable else None,
                on_chunk=chunk,
            ),
        )
    _echo(summary, as_json)


# ---------------------------------------------------------------- reap
def _seconds(_: Any, __: Any, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        period = parse_period(value if not value.isdigit() else int(value))
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if not period:
        raise click.BadParameter("must be a positive duration")
    return period.total_seconds()


@click.command("reap")
@click.option(
    "--after", callback=_seconds, help="Stale after this long without an event ('6h', "
    "'PT6H', seconds). [default: EXECTRACK_REAP_AFTER_S]",
)  # fmt: skip
@click.option("--limit", type=click.IntRange(1), help="Publish at most this many events.")
@click.option("--dry-run", is_flag=True, help="List the stale executions; publish nothing.")
@json_option
def reap_command(after: float | None, limit: int | None, dry_run: bool, as_json: bool) -> None:
    """Publish exectrack.execution.timed_out for pending/running executions gone quiet.

    Events go to the events topic (key = execution_id, source
    /services/exectrack-reaper, no sequence); the consumer folds them.
    """
    settings = _settings()
    window = after or settings.reap_after_s
    summary = _run(
        settings,
        lambda engine: reap(engine, settings.kafka, after_s=window, dry_run=dry_run, limit=limit),
    )
    _echo(summary, as_json)


# ---------------------------------------------------------------- retention
@click.group("retention")
def retention_group() -> None:
    """Inspect the retention policy and apply it to stored rows."""


@retention_group.command("show")
def show_command() -> None:
    """Print the effective policy (file, then EXECTRACK_RETENTION overrides)."""
    settings = _settings()
    source = settings.retention_file or "built-in defaults and the environment"
    click.echo(f"# retention policy from {source}")
    click.echo("\n".join(settings.retention.describe()))


@retention_group.command("check")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def check_command(path: Path) -> None:
    """Check a policy file without starting anything (exit 1 with file:line: reason)."""
    policy = RetentionPolicy.model_validate(load_policy_file(path))
    click.echo(f"{path}: ok")
    click.echo("\n".join(policy.describe()))


@retention_group.command("reapply")
@click.option("--report", "report_ids", multiple=True, help="Only this report's executions.")
@click.option("--batch-size", default=1000, show_default=True, type=click.IntRange(1, 50_000))
@click.option("--dry-run", is_flag=True, help="Count the rows that would change; write nothing.")
@progress_option
@json_option
def reapply_command(
    report_ids: tuple[str, ...], batch_size: int, dry_run: bool, progress: bool | None,
    as_json: bool,
) -> None:  # fmt: skip
    """Recompute retention_until of stored rows under the current policy.

    Exactly what the fold would write: an explicit retention_until carried by
    an event stays; otherwise (end_time or the terminal event's time) + period.
    Run it after changing the policy, or with --report after a report's
    definition arrived later than its executions.
    """
    settings = _settings()
    bar = _progress(progress, "reapplying")

    async def job(engine: AsyncEngine) -> Any:
        task = bar.add_task("reapply", total=None, rate="")
        if not bar.disable:
            bar.update(task, total=await count_rows(engine, report_ids or None))

        def batch(scanned: int, changed: int) -> None:
            bar.advance(task, scanned)

        return await reapply(
            engine, settings.retention, report_ids=report_ids or None,
            batch_size=batch_size, dry_run=dry_run, on_batch=batch,
        )  # fmt: skip

    with bar:
        summary = _run(settings, job)
    _echo(summary, as_json)


COMMANDS = (purge_command, reap_command, retention_group)
