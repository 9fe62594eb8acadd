"""Errors raised by exectrack, under one root with a ``retriable`` flag.

::

    Exception
     └── ExectrackError                 retriable = False
          ├── InvalidEvent(ValueError)   retriable = False  .reason, .detail
          ├── PublishError               retriable = True unless the cause says otherwise
          │    └── StartFailed           Publisher.start(): .bootstrap_servers, .reason
          └── ConnectFailed              retriable = False  .service, .target, .reason

A loop needs exactly one decision per failure: try again, or give up on this
message. Like aiokafka's ``KafkaError.retriable``, the flag on the class makes
that decision, so callers catch ``ExectrackError`` and read ``retriable``
instead of enumerating subclasses. ``InvalidEvent`` is never retriable: the
same bytes fail the same way forever, so the consumer sends them to the
dead-letter topic with ``reason`` as a header. It also inherits ``ValueError``
because it is a bad-input error to any code that does not know exectrack.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "ConnectFailed",
    "ExectrackError",
    "InvalidEvent",
    "InvalidReason",
    "PublishError",
    "StartFailed",
]


class InvalidReason(StrEnum):
    """Why a message is not a valid event: a short, stable, machine code.

    The values travel in dead-letter headers and metric labels, so they are
    part of the contract: add new ones, never rename.
    """

    NOT_UTF8 = "not_utf8"
    """The value or a ``ce_*`` header is not valid UTF-8."""
    NOT_JSON = "not_json"
    """Not parseable JSON (includes NaN, Infinity and nesting over 1024 levels)."""
    NOT_CLOUDEVENT = "not_cloudevent"
    """Missing or invalid envelope attribute, wrong ``specversion``, no ``data`` object."""
    UNKNOWN_TYPE = "unknown_type"
    """``type`` is a string this version does not know."""
    INVALID_FIELD = "invalid_field"
    """A ``data`` field breaks its rule (type, range, length, enum)."""
    NAIVE_TIMESTAMP = "naive_timestamp"
    """A time without a UTC offset: its instant is unknowable."""
    TIME_OUT_OF_RANGE = "time_out_of_range"
    """The envelope ``time`` outside what MySQL ``TIMESTAMP(6)`` can store (1970..2038),
    or a ``data`` time with no UTC value (docs/events.md: optional data times
    outside 1970..2038 are saturated or dropped by the fold, not refused)."""
    KEY_MISMATCH = "key_mismatch"
    """Kafka key or ``subject`` differs from ``data.execution_id`` / ``data.report_id``."""
    TOO_LARGE = "too_large"
    """Message over 1 MiB, or a JSON field over 64 KiB serialized."""
    UNSUPPORTED_FORMAT = "unsupported_format"
    """Structured mode in an event format other than JSON (``application/cloudevents+avro``)."""


class ExectrackError(Exception):
    """Root of every error exectrack raises on purpose."""

    retriable: bool = False
    """True when the same operation may succeed later (broker or network trouble)."""


class InvalidEvent(ExectrackError, ValueError):
    """A message (or constructor input) breaks the event contract.

    ``reason`` is one ``InvalidReason`` (for machines: DLQ headers, metrics);
    ``detail`` names the field and the rule (for humans, at most ~500 chars).
    """

    def __init__(self, reason: InvalidReason | str, detail: str) -> None:
        # args = (reason, detail) keeps the exception picklable across processes.
        super().__init__(reason, detail)
        self.reason = InvalidReason(reason)
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"


class PublishError(ExectrackError):
    """The broker did not acknowledge an event; publishing it again may work.

    ``retriable`` is per instance: the publisher copies it from the aiokafka
    error it wraps (kept as ``__cause__``), so a rejected message (too large,
    not authorized) says ``False`` while a broker that is away says ``True``.
    """

    retriable = True

    def __init__(self, *args: object, retriable: bool = True) -> None:
        super().__init__(*args)
        self.retriable = retriable  # in __dict__: survives pickling


class StartFailed(PublishError):
    """``Publisher.start()`` (or ``async with Publisher()``) could not reach the cluster.

    One exception, one line: ``str()`` is ``cannot start the publisher: Kafka
    at <bootstrap_servers>: <reason>``, where ``reason`` is the aiokafka error
    (``KafkaConnectionError: Unable to bootstrap from ...`` when no broker
    answers). The aiokafka error is kept as ``__cause__``; nothing else is
    chained (no "During handling of the above exception"). ``retriable`` is
    copied from the cause: a broker that is down is retriable, refused
    credentials are not. How a service survives it: docs/events.md, "When the
    broker is down at start".
    """

    def __init__(self, bootstrap_servers: str, reason: str, *, retriable: bool = True) -> None:
        super().__init__(bootstrap_servers, reason, retriable=retriable)
        self.bootstrap_servers = bootstrap_servers
        self.reason = " ".join(reason.split())  # one line

    def __str__(self) -> str:
        return f"cannot start the publisher: Kafka at {self.bootstrap_servers}: {self.reason}"


class ConnectFailed(ExectrackError):
    """A command could not use Kafka or the database: credentials, TLS, or no answer.

    Raised at the command-line boundary (``exectrack.producer.diagnose``,
    ``exectrack.consumer.failures``) so that the command ends with one line naming the
    service, where it is (brokers, or the database URL with its password
    masked) and why (``reason``, e.g. ``authentication failed: ...``), instead
    of a traceback. Never carries a secret.
    """

    def __init__(self, service: str, target: str, reason: str) -> None:
        super().__init__(service, target, reason)
        self.service = service
        self.target = target
        self.reason = reason

    def __str__(self) -> str:
        return f"cannot connect to {self.service} {self.target}: {self.reason}"
