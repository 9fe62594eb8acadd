"""``exectrack-consumer``: thin commands over library code (settings -> asyncio.run)."""

from __future__ import annotations

import asyncio

import click

from consumer.db import migrate as migrations
from consumer.settings import Settings


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
