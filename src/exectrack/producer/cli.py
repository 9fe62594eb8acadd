"""``exectrack-producer``: emit lifecycle events, simulate load.

Both commands read ``ProducerSettings`` from the environment once
(``EXECTRACK_KAFKA__BOOTSTRAP_SERVERS``, ``EXECTRACK_KAFKA__TOPIC``,
``EXECTRACK_SOURCE``, ...) and run one library coroutine with
``asyncio.run``. Exit codes: 0 done, 1 the broker did not take it, 2 bad
input (the one-line error names the ``InvalidReason``).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Protocol, Self

import click
import orjson
from aiokafka.errors import KafkaError

from exectrack.producer.diagnose import explain_kafka
from exectrack.producer.errors import InvalidEvent, PublishError
from exectrack.producer.events import (
    EXECUTION_TYPES,
    Event,
    EventType,
    execution_event,
    loads_json,
    parse_event,
    report_defined_event,
)
from exectrack.producer.publisher import Delivery, Publisher, ensure_topics
from exectrack.producer.settings import KafkaSettings, ProducerSettings
from exectrack.producer.simulate import RawSink, SimConfig, run_simulation

__all__ = ["Deps", "main"]

_SHORT = {
    (t.value.rsplit(".", 1)[-1] if t in EXECUTION_TYPES else "report.defined"): t for t in EventType
}
_REPORT_REQUIRED = ("version", "name", "report_type", "category", "provider")


class CliPublisher(RawSink, Protocol):
    """``Publisher``, or an ``InMemoryPublisher`` in tests."""

    async def publish(self, event: Event, /) -> Delivery:
        """Send one event and wait for the acknowledgement (``Publisher.publish``)."""

    async def __aenter__(self) -> Self: ...
    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


def _settings() -> ProducerSettings:
    return ProducerSettings()


def _publisher(settings: ProducerSettings) -> CliPublisher:
    return Publisher(settings)


@dataclass
class Deps:
    """What the commands build; tests swap in an ``InMemoryPublisher`` (``obj=Deps(...)``)."""

    settings: Callable[[], ProducerSettings] = _settings
    publisher: Callable[[ProducerSettings], CliPublisher] = _publisher
    ensure_topics: Callable[[KafkaSettings], Awaitable[list[str]]] = ensure_topics


def _fail(message: str, code: int) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _publish_failed(exc: Exception, settings: ProducerSettings) -> None:
    """One line and exit 1; a connection failure (credentials, TLS) names its cause."""
    failure = explain_kafka(exc, settings.kafka)
    if failure is not None:
        _fail(str(failure), 1)
    _fail(f"publish failed: {exc}{_hint(exc, settings.kafka.topic)}", 1)


def _hint(exc: Exception, topic: str) -> str:
    if "UnknownTopicOrPartition" in str(exc):
        return f" (does topic {topic!r} exist? --create-topics creates it)"
    return ""


def _parse_field(text: str) -> tuple[str, Any]:
    name, sep, raw = text.partition("=")
    if not sep or not name:
        raise click.BadParameter(f"{text!r} is not NAME=VALUE", param_hint="--field")
    try:
        return name, loads_json(raw)  # integers of any size exactly
    except orjson.JSONDecodeError:
        return name, raw  # not JSON: a plain string


def _build(
    type_name: str, execution_id: str | None, report_id: str | None, sequence: int | None,
    fields: dict[str, Any], source: str,
) -> Event:  # fmt: skip
    event_type = _SHORT.get(type_name) or EventType(type_name)
    if report_id is None:
        raise click.UsageError("--report-id is required (or give a whole event with --stdin)")
    envelope = {name: fields.pop(name) for name in ("time", "id") if name in fields}
    if event_type is EventType.REPORT_DEFINED:
        missing = [name for name in _REPORT_REQUIRED if name not in fields]
        if missing:
            fields_hint = ", ".join(f"--field {name}=..." for name in missing)
            raise click.UsageError(f"report.defined needs {fields_hint}")
        return report_defined_event(source=source, report_id=report_id, **envelope, **fields)
    return execution_event(
        event_type,
        execution_id=execution_id or str(uuid.uuid4()),
        report_id=report_id,
        source=source,
        sequence=sequence,
        **envelope,
        **fields,
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="exectrack", prog_name="exectrack-producer")
@click.option("-v", "--verbose", is_flag=True, help="Show the Kafka client's own log lines.")
@click.pass_context
def main(ctx: click.Context, verbose: bool) -> None:
    """exectrack producer: publish report execution events to Kafka.

    Settings come from the environment: EXECTRACK_KAFKA__BOOTSTRAP_SERVERS,
    EXECTRACK_KAFKA__TOPIC, EXECTRACK_SOURCE, ... (see docs/events.md).
    """
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING)
    if not verbose:  # aiokafka repeats every retry as a warning; our errors say it once
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    if not isinstance(ctx.obj, Deps):
        ctx.obj = Deps()


@main.command()
@click.option(
    "--type",
    "type_name",
    type=click.Choice([*_SHORT, *map(str, EventType)]),
    default="pending",
    show_default=True,
    help="Event type (short or full name).",
)
@click.option("--execution-id", help="Defaults to a new uuid4 (printed).")
@click.option("--report-id", help="Required unless --stdin.")
@click.option("--sequence", type=click.IntRange(min=0), help="Per-execution sequence number.")
@click.option(
    "--field",
    "field_args",
    multiple=True,
    metavar="NAME=VALUE",
    help="A data field (also time=, id=); VALUE is JSON if it parses, else a string.",
)
@click.option("--stdin", "from_stdin", is_flag=True, help="Read one whole event (JSON) from stdin.")
@click.option("--create-topics", is_flag=True, help="Create the topic and its DLQ if missing.")
@click.pass_obj
def emit(
    deps: Deps, type_name: str, execution_id: str | None, report_id: str | None,
    sequence: int | None, field_args: tuple[str, ...], from_stdin: bool, create_topics: bool,
) -> None:  # fmt: skip
    """Validate and publish one event; print where it landed."""
    settings = deps.settings()
    try:
        if from_stdin:
            event = parse_event(sys.stdin.buffer.read())
        else:
            fields = dict(_parse_field(text) for text in field_args)
            event = _build(type_name, execution_id, report_id, sequence, fields, settings.source)
    except InvalidEvent as exc:
        _fail(str(exc), 2)
        return
    except TypeError as exc:  # e.g. a --field that is also an option
        _fail(f"invalid_field: {exc}", 2)
        return

    async def publish() -> Delivery:
        if create_topics:
            await deps.ensure_topics(settings.kafka)
        async with deps.publisher(settings) as pub:
            return await pub.publish(event)

    try:
        delivery = asyncio.run(publish())
    except (PublishError, KafkaError, OSError) as exc:
        _publish_failed(exc, settings)
        return
    click.echo(
        f"topic={delivery.topic} partition={delivery.partition} offset={delivery.offset} "
        f"type={event.type} id={event.id} key={event.key.decode()}"
    )


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@main.command()
@click.option("--executions", type=click.IntRange(min=0), default=1000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    help="Messages per second (default: as fast as the broker takes them).",
)
@click.option("--reports", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--users", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--duplicate-ratio", type=click.FloatRange(0, 1), default=0.01, show_default=True)
@click.option("--reorder-ratio", type=click.FloatRange(0, 1), default=0.1, show_default=True)
@click.option("--invalid-ratio", type=click.FloatRange(0, 1), default=0.01, show_default=True)
@click.option("--progress/--no-progress", default=True, show_default=True)
@click.option(
    "--start",
    type=click.DateTime(formats=["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S"]),
    default=None,
    help="Time of the first event (RFC 3339; naive means UTC). Default: now, so that the "
    "executions are recent and not already past their retention.",
)
@click.option(
    "--create-topics/--no-create-topics",
    default=True,
    show_default=True,
    help="Create the topic and its dead-letter topic if missing.",
)
@click.pass_obj
def simulate(
    deps: Deps, executions: int, seed: int, rate: float | None, reports: int, users: int,
    duplicate_ratio: float, reorder_ratio: float, invalid_ratio: float, progress: bool,
    start: datetime | None, create_topics: bool,
) -> None:  # fmt: skip
    """Publish a deterministic simulation (same seed, same bytes) and print the achieved rate."""
    settings = deps.settings()
    config = SimConfig(
        executions=executions,
        seed=seed,
        reports=reports,
        users=users,
        duplicate_ratio=duplicate_ratio,
        reorder_ratio=reorder_ratio,
        invalid_ratio=invalid_ratio,
        source=settings.source,
        start=datetime.now(UTC) if start is None else _utc(start),
    )

    async def run() -> int:
        if create_topics:
            created = await deps.ensure_topics(settings.kafka)
            if created:
                click.echo(f"created topics: {', '.join(created)}")
        async with deps.publisher(settings) as pub:
            report = await run_simulation(pub, config, rate=rate, progress=progress)
        return report.failed

    try:
        failed = asyncio.run(run())
    except (PublishError, KafkaError, OSError) as exc:
        _publish_failed(exc, settings)
        return
    if failed:
        sys.exit(1)
