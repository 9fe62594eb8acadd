"""The consumer's fast path agrees with the contract's parser on every message.

``exectrack.consumer.ingest.fast.fast_fact`` reads the common execution event
with msgspec; ``parse_event`` (orjson + the pydantic models) is the contract. The
fast path either gives the very ``Fact`` that ``fact_of(parse_event(...))`` gives,
or says "not sure" (None) and the decoder asks ``parse_event``, which then
accepts or dead-letters with its own reason and detail. These tests generate
valid events from the contract, mutate them (wrong types, missing and extra
fields, out-of-range values, bad times, unknown types, odd text, raw JSON
tokens orjson refuses, broken bytes, headers and keys) and check that the
decoder with the fast path ends every message where ``parse_event`` alone does.
"""

from __future__ import annotations

import typing
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import annotated_types
import msgspec
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic.fields import FieldInfo

from exectrack.consumer.ingest import fast
from exectrack.consumer.ingest.decode import Decoder
from exectrack.consumer.ingest.fold import fact_of
from exectrack.producer.events import (
    CONTENT_TYPE,
    EXECUTION_TYPES,
    MAX_BIGINT,
    EventType,
    ExecutionData,
    ExecutionEvent,
    InvalidEvent,
    TriggerType,
    dumps_json,
    execution_event,
    loads_json,
    parse_event,
    to_binary,
    to_json,
)
from exectrack.producer.simulate import SimConfig, records

HEADERS: Final = (("content-type", CONTENT_TYPE.encode()),)
T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def reference(value: bytes | None, headers: Any, key: bytes | None) -> tuple[Any, ...]:
    """Where the contract's parser alone puts a message: its fact, or its dead letter."""
    try:
        event = parse_event(value, headers, key)
    except InvalidEvent as exc:
        return ("dead", str(exc.reason), exc.detail)
    if isinstance(event, ExecutionEvent):
        return ("fact", fact_of(event))
    return ("definition", event)


def with_fast_path(value: bytes | None, headers: Any, key: bytes | None) -> tuple[Any, ...]:
    """The same, as the consumer decides: the fast path first."""
    found = fast.fast_fact(value, headers, key)
    return ("fact", found) if found is not None else reference(value, headers, key)


def agree(value: bytes | None, headers: Any = HEADERS, key: bytes | None = None) -> None:
    expected = reference(value, headers, key)
    got = with_fast_path(value, headers, key)
    assert got == expected
    if got[0] == "fact":  # equal values of the same types, not only equal tuples
        assert [type(v) for v in got[1].key] == [type(v) for v in expected[1].key]
        assert {n: type(v) for n, v in got[1].fields.items()} == {
            n: type(v) for n, v in expected[1].fields.items()
        } or "trigger_type" in got[1].fields  # msgspec gives the value, pydantic the StrEnum


# ---------------------------------------------------------------- generated messages
texts = st.text(min_size=1, max_size=20)
ids = st.one_of(
    st.from_regex(r"[a-z0-9][a-z0-9-]{0,30}", fullmatch=True),
    texts.filter(lambda t: t == t.strip() and t.isprintable()),
)
times = st.datetimes(
    min_value=datetime(1971, 1, 1),  # noqa: DTZ001 (hypothesis: bounds are naive)
    max_value=datetime(2037, 12, 31),  # noqa: DTZ001
    timezones=st.just(UTC),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10,
)  # fmt: skip
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=4)


@st.composite
def valid_events(draw: st.DrawFn) -> dict[str, Any]:
    """A valid execution event as the plain JSON dict a producer sends."""
    optional: dict[str, Any] = {
        "sequence": st.integers(0, MAX_BIGINT),
        "trigger_type": st.sampled_from(list(TriggerType)),
        "started_by": st.integers(1, 2**40),
        "start_time": times,
        "end_time": times,
        "duration_ms": st.integers(0, MAX_BIGINT),
        "records_processed": st.integers(0, MAX_BIGINT),
        "output_size_bytes": st.integers(0, MAX_BIGINT),
        "execution_parameters": json_objects,
        "result_summary": json_objects,
        "error_details": json_objects,
        "output_location": texts,
        "retention_until": times,
    }
    chosen = draw(st.lists(st.sampled_from(sorted(optional)), unique=True, max_size=6))
    fields = {name: draw(optional[name]) for name in chosen if name != "sequence"}
    event = execution_event(
        draw(st.sampled_from(sorted(EXECUTION_TYPES))),
        execution_id=draw(ids),
        report_id=draw(ids),
        source=draw(st.sampled_from(["/services/a", "urn:x"])),
        sequence=draw(optional["sequence"]) if "sequence" in chosen else None,
        time=draw(times),
        id=draw(ids),
        **fields,
    )
    return loads_json(to_json(event))  # type: ignore[no-any-return]


ODD_VALUES = [
    None, True, False, 0, -1, 1, 2.0, 1.5, "", " ", "x", " x", "x ", "a\tb", "\x00", "\u0085x",
    "é", "😀", "x" * 255, "x" * 256, "x" * 501, "x" * 1001, [], {}, [1], {"a": 1},
    MAX_BIGINT, MAX_BIGINT + 1, 2**64, 2**31, 2**31 - 1, -(2**63), 10**30,
    "2026-11-01T12:00:00Z", "2026-11-01T12:00:00", "2026-11-01t12:00:00z",
    "2026-11-01 12:00:00Z", "2026-11-01T12:00:00.1234567Z", "2026-11-01T12:00:00.123456+05:30",
    "2026-11-01T12:00:00-00:00", "2026-11-01T12:00:00+24:00", "2026-11-01T12:00:00+00:60",
    "2026-02-30T12:00:00Z", "2026-11-01T24:00:00Z", "2026-11-30T23:59:60Z", "2026-11-01T23:59:60Z",
    "1969-12-31T23:59:59Z", "1970-01-01T00:00:01Z", "2038-01-19T03:14:07.999999Z",
    "2038-01-19T03:14:08Z", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00",
    "0000-01-01T00:00:00Z", "1700000000", 1700000000, "2026-11-01", "application/json",
    "Application/JSON", "application/json; charset=utf-8", "text/plain", "1.0", "1",
    "exectrack.execution.paused", "exectrack.report.defined", *sorted(EXECUTION_TYPES),
    "manual", "MANUAL", "webhook",
]  # fmt: skip
RAW_TOKENS = [b"1e400", b"-1e400", b"NaN", b"Infinity", b'"\\ud800"', b'"\\udc00x"',
              b'"\\ud83d\\ude00"', b"123456789012345678901234567890", b"1.0e2", b"-0", b"1E2",
              b'"\\u0000"', b'"\\u00e9"', b"[" * 40 + b"]" * 40, b"[" * 300 + b"]" * 300,
              b"[" * 5000 + b"]" * 5000,
              b"[1,]", b'"\xff"', b'"\xed\xa0\x80"', b"0.1e-400"]  # fmt: skip
ENVELOPE = ["specversion", "id", "source", "type", "subject", "time", "datacontenttype"]
DATA = ["execution_id", "report_id", *fast._Data.__struct_fields__[2:]]


@st.composite
def mutated(draw: st.DrawFn) -> tuple[bytes, Any, bytes | None]:
    """A valid event, changed in a few places; with headers and a key."""
    message = draw(valid_events())
    for _ in range(draw(st.integers(0, 3))):
        where = draw(st.sampled_from(["envelope", "data"]))
        target = message if where == "envelope" else message.get("data")
        if not isinstance(target, dict):
            break
        name = draw(
            st.sampled_from([*(ENVELOPE if where == "envelope" else DATA), "extra", "data"])
        )
        how = draw(st.sampled_from(["odd", "raw", "drop", "json"]))
        if how == "drop":
            target.pop(name, None)
        elif how == "odd":
            target[name] = draw(st.sampled_from(ODD_VALUES))
        elif how == "raw":
            target[name] = orjson.Fragment(draw(st.sampled_from(RAW_TOKENS)))
        else:
            target[name] = draw(json_values)
    value = dumps_json(message)
    if draw(st.integers(0, 9)) == 0:  # byte-level damage
        at = draw(st.integers(0, len(value) - 1))
        value = (
            value[:at]
            + draw(st.sampled_from([b"\xff", b"\xc3", b"", b"}", b"\\"]))
            + value[at + 1 :]
        )
    headers = draw(st.sampled_from([
        HEADERS, (), [("content-type", CONTENT_TYPE.encode())],
        (("Content-Type", CONTENT_TYPE.encode()),),
        (("content-type", b"application/cloudevents+json; charset=utf-8"),),
        (("content-type", b"application/json"),), (("ce_specversion", b"1.0"),),
        (("traceparent", b"00-x"), ("content-type", CONTENT_TYPE.encode())),
        (("content-type", b"application/cloudevents+avro"),), (("content-type", None),),
    ]))  # fmt: skip
    data = message.get("data")
    own = data.get("execution_id") if isinstance(data, dict) else None
    key = draw(st.sampled_from([None, b"", b"other", str(own).encode()]))
    return value, headers, key


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(message=valid_events())
def test_valid_events_take_the_fast_path_with_the_contracts_values(message: dict[str, Any]) -> None:
    value = dumps_json(message)
    key = message["data"]["execution_id"].encode()
    found = fast.fast_fact(value, HEADERS, key)
    assert found is not None  # what the contract's own encoder writes is the common form
    event = parse_event(value, HEADERS, key)
    assert isinstance(event, ExecutionEvent)
    assert found == fact_of(event)
    agree(value, HEADERS, key)


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(message=mutated())
def test_mutated_messages_end_where_the_contract_puts_them(
    message: tuple[bytes, Any, bytes | None],
) -> None:
    agree(*message)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(message=mutated())
def test_the_decoder_dead_letters_with_the_contracts_reason(
    message: tuple[bytes, Any, bytes | None],
) -> None:
    """Through ``Decoder``: one record ends as a fact or a dead letter, as ``reference`` says."""
    value, headers, key = message
    record = _Record(value, headers, key)
    decoder = Decoder()
    decoder.add("tp", [record])
    expected = reference(value, headers or (), key)
    if expected[0] == "dead":
        assert [(d.reason, d.error) for d in decoder.dead] == [expected[1:]]
    elif expected[0] == "fact":
        assert decoder.facts == [expected[1]]
        assert not decoder.dead
    else:
        assert list(decoder.definitions.values()) == [expected[1]]


class _Record(typing.NamedTuple):
    value: bytes | None
    headers: Any
    key: bytes | None
    topic: str = "t"
    partition: int = 0
    offset: int = 0
    timestamp: int = 0


# ---------------------------------------------------------------- examples
def test_binary_mode_and_tombstones_go_to_the_contracts_parser() -> None:
    event = execution_event(
        EventType.STARTED, execution_id="e-1", report_id="r-1", source="/s", time=T0
    )
    headers, value = to_binary(event)
    assert fast.fast_fact(value, headers, b"e-1") is None
    agree(value, headers, b"e-1")
    assert fast.fast_fact(None, HEADERS, b"e-1") is None
    agree(None, HEADERS, b"e-1")


def test_the_simulators_messages_take_the_fast_path() -> None:
    """The common form is the fast path's: every valid execution event of a simulated run."""
    config = SimConfig(executions=300, seed=3, start=T0 - timedelta(days=1))
    taken = checked = 0
    for record in records(config):
        expected = reference(record.value, record.headers, record.key)
        got = with_fast_path(record.value, record.headers, record.key)
        assert got == expected
        checked += 1
        taken += fast.fast_fact(record.value, record.headers, record.key) is not None
        if expected[0] == "fact":
            assert fast.fast_fact(record.value, record.headers, record.key) is not None
    assert taken > 0.9 * checked


_LIMITS = {annotated_types.Ge: "ge", annotated_types.Le: "le",
           annotated_types.MinLen: "min_length", annotated_types.MaxLen: "max_length"}  # fmt: skip


def _limits(metadata: list[Any], annotation: Any = None) -> dict[str, Any]:
    """The length and range limits of a pydantic field (its metadata, and inside its type)."""
    found: dict[str, Any] = {}
    for item in metadata:
        if isinstance(item, FieldInfo):
            found.update(_limits(item.metadata))
        elif type(item) in _LIMITS:
            name = _LIMITS[type(item)]
            found[name] = getattr(item, name)
    if annotation is not None:
        for arg in typing.get_args(annotation):
            if hasattr(arg, "__metadata__"):
                found.update(_limits(list(arg.__metadata__)))
    return found


def _msgspec_limits(annotation: Any) -> dict[str, Any]:
    found: dict[str, Any] = {}
    union = typing.get_args(annotation) if not hasattr(annotation, "__metadata__") else ()
    for arg in union or (annotation,):
        for meta in getattr(arg, "__metadata__", ()):
            if isinstance(meta, msgspec.Meta):
                found.update({n: getattr(meta, n) for n in ("ge", "le", "min_length",
                              "max_length") if getattr(meta, n) is not None})  # fmt: skip
    return found


def test_the_structs_mirror_the_contracts_models() -> None:
    """Same fields; the same limits, but an unbounded count's: MAX_BIGINT here (above it,
    the contract's parser decides)."""
    assert fast._Data.__struct_fields__ == tuple(ExecutionData.model_fields)
    hints = typing.get_type_hints(fast._Data, include_extras=True)
    for name, info in ExecutionData.model_fields.items():
        ours, theirs = _msgspec_limits(hints[name]), _limits(info.metadata, info.annotation)
        if "ge" in theirs and "le" not in theirs:
            theirs["le"] = MAX_BIGINT
        assert ours == theirs, name
    envelope = set(ExecutionEvent.model_fields)
    assert set(fast._Envelope.__struct_fields__) == envelope
    hints = typing.get_type_hints(fast._Envelope, include_extras=True)
    for name in ("id", "source"):
        assert _msgspec_limits(hints[name]) == _limits(ExecutionEvent.model_fields[name].metadata)
    assert set(typing.get_args(hints["type"])) == {str(t) for t in EXECUTION_TYPES}


def test_an_event_sent_twice_in_two_forms_has_one_fact() -> None:
    """Keys in another order, an offset instead of Z: the same canonical content and digest."""
    event = execution_event(
        EventType.COMPLETED, execution_id="e-1", report_id="r-1", source="/s", time=T0,
        sequence=3, records_processed=10, result_summary={"b": 1, "a": [1, 2]},
    )  # fmt: skip
    value = to_json(event)
    shuffled = orjson.loads(value)
    shuffled = {k: shuffled[k] for k in reversed(shuffled)}
    shuffled["time"] = "2026-11-01T13:00:00+01:00"
    other = orjson.dumps(shuffled)
    one, two = fast.fast_fact(value, HEADERS, None), fast.fast_fact(other, HEADERS, None)
    assert one is not None
    assert one == two == fact_of(event)
    assert one.key[4] == event.digest


def test_json_fields_keep_integers_of_any_size() -> None:
    value = (
        b'{"specversion":"1.0","id":"i","source":"/s","type":"exectrack.execution.started",'
        b'"subject":"e","time":"2026-11-01T12:00:00Z","data":{"execution_id":"e",'
        b'"report_id":"r","result_summary":{"n":123456789012345678901234567890,"f":1.5}}}'
    )
    found = fast.fast_fact(value, HEADERS, b"e")
    assert found is not None
    assert found.fields["result_summary"] == {"n": 123456789012345678901234567890, "f": 1.5}
    agree(value, HEADERS, b"e")


def test_deep_nesting_is_left_to_the_contracts_parser() -> None:
    """msgspec stops at its recursion limit: the fast path says "not sure", never raises."""
    deep = b"[" * 5000 + b"]" * 5000
    head = (
        b'{"specversion":"1.0","id":"i","source":"/s","type":"exectrack.execution.started",'
        b'"subject":"e","time":"2026-11-01T12:00:00Z","data":{"execution_id":"e",'
        b'"report_id":"r","result_summary":'
    )
    for value in (head + deep + b"}}", head + b'{"a":' + deep + b"}}}", deep):
        assert fast.fast_fact(value, HEADERS, b"e") is None
        agree(value, HEADERS, b"e")
