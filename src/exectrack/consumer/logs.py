"""Logging set-up: every line the consumer writes to stderr is one log event.

JSON lines when ``EXECTRACK_LOG_FORMAT=json``, or ``auto`` and stderr is not a
terminal; a readable console format otherwise. Our own events are structlog's;
the libraries' (aiokafka, SQLAlchemy, alembic, asyncio, aiohttp) come through
the standard library, and ``warnings.warn`` too (``logging.captureWarnings``).
Both go to ONE handler on the root logger whose formatter is structlog's
``ProcessorFormatter`` (structlog docs, "Rendering Using structlog-based
Formatters Within logging"), so a library line is an event like ours, with
``logger`` naming its source, and a traceback is the ``exception`` field (one
JSON string), never lines of its own.

Levels: ours at ``EXECTRACK_LOG_LEVEL``; the libraries at WARNING or above
(their INFO lines are per connection), except alembic's INFO (the revisions
``migrate`` applied).

A library that repeats itself (aiokafka logs a missing topic or an unreachable
broker at every metadata refresh, several times a second) is cut to one event
per ``REPEAT_WINDOW_S`` per message, logger, level and exception, carrying
``repeated``: how many identical lines were left out before it. The exception
(its type and the last line of its text) is part of what makes two lines
identical: two different crashes that share a message (uvicorn's "Exception in
ASGI application") are two lines, never one collapsed into the other.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

__all__ = ["OURS", "REPEAT_WINDOW_S", "configure_from_environment", "configure_logging"]

OURS = ("exectrack", "bench", "migrations")
"""Loggers (structlog names them by module) that log at EXECTRACK_LOG_LEVEL."""
REPEAT_WINDOW_S = 60.0


class _Stderr(logging.StreamHandler[TextIO]):
    """Writes to the ``sys.stderr`` of the moment (as logging.lastResort): a CLI runner
    that swaps it, or a test, gets the lines."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _: TextIO) -> None:  # StreamHandler.setStream: always the current one
        pass


class _Repeats(logging.Filter):
    """Lets a library's identical line through once per ``window_s``; counts the rest."""

    def __init__(self, window_s: float = REPEAT_WINDOW_S) -> None:
        super().__init__()
        self.window_s = window_s
        self.seen: dict[tuple[str, str, int, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.split(".", 1)[0] in OURS or record.levelno >= logging.CRITICAL:
            return True
        key = (record.name, record.getMessage(), record.levelno, _exception_of(record))
        now = time.monotonic()
        first, left_out = self.seen.get(key, (-self.window_s, 0))
        if now - first < self.window_s:
            self.seen[key] = (first, left_out + 1)
            return False
        if len(self.seen) > 1000:  # many distinct lines: forget the old ones
            self.seen.clear()
        self.seen[key] = (now, 0)
        if left_out:
            record.repeated = left_out
        return True


def _exception_of(record: logging.LogRecord) -> str:
    """``Type: last line of its text`` of the record's exception, "" without one.

    What tells two crashes logged under one message apart (issue #15, break 3).
    """
    exc = record.exc_info[1] if record.exc_info else None
    if exc is None:
        return (record.exc_text or "").strip().rsplit("\n", 1)[-1]
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__module__}.{type(exc).__qualname__}: {lines[-1] if lines else ''}"


def _repeated(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    record = event_dict.get("_record")
    left_out = getattr(record, "repeated", None)
    if left_out:
        event_dict["repeated"] = left_out
    return event_dict


def json_wanted(fmt: str, stream: TextIO | None = None) -> bool:
    """Whether ``fmt`` (auto/json/console) means JSON lines on ``stream`` (stderr)."""
    stream = stream or sys.stderr
    return fmt == "json" or (fmt == "auto" and not stream.isatty())


def configure_logging(fmt: str = "auto", level: str = "info") -> None:
    """Route structlog and the standard library's logging to one stderr handler.

    Args:
        fmt: ``auto`` (JSON unless stderr is a terminal), ``json`` or ``console``.
        level: ``debug``, ``info``, ``warning`` or ``error``, for exectrack's own events.

    Safe to call again (a later call replaces the handler and the levels).
    """
    levelno = logging.getLevelName(level.upper())
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if json_wanted(fmt)
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            timestamper,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(levelno),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,  # a later configure_logging applies to every logger
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            timestamper,
            _repeated,
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,  # a traceback is one string field
            renderer,
        ],
    )
    handler = _Stderr()
    handler.setFormatter(formatter)
    handler.addFilter(_Repeats())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Stderr)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(max(logging.WARNING, levelno))
    for name in OURS:
        logging.getLogger(name).setLevel(levelno)
    logging.getLogger("alembic").setLevel(max(logging.INFO, levelno))
    logging.captureWarnings(True)


def configure_from_environment() -> None:
    """``configure_logging`` from ``EXECTRACK_LOG_FORMAT``/``EXECTRACK_LOG_LEVEL`` alone.

    Runs before the settings are validated, so that their own failure is a log
    line too; a value the settings would refuse falls back to auto/info here
    (the settings then say what is wrong with it).
    """
    fmt = os.environ.get("EXECTRACK_LOG_FORMAT", "auto").lower()
    level = os.environ.get("EXECTRACK_LOG_LEVEL", "info").lower()
    configure_logging(
        fmt if fmt in ("auto", "json", "console") else "auto",
        level if level in ("debug", "info", "warning", "error") else "info",
    )
