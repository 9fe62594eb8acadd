"""The consumer's fast path: a structured-mode execution event, bytes to ``Fact``, in one pass.

``exectrack.producer.events.parse_event`` (orjson, then the pydantic models) is
the contract's reference and stays the only judge of an invalid message: its
``InvalidEvent`` reason and detail are what the dead-letter queue gets. This
module only answers, for the common message, "valid, and here is the fold's
``Fact``" at a fraction of the cost (docs/performance.md), or "not sure", and
then the decoder asks ``parse_event``. It never refuses anything itself.

It says "valid" only for a message ``parse_event`` accepts, with the values it
would give (tests/unit/test_fast_path.py checks both on generated and mutated
messages):

- headers: none, or a first ``content-type`` header that is exactly
  ``application/cloudevents+json`` (structured mode, JSON); anything else
  (binary mode, parameters, another case) goes to ``parse_event``;
- the value is read by msgspec into ``Structs`` mirroring ``_Envelope`` and
  ``ExecutionData`` field for field, with their limits (lengths, ranges, strict
  integers, the enum, ``specversion``, the seven execution types); unknown
  fields are refused here (``parse_event`` ignores them after reading them with
  orjson, whose rules, e.g. numbers out of a double's range, msgspec does not
  share when it skips a value). Integers above ``MAX_BIGINT`` in the unbounded
  counts go to ``parse_event`` too;
- the JSON object fields are kept as raw bytes by msgspec and read by the
  contract's own ``loads_json`` and ``check_json_object``, so their values are
  exactly ``parse_event``'s (integers of any size, the 64 KiB limit, depth;
  nested deeper than msgspec recurses: ``parse_event``);
- times: only ``YYYY-MM-DDTHH:MM:SS[.f{1,6}](Z|+HH:MM|-HH:MM)`` with second
  < 60, read by ``datetime.fromisoformat`` (what pydantic reads the same way);
  the envelope's within ``MIN_TIME..MAX_TIME``; lower-case ``t``/``z``, a space,
  more digits, leap seconds go to ``parse_event``;
- identifiers: ASCII without control characters and edge spaces is checked
  here; other text by the contract's own pattern; ``subject`` and the Kafka key
  must be the ``execution_id``; ``datacontenttype`` absent, null or exactly
  ``application/json``.

The order key's digest is computed as ``ExecutionEvent.digest`` is: blake2b-128
of the canonical JSON (sorted keys, UTC times, null and unknown fields left
out) written by the same ``dumps_json`` from the same values.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from hashlib import blake2b
from typing import Annotated, Any, Literal

import msgspec
import orjson
from pydantic_core import PydanticCustomError

from exectrack.consumer.ingest.fold import Fact
from exectrack.producer._fields import IDENTIFIER_RE, check_json_object
from exectrack.producer._models import CANONICAL_OPTIONS, DIGEST_BYTES
from exectrack.producer.events import (
    CONTENT_TYPE,
    DATA_CONTENT_TYPE,
    MAX_BIGINT,
    MAX_EVENT_BYTES,
    MAX_TIME,
    MIN_TIME,
    RANK_OF,
    STATUS_OF,
    TriggerType,
    dumps_json,
    loads_json,
)

__all__ = ["fast_fact"]

_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
_Count = Annotated[int, msgspec.Meta(ge=0, le=MAX_BIGINT)]  # AnyCount above: parse_event
_User = Annotated[int, msgspec.Meta(ge=1, le=MAX_BIGINT)]  # AnyUserId above: parse_event
_ABSENT = msgspec.Raw(b"null")  # a JSON field not sent (sent as null: another Raw b"null")


class _Data(msgspec.Struct, forbid_unknown_fields=True, gc=False, omit_defaults=True):
    """``ExecutionData``, field for field (tests/unit/test_fast_path.py compares them)."""

    execution_id: _Id
    report_id: _Id
    sequence: _Count | None = None
    trigger_type: TriggerType | None = None
    started_by: _User | None = None
    start_time: str | None = None
    end_time: str | None = None
    duration_ms: _Count | None = None
    records_processed: _Count | None = None
    output_size_bytes: _Count | None = None
    execution_parameters: msgspec.Raw = _ABSENT
    result_summary: msgspec.Raw = _ABSENT
    error_details: msgspec.Raw = _ABSENT
    output_location: Annotated[str, msgspec.Meta(min_length=1, max_length=500)] | None = None
    retention_until: str | None = None


_ExecutionType = Literal[
    "exectrack.execution.pending", "exectrack.execution.started",
    "exectrack.execution.progress", "exectrack.execution.completed",
    "exectrack.execution.failed", "exectrack.execution.cancelled",
    "exectrack.execution.timed_out",
]  # fmt: skip


class _Envelope(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """``ExecutionEvent``'s envelope (``_Envelope``), field for field."""

    specversion: Literal["1.0"]
    id: _Id
    source: Annotated[str, msgspec.Meta(min_length=1, max_length=1000)]
    type: _ExecutionType
    subject: str
    time: str
    data: _Data
    datacontenttype: str | None = None


_DECODER = msgspec.json.Decoder(_Envelope)
_STATUS = {str(t): (s, RANK_OF[t]) for t, s in STATUS_OF.items()}
_TIMES = frozenset({"start_time", "end_time", "retention_until"})
_SPECIAL = _TIMES | {"execution_parameters", "result_summary", "error_details"}
_RAW = (msgspec.Raw,)
_CONTENT_TYPE = CONTENT_TYPE.encode()
_TIME_RE = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,6})?"
    r"(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
)


def _structured_json(headers: Sequence[tuple[str, bytes | None]]) -> bool:
    """Structured mode, JSON, by headers ``_structured`` reads the same way (else: not sure)."""
    for name, raw in headers:
        if name.lower() == "content-type":  # the first one decides
            return raw == _CONTENT_TYPE
    return not any(name == "ce_specversion" for name, _ in headers)


def _identifier(text: str) -> bool:
    if text.isascii():  # the pattern, for ASCII: printable, no edge space
        return text.isprintable() and text[0] != " " and text[-1] != " "
    return IDENTIFIER_RE.fullmatch(text) is not None


def _utc(text: str) -> datetime | None:
    """``text`` as an aware UTC datetime, when it has the common RFC 3339 form; else None."""
    if _TIME_RE.fullmatch(text) is None:
        return None
    try:
        return datetime.fromisoformat(text).astimezone(UTC)
    except (ValueError, OverflowError):  # 30 February, year 0, beyond year 9999 in UTC
        return None


def _json_object(raw: msgspec.Raw) -> Any:
    """A JSON field's value as ``parse_event`` reads it (None for null); ``...``: not sure."""
    try:
        value = loads_json(bytes(raw))
        if value is None:
            return None
        if type(value) is not dict:
            return ...
        return check_json_object(value)
    except (orjson.JSONDecodeError, PydanticCustomError, RecursionError):
        return ...


def fast_fact(
    value: bytes | None, headers: Sequence[tuple[str, bytes | None]], key: bytes | None
) -> Fact | None:
    """The ``Fact`` of an execution event in structured-mode JSON, or None: not sure.

    Args:
        value, headers, key: the Kafka record's, as ``parse_event`` takes them.

    Returns:
        The fact ``fact_of(parse_event(value, headers, key))`` gives, for a
        message of the common form (module docstring); None for any other
        message, valid or not: ask ``parse_event``. Never raises.
    """
    if value is None or len(value) > MAX_EVENT_BYTES:
        return None
    if headers and not _structured_json(headers):
        return None
    try:
        envelope = _DECODER.decode(value)
    except (msgspec.DecodeError, RecursionError):  # ValidationError too; nested too deep
        return None
    data = envelope.data
    execution_id = data.execution_id
    if envelope.subject != execution_id or (key and key != execution_id.encode()):
        return None
    if envelope.datacontenttype not in (None, DATA_CONTENT_TYPE):
        return None
    if not (_identifier(execution_id) and _identifier(data.report_id)):
        return None
    time = _utc(envelope.time)
    if time is None or not MIN_TIME <= time <= MAX_TIME:
        return None
    sent = msgspec.to_builtins(data, builtin_types=_RAW)  # the fields sent, not null
    for name in _SPECIAL & sent.keys():
        if name in _TIMES:
            moment = _utc(sent[name])
            if moment is None:
                return None
            sent[name] = moment
        else:
            parsed = _json_object(sent[name])
            if parsed is ...:
                return None
            if parsed is None:
                del sent[name]
            else:
                sent[name] = parsed
    event_type = envelope.type
    canonical = {
        "specversion": "1.0", "id": envelope.id, "source": envelope.source,
        "type": event_type, "subject": execution_id, "time": time,
        "datacontenttype": DATA_CONTENT_TYPE, "data": sent,
    }  # fmt: skip
    digest = blake2b(dumps_json(canonical, option=CANONICAL_OPTIONS), digest_size=DIGEST_BYTES)
    status, rank = _STATUS[event_type]
    del sent["execution_id"]  # the rest are CARRIED_FIELDS
    sequence = sent.pop("sequence", -1)
    order_key = (rank, sequence, time, envelope.id, digest.hexdigest())
    return Fact(execution_id, data.report_id, status, order_key, data.started_by, sent)
