"""Field types of the event contract: the MySQL column rules, enforced at the edge.

Each type is an ``Annotated`` pydantic type whose validators raise
``PydanticCustomError``; when a rule has its own ``InvalidReason`` the error's
*type* names it (``naive_timestamp``, ``time_out_of_range``, ``too_large``), so
``exectrack.producer._codec`` maps errors to reasons without parsing messages. The
limits are the column types': ids fit ``VARCHAR(255)``, counts ``BIGINT``, user
ids ``INT``, times ``TIMESTAMP(6)``, JSON fields ``JSON`` (64 KiB here).
"""

from __future__ import annotations

import calendar
import json
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Final

import orjson
from pydantic import AfterValidator, AwareDatetime, BeforeValidator, Field
from pydantic_core import PydanticCustomError

SPECVERSION = "1.0"
CONTENT_TYPE = "application/cloudevents+json"
"""Kafka ``content-type`` header of a structured-mode message."""
DATA_CONTENT_TYPE: Final = "application/json"
MAX_JSON_FIELD_BYTES = 64 * 1024
MAX_EVENT_BYTES = 1 * 1024 * 1024
"""Whole Kafka value; checked before decoding (the broker default is 1 MiB too)."""
MIN_TIME = datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC)
MAX_TIME = datetime(2038, 1, 19, 3, 14, 7, 999999, tzinfo=UTC)
"""MySQL ``TIMESTAMP(6)`` range: MySQL would reject (or zero) anything outside."""
MAX_INT_ID = 2**31 - 1
"""``users.id`` and ``reports.version`` are ``INT``."""
MAX_BIGINT = 2**63 - 1
MAX_JSON_DEPTH = 31
"""Arrays and objects nested at most this deep fit a ``JSON`` column of every
supported server: MariaDB 10.11's ``JSON_VALID`` (the CHECK constraint of its
JSON columns) answers 1 for 31 nested containers and 0 for 32 (measured,
10.11.19: ``{"a": ... {"leaf": 1}}`` with 31 objects is valid, its
``JSON_DEPTH`` 32 counting the scalar; 32 objects, or 32 arrays, even an empty
innermost one, are not: error 4025 on insert). MySQL 8.0 allows 100
("JSON document exceeds maximum depth of 100"). The portable limit is the
smaller. Deeper values are valid JSON: the consumer counts them as not carried
(``exectrack.consumer.ingest.fold.storable``; docs/events.md, "Values outside the columns' range").
"""

# ---------------------------------------------------------------- field types
# Rules raise PydanticCustomError whose *type* names the InvalidReason when it
# is not the default one (see _reason_of), so mapping needs no message parsing.
# Messages are formatted in Python (f-strings) and passed without a context:
# pydantic fills only plain {name} placeholders, never {name!r}, so a template
# would reach the dead-letter header half filled (tests/unit/test_events.py).

_IDENTIFIER = r"[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f])?"
IDENTIFIER_RE = re.compile(_IDENTIFIER)
"""What an identifier must fullmatch (``Identifier``)."""


def _check_identifier(value: str) -> str:
    if IDENTIFIER_RE.fullmatch(value) is None:
        msg = "Identifier must not start or end with whitespace nor contain control characters"
        raise PydanticCustomError("identifier", msg)
    return value


Identifier = Annotated[
    str,
    Field(
        min_length=1,
        max_length=255,
        description="No leading/trailing whitespace, no control characters.",
        json_schema_extra={"pattern": f"^{_IDENTIFIER}$"},
    ),
    AfterValidator(_check_identifier),
]
"""An execution or report id: 1..255 characters, no edge whitespace, no control characters.

Ids are Kafka keys and ``VARCHAR(255) utf8mb4_bin`` primary keys. That
collation is PAD SPACE: MySQL would equate ``"a"`` and ``"a "`` and fold two
executions into one row, while Kafka would route them to different
partitions. Refusing edge whitespace keeps "same id" meaning the same thing
in both systems; control characters have no business in a key or a log line.
"""

_RFC3339_RE = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:([0-9]{2})(?:\.[0-9]+)?"  # second: 1
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})?"  # the offset: group 2
)
LEAP_SECOND_AS: Final = "59.999999"
"""What second ``60`` is read as: the leap second's last representable instant."""


def _leap_second(value: str, match: re.Match[str]) -> str:
    """``...T23:59:60Z`` as ``...T23:59:59.999999Z`` (fraction dropped, offset kept), or raise.

    RFC 3339 section 5.6 allows second 60, section 5.7 only as a leap second at
    the end of a month: 23:59:60 in UTC on the month's last day, shifted by the
    offset elsewhere (``15:59:60-08:00``). Without the leap second table (IERS
    announces each six months ahead) that end-of-month instant is all we can
    check; any other second 60 is ``datetime_format``. ``datetime`` and MySQL
    have no second 60, so it becomes the last microsecond before the next minute:
    after every time of its second 59, before the next minute, so the order of
    events is kept (all instants inside the leap second become one).
    """
    sent = f"{value[: match.start(1)]}{LEAP_SECOND_AS}{value[match.start(2) :]}"
    try:  # a bad date (30 February, hour 24) is left to pydantic's own error
        moment = datetime.fromisoformat(sent.upper().replace(" ", "T"))
        utc = moment.astimezone(UTC)
    except (ValueError, OverflowError):  # OverflowError: time_out_of_range, later
        return sent
    last_day = calendar.monthrange(utc.year, utc.month)[1]
    if (utc.day, utc.hour, utc.minute) != (last_day, 23, 59):
        msg = (
            "Second 60 is only valid as a leap second, at 23:59:60 UTC on the last day "
            "of a month (RFC 3339 section 5.7)"
        )
        raise PydanticCustomError("datetime_format", msg)
    return sent


def _check_time_text(value: object) -> object:
    """Accept RFC 3339 text (or a datetime); refuse what pydantic would guess at.

    pydantic alone also takes Unix timestamps (``1700000000``, as number or
    string) and dates; a contract that says RFC 3339 should not. A leap second
    (second 60) is read as the minute's last microsecond (``_leap_second``).
    """
    if isinstance(value, datetime):
        return value  # AwareDatetime refuses naive ones
    if not isinstance(value, str):
        raise PydanticCustomError("datetime_type", "Input should be an RFC 3339 date-time string")
    match = _RFC3339_RE.fullmatch(value)
    if match is None:
        msg = "Input should be an RFC 3339 date-time such as 2024-05-01T12:00:00Z"
        raise PydanticCustomError("datetime_format", msg)
    if match.group(2) is None:
        raise PydanticCustomError("naive_timestamp", "Input should have a UTC offset, e.g. Z")
    if match.group(1) == "60":
        return _leap_second(value, match)
    return value


def _to_utc_in_range(value: datetime) -> datetime:
    try:
        utc: datetime | None = value.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00:00+01:00 has no UTC datetime
        utc = None
    if utc is None or not MIN_TIME <= utc <= MAX_TIME:
        msg = "Time should be within 1970-01-01T00:00:01Z..2038-01-19T03:14:07.999999Z"
        raise PydanticCustomError("time_out_of_range", msg)
    return utc


UtcTime = Annotated[
    AwareDatetime,
    BeforeValidator(_check_time_text),
    AfterValidator(_to_utc_in_range),
    Field(description="RFC 3339 with offset, 1970-01-01T00:00:01Z..2038-01-19T03:14:07.999999Z"),
]
"""RFC 3339 with an offset, stored as UTC with microseconds (MySQL ``TIMESTAMP(6)``).

The envelope's ``time``: it orders the events and becomes ``created_at`` and
``last_event_at``, so a time the columns cannot hold refuses the event.
"""


def _to_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00:00+01:00 has no UTC datetime
        msg = "Time should be within 0001-01-01T00:00:00Z..9999-12-31T23:59:59.999999Z in UTC"
        raise PydanticCustomError("time_out_of_range", msg) from None


AnyUtcTime = Annotated[
    AwareDatetime,
    BeforeValidator(_check_time_text),
    AfterValidator(_to_utc),
    Field(description="RFC 3339 with offset, any year 1..9999 in UTC."),
]
"""RFC 3339 with an offset, as UTC with microseconds, any year 1..9999.

For the optional ``data`` times (``start_time``, ``end_time``,
``retention_until``): a value outside the ``TIMESTAMP(6)`` range does not
refuse the event (its status and other fields still count); the consumer's
fold decides what is stored (``exectrack.consumer.ingest.fold.storable``; docs/events.md,
"Values outside the columns' range"). The event itself, and what it carries on
the topic, keep the value as sent.
"""

Count = Annotated[int, Field(strict=True, ge=0, le=MAX_BIGINT)]
"""A JSON integer 0..2**63-1 (``BIGINT``); booleans and floats (even 2.0) are refused."""

UserId = Annotated[int, Field(strict=True, ge=1, le=MAX_INT_ID)]
"""A ``users.id`` (``INT``); an unknown id gets a placeholder user row."""

AnyCount = Annotated[int, Field(strict=True, ge=0)]
"""A JSON integer >= 0 of any size: an execution's optional counts. Above
``MAX_BIGINT`` it does not refuse the event; the fold does not store it
(``exectrack.consumer.ingest.fold.storable``); integers of any size are read exactly
(``loads_json``)."""

AnyUserId = Annotated[int, Field(strict=True, ge=1)]
"""An execution's ``started_by``: a user id >= 1; above ``MAX_INT_ID`` (``INT``)
the fold does not store it (``exectrack.consumer.ingest.fold.storable``)."""


# ---------------------------------------------------------------- exact JSON
# orjson reads an integer beyond 64 bits (below -2**63 or above 2**64-1) as a
# float, silently, and refuses to write one (ijl/orjson#53, #308). JSON has no
# such limit and MariaDB's JSON columns (text) keep every digit, so exectrack
# reads and writes them exactly: orjson first (validation, speed), the stdlib
# only for a document with a run of 19 or more digits (the shortest integer
# orjson cannot hold, -9223372036854775809, has 19), and Fragments for the
# digits on the way out.
_DIGIT_RUNS = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_LONG_RUN = b"0" * 19
_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1
_DUMPS_DEPTH = 254  # orjson's own nesting limit when writing


def loads_json(raw: bytes | str) -> Any:
    """``orjson.loads``, with integers of any size read exactly (not as floats).

    Raises ``orjson.JSONDecodeError`` as orjson does (the stdlib parser only
    re-reads what orjson accepted, so NaN, lone surrogates and 1e400 stay
    refused), except for an integer beyond a double's range (orjson: "number is
    infinity"), which is read exactly too.
    """
    # a lone surrogate in a str becomes invalid UTF-8: orjson's error, as for the str
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if "infinity" not in str(exc):
            raise
        return _loads_huge_integers(data, exc)
    if _LONG_RUN in data.translate(_DIGIT_RUNS):  # ~0.3 us for a 400-byte event
        try:
            return json.loads(data)
        except RecursionError:  # deeper than the stdlib parser goes: keep orjson's
            return value
    return value


def _finite(text: str) -> float:
    number = float(text)
    if number in (math.inf, -math.inf):
        raise ValueError(f"number is infinity: {text[:20]}")
    return number


def _refuse_constant(text: str) -> Any:
    raise ValueError(f"not JSON: {text}")


def _loads_huge_integers(data: bytes, error: orjson.JSONDecodeError) -> Any:
    """orjson refused a number as infinite: read with the stdlib, where only a
    finite float or an integer of any size passes; then written back by
    ``dumps_json`` to refuse what orjson would (lone surrogates). Else ``error``."""
    try:
        value = json.loads(data, parse_float=_finite, parse_constant=_refuse_constant)
        dumps_json(value)
    except (ValueError, TypeError, RecursionError):  # incl. UnicodeDecodeError, 4300 digits
        raise error from None
    return value


def _exact(value: Any, depth: int = 0) -> Any:
    """``value`` with every integer beyond 64 bits as an ``orjson.Fragment`` of its digits."""
    if depth > _DUMPS_DEPTH:
        raise TypeError("Recursion limit reached")
    if type(value) is int:
        return value if _INT64_MIN <= value <= _UINT64_MAX else orjson.Fragment(str(value))
    if isinstance(value, dict):
        return {k: _exact(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_exact(v, depth + 1) for v in value]
    return value


def dumps_json(
    value: Any, *, option: int = 0, default: Callable[[Any], Any] | None = None
) -> bytes:
    """``orjson.dumps``, writing integers of any size exactly (orjson refuses them).

    The same bytes as orjson's for every value orjson can write; only on its
    "Integer exceeds 64-bit range" is the value rewritten (``default``'s results
    too). Raises ``orjson.JSONEncodeError`` (a ``TypeError``) for anything else.
    """
    try:
        return orjson.dumps(value, default=default, option=option)
    except TypeError as exc:
        if "64-bit" not in str(exc):
            raise
    exact = None if default is None else (lambda obj: _exact(default(obj)))
    return orjson.dumps(_exact(value), default=exact, option=option)


def json_depth(value: Any, limit: int | None = None) -> int:
    """How deep arrays and objects nest in ``value`` (``{"a": 1}``: 1, ``[[]]``: 2,
    a scalar: 0), as MariaDB counts for its limit (``MAX_JSON_DEPTH``).

    With ``limit``, stops at the first container deeper than it and returns
    ``limit + 1``: a cheap "does it fit" for the hot path. Iterative: any depth.
    """
    if not isinstance(value, dict | list):
        return 0
    deepest = 1
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        container, depth = stack.pop()
        for child in container.values() if isinstance(container, dict) else container:
            if isinstance(child, dict | list):
                if depth == deepest:
                    deepest = depth + 1
                    if limit is not None and deepest > limit:
                        return deepest
                stack.append((child, depth + 1))
    return deepest


def check_json_object(value: dict[str, Any]) -> dict[str, Any]:
    """Return ``value`` when it fits ``JsonObject``: serializable and at most
    ``MAX_JSON_FIELD_BYTES`` as compact JSON.

    Raises:
        PydanticCustomError: ``json_object`` (not serializable, e.g. nested
            deeper than orjson writes) or ``too_large``.
    """
    # Serialized two levels down, where it sits in the message, so orjson's
    # nesting limit (254) is met here and not first by to_json.
    try:
        size = len(dumps_json([[value]])) - 4
    except TypeError as exc:  # orjson.JSONEncodeError: too deep, or not JSON
        raise PydanticCustomError("json_object", f"Not serializable as JSON: {exc}") from None
    if size > MAX_JSON_FIELD_BYTES:
        msg = f"JSON object is {size} bytes serialized, over the limit of {MAX_JSON_FIELD_BYTES}"
        raise PydanticCustomError("too_large", msg)
    return value


JsonObject = Annotated[
    dict[str, Any],
    AfterValidator(check_json_object),
    Field(description="At most 65536 bytes as compact JSON."),
]
"""A JSON object of at most 64 KiB compact serialization (a MySQL ``JSON`` column).

Any nesting depth orjson reads and writes (up to 252 levels here) and integers
of any size (read exactly, ``loads_json``). Nested deeper than
``MAX_JSON_DEPTH`` it does not refuse the event: the consumer's fold does not
store it (``exectrack.consumer.ingest.fold.storable``). Integers beyond 64 bits are stored
exactly on MariaDB (JSON as text); MySQL 8.0's binary JSON keeps them as
DOUBLE (docs/events.md).
"""


def check_text_bytes(value: str) -> str:
    """Return ``value`` when it fits a MySQL ``TEXT`` column: at most 65535 UTF-8 bytes.

    Raises:
        PydanticCustomError: ``text_length`` when longer (MySQL reference manual,
            "String Type Storage Requirements": ``TEXT`` holds L < 2**16 bytes).
    """
    if len(value.encode("utf-8", "surrogatepass")) > 65535:
        raise PydanticCustomError("text_length", "Text should be at most 65535 UTF-8 bytes")
    return value


def media_type(value: object) -> object:
    """``Application/JSON; charset=utf-8`` means ``application/json``; null means absent."""
    if value is None:
        return DATA_CONTENT_TYPE
    return value.split(";", 1)[0].strip().lower() if isinstance(value, str) else value
