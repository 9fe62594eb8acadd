"""Report definitions whose JSON the storage cannot hold as sent, delivered twice.

The definition's order key ends with the digest of what the ``reports`` row
stores, computed again from the stored columns when a definition with the same
(version, time, id) arrives (consumer/db/repository.py, ``_newer``). A field
not carried (nested deeper than 31) and an integer beyond 64 bits must give
the same digest from the event and from the row, or every redelivery would be
logged as an ``event_id_conflict``.
"""

from __future__ import annotations

import json

import orjson
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import Topics
from tests.integration.test_found_by_users import STRUCTURED, consume, nested
from tests.support.kafka import publish, read_all

BIG = 123456789012345678901234567890


def conflicts() -> float:
    return REGISTRY.get_sample_value("exectrack_event_id_conflicts_total") or 0.0


async def test_redelivered_definition_with_deep_and_big_json_is_no_conflict(
    db: AsyncEngine, database_url: str, topics: Topics
) -> None:
    definition = orjson.dumps(
        {
            "specversion": "1.0", "id": "rd-json", "source": "/services/catalog",
            "type": "exectrack.report.defined", "subject": "rep-json",
            "time": "2026-01-01T12:00:00Z",
            "data": {
                "report_id": "rep-json", "version": 3, "name": "JSON limits",
                "report_type": "custom", "category": "custom", "provider": "gcp",
                "query_config": nested(40), "parameters_schema": {"p": 0},
            },
        }
    ).replace(b'{"p":0}', b'{"max":' + str(BIG).encode() + b"}")  # fmt: skip
    before = conflicts()
    for _ in range(2):  # the second run reads the stored row back and compares
        await publish(topics.bootstrap, topics.topic, [(b"rep-json", definition, STRUCTURED)])
        await consume(topics, database_url, db, 1)
    async with db.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT version, query_config, parameters_schema FROM reports"
                     " WHERE report_id = 'rep-json'")
            )
        ).one()  # fmt: skip
    assert row.version == 3
    assert json.loads(row.query_config) is None
    assert json.loads(row.parameters_schema) == {"max": BIG}
    assert conflicts() == before
    assert await read_all(topics.bootstrap, topics.dlq) == []
