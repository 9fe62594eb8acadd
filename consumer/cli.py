"""``exectrack-consumer``: thin commands over library code (settings -> asyncio.run)."""

from __future__ import annotations

import asyncio
import json
import signal
from typing import Any

import click
from sqlalchemy import select

from consumer.db import migrate as migrations
from consumer.db.engine import create_engine
from consumer.db.repository import EXECUTIONS
from consumer.fold import decode_keys
from consumer.logs import configure_logging
from consumer.service import run_service
from consumer.settings import Settings
from consumer.watch import watch


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """exectrack consumer: fold report execution events from Kafka into MySQL."""


@main.command()
@click.option("--revision", default="head", show_default=True, help="Target alembic revision.")
def migrate(revision: str) -> None:
    """Create or upgrade the schema (alembic upgrade) in EXECTRACK_DATABASE__URL."""
    settings = Settings()
    click.echo(f"migrating {settings.database.display_url} to {revision}")
    asyncio.run(migrations.upgrade(settings.database.url.get_secret_value(), revision))


@main.command()
def consume() -> None:
    """Run the consumer service until SIGTERM/SIGINT (then finish the batch, commit, leave)."""
    settings = Settings()
    configure_logging(settings.log_format, settings.log_level)
    asyncio.run(_consume(settings))


async def _consume(settings: Settings) -> None:
    """Run until a signal; then allow ``shutdown_timeout_s`` to finish the batch and leave."""
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
    click.echo(json.dumps(found, indent=2, default=str))


async def _status(settings: Settings, execution_id: str) -> dict[str, Any] | None:
    engine = create_engine(settings.database)
    try:
        async with engine.connect() as conn:
            query = select(EXECUTIONS).where(EXECUTIONS.c.execution_id == execution_id)
            row = (await conn.execute(query)).mappings().first()
    finally:
        await engine.dispose()
    if row is None:
        return None
    result = dict(row)
    keys = decode_keys(result.pop("fold_keys"))
    result["supplied_by"] = {
        name: {"event_id": k[3], "rank": k[0], "sequence": k[1], "time": k[2].isoformat()}
        for name, k in sorted(keys.items())
    }
    return result


@main.command("watch")
@click.option("--interval", default=1.0, show_default=True, help="Seconds between refreshes.")
@click.option("--duration", type=float, default=None, help="Stop after this many seconds.")
@click.option(
    "--until-idle",
    type=float,
    default=None,
    help="Stop once the table has not changed for this long.",
)
def watch_command(interval: float, duration: float | None, until_idle: float | None) -> None:
    """Show executions arriving in the table: counts by status and the latest rows."""
    settings = Settings()

    async def run() -> dict[str, int]:
        engine = create_engine(settings.database)
        try:
            return await watch(
                engine, interval_s=interval, duration_s=duration, until_idle_s=until_idle
            )
        finally:
            await engine.dispose()

    counts = asyncio.run(run())
    click.echo(f"{sum(counts.values())} executions in {settings.database.display_url}: {counts}")
