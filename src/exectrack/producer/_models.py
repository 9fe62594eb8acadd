"""The contract's vocabulary (event types, statuses, enums) and its pydantic models.

Import these from ``exectrack.producer.events``; this module only keeps ``events`` short.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from hashlib import blake2b
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    model_validator,
)
from pydantic_core import PydanticCustomError

from exectrack.producer._fields import (
    DATA_CONTENT_TYPE,
    MAX_INT_ID,
    AnyCount,
    AnyUserId,
    AnyUtcTime,
    Count,
    Identifier,
    JsonObject,
    UserId,
    UtcTime,
    check_text_bytes,
    dumps_json,
    media_type,
)


class EventType(StrEnum):
    """The CloudEvents ``type`` values (CONTRACT.md, "Execution event types", "Report
    definition events"); any other type is dead-lettered (CONTRACT.md, "Invalid input")."""

    PENDING = "exectrack.execution.pending"
    STARTED = "exectrack.execution.started"
    PROGRESS = "exectrack.execution.progress"
    COMPLETED = "exectrack.execution.completed"
    FAILED = "exectrack.execution.failed"
    CANCELLED = "exectrack.execution.cancelled"
    TIMED_OUT = "exectrack.execution.timed_out"
    REPORT_DEFINED = "exectrack.report.defined"


class ExecutionStatus(StrEnum):
    """``report_executions.status``: what an event type implies (``STATUS_OF``, CONTRACT.md)."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"


class TriggerType(StrEnum):
    """What started an execution: data.trigger_type (CONTRACT.md), an ENUM column."""

    MANUAL = "manual"
    SCHEDULED = "scheduled"
    API = "api"
    WEBHOOK = "webhook"


class ReportType(StrEnum):
    """The kinds of report: the ENUM of reports.report_type (docs/schema.md)."""

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
    """The categories of report: the ENUM of reports.category (docs/schema.md)."""

    INFRASTRUCTURE = "infrastructure"
    SECURITY = "security"
    COMPLIANCE = "compliance"
    COST = "cost"
    PERFORMANCE = "performance"
    OPERATIONS = "operations"
    CUSTOM = "custom"


class CloudProvider(StrEnum):
    """The cloud a report covers: the ENUM of reports.provider (docs/schema.md)."""

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

# ---------------------------------------------------------------- models
_FROZEN = ConfigDict(frozen=True, extra="ignore")


class ExecutionData(BaseModel):
    """``data`` of an execution event; absent (or null) fields carry no value."""

    model_config = _FROZEN

    execution_id: Identifier
    report_id: Identifier
    sequence: Count | None = Field(None, description="Per execution, increasing.")
    trigger_type: TriggerType | None = None
    started_by: AnyUserId | None = Field(None, description="users.id (integer).")
    start_time: AnyUtcTime | None = None
    end_time: AnyUtcTime | None = None
    duration_ms: AnyCount | None = None
    records_processed: AnyCount | None = None
    output_size_bytes: AnyCount | None = None
    execution_parameters: JsonObject | None = None
    result_summary: JsonObject | None = None
    error_details: JsonObject | None = None
    output_location: Annotated[str, Field(min_length=1, max_length=500)] | None = None
    retention_until: AnyUtcTime | None = Field(None, description="Overrides the retention policy.")


class ReportData(BaseModel):
    """``data`` of ``exectrack.report.defined``: the ``reports`` columns of the seed."""

    model_config = _FROZEN

    report_id: Identifier
    version: Annotated[int, Field(strict=True, ge=1, le=MAX_INT_ID)]
    name: Annotated[str, Field(min_length=1, max_length=255)]
    description: Annotated[str, AfterValidator(check_text_bytes)] | None = Field(
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


DIGEST_BYTES = 16
"""Length of ``Event.digest`` in bytes (32 hex characters)."""


def canonical_json(event: BaseModel) -> bytes:
    """The event's canonical content: what ``digest`` hashes (CONTRACT.md, "The fold").

    The validated event as JSON with sorted keys (nested objects too), times in
    UTC at microsecond precision (``...Z``), absent and null fields omitted,
    unknown ``data`` fields and extension attributes already dropped by
    validation. One event sent in structured or binary mode, with its keys in
    another order or its time spelled with another offset, has one canonical form.
    Integers beyond 64 bits are written with all their digits
    (``exectrack.producer._fields.dumps_json``), so two events differing only there differ.
    """
    # The envelope's attributes are never null; orjson calls _present for the one
    # value it cannot encode, ``data`` (a model): no Python-side copy of the
    # envelope (2.7 instead of 3.5 us per event with the hash, docs/performance.md).
    return dumps_json(event.__dict__, default=_present, option=CANONICAL_OPTIONS)


CANONICAL_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_UTC_Z
"""orjson options of ``canonical_json``: sorted keys, UTC times as ``...Z``."""


def _present(model: BaseModel) -> dict[str, Any]:
    return {k: v for k, v in model.__dict__.items() if v is not None}


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
    datacontenttype: Annotated[Literal["application/json"], BeforeValidator(media_type)] = (
        DATA_CONTENT_TYPE
    )

    @property
    def digest(self) -> str:
        """Hex blake2b-128 of ``canonical_json(self)`` (32 characters): the order
        key's last tie-break (CONTRACT.md, "The fold").

        Two events with one ``id`` and different content (a producer that broke
        "a re-sent event keeps its id and content") differ here, so the fold's
        winner never depends on which arrived first. Computed on each call (about
        3 us; the fold asks once per event), not cached: a cached value would
        have to live in the model and take part in its equality.
        """
        return blake2b(canonical_json(self), digest_size=DIGEST_BYTES).hexdigest()


def _check_subject(subject: str, data_id: str, name: str) -> None:
    if subject != data_id:
        # Formatted here: pydantic fills only plain {name} placeholders (not {name!r}),
        # and would fill them again inside the values it inserted. No context, so
        # the text (which may hold braces from the event) is taken as it is.
        msg = f"subject {subject[:100]!r} should equal data.{name} {data_id!r}"
        raise PydanticCustomError("key_mismatch", msg)


ExecutionEventType = Literal[
    EventType.PENDING, EventType.STARTED, EventType.PROGRESS, EventType.COMPLETED,
    EventType.FAILED, EventType.CANCELLED, EventType.TIMED_OUT,
]  # fmt: skip
ExecutionOrderKey = tuple[int, int, datetime, str, str]
ReportOrderKey = tuple[int, datetime, str, str]


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
        """The status this event's type implies (CONTRACT.md, "Execution event types")."""
        return STATUS_OF[self.type]

    @property
    def rank(self) -> int:
        """0 pending, 1 started/progress, 2 terminal: the first component of the order key."""
        return RANK_OF[self.type]

    @property
    def key(self) -> bytes:
        """The Kafka key: all events of one execution share a partition."""
        return self.data.execution_id.encode()

    @property
    def order_key(self) -> ExecutionOrderKey:
        """K = (rank, sequence or -1, time, id, digest): the greatest K decides the fold.

        CONTRACT.md, "The fold". Total over distinct events (distinct by id and
        content), so the winner never depends on arrival order, even between
        two different events sent under one ``id``.
        """
        seq = self.data.sequence
        return (self.rank, -1 if seq is None else seq, self.time, self.id, self.digest)


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
        """The Kafka key: the ``report_id`` as UTF-8 (CONTRACT.md, "Report definition events")."""
        return self.data.report_id.encode()

    @property
    def order_key(self) -> ReportOrderKey:
        """(version, time, id, definition digest): the greatest defines the ``reports`` row.

        The digest (``definition_digest`` of ``data``) only decides between two
        different definitions sent under one ``id``; it is a digest of what the
        row stores, so a stored row's can be computed from its columns.
        """
        return (self.data.version, self.time, self.id, definition_digest(self.data.__dict__))


DEFINITION_FIELDS: tuple[str, ...] = tuple(ReportData.model_fields)
"""The fields of a report definition: the ``reports`` columns an event sets."""


def definition_digest(fields: Mapping[str, Any]) -> str:
    """Hex blake2b-128 of a definition's canonical content (``DEFINITION_FIELDS``,
    null ones omitted, sorted-key JSON): from ``ReportData`` or from a stored
    ``reports`` row alike, so a tie with a stored definition is decided the same
    way as one inside a batch (CONTRACT.md, "The fold", applied to reports)."""
    present = {name: fields[name] for name in DEFINITION_FIELDS if fields[name] is not None}
    return blake2b(
        dumps_json(present, option=CANONICAL_OPTIONS), digest_size=DIGEST_BYTES
    ).hexdigest()


Event = Annotated[ExecutionEvent | ReportDefinedEvent, Field(discriminator="type")]
EVENT_ADAPTER: TypeAdapter[ExecutionEvent | ReportDefinedEvent] = TypeAdapter(Event)
MODEL_OF: dict[str, type[ExecutionEvent] | type[ReportDefinedEvent]] = {
    **dict.fromkeys(EXECUTION_TYPES, ExecutionEvent),
    T.REPORT_DEFINED: ReportDefinedEvent,
}
