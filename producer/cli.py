"""``exectrack-producer``: emit lifecycle events, simulate load."""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """exectrack producer: publish report execution events to Kafka."""
