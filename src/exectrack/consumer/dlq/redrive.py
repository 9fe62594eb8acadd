"""Redrive: republish chosen dead letters to the events topic, each at most once per claim.

After the operator fixed what made the consumer refuse a record (a database limit,
a bug, a schema), ``exectrack-consumer dlq redrive`` sends the dead letters again
to the events topic with their ORIGINAL key, value and headers: the record's own
headers, without the ``exectrack.dlq.*`` ones the consumer added
(``exectrack.consumer.dlq.letter``). The same key lands on the same partition as
the execution's other events (the producer's murmur2 partitioner, as Kafka's
default), and the consumer folds it like any other event.

Never twice: each dead letter gets a row in ``dead_letter_redrives`` (primary key:
dead-letter topic, partition, offset), inserted BEFORE the send. A duplicate key
means it was redriven (or is being redriven) already: skipped, and said so. Then:

1. claim: ``INSERT`` the row (``claimed_at``, ``claimed_by``), committed;
2. send with an idempotent ``acks=all`` producer (``exectrack.producer.Publisher``)
   and wait for the acknowledgement;
3. record: ``UPDATE`` the row with ``redriven_at`` and where the copy landed
   (target topic, partition, offset).

A send the broker refused deletes the claim (step 2 failed: nothing was stored),
so a later redrive tries it again. The window that remains is between 2 and 3:
a command killed there (or a database lost there) leaves a claim without
``redriven_at`` although the copy may be in the topic. Such a letter is
reported ``unconfirmed`` and skipped; ``retry_unconfirmed`` sends it again,
which may duplicate it: at least once, not exactly once. A duplicate is harmless
to the table: the fold is idempotent (the same event id and content change
nothing, CONTRACT.md), so the only trace is one more record in the topic.

Skipped, and said why: a record without ``exectrack.dlq.reason`` (not written by
exectrack), one whose dead letter was cut to fit (``exectrack.dlq.truncated``:
its bytes are not the original; the original is in the source topic at the
offset the letter names, until that topic's retention), one with a null value,
one whose source topic is not the target topic.
"""

from __future__ import annotations

import getpass
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import Table, and_, delete, insert, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from exectrack.consumer.db.models import DeadLetterRedrive
from exectrack.consumer.dlq.browse import DeadLetterRecord, partitions_of, read_dead_letters
from exectrack.producer.errors import PublishError
from exectrack.producer.publisher import Publisher
from exectrack.producer.settings import KafkaSettings

__all__ = ["Outcome", "RedriveSummary", "Redriven", "Selection", "redrive"]

REDRIVES: Table = DeadLetterRedrive.__table__  # type: ignore[assignment]
Outcome = Literal[
    "would_send",  # dry run: would be sent
    "sent",  # sent and recorded
    "failed",  # the broker refused it: claim deleted, try again later
    "unrecorded",  # sent, but the record step failed: the claim stays unconfirmed
    "already_redriven",  # a row says it was sent (or another redrive claimed it)
    "unconfirmed",  # claimed earlier, the send not confirmed: skipped (retry_unconfirmed)
    "not_a_dead_letter",  # no exectrack.dlq.reason header
    "truncated",  # cut to fit the DLQ: not the original bytes
    "null_value",  # nothing to send
    "other_topic",  # dead-lettered from another topic than the target
]
SENDABLE: tuple[Outcome, ...] = ("would_send", "sent", "failed", "unrecorded")


@dataclass(frozen=True)
class Selection:
    """Which dead letters to redrive; every given criterion must hold.

    ``partitions``: of the dead-letter topic (None: all). ``offsets``: ranges
    ``(first, last)`` inclusive, ``last`` None for "to the end" (empty: every
    offset). ``reasons``: ``exectrack.dlq.reason`` values (empty: any).
    ``keys``: record keys, UTF-8 (empty: any).
    """

    partitions: tuple[int, ...] | None = None
    offsets: tuple[tuple[int, int | None], ...] = ()
    reasons: frozenset[str] = frozenset()
    keys: frozenset[str] = frozenset()

    def ranges(self, partitions: Iterable[int]) -> dict[int, tuple[int, int]]:
        """Per partition, the offsets to read: ``[start, stop)`` covering every range."""
        if not self.offsets:
            span = (0, 2**63 - 1)
        else:
            start = min(first for first, _ in self.offsets)
            ends = [last for _, last in self.offsets]
            stop = 2**63 - 1 if None in ends else max(e for e in ends if e is not None) + 1
            span = (start, stop)
        return dict.fromkeys(partitions, span)

    def matches(self, letter: DeadLetterRecord) -> bool:
        """Whether ``letter`` is chosen (offsets, reason and key)."""
        if self.offsets and not any(
            first <= letter.offset and (last is None or letter.offset <= last)
            for first, last in self.offsets
        ):
            return False
        if self.reasons and letter.reason not in self.reasons:
            return False
        key = None if letter.key is None else letter.key.decode("utf-8", "replace")
        return not self.keys or key in self.keys


@dataclass
class Redriven:
    """What happened to one chosen dead letter: ``outcome`` and a short ``detail``.

    ``target``: (topic, partition, offset) of the copy, when one was sent (now or
    by an earlier redrive).
    """

    letter: DeadLetterRecord
    outcome: Outcome
    detail: str = ""
    target: tuple[str, int, int] | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: where the letter is, its key and reason, the outcome."""
        view = self.letter
        return {
            "partition": view.partition,
            "offset": view.offset,
            "key": None if view.key is None else view.key.decode("utf-8", "replace"),
            "reason": view.reason,
            "outcome": self.outcome,
            "detail": self.detail,
            "target": None if self.target is None else dict(
                zip(("topic", "partition", "offset"), self.target, strict=True)
            ),
        }  # fmt: skip


@dataclass
class RedriveSummary:
    """What ``redrive`` did (or, as a dry run, would do), letter by letter."""

    dlq_topic: str
    target_topic: str
    applied: bool
    items: list[Redriven] = field(default_factory=list)
    stopped: str = ""  # why the run stopped before the end (the database lost), if it did

    def counts(self) -> dict[str, int]:
        """Letters per outcome."""
        found: dict[str, int] = {}
        for item in self.items:
            found[item.outcome] = found.get(item.outcome, 0) + 1
        return found

    @property
    def ok(self) -> bool:
        """No send failed, none is left unrecorded, the run was not cut short."""
        counts = self.counts()
        return not (counts.get("failed") or counts.get("unrecorded") or self.stopped)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "dlq_topic": self.dlq_topic,
            "target_topic": self.target_topic,
            "applied": self.applied,
            "counts": self.counts(),
            "stopped": self.stopped or None,
            "letters": [item.as_dict() for item in self.items],
        }

    def render(self) -> str:
        """Text for a terminal: one line per letter, then the counts."""
        lines = []
        for item in self.items:
            letter = item.letter
            key = "-" if letter.key is None else letter.key.decode("utf-8", "replace")
            where = f"{letter.partition}:{letter.offset}"
            target = (
                f" -> {item.target[0]}:{item.target[1]}:{item.target[2]}" if item.target else ""
            )
            detail = f" ({item.detail})" if item.detail else ""
            lines.append(
                f"{item.outcome:<18} {where:<12} key={key} reason={letter.reason}{target}{detail}"
            )
        counts = ", ".join(f"{n} {outcome}" for outcome, n in sorted(self.counts().items()))
        mode = "redrive" if self.applied else "dry run (nothing sent; --apply sends)"
        lines.append(
            f"{mode}: {len(self.items)} dead letters chosen in {self.dlq_topic}, target "
            f"{self.target_topic}: {counts or 'nothing to do'}"
        )
        if self.stopped:
            lines.append(f"stopped: {self.stopped}")
        return "\n".join(lines)


def operator_identity() -> str:
    """``user@host`` of whoever runs the command (``dead_letter_redrives.claimed_by``)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for the uid (a container)
        user = "unknown"
    return f"{user}@{socket.gethostname()}"[:255]


async def redrive(
    engine: AsyncEngine,
    kafka: KafkaSettings,
    selection: Selection,
    *,
    apply: bool = False,
    retry_unconfirmed: bool = False,
    identity: str | None = None,
    timeout_s: float = 60.0,
) -> RedriveSummary:
    """Republish the chosen dead letters of ``kafka.dlq_topic`` to ``kafka.topic``.

    Arguments:
        engine: the consumer's database (``dead_letter_redrives``, revision 0004).
        kafka: the broker, the events topic (target) and the dead-letter topic.
        selection: which letters (``Selection``).
        apply: send; without it nothing is sent nor written (a dry run).
        retry_unconfirmed: also send letters whose earlier claim was never
            confirmed (may duplicate them: module doc).
        identity: ``claimed_by`` (default ``operator_identity()``).
        timeout_s: to read the dead letters.

    Returns:
        One ``Redriven`` per chosen letter, in (partition, offset) order, which
        is the order they are sent in.

    Raises:
        ValueError: a partition the dead-letter topic lacks.
        DeadLetterTopicMissing: no dead-letter topic.
        SQLAlchemyError: the database refused before anything was sent (e.g. no
            ``dead_letter_redrives`` table: run ``exectrack-consumer migrate``).
        KafkaError, PublishError: the broker could not be read or connected to.
    """
    dlq, target = kafka.dlq_topic, kafka.topic
    partitions = selection.partitions or tuple(await partitions_of(kafka, dlq))
    letters = await read_dead_letters(kafka, selection.ranges(partitions), timeout_s=timeout_s)
    chosen = [letter for letter in letters if selection.matches(letter)]
    known = await _rows(engine, dlq, chosen)
    summary = RedriveSummary(dlq, target, apply)
    summary.items = [_triage(letter, known, target, retry_unconfirmed) for letter in chosen]
    if not apply:
        return summary
    todo = [item for item in summary.items if item.outcome == "would_send"]
    if not todo:
        return summary
    async with Publisher(kafka, topic=target) as publisher:
        for n, item in enumerate(todo):
            stop = await _send(engine, publisher, item, known, identity or operator_identity())
            if stop:
                summary.stopped = stop
                for rest in todo[n + 1 :]:
                    rest.detail = "not tried: the run stopped"
                break
    return summary


async def _rows(
    engine: AsyncEngine, dlq: str, letters: Sequence[DeadLetterRecord]
) -> dict[tuple[int, int], Any]:
    """The ``dead_letter_redrives`` rows of these letters, by (partition, offset)."""
    found: dict[tuple[int, int], Any] = {}
    spans: dict[int, list[int]] = {}
    for letter in letters:
        spans.setdefault(letter.partition, []).append(letter.offset)
    c = REDRIVES.c
    async with engine.connect() as conn:
        for partition, offsets in spans.items():
            query = select(REDRIVES).where(
                c.dlq_topic == dlq,
                c.dlq_partition == partition,
                c.dlq_offset.between(min(offsets), max(offsets)),
            )
            for row in (await conn.execute(query)).mappings():
                found[(row["dlq_partition"], row["dlq_offset"])] = row
    return found


def _triage(
    letter: DeadLetterRecord, known: dict[tuple[int, int], Any], target: str, retry: bool
) -> Redriven:
    """The outcome of a letter before anything is sent."""
    row = known.get((letter.partition, letter.offset))
    if row is not None and row["redriven_at"] is not None:
        where = (row["target_topic"], row["target_partition"], row["target_offset"])
        when = row["redriven_at"].isoformat()
        return Redriven(letter, "already_redriven", f"at {when} by {row['claimed_by']}", where)
    if row is not None and not retry:
        return Redriven(
            letter, "unconfirmed",
            f"claimed at {row['claimed_at'].isoformat()} by {row['claimed_by']}, send not "
            "confirmed; --retry-unconfirmed sends it again (may duplicate it)",
        )  # fmt: skip
    if letter.reason is None:
        return Redriven(letter, "not_a_dead_letter", "no exectrack.dlq.reason header")
    if letter.truncated is not None:
        source = _source(letter)
        return Redriven(
            letter, "truncated", f"cut to fit the dead-letter topic ({letter.truncated}); "
            f"the original is at {source}",
        )  # fmt: skip
    if letter.value is None:
        return Redriven(letter, "null_value", "a null value: nothing to send")
    source_topic = letter.header("exectrack.dlq.topic")
    if source_topic is not None and source_topic != target:
        return Redriven(letter, "other_topic", f"dead-lettered from {source_topic}, not {target}")
    return Redriven(letter, "would_send", "retrying an unconfirmed claim" if row else "")


def _source(letter: DeadLetterRecord) -> str:
    parts = ("topic", "partition", "offset")
    return ":".join(letter.header(f"exectrack.dlq.{p}") or "?" for p in parts)


async def _send(
    engine: AsyncEngine,
    publisher: Publisher,
    item: Redriven,
    known: dict[tuple[int, int], Any],
    identity: str,
) -> str:
    """Claim, send, record one letter (module doc); sets ``item.outcome``.

    Returns why the run must stop (the database failed), or ``""``.
    """
    letter = item.letter
    c = REDRIVES.c
    pk = and_(
        c.dlq_topic == letter.topic,
        c.dlq_partition == letter.partition,
        c.dlq_offset == letter.offset,
    )
    earlier = known.get((letter.partition, letter.offset))
    try:
        claimed = await _claim(engine, letter, earlier, identity)
    except SQLAlchemyError as exc:
        item.outcome, item.detail = "failed", f"not sent: cannot claim: {_db_error(exc)}"
        return "the database failed: " + item.detail
    if not claimed:
        item.outcome, item.detail = "already_redriven", "claimed by another redrive"
        return ""
    try:
        delivery = await publisher.publish_raw(
            letter.key, letter.value or b"", letter.original_headers
        )
    except PublishError as exc:
        item.outcome, item.detail = "failed", f"not sent: {exc}"[:300]
        if earlier is not None:  # a retried claim stays unconfirmed, as it was
            return ""
        try:  # nothing was stored: free the letter for a later redrive
            async with engine.begin() as conn:
                await conn.execute(delete(REDRIVES).where(pk, c.redriven_at.is_(None)))
        except SQLAlchemyError as lost:
            item.detail += f"; its claim could not be deleted ({_db_error(lost)}): unconfirmed"
            return "the database failed: " + item.detail
        return ""
    item.target = (delivery.topic, delivery.partition, delivery.offset)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                update(REDRIVES).where(pk).values(
                    redriven_at=datetime.now(UTC), target_topic=delivery.topic,
                    target_partition=delivery.partition, target_offset=delivery.offset,
                )
            )  # fmt: skip
    except SQLAlchemyError as exc:
        item.outcome = "unrecorded"
        item.detail = f"sent, not recorded ({_db_error(exc)}): its claim stays unconfirmed"
        return "the database failed after a send: " + item.detail
    item.outcome, item.detail = "sent", ""
    return ""


async def _claim(
    engine: AsyncEngine, letter: DeadLetterRecord, earlier: Any, identity: str
) -> bool:
    """Insert the claim (or take over an unconfirmed one); False: someone else has it."""
    c = REDRIVES.c
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        if earlier is None:
            try:
                await conn.execute(
                    insert(REDRIVES).values(
                        dlq_topic=letter.topic, dlq_partition=letter.partition,
                        dlq_offset=letter.offset, reason=(letter.reason or "")[:64],
                        record_key=_key(letter), claimed_at=now, claimed_by=identity,
                    )
                )  # fmt: skip
            except IntegrityError:  # the primary key: another redrive claimed it
                return False
            return True
        taken = await conn.execute(  # retry_unconfirmed: if still the claim we saw
            update(REDRIVES)
            .where(
                c.dlq_topic == letter.topic,
                c.dlq_partition == letter.partition,
                c.dlq_offset == letter.offset,
                c.redriven_at.is_(None),
                c.claimed_at == earlier["claimed_at"],
            )
            .values(claimed_at=now, claimed_by=identity)
        )
        return bool(taken.rowcount == 1)


def _db_error(exc: SQLAlchemyError) -> str:
    return str(getattr(exc, "orig", None) or exc)[:200]


def _key(letter: DeadLetterRecord) -> str | None:
    return None if letter.key is None else letter.key.decode("utf-8", "replace")[:255]
