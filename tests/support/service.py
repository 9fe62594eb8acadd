"""Running the real consumer service in-process for a test, and reading the table back."""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from exectrack.consumer.db.engine import create_engine
from exectrack.consumer.db.repository import EXECUTIONS
from exectrack.consumer.service import ConsumerService, Totals
from exectrack.consumer.settings import DatabaseSettings, Settings
from exectrack.producer.settings import KafkaSettings


def consumer_settings(topics: Any, database_url: str, **overrides: Any) -> Settings:
    return Settings(
        kafka=KafkaSettings(
            bootstrap_servers=topics.bootstrap, topic=topics.topic, dlq_topic=topics.dlq
        ),
        database=DatabaseSettings(url=SecretStr(database_url)),
        group_id=topics.group_id,
        health_port=0,
        create_topics=False,
        fetch_timeout_ms=200,
        session_timeout_ms=6000,
        **overrides,
    )


async def run_until(service: ConsumerService, records: int, *, timeout_s: float = 90) -> Totals:
    """Run the service until it has committed ``records`` records, then stop it cleanly."""
    task = asyncio.create_task(service.run())
    try:
        async with asyncio.timeout(timeout_s):
            while service.totals.records < records:
                if task.done():
                    await task  # surfaces the service's exception
                    raise AssertionError("the service stopped before consuming everything")
                await asyncio.sleep(0.05)
    finally:
        service.request_stop()
        await asyncio.wait_for(task, timeout=30)
    return service.totals


async def table(engine: AsyncEngine) -> dict[str, dict[str, Any]]:
    """report_executions as {execution_id: row without id and fold_keys}."""
    async with engine.connect() as conn:
        rows = (await conn.execute(select(EXECUTIONS))).mappings().all()
    result = {}
    for row in rows:
        found = dict(row)
        found.pop("id")
        found.pop("fold_keys")
        result[found["execution_id"]] = found
    return result


async def rows_of(url: str) -> dict[str, dict[str, Any]]:
    """The report_executions rows of the database at ``url`` (see ``table``)."""
    engine = create_engine(DatabaseSettings(), url=url)
    try:
        return await table(engine)
    finally:
        await engine.dispose()
