"""The exectrack event contract: the ONE schema producers and the consumer share.

An event is a CloudEvents 1.0 envelope whose ``data`` is a JSON object::

    {"specversion": "1.0", "id": "<uuid>", "source": "/services/vpc-scanner",
     "type": "exectrack.execution.completed", "subject": "<execution_id>",
     "time": "2024-05-01T12:00:00.123456Z",
     "data": {"execution_id": "<execution_id>", "report_id": "r-1", "sequence": 7}}

On Kafka it travels in structured mode (the value above, ``content-type:
application/cloudevents+json``) keyed by ``execution_id`` (``report_id`` for
``exectrack.report.defined``); ``parse_event`` also reads binary mode (``ce_*``
headers, value = ``data``). Every validation failure raises ``InvalidEvent``
with one ``InvalidReason``, so the consumer dead-letters by code, not by
parsing messages. Unknown ``data`` fields and extension attributes are ignored:
old consumers keep working when producers add fields.

The column types of the MySQL schema are enforced here, at the edge, so a
valid event can always be written: ids fit ``VARCHAR(255)``, counts ``BIGINT``,
user ids ``INT``, times ``TIMESTAMP(6)`` (UTC, microseconds, 1970..2038; a
time outside is rejected with ``time_out_of_range``, never clamped), JSON
fields ``JSON`` (at most 64 KiB serialized). Sub-microsecond digits of a time
are truncated. Integers beyond 64 bits inside JSON fields become floats
(orjson semantics). Run ``python -m producer.events --write
docs/schema/events.schema.json`` to export the JSON Schema for other languages.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Final, Literal
from uuid import uuid4

import orjson
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from producer.errors import InvalidEvent, InvalidReason

R = InvalidReason


class EventType(StrEnum):
    PENDING = "exectrack.execution.pending"
    STARTED = "exectrack.execution.started"
    PROGRESS = "exectrack.execution.progress"
    COMPLETED = "exectrack.execution.completed"
    FAILED = "exectrack.execution.failed"
    CANCELLED = "exectrack.execution.cancelled"
    TIMED_OUT = "exectrack.execution.timed_out"
    REPORT_DEFINED = "exectrack.report.defined"


class ExecutionStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"


class TriggerType(StrEnum):
    MANUAL = "manual"
    SCHEDULED = "scheduled"
    API = "api"
    WEBHOOK = "webhook"


class ReportType(StrEnum):
    VPC_INVENTORY = "vpc_inventory"
    SUBNET_UTILIZATION = "subnet_utilization"
    IP_ADDRESS_UTILIZATION = "ip_address_utilization"
    SECURITY_GROUP_AUDIT = "security_group_audit"
    NETWORK_ACL_AUDIT = "network_acl_audit"
    ROUTE_TABLE_ANALYSIS = "route_table_analysis"
    NETWORK_TOPOLOGY = "network_topology"
    PEERING_CONNECTIONS = "peering_connections"
    VPN_CONNECTIONS = "vpn_connections"
    LOAD_BALANCER_INVENTORY = "load_balancer_inventory"
    NAT_GATEWAY_USAGE = "nat_gateway_usage"
    DNS_INVENTORY = "dns_inventory"
    FLOW_LOG_ANALYSIS = "flow_log_analysis"
    COST_ALLOCATION = "cost_allocation"
    COMPLIANCE_SUMMARY = "compliance_summary"
    CUSTOM = "custom"


class ReportCategory(StrEnum):
    INFRASTRUCTURE = "infrastructure"
    SECURITY = "security"
    COMPLIANCE = "compliance"
    COST = "cost"
    PERFORMANCE = "performance"
    OPERATIONS = "operations"
    CUSTOM = "custom"


class CloudProvider(StrEnum):
    AWS = "aws"
    AZURE = "azure"
    GCP = "gcp"
    OCI = "oci"
    ALIBABA = "alibaba"
    IBM = "ibm"
    MULTI_CLOUD = "multi_cloud"
    ON_PREMISES = "on_premises"


T = EventType
S = ExecutionStatus
STATUS_OF: dict[EventType, ExecutionStatus] = {
    T.PENDING: S.PENDING, T.STARTED: S.RUNNING, T.PROGRESS: S.RUNNING,
    T.COMPLETED: S.COMPLETED, T.FAILED: S.FAILED, T.CANCELLED: S.CANCELLED,
    T.TIMED_OUT: S.TIMEOUT,
}  # fmt: skip
"""The execution status each execution event type implies (contract table)."""
RANK_OF: dict[EventType, int] = {
    t: {S.PENDING: 0, S.RUNNING: 1}.get(s, 2) for t, s in STATUS_OF.items()
}
"""First component of the order key: a terminal event (2) outranks any running (1) one."""
TERMINAL_STATUSES = frozenset({S.COMPLETED, S.FAILED, S.CANCELLED, S.TIMEOUT})
EXECUTION_TYPES = frozenset(STATUS_OF)

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
_DETAIL_CHARS = 500

# ---------------------------------------------------------------- field types
# Rules raise PydanticCustomError whose *type* names the InvalidReason when it
# is not the default one (see _reason_of), so mapping needs no message parsing.

_IDENTIFIER = r"[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f])?"
_IDENTIFIER_RE = re.compile(_IDENTIFIER)


def _check_identifier(value: str) -> str:
    if _IDENTIFIER_RE.fullmatch(value) is None:
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
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})?"  # the offset: group 1
)


def _check_time_text(value: object) -> object:
    """Accept RFC 3339 text (or a datetime); refuse what pydantic would guess at.

    pydantic alone also takes Unix timestamps (``1700000000``, as number or
    string) and dates; a contract that says RFC 3339 should not.
    """
    if isinstance(value, datetime):
        return value  # AwareDatetime refuses naive ones
    if not isinstance(value, str):
        raise PydanticCustomError("datetime_type", "Input should be an RFC 3339 date-time string")
    match = _RFC3339_RE.fullmatch(value)
    if match is None:
        msg = "Input should be an RFC 3339 date-time such as 2024-05-01T12:00:00Z"
        raise PydanticCustomError("datetime_format", msg)
    if match.group(1) is None:
        raise PydanticCustomError("naive_timestamp", "Input should have a UTC offset, e.g. Z")
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
"""RFC 3339 with an offset, stored as UTC with microseconds (MySQL ``TIMESTAMP(6)``)."""

Count = Annotated[int, Field(strict=True, ge=0, le=MAX_BIGINT)]
"""A JSON integer 0..2**63-1 (``BIGINT``); booleans and floats (even 2.0) are refused."""

UserId = Annotated[int, Field(strict=True, ge=1, le=MAX_INT_ID)]
"""A ``users.id`` (``INT``); an unknown id gets a placeholder user row."""


def _check_json_object(value: dict[str, Any]) -> dict[str, Any]:
    # Serialized two levels down, where it sits in the message, so orjson's
    # nesting limit (254) is met here and not first by to_json.
    try:
        size = len(orjson.dumps([[value]])) - 4
    except TypeError as exc:  # orjson.JSONEncodeError: too deep, or not JSON
        msg = "Not serializable as JSON: {error}"
        raise PydanticCustomError("json_object", msg, {"error": str(exc)}) from None
    if size > MAX_JSON_FIELD_BYTES:
        msg = "JSON object is {size} bytes serialized, over the limit of {limit}"
        raise PydanticCustomError("too_large", msg, {"size": size, "limit": MAX_JSON_FIELD_BYTES})
    return value


JsonObject = Annotated[
    dict[str, Any],
    AfterValidator(_check_json_object),
    Field(description="At most 65536 bytes as compact JSON."),
]
"""A JSON object of at most 64 KiB compact serialization (a MySQL ``JSON`` column)."""


def _check_text_bytes(value: str) -> str:
    if len(value.encode("utf-8", "surrogatepass")) > 65535:
        raise PydanticCustomError("text_length", "Text should be at most 65535 UTF-8 bytes")
    return value


def _media_type(value: object) -> object:
    """``Application/JSON; charset=utf-8`` means ``application/json``; null means absent."""
    if value is None:
        return DATA_CONTENT_TYPE
    return value.split(";", 1)[0].strip().lower() if isinstance(value, str) else value


# ---------------------------------------------------------------- models
_FROZEN = ConfigDict(frozen=True, extra="ignore")


class ExecutionData(BaseModel):
    """``data`` of an execution event; absent (or null) fields carry no value."""

    model_config = _FROZEN

    execution_id: Identifier
    report_id: Identifier
    sequence: Count | None = Field(None, description="Per execution, increasing.")
    trigger_type: TriggerType | None = None
    started_by: UserId | None = Field(None, description="users.id (integer).")
    start_time: UtcTime | None = None
    end_time: UtcTime | None = None
    duration_ms: Count | None = None
    records_processed: Count | None = None
    output_size_bytes: Count | None = None
    execution_parameters: JsonObject | None = None
    result_summary: JsonObject | None = None
    error_details: JsonObject | None = None
    output_location: Annotated[str, Field(min_length=1, max_length=500)] | None = None
    retention_until: UtcTime | None = Field(None, description="Overrides the retention policy.")


class ReportData(BaseModel):
    """``data`` of ``exectrack.report.defined``: the ``reports`` columns of the seed."""

    model_config = _FROZEN

    report_id: Identifier
    version: Annotated[int, Field(strict=True, ge=1, le=MAX_INT_ID)]
    name: Annotated[str, Field(min_length=1, max_length=255)]
    description: Annotated[str, AfterValidator(_check_text_bytes)] | None = Field(
        None, description="At most 65535 UTF-8 bytes (TEXT)."
    )
    report_type: ReportType
    category: ReportCategory
    provider: CloudProvider
    query_config: JsonObject | None = None
    scheduling_config: JsonObject | None = None
    notification_config: JsonObject | None = None
    parameters_schema: JsonObject | None = None
    is_active: Annotated[bool, Field(strict=True)] = True
    is_public: Annotated[bool, Field(strict=True)] = False
    created_by: UserId | None = None
    last_modified_by: UserId | None = None


class _Envelope(BaseModel):
    """CloudEvents 1.0 attributes; extension attributes are accepted and dropped."""

    model_config = _FROZEN

    specversion: Literal["1.0"]
    id: Annotated[str, Field(min_length=1, max_length=255)]
    source: Annotated[str, Field(min_length=1, max_length=1000, description="URI-reference.")]
    type: str  # narrowed to Literal[...] by each event class (the discriminator)
    subject: str
    time: UtcTime
    # Always JSON: absent means application/json, which makes the structured
    # and binary forms of one event compare equal.
    datacontenttype: Annotated[Literal["application/json"], BeforeValidator(_media_type)] = (
        DATA_CONTENT_TYPE
    )


def _check_subject(subject: str, data_id: str, name: str) -> None:
    if subject != data_id:
        msg = "subject {subject!r} should equal data.{name} {data_id!r}"
        context = {"subject": subject[:100], "name": name, "data_id": data_id}
        raise PydanticCustomError("key_mismatch", msg, context)


ExecutionEventType = Literal[
    EventType.PENDING, EventType.STARTED, EventType.PROGRESS, EventType.COMPLETED,
    EventType.FAILED, EventType.CANCELLED, EventType.TIMED_OUT,
]  # fmt: skip
ExecutionOrderKey = tuple[int, int, datetime, str]
ReportOrderKey = tuple[int, datetime, str]


class ExecutionEvent(_Envelope):
    """One lifecycle step of one execution; ``subject`` is its ``execution_id``."""

    type: ExecutionEventType
    data: ExecutionData

    @model_validator(mode="after")
    def _subject_is_execution_id(self) -> ExecutionEvent:
        _check_subject(self.subject, self.data.execution_id, "execution_id")
        return self

    @property
    def status(self) -> ExecutionStatus:
        return STATUS_OF[self.type]

    @property
    def rank(self) -> int:
        return RANK_OF[self.type]

    @property
    def key(self) -> bytes:
        """The Kafka key: all events of one execution share a partition."""
        return self.data.execution_id.encode()

    @property
    def order_key(self) -> ExecutionOrderKey:
        """K = (rank, sequence or -1, time, id): the greatest K decides the fold.

        Total over distinct ids, so the winner never depends on arrival order.
        """
        seq = self.data.sequence
        return (self.rank, -1 if seq is None else seq, self.time, self.id)


class ReportDefinedEvent(_Envelope):
    """A version of a report definition; ``subject`` is its ``report_id``."""

    type: Literal[EventType.REPORT_DEFINED]
    data: ReportData

    @model_validator(mode="after")
    def _subject_is_report_id(self) -> ReportDefinedEvent:
        _check_subject(self.subject, self.data.report_id, "report_id")
        return self

    @property
    def key(self) -> bytes:
        return self.data.report_id.encode()

    @property
    def order_key(self) -> ReportOrderKey:
        """(version, time, id): the greatest defines the ``reports`` row."""
        return (self.data.version, self.time, self.id)


Event = Annotated[ExecutionEvent | ReportDefinedEvent, Field(discriminator="type")]
EVENT_ADAPTER: TypeAdapter[ExecutionEvent | ReportDefinedEvent] = TypeAdapter(Event)
_MODEL_OF: dict[str, type[ExecutionEvent] | type[ReportDefinedEvent]] = {
    **dict.fromkeys(EXECUTION_TYPES, ExecutionEvent),
    T.REPORT_DEFINED: ReportDefinedEvent,
}

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
        return orjson.loads(raw)
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


def _from_headers(value: bytes, headers: Sequence[tuple[str, bytes | None]]) -> dict[str, Any]:
    """CloudEvents Kafka binary mode: attributes in ``ce_*`` headers, value = data."""
    attributes: dict[str, Any] = {}
    for name, raw in headers:
        if name.startswith("ce_"):
            if name[3:] in attributes:
                raise InvalidEvent(R.NOT_CLOUDEVENT, f"header {name} appears twice")
            attributes[name[3:]] = _text(raw, name)
        elif name.lower() == "content-type":
            attributes["datacontenttype"] = _text(raw, name)
    attributes["data"] = _loads(value, "data")
    return attributes


def parse_event(
    value: bytes | None,
    headers: Sequence[tuple[str, bytes | None]] = (),
    key: bytes | None = None,
) -> Event:
    """Validate one Kafka message; raise ``InvalidEvent`` (and nothing else) if it is not an event.

    Binary mode when a ``ce_specversion`` header is present, else structured
    mode; the ``content-type`` header of a structured message is not checked
    (producers get it wrong, and the value proves itself). ``key``, when
    given, must be the event's key.
    """
    if value is None:
        raise InvalidEvent(R.NOT_CLOUDEVENT, "message has no value (a tombstone?)")
    if len(value) > MAX_EVENT_BYTES:
        raise InvalidEvent(R.TOO_LARGE, f"message is {len(value)} bytes, over {MAX_EVENT_BYTES}")
    binary = any(name == "ce_specversion" for name, _ in headers)
    obj = _from_headers(value, headers) if binary else _loads(value, "value")
    if not isinstance(obj, dict):
        raise InvalidEvent(R.NOT_CLOUDEVENT, f"value is a JSON {type(obj).__name__}, not an object")
    if obj.get("specversion") != SPECVERSION:
        raise InvalidEvent(R.NOT_CLOUDEVENT, "specversion: Input should be '1.0'")
    event_type = obj.get("type")
    if not isinstance(event_type, str):
        raise InvalidEvent(R.NOT_CLOUDEVENT, "type: Input should be a string")
    model = _MODEL_OF.get(event_type)
    if model is None:
        raise InvalidEvent(R.UNKNOWN_TYPE, _truncate(f"type: unknown event type {event_type!r}"))
    try:
        event = model.model_validate(obj)
    except ValidationError as exc:
        raise _invalid(exc) from exc
    if key is not None and key != event.key:
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
        raw = orjson.dumps(envelope, option=orjson.OPT_UTC_Z)
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
    """Build a validated execution event (``time`` defaults to now, ``id`` to a uuid4)."""
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
    """Build a validated ``exectrack.report.defined`` event."""
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
    return orjson.dumps(wire, option=orjson.OPT_UTC_Z)


def kafka_headers(event: Event) -> list[tuple[str, bytes]]:
    """Headers of a structured-mode message (the same for every event today)."""
    return [("content-type", CONTENT_TYPE.encode())]


def _time_text(value: datetime) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_UTC_Z)[1:-1]  # as in to_json, quotes cut


def to_binary(event: Event) -> tuple[list[tuple[str, bytes]], bytes]:
    """Binary mode: ``ce_*`` headers plus ``content-type``, and ``data`` JSON as the value."""
    headers = [
        (f"ce_{name}", _time_text(value) if isinstance(value, datetime) else value.encode())
        for name, value in event.__dict__.items()
        if name not in ("data", "datacontenttype")
    ]
    headers.append(("content-type", event.datacontenttype.encode()))
    return headers, orjson.dumps(_plain(event.data), option=orjson.OPT_UTC_Z)


# ---------------------------------------------------------------- JSON Schema
SCHEMA_ID = "urn:exectrack:schema:events:v1"


def json_schema() -> dict[str, Any]:
    """JSON Schema (2020-12) of ``Event``: the contract for producers in other languages."""
    schema = EVENT_ADAPTER.json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "exectrack event (CloudEvents 1.0, structured mode)",
        "description": (__doc__ or "").split("\n", 1)[0],
        **schema,
    }


def render_schema() -> str:
    """The exported file's exact text: pretty, sorted keys, trailing newline."""
    return json.dumps(json_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m producer.events [--write PATH | --check PATH]`` (stdout by default)."""
    parser = argparse.ArgumentParser(
        prog="python -m producer.events", description=json_schema.__doc__
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", metavar="PATH", type=Path, help="write the schema to PATH")
    group.add_argument("--check", metavar="PATH", type=Path, help="exit 1 if PATH is not current")
    args = parser.parse_args(argv)
    text = render_schema()
    if args.write is not None:
        args.write.parent.mkdir(parents=True, exist_ok=True)
        args.write.write_text(text, encoding="utf-8")
    elif args.check is not None:
        current = args.check.read_text(encoding="utf-8") if args.check.exists() else None
        if current != text:
            fix = f"python -m producer.events --write {args.check}"
            print(f"{args.check} is out of date; run: {fix}", file=sys.stderr)
            return 1
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
