"""The hot statements' own SQL literals (consumer/db/fastsql.py) on the real server.

Whatever text an event carries must come back from the table byte for byte:
quotes, backslashes, NUL, ``%``, SQL comments, any Unicode outside the
surrogates. Written with plain INSERT and the upsert, read back with the
locking SELECT, in both escaping modes of the session (the default, and
``NO_BACKSLASH_ESCAPES``, which some servers set globally).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from exectrack.consumer.db import fastsql, packet
from exectrack.consumer.db.repository import EXECUTION_COLUMNS, REPORTS, USERS, _ensure_rows
from exectrack.producer.events import ExecutionStatus, TriggerType

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 24, 12, 0, 0, 123456, tzinfo=UTC)
texts = st.text(st.characters(exclude_categories=["Cs"]), max_size=60)
NO_BACKSLASH_MODE = "SET SESSION sql_mode = CONCAT(@@sql_mode, ',NO_BACKSLASH_ESCAPES')"
HOSTILE = ["'", "\\", "\\'", "%", "%s", "%%", "\x00", "\x1a", "\n\r", '"', "'; DROP TABLE x; --",
           "/* */", "é漢😀", "\\%'\"\x00"]  # fmt: skip


def row(execution_id: str, note: str, **changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = dict.fromkeys(EXECUTION_COLUMNS)
    base.update(
        execution_id=execution_id, report_id="rep-fastsql", status=ExecutionStatus.RUNNING,
        trigger_type=TriggerType.MANUAL, started_by=7, start_time=T0,
        end_time=T0 + timedelta(microseconds=1), duration_ms=2**62, records_processed=0,
        execution_parameters={note: [note, 1, None, True, 1.5]}, result_summary={"k": note},
        error_details=None, output_location=note[:500], retention_until=None,
        created_at=T0.replace(microsecond=0), last_event_at=T0, fold_keys={"k": [], "f": {note: 0}},
    )  # fmt: skip
    base.update(changes)
    return base


async def round_trip(db: AsyncEngine, rows: list[dict[str, Any]], *, no_backslash: bool) -> None:
    async with db.begin() as conn:
        if no_backslash:
            await conn.execute(text(NO_BACKSLASH_MODE))
        await _ensure_rows(conn, USERS, "id", [{"id": 7}])
        await _ensure_rows(conn, REPORTS, "report_id", [{"report_id": "rep-fastsql", "name": "r"}])
        ids = [r["execution_id"] for r in rows]
        await conn.execute(text("DELETE FROM report_executions WHERE report_id = 'rep-fastsql'"))
        await fastsql.write_rows(conn, EXECUTION_COLUMNS, rows, overwrite=False)
        stored = await fastsql.lock_rows(conn, EXECUTION_COLUMNS, ids)
        assert sorted_rows(stored) == sorted_rows(rows)
        changed = [{**r, "status": ExecutionStatus.COMPLETED, "output_location": r["execution_id"]}
                   for r in rows]  # fmt: skip
        await fastsql.write_rows(conn, EXECUTION_COLUMNS, changed, overwrite=True)
        assert sorted_rows(await fastsql.lock_rows(conn, EXECUTION_COLUMNS, ids)) == sorted_rows(
            changed
        )
        if no_backslash:
            await conn.execute(text("SET SESSION sql_mode = DEFAULT"))


def sorted_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: r["execution_id"])


@pytest.mark.parametrize("no_backslash", [False, True], ids=["default", "no_backslash_escapes"])
async def test_hostile_text_round_trips(db: AsyncEngine, no_backslash: bool) -> None:
    rows = [row(f"id{n}{value}", value) for n, value in enumerate(HOSTILE)]
    plus_two = timezone(timedelta(hours=2))  # an aware non-UTC time is stored as its UTC instant
    rows.append(row("non-utc", "x", start_time=T0.astimezone(plus_two), end_time=None))
    await round_trip(db, rows, no_backslash=no_backslash)


@pytest.mark.parametrize("no_backslash", [False, True], ids=["default", "no_backslash_escapes"])
@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(notes=st.lists(texts, min_size=1, max_size=8))
async def test_any_text_round_trips(db: AsyncEngine, no_backslash: bool, notes: list[str]) -> None:
    rows = [row(f"x{n}-{note}".rstrip(), note) for n, note in enumerate(notes)]
    await round_trip(db, rows, no_backslash=no_backslash)


@pytest.mark.parametrize("no_backslash", [False, True], ids=["default", "no_backslash_escapes"])
async def test_many_statements_under_a_small_limit_round_trip(
    db: AsyncEngine, no_backslash: bool
) -> None:
    """A 4,096-byte limit splits the 60 rows over many statements; nothing changes."""
    rows = [row(f"split-{n}-" + HOSTILE[n % len(HOSTILE)], HOSTILE[n % len(HOSTILE)] * 20)
            for n in range(60)]  # fmt: skip
    async with db.begin() as conn:
        if no_backslash:
            await conn.execute(text(NO_BACKSLASH_MODE))
        await _ensure_rows(conn, USERS, "id", [{"id": 7}], limit=4096)
        await _ensure_rows(
            conn, REPORTS, "report_id", [{"report_id": "rep-fastsql", "name": "r"}], limit=4096
        )
        await conn.execute(text("DELETE FROM report_executions WHERE report_id = 'rep-fastsql'"))
        ids = [r["execution_id"] for r in rows]
        await fastsql.write_rows(conn, EXECUTION_COLUMNS, rows, overwrite=False, limit=4096)
        stored = await fastsql.lock_rows(conn, EXECUTION_COLUMNS, ids, limit=4096)
        assert sorted_rows(stored) == sorted_rows(rows)
        assert await fastsql.tombstoned(conn, ids, limit=4096) == set()
        if no_backslash:
            await conn.execute(text("SET SESSION sql_mode = DEFAULT"))


async def test_the_limit_is_the_servers_max_allowed_packet(db: AsyncEngine) -> None:
    async with db.connect() as conn:
        server = int(await conn.scalar(text("SELECT @@max_allowed_packet")))
        assert await packet.max_allowed_packet(conn) == server
        assert await packet.statement_limit(conn) == server - packet.PROTOCOL_SLACK
        assert await packet.statement_limit(conn, 5000) == 5000
