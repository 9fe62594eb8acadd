"""The simulator and the CLI against the real broker: every acknowledged message is on the topic."""

from __future__ import annotations

import asyncio
import socket
import subprocess
from collections import Counter

import pytest
from click.testing import CliRunner

from exectrack.producer.cli import main
from exectrack.producer.events import parse_event
from exectrack.producer.publisher import Publisher
from exectrack.producer.settings import PublisherSettings
from exectrack.producer.simulate import SimConfig, generate, run_simulation
from tests.conftest import Topics
from tests.integration.test_publisher import messages_on, settings_for
from tests.stack import STACK_SCRIPT


async def test_simulate_5000_events_all_land(topics: Topics) -> None:
    config = SimConfig(executions=1100, seed=21)
    expected = Counter(m.value for m in generate(config))
    async with Publisher(settings_for(topics)) as pub:
        report = await run_simulation(pub, config, progress=False)
    assert report.sent == sum(expected.values()) > 5000
    assert (report.failed, report.resent) == (0, 0)
    records = await messages_on(topics, at_least=report.sent)
    assert len(records) == report.sent
    assert Counter(r.value for r in records) == expected


async def test_simulate_with_a_rate(topics: Topics) -> None:
    config = SimConfig(executions=100, seed=3)
    async with Publisher(settings_for(topics)) as pub:
        report = await run_simulation(pub, config, rate=2000)
    assert report.rate < 2000 * 1.2
    assert len(await messages_on(topics, at_least=report.sent)) == report.sent


def environment(topics: Topics) -> dict[str, str]:
    return {
        "EXECTRACK_KAFKA__BOOTSTRAP_SERVERS": topics.bootstrap,
        "EXECTRACK_KAFKA__TOPIC": topics.topic,
        "EXECTRACK_KAFKA__DLQ_TOPIC": topics.dlq,
        "EXECTRACK_SOURCE": "/services/cli-it",
    }


async def test_cli_emit_and_simulate(topics: Topics) -> None:
    runner = CliRunner(env=environment(topics))

    def run_cli() -> tuple[str, str]:
        emitted = runner.invoke(main, ["emit", "--type", "started", "--execution-id", "exec-cli",
                                       "--report-id", "rep", "--sequence", "1"])  # fmt: skip
        assert emitted.exit_code == 0, emitted.stderr
        simulated = runner.invoke(main, ["simulate", "--executions", "200", "--seed", "5",
                                         "--no-progress"])  # fmt: skip
        assert simulated.exit_code == 0, simulated.stderr
        return emitted.stdout, simulated.stdout

    emitted, simulated = await asyncio.to_thread(run_cli)  # the CLI runs its own asyncio.run
    assert emitted.startswith(f"topic={topics.topic} partition=")
    assert "offset=0 type=exectrack.execution.started" in emitted
    total = sum(1 for _ in generate(SimConfig(executions=200, seed=5)))
    assert f"{total:,} messages acknowledged" in simulated
    assert "created topics" not in simulated  # they existed
    records = await messages_on(topics, at_least=total + 1)
    assert len(records) == total + 1
    first = parse_event(next(r.value for r in records if r.key == b"exec-cli"))
    assert first.source == "/services/cli-it"


# ---------------------------------------------------------------- broker restart
def stack(*args: str) -> None:
    subprocess.run(["bash", str(STACK_SCRIPT), *args], check=True, capture_output=True)


def broker_listening(bootstrap: str) -> bool:
    host, port = bootstrap.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


@pytest.mark.slow
async def test_nothing_lost_across_a_broker_restart(topics: Topics) -> None:
    """``stack.sh down kafka`` then ``up kafka`` while the simulation runs with retries."""
    if not broker_listening(topics.bootstrap) or "127.0.0.1" not in topics.bootstrap:
        pytest.skip("needs the deploy/local broker")
    config = SimConfig(executions=5000, seed=8)
    expected = Counter(m.value for m in generate(config))
    options = PublisherSettings(request_timeout_ms=10_000, retry_backoff_ms=500)
    try:
        async with Publisher(settings_for(topics), options=options) as pub:
            simulation = asyncio.create_task(
                run_simulation(pub, config, rate=2500, retry_for=240, progress=False)
            )
            await asyncio.sleep(2)
            assert not simulation.done()
            await asyncio.to_thread(stack, "down", "kafka")
            assert not broker_listening(topics.bootstrap)
            await asyncio.sleep(3)
            await asyncio.to_thread(stack, "up", "kafka")
            report = await asyncio.wait_for(simulation, 300)
    finally:
        if not broker_listening(topics.bootstrap):
            await asyncio.to_thread(stack, "up", "kafka")
    assert report.failed == 0
    assert report.sent == sum(expected.values())
    records = await messages_on(topics, at_least=report.sent, wait_s=120)
    on_topic = Counter(r.value for r in records)
    missing = expected - on_topic
    assert not missing, f"{sum(missing.values())} acknowledged messages are not on the topic"
    extra = on_topic - expected
    assert sum(extra.values()) <= report.resent  # only re-sent batches may appear twice
