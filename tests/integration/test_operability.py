"""What operators see: health endpoints, Prometheus metrics, the consumer CLI."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from click.testing import CliRunner
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine

from exectrack.consumer.cli import main as consumer_cli
from exectrack.consumer.health import serve_health
from exectrack.consumer.service import ConsumerService
from exectrack.consumer.settings import DatabaseSettings
from exectrack.producer.events import EventType, execution_event, kafka_headers, to_json
from tests.conftest import Topics
from tests.support.kafka import publish
from tests.support.service import consumer_settings
from tests.support.tls import free_port


async def get(port: int, path: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}{path}") as response,
    ):
        return response.status, await response.text()


def metric(text: str, name: str, **labels: str) -> float:
    wanted = name + (
        "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else ""
    )
    for line in text.splitlines():
        if line.startswith(wanted + " "):
            return float(line.split()[-1])
    return 0.0


async def test_health_and_metrics_follow_the_loop(
    db: AsyncEngine, database_url: str, topics: Topics
) -> None:
    port = free_port()
    service = ConsumerService(consumer_settings(topics, database_url), engine=db)
    runner = await serve_health(service, "127.0.0.1", port)
    assert runner is not None
    try:
        assert (await get(port, "/readyz"))[0] == 503  # not started: nothing assigned
        _, before = await get(port, "/metrics")
        events = [
            execution_event(EventType.STARTED, execution_id="m1", report_id="r", source="/t"),
            execution_event(EventType.COMPLETED, execution_id="m1", report_id="r", source="/t"),
        ]
        poison: list[tuple[bytes, bytes, list[tuple[str, bytes]]]] = [(b"m1", b"\xff\xfe", [])]
        await publish(
            topics.bootstrap,
            topics.topic,
            [(e.key, to_json(e), kafka_headers(e)) for e in events] + poison,
        )
        task = asyncio.create_task(service.run())
        async with asyncio.timeout(60):
            while service.totals.records < 3:
                await asyncio.sleep(0.05)
        assert await get(port, "/livez") == (200, "live\n")
        assert await get(port, "/readyz") == (200, "ready\n")
        status, after = await get(port, "/metrics")
        assert status == 200
        assert (
            metric(after, "exectrack_events_consumed_total")
            - metric(before, "exectrack_events_consumed_total")
            == 3
        )
        grew = metric(after, "exectrack_events_dead_lettered_total", reason="not_utf8") - metric(
            before, "exectrack_events_dead_lettered_total", reason="not_utf8"
        )
        assert grew == 1
        assert metric(after, "exectrack_assigned_partitions") == topics.partitions
        assert "exectrack_batch_duration_seconds_bucket" in after
        assert (
            'exectrack_consumer_lag_events{partition="' in after
            or "exectrack_consumer_lag_events{" in after
        )
        service.request_stop()
        await asyncio.wait_for(task, 30)
    finally:
        service.request_stop()
        await runner.cleanup()


async def test_not_ready_when_the_database_is_unreachable(
    topics: Topics, database_url: str
) -> None:
    dead = f"mysql+aiomysql://exectrack:exectrack@127.0.0.1:{free_port()}/exectrack"
    settings = consumer_settings(topics, database_url).model_copy(
        update={"database": DatabaseSettings(url=SecretStr(dead), connect_timeout_s=1)}
    )
    service = ConsumerService(settings)
    try:
        assert await service.ready() is False
    finally:
        await service.engine.dispose()


def run_cli(args: list[str], env: dict[str, str]) -> Any:
    return CliRunner().invoke(consumer_cli, args, env=env, catch_exceptions=False)


def test_every_consumer_command_has_help() -> None:
    commands = ("consume", "migrate", "status", "watch", "replay", "verify", "purge", "reap", "dlq")
    for command in commands:
        result = CliRunner().invoke(consumer_cli, [command, "--help"])
        assert result.exit_code == 0, result.output
        assert "Usage:" in result.output


async def test_status_prints_the_row_and_its_provenance(
    db: AsyncEngine, database_url: str, topics: Topics
) -> None:
    event = execution_event(
        EventType.FAILED, execution_id="s1", report_id="r", source="/t", id="ev-1",
        error_details={"type": "Timeout"},
    )  # fmt: skip
    await publish(
        topics.bootstrap, topics.topic, [(event.key, to_json(event), kafka_headers(event))]
    )
    from tests.support.service import run_until

    await run_until(ConsumerService(consumer_settings(topics, database_url), engine=db), 1)
    env = {"EXECTRACK_DATABASE__URL": database_url}
    found = await asyncio.to_thread(run_cli, ["status", "s1"], env)
    assert found.exit_code == 0, found.output
    assert '"status": "failed"' in found.output
    assert '"event_id": "ev-1"' in found.output
    missing = await asyncio.to_thread(CliRunner().invoke, consumer_cli, ["status", "nope"], env=env)
    assert missing.exit_code == 1
    assert "no execution 'nope'" in missing.output
    assert "exectrack:***@" in missing.output  # the password is masked
