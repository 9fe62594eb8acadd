"""``exectrack-producer`` with click's runner, publishing into an in-memory publisher."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner

from exectrack.producer.cli import Deps, main
from exectrack.producer.errors import InvalidEvent
from exectrack.producer.events import (
    EventType,
    ExecutionEvent,
    ReportDefinedEvent,
    parse_event,
    to_json,
)
from exectrack.producer.settings import KafkaSettings, ProducerSettings
from exectrack.producer.simulate import LIFECYCLE_MAX, SimConfig, generate
from exectrack.producer.testing import InMemoryPublisher


@pytest.fixture
def memory() -> InMemoryPublisher:
    return InMemoryPublisher(topic="cli-topic")


@pytest.fixture
def created() -> list[KafkaSettings]:
    return []


@pytest.fixture
def deps(memory: InMemoryPublisher, created: list[KafkaSettings]) -> Deps:
    async def ensure(settings: KafkaSettings) -> list[str]:
        created.append(settings)
        return [settings.topic]

    return Deps(
        settings=lambda: ProducerSettings(source="/services/cli-test"),
        publisher=lambda settings: memory,
        ensure_topics=ensure,
    )


def invoke(deps: Deps, *args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), obj=deps, input=stdin)
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("command", [[], ["emit"], ["simulate"]])
def test_help(command: list[str]) -> None:
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0
    assert "Usage:" in result.stdout


def test_emit_from_flags(deps: Deps, memory: InMemoryPublisher) -> None:
    code, out, err = invoke(
        deps, "emit", "--type", "completed", "--execution-id", "exec-9", "--report-id", "rep-1",
        "--sequence", "4", "--field", "records_processed=12",
        "--field", 'result_summary={"vpcs": 3}', "--field", "output_location=s3://b/k.json",
        "--field", "end_time=2026-01-01T00:00:05Z",
    )  # fmt: skip
    assert (code, err) == (0, "")
    event = memory.events[0]
    assert isinstance(event, ExecutionEvent)
    assert (event.type, event.data.sequence, event.source) == (
        EventType.COMPLETED, 4, "/services/cli-test",
    )  # fmt: skip
    assert event.data.records_processed == 12
    assert event.data.result_summary == {"vpcs": 3}
    assert event.data.output_location == "s3://b/k.json"
    assert out.strip() == (
        f"topic=cli-topic partition={memory.messages[0].partition} offset=0 "
        f"type=exectrack.execution.completed id={event.id} key=exec-9"
    )


def test_emit_defaults_to_a_new_pending_execution(deps: Deps, memory: InMemoryPublisher) -> None:
    code, out, _ = invoke(deps, "emit", "--report-id", "rep-1", "--field", "trigger_type=manual")
    assert code == 0
    event = memory.events[0]
    assert event.type == EventType.PENDING
    assert f"key={event.key.decode()}" in out
    assert len(event.key) == 36


def test_emit_a_report_definition(deps: Deps, memory: InMemoryPublisher) -> None:
    code, _, err = invoke(
        deps, "emit", "--type", "report.defined", "--report-id", "rep-1",
        "--field", "version=2", "--field", "name=VPC inventory",
        "--field", "report_type=vpc_inventory", "--field", "category=infrastructure",
        "--field", "provider=aws", "--field", "time=2026-01-01T00:00:00Z", "--field", "id=def-2",
    )  # fmt: skip
    assert (code, err) == (0, "")
    event = memory.events[0]
    assert isinstance(event, ReportDefinedEvent)
    assert (event.id, event.data.version, event.data.name) == ("def-2", 2, "VPC inventory")


def test_emit_from_stdin(deps: Deps, memory: InMemoryPublisher) -> None:
    message = next(m for m in generate(SimConfig(executions=1)) if m.event is not None)
    assert message.event is not None
    code, out, _ = invoke(deps, "emit", "--stdin", stdin=message.value)
    assert code == 0
    assert memory.events == [message.event]
    assert memory.messages[0].value == message.value
    assert f"id={message.event.id}" in out


@pytest.mark.parametrize(
    ("args", "stdin", "reason"),
    [
        (["--report-id", "r", "--field", "duration_ms=-1"], None,
         "invalid_field: data.duration_ms"),
        (["--report-id", "r", "--field", "duraton_ms=5"], None, "invalid_field: data: unknown"),
        (["--report-id", "r", "--field", "time=2026-01-01T00:00:00"], None, "naive_timestamp:"),
        # the envelope time (a data time beyond 2038 is accepted: docs/events.md)
        (["--report-id", "r", "--field", "time=2040-01-01T00:00:00Z"], None,
         "time_out_of_range:"),
        (["--report-id", "r", "--field", "trigger_type=cron"], None, "invalid_field:"),
        (["--report-id", " r"], None, "invalid_field: data.report_id"),
        (["--stdin"], b"{nope", "not_json:"),
        (["--stdin"], b"\xff", "not_utf8:"),
        (["--stdin"], b'{"specversion": "1.0", "type": "x.y"}', "unknown_type:"),
        (["--stdin"], b"[]", "not_cloudevent:"),
    ],
)  # fmt: skip
def test_emit_bad_input_is_one_line_with_the_reason_and_exit_2(
    deps: Deps, memory: InMemoryPublisher, args: list[str], stdin: bytes | None, reason: str
) -> None:
    code, out, err = invoke(deps, "emit", *args, stdin=stdin)
    assert code == 2
    assert out == ""
    assert err.startswith(f"error: {reason}")
    assert err.count("\n") == 1
    assert memory.messages == []


@pytest.mark.parametrize(
    "args",
    [
        ["emit"],  # no --report-id
        ["emit", "--report-id", "r", "--field", "novalue"],
        ["emit", "--type", "nope", "--report-id", "r"],
        ["emit", "--type", "report.defined", "--report-id", "r", "--field", "version=1"],
        ["emit", "--sequence", "-1", "--report-id", "r"],
        ["simulate", "--duplicate-ratio", "2"],
    ],
)
def test_usage_errors_exit_2(deps: Deps, args: list[str]) -> None:
    code, _, err = invoke(deps, *args)
    assert code == 2
    assert "rror" in err


def test_simulate_publishes_the_simulation(
    deps: Deps, memory: InMemoryPublisher, created: list[KafkaSettings]
) -> None:
    code, out, err = invoke(
        deps, "simulate", "--executions", "40", "--seed", "3", "--invalid-ratio", "0.05",
        "--duplicate-ratio", "0.02", "--reorder-ratio", "0.3", "--no-progress",
        "--start", "2026-01-01T00:00:00+0000",
    )  # fmt: skip
    assert code == 0, err
    config = SimConfig(
        executions=40, seed=3, invalid_ratio=0.05, duplicate_ratio=0.02, reorder_ratio=0.3,
        source="/services/cli-test",
    )  # fmt: skip
    expected = [m.value for m in generate(config)]
    assert sorted(m.value for m in memory.messages) == sorted(expected)
    assert f"{len(expected):,} messages acknowledged" in out
    assert "events/s" in out
    assert "created topics: report-execution-events" in out
    assert [s.topic for s in created] == ["report-execution-events"]


def test_simulate_without_start_ends_by_now(deps: Deps, memory: InMemoryPublisher) -> None:
    """Issue #15, item 8: no simulated time in the future when the run starts now, and
    recent ones (a simulation from long ago would be past retention)."""
    before = datetime.now(UTC)
    code, _, err = invoke(deps, "simulate", "--executions", "400", "--seed", "9", "--no-progress")
    ran = datetime.now(UTC)
    assert code == 0, err
    times = []
    for message in memory.messages:
        try:
            event = parse_event(message.value, message.headers, message.key)
        except InvalidEvent:
            continue
        times.append(event.time)
        if isinstance(event, ExecutionEvent):
            times += [t for t in (event.data.start_time, event.data.end_time) if t is not None]
    assert len(times) > 2000
    assert max(times) <= ran  # every event time at or before the run
    assert max(times) >= before - LIFECYCLE_MAX  # and the last ones are recent
    assert min(times) >= before - SimConfig(executions=400).span()  # start = now - span


def test_simulate_without_creating_topics(
    deps: Deps, memory: InMemoryPublisher, created: list[KafkaSettings]
) -> None:
    code, _, _ = invoke(deps, "simulate", "--executions", "5", "--no-progress",
                        "--no-create-topics", "--rate", "10000")  # fmt: skip
    assert code == 0
    assert created == []
    assert memory.messages


def test_simulate_fails_when_messages_are_lost(deps: Deps, memory: InMemoryPublisher) -> None:
    memory.fail_next(1, retriable=False)
    code, out, _ = invoke(deps, "simulate", "--executions", "5", "--no-progress")
    assert code == 1
    assert "failed" in out


def test_emit_reports_a_publish_failure_with_exit_1(deps: Deps, memory: InMemoryPublisher) -> None:
    memory.fail_next(1)
    code, out, err = invoke(deps, "emit", "--report-id", "r")
    assert (code, out) == (1, "")
    assert err.startswith("error: publish failed: injected failure")


def test_values_are_json_when_they_parse(deps: Deps, memory: InMemoryPublisher) -> None:
    code, _, _ = invoke(
        deps, "emit", "--report-id", "r", "--field", 'execution_parameters={"n": [1, 2.5, null]}',
        "--field", "started_by=7",
    )  # fmt: skip
    assert code == 0
    assert memory.events[0].data.started_by == 7  # type: ignore[union-attr]
    assert json.loads(to_json(memory.events[0]))["data"]["execution_parameters"] == {
        "n": [1, 2.5, None]
    }


def test_simulate_without_rich_draws_no_bar_by_default(
    deps: Deps, memory: InMemoryPublisher, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a user: `pip install exectrack` (no rich) and `simulate` failed, because
    the progress bar was on by default. Now it is on only where it can be drawn."""
    monkeypatch.setattr("exectrack.producer.cli.rich_installed", lambda: False)
    code, out, err = invoke(deps, "simulate", "--executions", "5")
    assert code == 0, err
    assert "messages acknowledged" in out
    assert memory.messages


def test_simulate_progress_without_rich_is_one_line_before_connecting(
    deps: Deps, memory: InMemoryPublisher, created: list[KafkaSettings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setattr("exectrack.producer.cli.rich_installed", lambda: False)
    code, out, err = invoke(deps, "simulate", "--executions", "5", "--progress")
    assert code == 1
    assert err == "Error: --progress needs rich: pip install 'exectrack[simulate]'\n"
    assert (out, created, memory.messages) == ("", [], [])
