"""Emit an execution's lifecycle from a ``with`` block: the few lines a report service needs.

::

    async with Publisher() as pub:
        async with track(pub, report_id="vpc-inventory", trigger_type="scheduled") as run:
            for page in pages:
                ...
                await run.progress(records_processed=done)
            run.set(result_summary={"vpcs": 12}, output_location="s3://bucket/key.json")

On enter: ``pending`` (trigger_type, started_by, execution_parameters) then
``started`` (start_time). On exit: ``completed`` (end_time, duration_ms from a
monotonic clock, plus what ``run.set`` recorded); if the block raises,
``failed`` with ``error_details`` (exception type, message, the last lines of
the traceback) and the exception propagates; on ``asyncio.CancelledError`` or
``KeyboardInterrupt``, ``cancelled`` and it propagates. Events carry sequence
numbers 0, 1, 2, ... so the consumer orders them even if they arrive out of
order.

``on_publish_error="log"`` (the default) means the broker cannot break the
report: a failed publish is logged, counted on ``run.publish_errors``, and the
block goes on. ``"raise"`` lets the ``PublishError`` propagate instead (when
the block itself raised, its exception wins and the publish error is added to
it as a note). Invalid field values always raise ``InvalidEvent``: that is a
bug in the caller, not weather.

The exception that leaves the block names its execution, so the service's
error handler (or the traceback in its log) leads to the row: ``track`` sets
``exc.exectrack_execution_id`` (a ``str``; the innermost run's id when
``track`` blocks are nested) and adds a PEP 678 note
``exectrack execution_id=<id>`` (one per enclosing run), on failures and
cancellations alike::

    try:
        async with track(pub, report_id="vpc-inventory") as run:
            ...
    except Exception as exc:
        log.error("report failed", execution_id=exectrack_execution_id(exc))

``exectrack_execution_id(exc)`` returns it (``None`` for an exception that did
not pass through ``track``). ``track_sync`` does the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import traceback
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Literal, Protocol
from uuid import uuid4

import orjson
import structlog

from exectrack.producer.errors import InvalidEvent, InvalidReason
from exectrack.producer.events import (
    EventType,
    ExecutionData,
    ExecutionEvent,
    TriggerType,
    execution_event,
)
from exectrack.producer.settings import DEFAULT_SOURCE

__all__ = [
    "MAX_ERROR_DETAILS_BYTES",
    "OnPublishError",
    "PublisherLike",
    "Run",
    "Tracking",
    "error_details",
    "exectrack_execution_id",
    "track",
]

log = structlog.get_logger(__name__)

OnPublishError = Literal["log", "raise"]
MAX_TRACEBACK_LINES = 20
MAX_MESSAGE_CHARS = 2000
MAX_LINE_CHARS = 400
MAX_ERROR_DETAILS_BYTES = 16 * 1024
"""Well under the contract's 64 KiB per JSON field: a row stays small, the tail stays readable."""
SETTABLE = frozenset(
    {
        "records_processed",
        "output_size_bytes",
        "result_summary",
        "output_location",
        "retention_until",
    }
)
_RESERVED = frozenset({"execution_id", "report_id", "sequence"})


class PublisherLike(Protocol):
    """What ``track`` needs: ``Publisher``, ``InMemoryPublisher`` or your own."""

    async def publish(self, event: ExecutionEvent, /) -> object:
        """Send one event and wait for the acknowledgement; raise ``PublishError`` if not stored."""


def _clean(text: str, limit: int) -> str:
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")  # lone surrogates
    return text if len(text) <= limit else text[: limit - 3] + "..."


def error_details(exc: BaseException) -> dict[str, Any]:
    """``{"type", "message", "traceback"}`` of an exception, at most 16 KiB as JSON."""
    cls = type(exc)
    name = (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )
    try:
        message = str(exc)
    except Exception:  # a broken __str__ must not hide the failure
        message = f"<unprintable {cls.__qualname__}>"
    lines = "".join(traceback.format_exception(exc)).splitlines()[-MAX_TRACEBACK_LINES:]
    lines = [_clean(line, MAX_LINE_CHARS) for line in lines]
    details = {"type": _clean(name, 255), "message": _clean(message, MAX_MESSAGE_CHARS)}
    while True:
        details["traceback"] = "\n".join(lines)
        if len(orjson.dumps(details)) <= MAX_ERROR_DETAILS_BYTES or not lines:
            return details
        lines = lines[1:]  # keep the innermost frames: they say where it broke


EXECUTION_ID_ATTRIBUTE = "exectrack_execution_id"
"""The attribute ``track`` sets on the exception that leaves its block."""


def exectrack_execution_id(exc: BaseException) -> str | None:
    """The ``execution_id`` of the tracked run ``exc`` left (innermost), or ``None``."""
    value = getattr(exc, EXECUTION_ID_ATTRIBUTE, None)
    return value if isinstance(value, str) else None


def _mark(exc: BaseException, execution_id: str) -> None:
    """Name the run on the exception leaving it: attribute (innermost wins) and a note."""
    if exectrack_execution_id(exc) is None:
        with contextlib.suppress(AttributeError):  # __slots__: the note still says it
            setattr(exc, EXECUTION_ID_ATTRIBUTE, execution_id)
    exc.add_note(f"exectrack execution_id={execution_id}")


class Run:
    """The execution being tracked: ``progress`` and ``set`` while the block runs."""

    def __init__(
        self,
        publisher: PublisherLike,
        *,
        execution_id: str,
        report_id: str,
        source: str,
        on_publish_error: OnPublishError,
    ) -> None:
        if on_publish_error not in ("log", "raise"):
            raise ValueError(f"on_publish_error must be 'log' or 'raise', not {on_publish_error!r}")
        self.publisher = publisher
        self.execution_id = execution_id
        self.report_id = report_id
        self.source = source
        self.on_publish_error = on_publish_error
        self.publish_errors = 0
        """Events that could not be published (``on_publish_error="log"``)."""
        self.events: list[ExecutionEvent] = []
        """The events built so far, published or not."""
        self.start_time: datetime | None = None
        self._started = 0.0
        self._sequence = 0
        self._fields: dict[str, Any] = {}

    async def progress(self, records_processed: int | None = None, **fields: Any) -> None:
        """Publish ``exectrack.execution.progress`` with the given fields.

        Args:
            records_processed: a count >= 0 so far (None: not sent).
            **fields: other ``data`` fields, except the ones ``track`` sets
                (ids, ``sequence``, times, ``error_details``).

        Raises:
            InvalidEvent: a field is not allowed here or breaks its rule.
            PublishError: not published, with ``on_publish_error="raise"``.
        """
        _refuse(fields, ExecutionData.model_fields.keys() - _RESERVED)
        await self.emit(EventType.PROGRESS, records_processed=records_processed, **fields)

    def set(self, **fields: Any) -> None:
        """Record fields for the terminal event: ``result_summary``, ``records_processed``,
        ``output_size_bytes``, ``output_location``, ``retention_until``."""
        _refuse(fields, SETTABLE)
        self._fields.update(fields)

    async def emit(self, event_type: EventType, **fields: Any) -> ExecutionEvent:
        """Build the next event (next sequence number) and publish it; the low-level step.

        Returns:
            The event built (also appended to ``events``), published or not.

        Raises:
            InvalidEvent: ``fields`` break the contract (always raised).
            Exception: what the publisher raised, with ``on_publish_error="raise"``;
                with ``"log"`` it is logged and counted in ``publish_errors``.
        """
        event = execution_event(
            event_type,
            execution_id=self.execution_id,
            report_id=self.report_id,
            source=self.source,
            sequence=self._sequence,
            **fields,
        )
        self._sequence += 1
        self.events.append(event)
        try:
            await self.publisher.publish(event)
        except InvalidEvent:
            raise
        except Exception as exc:
            if self.on_publish_error == "raise":
                raise
            self.publish_errors += 1
            log.warning(
                "publish failed, going on",
                execution_id=self.execution_id,
                type=str(event_type),
                sequence=event.data.sequence,
                error=repr(exc),
                retriable=getattr(exc, "retriable", None),
            )
        return event

    # ------------------------------------------------------------ lifecycle steps
    async def _begin(self, **pending_fields: Any) -> None:
        await self.emit(EventType.PENDING, **pending_fields)
        self.start_time = datetime.now(UTC)
        self._started = time.monotonic()
        await self.emit(EventType.STARTED, start_time=self.start_time)

    async def _finish(self, event_type: EventType, **extra: Any) -> None:
        end_time = datetime.now(UTC)
        duration_ms = int((time.monotonic() - self._started) * 1000)
        fields = {"end_time": end_time, "duration_ms": duration_ms, **extra}
        try:
            event_fields = {**self._fields, **fields}
            execution_event(
                event_type,
                execution_id=self.execution_id,
                report_id=self.report_id,
                source=self.source,
                **event_fields,
            )
        except InvalidEvent as exc:  # a bad run.set() value must not lose the terminal status
            log.error(
                "dropping fields set on the run", execution_id=self.execution_id, error=str(exc)
            )
            event_fields = fields
        await self.emit(event_type, **event_fields)


def _refuse(fields: dict[str, Any], allowed: frozenset[str] | set[str]) -> None:
    unknown = sorted(fields.keys() - allowed)
    if unknown:
        detail = f"data: field(s) {', '.join(unknown)} cannot be given here"
        raise InvalidEvent(InvalidReason.INVALID_FIELD, detail)


class Tracking:
    """The async context manager ``track`` returns; ``async with`` gives the ``Run``."""

    def __init__(self, run: Run, pending_fields: dict[str, Any]) -> None:
        self.run = run
        self._pending_fields = pending_fields

    async def __aenter__(self) -> Run:
        await self.run._begin(**self._pending_fields)
        return self.run

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        run = self.run
        try:
            await self._end(run, exc)
        finally:  # after error_details was taken: the note is not part of the report's error
            if exc is not None:
                _mark(exc, run.execution_id)

    @staticmethod
    async def _end(run: Run, exc: BaseException | None) -> None:
        try:
            if exc is None:
                await run._finish(EventType.COMPLETED)
            elif isinstance(exc, asyncio.CancelledError | KeyboardInterrupt | GeneratorExit):
                # shielded: a second cancel must not lose the terminal event
                await asyncio.shield(run._finish(EventType.CANCELLED))
            else:
                await run._finish(EventType.FAILED, error_details=error_details(exc))
        except Exception as publish_exc:
            if exc is None:
                raise
            exc.add_note(f"exectrack: the terminal event was not published: {publish_exc!r}")


def track(
    publisher: PublisherLike,
    *,
    report_id: str,
    execution_id: str | None = None,
    trigger_type: TriggerType | str | None = None,
    started_by: int | None = None,
    execution_parameters: dict[str, Any] | None = None,
    source: str | None = None,
    on_publish_error: OnPublishError = "log",
) -> Tracking:
    """Track one execution of ``report_id`` (``execution_id`` defaults to a new uuid4).

    ``async with track(...) as run`` publishes ``pending`` and ``started`` on
    enter and one terminal event on exit: ``completed``, ``failed`` (with
    ``error_details``) when the block raises, ``cancelled`` on cancellation;
    the exception then carries ``exectrack_execution_id``. ``sequence``
    counts 0, 1, 2... (CONTRACT.md, "Execution event types and their rank").

    ``source`` defaults to the publisher's ``source`` attribute, if it has one.
    ``on_publish_error``: ``"log"`` (the block goes on; ``run.publish_errors``
    counts) or ``"raise"``.

    Raises:
        ValueError: ``on_publish_error`` is neither ``"log"`` nor ``"raise"``.
    """
    run = Run(
        publisher,
        execution_id=execution_id or str(uuid4()),
        report_id=report_id,
        source=source or getattr(publisher, "source", None) or DEFAULT_SOURCE,
        on_publish_error=on_publish_error,
    )
    pending = {
        "trigger_type": trigger_type,
        "started_by": started_by,
        "execution_parameters": execution_parameters,
    }
    return Tracking(run, pending)
