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
user ids ``INT``, times ``TIMESTAMP(6)`` (UTC, microseconds, 1970..2038: an
envelope ``time`` outside is rejected with ``time_out_of_range``; the optional
``data`` times are accepted in any year and the consumer's fold saturates
``retention_until`` and drops ``start_time``/``end_time`` outside the range,
``exectrack.consumer.ingest.fold.storable``), JSON fields ``JSON`` (at most 64 KiB
serialized; nested deeper than ``MAX_JSON_DEPTH`` = 31 they are accepted and
the fold does not store them). Sub-microsecond digits of a time are truncated.
Integers of any size inside JSON fields are read, digested and stored exactly
(``loads_json``, ``dumps_json``). Run ``python -m exectrack.producer.schema --write
docs/schema/events.schema.json`` to export the JSON Schema for other languages.

This module is the stable import path of the contract; the code lives in
``exectrack.producer._fields`` (field types and limits), ``exectrack.producer._models`` (enums and
models), ``exectrack.producer._codec`` (parse, construct, encode) and ``exectrack.producer.schema``.
"""

from __future__ import annotations

from exectrack.producer._codec import (
    execution_event,
    kafka_headers,
    parse_event,
    report_defined_event,
    to_binary,
    to_json,
)
from exectrack.producer._fields import (
    CONTENT_TYPE,
    DATA_CONTENT_TYPE,
    MAX_BIGINT,
    MAX_EVENT_BYTES,
    MAX_INT_ID,
    MAX_JSON_DEPTH,
    MAX_JSON_FIELD_BYTES,
    MAX_TIME,
    MIN_TIME,
    SPECVERSION,
    AnyCount,
    AnyUserId,
    AnyUtcTime,
    Count,
    Identifier,
    JsonObject,
    UserId,
    UtcTime,
    dumps_json,
    json_depth,
    loads_json,
)
from exectrack.producer._models import (
    DEFINITION_FIELDS,
    EVENT_ADAPTER,
    EXECUTION_TYPES,
    RANK_OF,
    STATUS_OF,
    TERMINAL_STATUSES,
    CloudProvider,
    Event,
    EventType,
    ExecutionData,
    ExecutionEvent,
    ExecutionEventType,
    ExecutionOrderKey,
    ExecutionStatus,
    ReportCategory,
    ReportData,
    ReportDefinedEvent,
    ReportOrderKey,
    ReportType,
    TriggerType,
    definition_digest,
)
from exectrack.producer.errors import InvalidEvent, InvalidReason
from exectrack.producer.schema import SCHEMA_ID, json_schema, main, render_schema

R, S, T = InvalidReason, ExecutionStatus, EventType  # the short names the module always had

__all__ = [
    "CONTENT_TYPE",
    "DATA_CONTENT_TYPE",
    "DEFINITION_FIELDS",
    "EVENT_ADAPTER",
    "EXECUTION_TYPES",
    "MAX_BIGINT",
    "MAX_EVENT_BYTES",
    "MAX_INT_ID",
    "MAX_JSON_DEPTH",
    "MAX_JSON_FIELD_BYTES",
    "MAX_TIME",
    "MIN_TIME",
    "RANK_OF",
    "SCHEMA_ID",
    "SPECVERSION",
    "STATUS_OF",
    "TERMINAL_STATUSES",
    "AnyCount",
    "AnyUserId",
    "AnyUtcTime",
    "CloudProvider",
    "Count",
    "Event",
    "EventType",
    "ExecutionData",
    "ExecutionEvent",
    "ExecutionEventType",
    "ExecutionOrderKey",
    "ExecutionStatus",
    "Identifier",
    "InvalidEvent",
    "InvalidReason",
    "JsonObject",
    "ReportCategory",
    "ReportData",
    "ReportDefinedEvent",
    "ReportOrderKey",
    "ReportType",
    "TriggerType",
    "UserId",
    "UtcTime",
    "definition_digest",
    "dumps_json",
    "execution_event",
    "json_depth",
    "json_schema",
    "kafka_headers",
    "loads_json",
    "main",
    "parse_event",
    "render_schema",
    "report_defined_event",
    "to_binary",
    "to_json",
]
