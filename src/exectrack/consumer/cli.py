"""``exectrack-consumer``: thin commands over library code (settings -> asyncio.run).

The failure surface (docs/operations.md, "When a command fails"): every command
logs through ``exectrack.consumer.logs`` (JSON lines unless stderr is a terminal), and
ends a failure with ONE error line naming the cause, no traceback:

- invalid settings (``invalid_settings``, the variable and what is wrong): exit 2;
- Kafka or the database unusable (``connect_failed``: service, target, reason),
  the service unable to start (``topic_missing``, ``health_server_failed``): exit 1;
- any other command error (``command_failed``): its exit status (1 unless said);
- anything unforeseen (``crashed``, with the traceback as the ``exception``
  field, one JSON string): exit 1.

On a terminal (``EXECTRACK_LOG_FORMAT=console``) a command error reads as click's
``Error: ...``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from datetime import datetime
from typing import Any, NoReturn

import click
import structlog
from aiokafka.errors import KafkaError
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from exectrack.consumer.db import migrate as migrations
from exectrack.consumer.db.engine import create_engine
from exectrack.consumer.db.repository import EXECUTIONS
from exectrack.consumer.dlq.cli import COMMANDS as DLQ_COMMANDS
from exectrack.consumer.errors import DatabaseTlsError, StartupFailed
from exectrack.consumer.failures import check_database, explain
from exectrack.consumer.logs import configure_from_environment, configure_logging, json_wanted
from exectrack.consumer.read.cli import COMMANDS as READ_COMMANDS
from exectrack.consumer.read.queries import get_execution
from exectrack.consumer.replay import rebuild as replaying
from exectrack.consumer.replay.verify import verify
from exectrack.consumer.retention.cli import COMMANDS as RETENTION_COMMANDS
from exectrack.consumer.service import run_service
from exectrack.consumer.settings import Settings
from exectrack.consumer.workers import supervise, worker_port
from exectrack.consumer.workers.child import become_worker
from exectrack.producer.errors import ConnectFailed, PublishError

log = structlog.get_logger("exectrack.consumer.cli")

# what a command may die of when Kafka or the database cannot be used (exectrack.consumer.failures)
CONNECTION_ERRORS = (KafkaError, PublishError, SQLAlchemyError, DatabaseTlsError, OSError)


def settings_problems(exc: ValidationError) -> str:
    """One line from a settings ``ValidationError``: ``EXECTRACK_X__Y: what is wrong; ...``.

    Never the values (they may be secrets): pydantic's ``input`` is left out.
    """
    problems = []
    for error in exc.errors():
        message = error["msg"].removeprefix("Value error, ")
        name = "EXECTRACK_" + "__".join(str(part).upper() for part in error["loc"])
        problems.append(message if "EXECTRACK_" in message else f"{name}: {message}")
    return "; ".join(problems)


def _fail(event: str, exit_code: int, **fields: Any) -> NoReturn:
    log.error(event, **fields)
    raise click.exceptions.Exit(exit_code)


class _Commands(click.Group):
    """Every command ends a failure with one log line and a non-zero exit, no traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ValidationError as exc:  # the settings; never echo their values (secrets)
            _fail("invalid_settings", 2, error=settings_problems(exc))
        except StartupFailed as exc:
            _fail(exc.event, 1, error=str(exc))
        except (click.exceptions.Exit, click.Abort, click.UsageError):
            raise
        except click.ClickException as exc:
            if not json_wanted(_log_format()):
                raise
            _fail("command_failed", exc.exit_code, error=exc.format_message())
        except (ConnectFailed, *CONNECTION_ERRORS) as exc:
            failure = explain(exc, Settings())
            if failure is None:
                _crashed(exc)
            _fail(
                "connect_failed", 1, error=str(failure), service=failure.service,
                target=failure.target, reason=failure.reason,
            )  # fmt: skip
        except Exception as exc:
            _crashed(exc)


def _crashed(exc: BaseException) -> NoReturn:
    log.error("crashed", error=f"{type(exc).__name__}: {exc}", exc_info=exc)
    raise click.exceptions.Exit(1)


def _log_format() -> str:
    return os.environ.get("EXECTRACK_LOG_FORMAT", "auto").lower()


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="exectrack", prog_name="exectrack-consumer")
def main() -> None:
    """exectrack consumer: fold report execution events from Kafka into MySQL."""
    configure_from_environment()


@main.command()
@click.option("--revision", default="head", show_default=True, help="Target alembic revision.")
def migrate(revision: str) -> None:
    """Create or upgrade the schema (alembic upgrade) in EXECTRACK_DATABASE__URL."""
    settings = Settings()
    _note_url(settings)
    asyncio.run(migrations.upgrade(settings.database.url.get_secret_value(), revision))
    log.info("migrated", db=settings.database.display_url, revision=revision)


def _note_url(settings: Settings) -> None:
    if settings.database.url_rewritten:
        log.info(
            "database_url_completed", db=settings.database.display_url,
            detail="EXECTRACK_DATABASE__URL names no driver: using mysql+aiomysql",
        )  # fmt: skip


@main.command()
@click.option(
    "--workers", type=click.IntRange(min=1), default=1, show_default=True,
    envvar="EXECTRACK_WORKERS", show_envvar=True,
    help="Group members as processes under one supervisor (docs/operations.md, Scaling).",
)  # fmt: skip
@click.option("--worker-index", type=click.IntRange(min=0), hidden=True)  # set by the supervisor
@click.option("--supervisor-pid", type=int, hidden=True)
def consume(workers: int, worker_index: int | None, supervisor_pid: int | None) -> None:
    """Run the consumer service until SIGTERM/SIGINT (then finish the batch, commit, leave).

    With --workers N > 1, a supervisor runs N consume processes in the group,
    restarts one that exits with backoff and forwards SIGTERM/SIGINT to all.
    """
    settings = Settings()
    configure_logging(settings.log_format, settings.log_level)
    _note_url(settings)
    if workers > 1:
        _check_ports(settings, workers)
        raise click.exceptions.Exit(asyncio.run(supervise(settings, workers)))
    if worker_index is not None:
        become_worker(worker_index, supervisor_pid)
    asyncio.run(_consume(settings))


def _check_ports(settings: Settings, workers: int) -> None:
    last = worker_port(settings.health_port, workers - 1)
    if last > 65535:
        raise click.UsageError(
            f"--workers {workers} needs health ports {settings.health_port}..{last} "
            "(EXECTRACK_HEALTH_PORT + 1 + worker index): lower EXECTRACK_HEALTH_PORT, "
            "or 0 for none"
        )


async def _consume(settings: Settings) -> None:
    """Run until a signal; then allow ``shutdown_timeout_s`` to finish the batch and leave."""
    await check_database(settings.database)  # wrong credentials or TLS: stop now, not retry
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    service = asyncio.create_task(run_service(settings, stop=stop))
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait({service, stopped}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    try:
        await asyncio.wait_for(service, timeout=settings.shutdown_timeout_s)
    except TimeoutError:
        raise click.ClickException(
            f"did not stop within {settings.shutdown_timeout_s}s; offsets of the batch in "
            "flight are not committed (its events will be re-read: writes are idempotent)"
        ) from None


@main.command()
@click.argument("execution_id")
def status(execution_id: str) -> None:
    """Print an execution's row and which event supplied each field."""
    settings = Settings()
    found = asyncio.run(_status(settings, execution_id))
    if found is None:
        raise click.ClickException(
            f"no execution {execution_id!r} in {settings.database.display_url}"
        )
    click.echo(json.dumps(found, indent=2, default=_json_default))


def _json_default(value: object) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)


async def _status(settings: Settings, execution_id: str) -> dict[str, Any] | None:
    """The row's columns in table order (``fold_keys`` decoded as ``supplied_by``)."""
    engine = create_engine(settings.database)
    try:
        detail = await get_execution(engine, execution_id)
    finally:
        await engine.dispose()
    if detail is None:
        return None
    values = detail.model_dump(exclude={"provenance"})
    result = {name: values[name] for name in _STATUS_COLUMNS}
    result["supplied_by"] = {
        name: {"event_id": s.event_id, "rank": s.rank, "sequence": s.sequence,
               "time": s.time.isoformat()}
        for name, s in detail.provenance.items()
    }  # fmt: skip
    return result


_STATUS_COLUMNS = tuple(c.name for c in EXECUTIONS.columns if c.name != "fold_keys")


@main.command("replay")
@click.option("--target-url", help="Database to rebuild into. [default: EXECTRACK_DATABASE__URL]")
@click.option("--from-time", help="Start at the first record at or after this RFC 3339 time.")
@click.option("--partitions", help="Comma-separated partitions, in replay order. [default: all]")
@click.option("--sequential", is_flag=True, help="Replay one partition after another.")
@click.option("--merge", is_flag=True, help="Allow a target that already holds executions.")
@click.option("--dead-letter", is_flag=True, help="Send invalid records to the DLQ again.")
@click.option("--verify", "then_verify", is_flag=True, help="Then compare with --live-url.")
@click.option("--live-url", help="Live database for --verify. [default: EXECTRACK_DATABASE__URL]")
@click.option("--progress/--no-progress", default=True, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def replay_command(
    target_url: str | None, from_time: str | None, partitions: str | None, sequential: bool,
    merge: bool, dead_letter: bool, then_verify: bool, live_url: str | None, progress: bool,
    as_json: bool,
) -> None:  # fmt: skip
    """Rebuild the tables from the topic up to its current end (docs/replay.md).

    Reads without a consumer group (the live group's offsets stay as they are) and
    writes through the consumer's batch path. Exit 1 if --verify finds differences.
    """
    settings = Settings()
    configure_logging(settings.log_format, settings.log_level)
    configured = settings.database.url.get_secret_value()
    live, target = live_url or configured, target_url or configured
    try:
        options = replaying.ReplayOptions(
            target_url=target_url,
            from_time=replaying.parse_time(from_time) if from_time else None,
            partitions=tuple(int(p) for p in partitions.split(",")) if partitions else None,
            sequential=sequential, merge=merge, dead_letter=dead_letter,
        )  # fmt: skip
        if then_verify and target == live:
            raise replaying.ReplayError("--verify needs a --target-url other than the live one")
        summary = asyncio.run(replaying.replay(settings, options, progress=progress))
    except (ValueError, KafkaError) as exc:  # ReplayError is a ValueError
        failure = explain(exc, settings) if isinstance(exc, CONNECTION_ERRORS) else None
        raise click.ClickException(str(failure or exc)) from None
    click.echo(json.dumps(summary.as_dict()) if as_json else summary.render())
    if then_verify:
        _verify(settings, live, target, newer=summary.captured_at)


@main.command("verify")
@click.option("--rebuilt-url", required=True, help="The database a replay rebuilt.")
@click.option("--live-url", help="The live database. [default: EXECTRACK_DATABASE__URL]")
@click.option("--ignore-newer-than", help="Skip executions with events at/after this time.")
@click.option("--max-shown", default=20, show_default=True, help="Differences listed per table.")
def verify_command(
    rebuilt_url: str, live_url: str | None, ignore_newer_than: str | None, max_shown: int
) -> None:
    """Compare reports and report_executions row by row: exit 0 if equal, 1 on any
    difference, 2 if the comparison could not be made."""
    settings = Settings()
    live = live_url or settings.database.url.get_secret_value()
    _verify(settings, live, rebuilt_url, newer=ignore_newer_than, max_shown=max_shown)


def _verify(settings: Settings, live: str, rebuilt: str, newer: Any, **options: Any) -> None:
    try:
        if isinstance(newer, str):
            newer = replaying.parse_time(newer)
        report = asyncio.run(
            verify(settings.database, live, rebuilt, ignore_newer_than=newer, **options)
        )
    except (ValueError, SQLAlchemyError) as exc:
        click.echo(f"Error: cannot verify: {getattr(exc, 'orig', None) or exc}", err=True)
        raise SystemExit(2) from None
    click.echo(report.render())
    if not report.ok:
        raise SystemExit(1)


@main.command("serve")
@click.option("--host", help="Address to listen on. [default: EXECTRACK_READ__HOST, 127.0.0.1]")
@click.option("--port", type=int, help="Port. [default: EXECTRACK_READ__PORT, 8081]")
def serve_command(host: str | None, port: int | None) -> None:
    """Serve the read-only HTTP API and the web page until SIGTERM/SIGINT (docs/read/api.md).

    Bound to another address than loopback, it needs EXECTRACK_READ__TOKENS.
    """
    from exectrack.consumer.read.serve import serve

    settings = Settings()
    overrides = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    if overrides:
        read = settings.read.model_validate({**settings.read.model_dump(), **overrides})
        settings = settings.model_copy(update={"read": read})
    configure_logging(settings.log_format, settings.log_level)
    serve(settings)


for _command in RETENTION_COMMANDS:  # purge, reap, retention (exectrack.consumer.retention.cli)
    main.add_command(_command)
for _command in READ_COMMANDS:  # list, stats, watch (exectrack.consumer.read.cli)
    main.add_command(_command)
for _command in DLQ_COMMANDS:  # dlq list|show|redrive (exectrack.consumer.dlq.cli)
    main.add_command(_command)


if __name__ == "__main__":  # python -m exectrack.consumer.cli
    main()
