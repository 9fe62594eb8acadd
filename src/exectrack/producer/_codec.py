"""Parsing Kafka messages into events, constructing events, encoding them.

Import these from ``exectrack.producer.events``; this module only keeps ``events`` short.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import orjson
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from exectrack.producer._fields import (
    CONTENT_TYPE,
    MAX_EVENT_BYTES,
    SPECVERSION,
    dumps_json,
    loads_json,
    media_type,
)
from exectrack.producer._models import (
    EXECUTION_TYPES,
    MODEL_OF,
    CloudProvider,
    Event,
    EventType,
    ExecutionData,
    ExecutionEvent,
    ReportCategory,
    ReportData,
    ReportDefinedEvent,
    ReportType,
)
from exectrack.producer.errors import InvalidEvent, InvalidReason

R = InvalidReason
T = EventType
_DETAIL_CHARS = 500

# ---------------------------------------------------------------- parsing
_REASON_OF_ERROR: dict[str, InvalidReason] = {
    "timezone_aware": R.NAIVE_TIMESTAMP, "naive_timestamp": R.NAIVE_TIMESTAMP,
    "time_out_of_range": R.TIME_OUT_OF_RANGE, "too_large": R.TOO_LARGE,
    "key_mismatch": R.KEY_MISMATCH,
}  # fmt: skip
_PRIORITY = (R.NOT_CLOUDEVENT, R.NAIVE_TIMESTAMP, R.TIME_OUT_OF_RANGE, R.TOO_LARGE, R.KEY_MISMATCH)


def _reason_of(error: ErrorDetails) -> InvalidReason:
    reason = _REASON_OF_ERROR.get(error["type"])
    if reason is not None:
        return reason
    loc = error["loc"]
    return R.INVALID_FIELD if len(loc) > 1 and loc[0] == "data" else R.NOT_CLOUDEVENT


def _invalid(exc: ValidationError) -> InvalidEvent:
    """One reason for all errors (the most fundamental), detail from its first error."""
    errors = exc.errors(include_url=False, include_input=False)
    reasons = [_reason_of(e) for e in errors]
    reason = next((r for r in _PRIORITY if r in reasons), R.INVALID_FIELD)
    first = errors[reasons.index(reason)]
    where = ".".join(str(part) for part in first["loc"])
    detail = f"{where}: {first['msg']}" if where else first["msg"]
    if len(errors) > 1:
        detail += f" (+{len(errors) - 1} more)"
    return InvalidEvent(reason, _truncate(detail))


def _truncate(text: str) -> str:
    return text if len(text) <= _DETAIL_CHARS else text[: _DETAIL_CHARS - 3] + "..."


def _loads(raw: bytes, what: str) -> Any:
    try:
        return loads_json(raw)  # integers of any size exactly
    except orjson.JSONDecodeError as exc:
        try:  # only on the failure path: tell bad UTF-8 from bad JSON
            raw.decode("utf-8")
        except UnicodeDecodeError as uexc:
            raise InvalidEvent(R.NOT_UTF8, _truncate(f"{what}: {uexc}")) from None
        raise InvalidEvent(R.NOT_JSON, _truncate(f"{what}: {exc}")) from None


def _text(raw: bytes | None, header: str) -> str:
    if raw is None:  # Kafka allows null header values
        raise InvalidEvent(R.NOT_CLOUDEVENT, f"header {header} has no value")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidEvent(R.NOT_UTF8, _truncate(f"header {header}: {exc}")) from None


def _first_header(
    headers: Sequence[tuple[str, bytes | None]], name: str
) -> tuple[str, bytes | None] | None:
    """The first header whose name is ``name`` (lowercase; compared case-insensitively), as
    ``(name as sent, value)``, or None when there is none.

    Kafka headers are an ordered list in which a name may repeat (KIP-82); a
    routing layer that appends a header leaves two. exectrack reads the first
    one of a name, wherever it reads that name (docs/events.md, "Which mode"),
    so the mode decision and the data's content type never see different values.
    """
    return next(((sent, raw) for sent, raw in headers if sent.lower() == name), None)


def _from_headers(value: bytes, headers: Sequence[tuple[str, bytes | None]]) -> dict[str, Any]:
    """CloudEvents Kafka binary mode: attributes in ``ce_*`` headers, value = data.

    ``datacontenttype`` is the first ``content-type`` header (the Kafka protocol
    binding, section 3.2.1, maps it there); a ``ce_datacontenttype`` header, as
    some producers write it, is read too. Both present: their media types must
    agree (case and parameters such as ``charset`` ignored), else ``InvalidEvent``
    (``not_cloudevent``) naming both values. A ``ce_*`` name sent twice is
    ``not_cloudevent`` (which of two ids, two times, is the event's?).
    """
    attributes: dict[str, Any] = {}
    for name, raw in headers:
        if name.startswith("ce_"):
            if name[3:] in attributes:
                raise InvalidEvent(R.NOT_CLOUDEVENT, f"header {name} appears twice")
            attributes[name[3:]] = _text(raw, name)
    content_type = _first_header(headers, "content-type")
    if content_type is not None:
        sent = _text(content_type[1], content_type[0])
        declared = attributes.get("datacontenttype")
        if declared is not None and media_type(declared) != media_type(sent):
            detail = (
                f"header content-type {sent[:100]!r} and header ce_datacontenttype "
                f"{declared[:100]!r} name different data content types"
            )
            raise InvalidEvent(R.NOT_CLOUDEVENT, _truncate(detail))
        attributes["datacontenttype"] = sent
    attributes["data"] = _loads(value, "data")
    return attributes


_CLOUDEVENTS_TYPE = b"application/cloudevents"
_CLOUDEVENTS_JSON = CONTENT_TYPE.encode()


def _structured(headers: Sequence[tuple[str, bytes | None]]) -> bool | None:
    """The content mode by the Kafka protocol binding of CloudEvents (section 3):
    True (structured) when the first ``content-type`` header is the media type
    ``application/cloudevents``, with any ``+format`` suffix (case-insensitive,
    parameters such as ``; charset=utf-8`` allowed); False (binary) when it is
    not but a ``ce_specversion`` header is there; None when there is neither.

    Structured in a format other than JSON raises ``InvalidEvent``
    (``unsupported_format``): the binding lets a receiver that cannot read a
    format refuse it, and reading that value as JSON, or as binary-mode data,
    would only give a misleading reason.
    """
    content_type = _first_header(headers, "content-type")
    raw = None if content_type is None else content_type[1]
    media = b"" if raw is None else raw.split(b";", 1)[0].strip().lower()
    if media == _CLOUDEVENTS_TYPE or media.startswith(_CLOUDEVENTS_TYPE + b"+"):
        if media not in (_CLOUDEVENTS_TYPE, _CLOUDEVENTS_JSON):
            shown = (raw or b"")[:100].decode("utf-8", "replace")
            detail = f"content-type {shown!r}: only application/cloudevents+json is read"
            raise InvalidEvent(R.UNSUPPORTED_FORMAT, detail)
        return True
    if any(name == "ce_specversion" for name, _ in headers):
        return False
    return None


def parse_event(
    value: bytes | None,
    headers: Sequence[tuple[str, bytes | None]] = (),
    key: bytes | None = None,
) -> Event:
    """Validate one Kafka message; raise ``InvalidEvent`` (and nothing else) if it is not an event.

    The content mode follows the CloudEvents Kafka protocol binding (CONTRACT.md,
    "Transport"): structured when the ``content-type`` header is
    ``application/cloudevents`` (any ``+format``; only JSON is read, other formats
    are ``unsupported_format``), binary otherwise. A message with neither that
    content-type nor a ``ce_specversion`` header cannot be a binary-mode event;
    it is read as structured JSON, as it always was (producers that omit the
    header, e.g. kcat without ``-H``: the value proves itself). Where a header
    name repeats, the first header of that name is read (``content-type``).

    ``key``, the Kafka key, must be the event's key when present; a missing key
    (None or empty bytes) is accepted (docs/events.md, "Transport": the fold
    does not need partition affinity; the consumer counts such events).
    """
    if value is None:
        raise InvalidEvent(R.NOT_CLOUDEVENT, "message has no value (a tombstone?)")
    if len(value) > MAX_EVENT_BYTES:
        raise InvalidEvent(R.TOO_LARGE, f"message is {len(value)} bytes, over {MAX_EVENT_BYTES}")
    binary = _structured(headers) is False
    obj = _from_headers(value, headers) if binary else _loads(value, "value")
    if not isinstance(obj, dict):
        raise InvalidEvent(R.NOT_CLOUDEVENT, f"value is a JSON {type(obj).__name__}, not an object")
    if obj.get("specversion") != SPECVERSION:
        raise InvalidEvent(R.NOT_CLOUDEVENT, "specversion: Input should be '1.0'")
    event_type = obj.get("type")
    if not isinstance(event_type, str):
        raise InvalidEvent(R.NOT_CLOUDEVENT, "type: Input should be a string")
    model = MODEL_OF.get(event_type)
    if model is None:
        raise InvalidEvent(R.UNKNOWN_TYPE, _truncate(f"type: unknown event type {event_type!r}"))
    try:
        event = model.model_validate(obj)
    except ValidationError as exc:
        raise _invalid(exc) from exc
    if key and key != event.key:  # None and b"" carry no key: nothing to disagree
        detail = f"Kafka key {key[:100]!r} should equal the event's key {event.key!r}"
        raise InvalidEvent(R.KEY_MISMATCH, _truncate(detail))
    return event


# ---------------------------------------------------------------- constructing
def _construct(
    event_type: str,
    subject: str,
    source: str,
    time: datetime | None,
    id: str | None,
    data: dict[str, Any],
) -> Event:
    """Encode, then parse: a constructed event is exactly what the consumer will accept.

    This also applies the whole-message limit, and a naive ``time`` fails here
    (orjson writes it without an offset) rather than in the consumer.
    """
    envelope = {
        "specversion": SPECVERSION,
        "id": str(uuid4()) if id is None else id,
        "source": source,
        "type": event_type,
        "subject": subject,
        "time": datetime.now(UTC) if time is None else time,
        "data": {name: value for name, value in data.items() if value is not None},
    }
    try:
        raw = dumps_json(envelope, option=orjson.OPT_UTC_Z)
    except TypeError as exc:  # orjson.JSONEncodeError: a set, a model, a surrogate...
        raise InvalidEvent(R.INVALID_FIELD, _truncate(f"not serializable as JSON: {exc}")) from None
    return parse_event(raw)


def _refuse_unknown(fields: dict[str, Any], model: type[BaseModel]) -> None:
    # The consumer ignores unknown fields (forward compatibility); a producer
    # passing one has a typo that would silently lose data.
    unknown = sorted(fields.keys() - model.model_fields.keys())
    if unknown:
        detail = f"data: unknown field(s) {', '.join(unknown)}"
        raise InvalidEvent(R.INVALID_FIELD, _truncate(detail))


def execution_event(
    type: EventType,
    *,
    execution_id: str,
    report_id: str,
    source: str,
    sequence: int | None = None,
    time: datetime | None = None,
    id: str | None = None,
    **fields: Any,
) -> ExecutionEvent:
    """Build a validated execution event (``time`` defaults to now, ``id`` to a uuid4).

    Args:
        type: one of the seven execution types (CONTRACT.md, "Execution event types").
        execution_id: the event's key and ``subject``, 1..255 characters.
        report_id: 1..255 characters.
        source: the CloudEvents ``source`` (URI-reference of the emitting service).
        sequence: per execution, increasing, >= 0 (None: absent).
        time: timezone-aware; stored in UTC at microsecond precision.
        id: the CloudEvents ``id``; a re-sent event keeps its id and content.
        **fields: other ``data`` fields (``ExecutionData``), e.g. ``records_processed``.

    Raises:
        InvalidEvent: the consumer would dead-letter the event (CONTRACT.md,
            "Invalid input"); an unknown field in ``fields`` is ``invalid_field``.
    """
    if type not in EXECUTION_TYPES:
        raise InvalidEvent(R.UNKNOWN_TYPE, f"type: {type!r} is not an execution event type")
    _refuse_unknown(fields, ExecutionData)
    data = {"execution_id": execution_id, "report_id": report_id, "sequence": sequence, **fields}
    event = _construct(type, execution_id, source, time, id, data)
    if not isinstance(event, ExecutionEvent):  # unreachable: type was checked above
        raise InvalidEvent(R.UNKNOWN_TYPE, f"type: {type!r}")
    return event


def report_defined_event(
    *,
    source: str,
    report_id: str,
    version: int,
    name: str,
    report_type: ReportType,
    category: ReportCategory,
    provider: CloudProvider,
    time: datetime | None = None,
    id: str | None = None,
    **fields: Any,
) -> ReportDefinedEvent:
    """Build a validated ``exectrack.report.defined`` event.

    CONTRACT.md, "Report definition events".

    ``version`` >= 1: the greater (version, time, id) defines the ``reports``
    row. ``fields`` are the other ``ReportData`` fields (``description``,
    ``query_config``, ``is_active``...); ``time`` and ``id`` as for ``execution_event``.

    Raises:
        InvalidEvent: the consumer would dead-letter the event; an unknown field
            in ``fields`` is ``invalid_field``.
    """
    _refuse_unknown(fields, ReportData)
    data = {"report_id": report_id, "version": version, "name": name, "report_type": report_type,
            "category": category, "provider": provider, **fields}  # fmt: skip
    event = _construct(T.REPORT_DEFINED, report_id, source, time, id, data)
    if not isinstance(event, ReportDefinedEvent):  # unreachable
        raise InvalidEvent(R.UNKNOWN_TYPE, "type: not exectrack.report.defined")
    return event


# ---------------------------------------------------------------- encoding
def _plain(model: BaseModel) -> dict[str, Any]:
    # orjson encodes StrEnum, UTC datetimes and dicts natively: walking
    # __dict__ beats model_dump, and keeps None *inside* JSON fields.
    return {name: value for name, value in model.__dict__.items() if value is not None}


def to_json(event: Event) -> bytes:
    """Structured-mode value: the event as compact JSON, times as ``...Z``, None fields omitted."""
    wire = _plain(event)
    wire["data"] = _plain(event.data)
    return dumps_json(wire, option=orjson.OPT_UTC_Z)


def kafka_headers(event: Event) -> list[tuple[str, bytes]]:
    """Headers of a structured-mode message (the same for every event today)."""
    return [("content-type", CONTENT_TYPE.encode())]


def _time_text(value: datetime) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_UTC_Z)[1:-1]  # as in to_json, quotes cut


def to_binary(event: Event) -> tuple[list[tuple[str, bytes]], bytes]:
    """Binary mode: ``ce_*`` headers plus ``content-type``, and ``data`` JSON as the value.

    Returns:
        ``(headers, value)``, per the CloudEvents Kafka protocol binding, section 3.2
        (binary content mode); ``parse_event(value, headers)`` gives ``event`` back.
    """
    headers = [
        (f"ce_{name}", _time_text(value) if isinstance(value, datetime) else value.encode())
        for name, value in event.__dict__.items()
        if name not in ("data", "datacontenttype")
    ]
    headers.append(("content-type", event.datacontenttype.encode()))
    return headers, dumps_json(_plain(event.data), option=orjson.OPT_UTC_Z)
