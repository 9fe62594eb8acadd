"""Commands ``dlq list``, ``dlq show`` and ``dlq redrive`` (docs/read/dead-letters.md).

Thin, like the rest of exectrack.consumer.cli: build the settings, ``asyncio.run`` a
library function (``exectrack.consumer.dlq.browse``, ``exectrack.consumer.dlq.redrive``),
print the result as text or ``--json``. Errors end in one line: no dead-letter
topic, a partition it lacks, a broker or database that cannot be used.
"""

from __future__ import annotations

import asyncio
import json
import string
import sys
from collections.abc import Coroutine, Sequence
from datetime import datetime
from typing import Any, TypeVar

import click
from aiokafka.errors import KafkaError

from exectrack.consumer.db.engine import with_engine
from exectrack.consumer.dlq import browse
from exectrack.consumer.dlq.browse import DeadLetterRecord, DeadLetterView
from exectrack.consumer.dlq.letter import HEADER_PREFIX
from exectrack.consumer.dlq.redrive import RedriveSummary, Selection, redrive
from exectrack.consumer.errors import DeadLetterTopicMissing
from exectrack.consumer.logs import configure_logging
from exectrack.consumer.settings import Settings
from exectrack.producer.diagnose import explain_kafka
from exectrack.producer.errors import PublishError

__all__ = ["COMMANDS", "dlq_group", "parse_location", "parse_offsets"]

T = TypeVar("T")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON, for scripts.")
TEXT_CELL = 48  # characters of a key or detail shown in a ``dlq list`` row


def _settings() -> Settings:
    settings = Settings()
    configure_logging(settings.log_format, "warning" if sys.stderr.isatty() else settings.log_level)
    return settings


def _run(settings: Settings, job: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(job)``; the failures a user can act on become one-line click errors."""
    try:
        return asyncio.run(job)
    except DeadLetterTopicMissing as exc:
        raise click.ClickException(str(exc)) from None
    except TimeoutError:
        raise click.ClickException(
            f"kafka {settings.kafka.bootstrap_servers}: reading {settings.kafka.dlq_topic} "
            "timed out"
        ) from None
    except (KafkaError, PublishError) as exc:
        error = explain_kafka(exc, settings.kafka) or exc
        raise click.ClickException(f"kafka {settings.kafka.bootstrap_servers}: {error}") from None


def _cell(text: str | None, width: int = TEXT_CELL) -> str:
    if text is None:
        return "-"
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _time(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    """Left-aligned columns, two spaces apart, the last one unpadded."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)


@click.group("dlq")
def dlq_group() -> None:
    """Dead letters: list them, show one, redrive them to the events topic.

    Reads EXECTRACK_KAFKA__DLQ_TOPIC without a consumer group (nobody's offsets
    move). See docs/read/dead-letters.md.
    """


# ---------------------------------------------------------------- list
@dlq_group.command("list")
@click.option(
    "--limit", type=click.IntRange(1, browse.MAX_LIMIT), default=20, show_default=True,
    help="Show at most this many, newest first.",
)  # fmt: skip
@click.option("--reason", help="Only this reason (exectrack.dlq.reason: not_json, db_refused...).")
@json_option
def list_command(limit: int, reason: str | None, as_json: bool) -> None:
    """The latest dead letters: where, when, why, the key and the source record."""
    settings = _settings()
    views = _run(settings, browse.latest_dead_letters(settings.kafka, limit=limit, reason=reason))
    if as_json:
        click.echo(json.dumps([v.model_dump(mode="json") for v in views]))
        return
    if not views:
        which = f" with reason {reason}" if reason else ""
        click.echo(f"no dead letters{which} in {settings.kafka.dlq_topic}")
        return
    click.echo(
        table(
            [_row(v) for v in views],
            ("PARTITION:OFFSET", "DEAD-LETTERED", "REASON", "KEY", "SOURCE", "DETAIL"),
        )
    )
    click.echo(f"{len(views)} latest dead letters in {settings.kafka.dlq_topic}")


def _row(view: DeadLetterView) -> list[str]:
    source = (
        f"{view.source_topic}:{view.source_partition}:{view.source_offset}"
        if view.source_topic is not None
        else "-"
    )
    return [
        f"{view.partition}:{view.offset}", _time(view.timestamp), view.reason or "-",
        _cell(view.key, 40), source, _cell(view.detail),
    ]  # fmt: skip


# ---------------------------------------------------------------- show
def parse_location(text: str) -> tuple[str | None, int, int]:
    """``TOPIC:PARTITION:OFFSET`` or ``PARTITION:OFFSET`` -> (topic or None, partition, offset).

    A topic name holds no ``:`` (Kafka's legal characters are ``[a-zA-Z0-9._-]``).

    Raises:
        ValueError: not of that form, or a negative number.
    """
    parts = text.rsplit(":", 2)
    if len(parts) == 2:
        parts.insert(0, "")
    topic, partition, offset = parts if len(parts) == 3 else ("", "", "")
    if not (partition.isdigit() and offset.isdigit()):
        raise ValueError(f"{text!r} is not TOPIC:PARTITION:OFFSET (or PARTITION:OFFSET)")
    return topic or None, int(partition), int(offset)


@dlq_group.command("show")
@click.argument("location", required=False)
@click.option("--partition", type=click.IntRange(0), help="Partition of the dead-letter topic.")
@click.option("--offset", type=click.IntRange(0), help="Offset in that partition.")
@json_option
def show_command(
    location: str | None, partition: int | None, offset: int | None, as_json: bool
) -> None:
    """One dead letter in full: LOCATION is TOPIC:PARTITION:OFFSET (as `dlq list` shows
    PARTITION:OFFSET of EXECTRACK_KAFKA__DLQ_TOPIC), or give --partition and --offset.

    Prints its headers (the record's own, then the exectrack.dlq.* ones), key and
    value as text, or as hex when they are not UTF-8. Exit 1 if there is no such record.
    """
    settings = _settings()
    topic = settings.kafka.dlq_topic
    if location is not None:
        if partition is not None or offset is not None:
            raise click.UsageError("give LOCATION or --partition/--offset, not both")
        try:
            named, partition, offset = parse_location(location)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="LOCATION") from None
        topic = named or topic
    if partition is None or offset is None:
        raise click.UsageError("give LOCATION, or both --partition and --offset")
    kafka = settings.kafka.model_copy(update={"dlq_topic": topic})
    try:
        found = _run(settings, browse.read_dead_letters(kafka, {partition: (offset, offset + 1)}))
    except ValueError as exc:  # a partition the topic lacks
        raise click.ClickException(str(exc)) from None
    if not found:
        raise click.ClickException(
            f"no record at {topic}:{partition}:{offset} (beyond the end, deleted by "
            "retention, or a transaction marker)"
        )
    (letter,) = found
    click.echo(json.dumps(letter_json(letter)) if as_json else render_letter(letter))


def _is_text(raw: bytes) -> bool:
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(ch.isprintable() or ch in string.whitespace for ch in decoded)


def hexdump(raw: bytes) -> str:
    """16 bytes a line: offset, hex, printable ASCII (``.`` for the rest)."""
    lines = []
    for at in range(0, len(raw), 16):
        chunk = raw[at : at + 16]
        ascii_ = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{at:08x}  {chunk.hex(' '):<47}  {ascii_}")
    return "\n".join(lines)


def _bytes_json(raw: bytes | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    text = raw.decode("utf-8") if _is_text(raw) else None
    return {"bytes": len(raw), "text": text, "hex": None if text is not None else raw.hex()}


def letter_json(letter: DeadLetterRecord) -> dict[str, Any]:
    """The whole record as JSON: ``view`` fields, then key/value/headers as text or hex."""
    return {
        **letter.view().model_dump(mode="json", exclude={"value_preview", "headers"}),
        "key": _bytes_json(letter.key),
        "value": _bytes_json(letter.value),
        "headers": [{"name": k, **(_bytes_json(v) or {})} for k, v in letter.headers],
    }


def _shown(raw: bytes | None) -> str:
    if raw is None:
        return "null"
    if _is_text(raw):
        return raw.decode("utf-8")
    return f"({len(raw)} bytes, not UTF-8 text)\n{hexdump(raw)}"


def render_letter(letter: DeadLetterRecord) -> str:
    """The text ``dlq show`` prints."""
    view = letter.view()
    source = f"{view.source_topic}:{view.source_partition}:{view.source_offset}"
    facts = [
        ("dead letter", f"{letter.topic}:{letter.partition}:{letter.offset}"),
        ("timestamp", _time(view.timestamp)),
        ("reason", view.reason or "- (no exectrack.dlq.reason: not written by exectrack)"),
        ("source", source if view.source_topic else "-"),
        ("consumer", view.consumer or "-"),
        ("truncated", view.truncated or "no (key, value and headers are the original bytes)"),
    ]
    width = max(len(name) for name, _ in facts)
    lines = [f"{name.ljust(width)}  {value}" for name, value in facts]
    lines += ["", "detail:", view.detail or "-"]
    for title, mine in (("headers (the record's own)", False), ("headers (exectrack.dlq.*)", True)):
        chosen = [(k, v) for k, v in letter.headers if k.startswith(HEADER_PREFIX) == mine]
        lines += ["", f"{title}: {len(chosen)}"]
        for name, value in chosen:
            text = value.decode("utf-8") if _is_text(value) else "0x" + value.hex()
            lines.append(f"  {name}: {text}")
    key_bytes = "" if letter.key is None else f" ({len(letter.key)} bytes)"
    value_bytes = "" if letter.value is None else f" ({len(letter.value)} bytes)"
    lines += ["", f"key{key_bytes}:", _shown(letter.key)]
    lines += ["", f"value{value_bytes}:", _shown(letter.value)]
    return "\n".join(lines)


# ---------------------------------------------------------------- redrive
def parse_offsets(text: str) -> list[tuple[int, int | None]]:
    """``5``, ``5-9`` (inclusive), ``5-`` (to the end), comma-separated -> ranges.

    Raises:
        ValueError: anything else, or a range that ends before it starts.
    """
    ranges: list[tuple[int, int | None]] = []
    for part in (p.strip() for p in text.split(",")):
        first, dash, last = part.partition("-")
        if not first.isdigit() or (last and not last.isdigit()):
            raise ValueError(f"{part!r} is not OFFSET, FIRST-LAST or FIRST-")
        end = int(last) if last else (None if dash else int(first))
        if end is not None and end < int(first):
            raise ValueError(f"{part!r} ends before it starts")
        ranges.append((int(first), end))
    return ranges


def _offsets(_: Any, __: Any, values: tuple[str, ...]) -> list[tuple[int, int | None]]:
    try:
        return [r for value in values for r in parse_offsets(value)]
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@dlq_group.command("redrive")
@click.option(
    "--partition", "partitions", type=click.IntRange(0), multiple=True,
    help="Partition of the dead-letter topic (repeat for more). [default: all]",
)  # fmt: skip
@click.option(
    "--offset", "offsets", multiple=True, callback=_offsets,
    help="Offsets: N, FIRST-LAST (inclusive), FIRST- (to the end); comma-separated or repeated.",
)  # fmt: skip
@click.option("--reason", "reasons", multiple=True, help="Only this reason (repeatable).")
@click.option("--key", "keys", multiple=True, help="Only this key / execution id (repeatable).")
@click.option("--all", "everything", is_flag=True, help="Every dead letter of the partitions.")
@click.option("--apply", is_flag=True, help="Send. Without it: a dry run, nothing is sent.")
@click.option(
    "--retry-unconfirmed", is_flag=True,
    help="Also send letters whose earlier redrive was claimed but never confirmed "
    "(may send one twice; the fold ignores the duplicate).",
)  # fmt: skip
@json_option
def redrive_command(
    partitions: tuple[int, ...], offsets: list[tuple[int, int | None]], reasons: tuple[str, ...],
    keys: tuple[str, ...], everything: bool, apply: bool, retry_unconfirmed: bool, as_json: bool,
) -> None:  # fmt: skip
    """Republish chosen dead letters to the events topic with their original key, value
    and headers (the exectrack.dlq.* ones removed), once the cause is fixed.

    A DRY RUN unless --apply. Choose by --offset, --reason, --key, or --all (within
    --partition). Each letter is sent at most once: a row in dead_letter_redrives
    is claimed before the send (docs/read/dead-letters.md). Exit 1 if a send failed.
    """
    if not (offsets or reasons or keys or everything):
        raise click.UsageError("choose dead letters: --offset, --reason, --key, or --all")
    settings = _settings()
    selection = Selection(
        partitions=tuple(sorted(set(partitions))) or None,
        offsets=tuple(offsets),
        reasons=frozenset(reasons),
        keys=frozenset(keys),
    )

    async def job() -> RedriveSummary:
        return await with_engine(
            settings.database,
            lambda engine: redrive(
                engine, settings.kafka, selection, apply=apply, retry_unconfirmed=retry_unconfirmed
            ),
        )

    try:
        summary = _run(settings, job())
    except ValueError as exc:  # a partition the topic lacks
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(summary.as_dict()) if as_json else summary.render())
    if not summary.ok:
        raise SystemExit(1)


COMMANDS = (dlq_group,)
