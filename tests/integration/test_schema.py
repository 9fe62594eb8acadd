"""The live schema on the real server is the seed's, and the migrations round-trip.

The expectations below are written out by hand from the seed document, not
derived from the models, so a drift in either the models or the migration fails.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from alembic.util.exc import CommandError
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from exectrack.consumer.db import migrate
from exectrack.consumer.db.engine import create_engine
from exectrack.consumer.db.models import Report, ReportExecution, User
from exectrack.consumer.settings import DatabaseSettings
from exectrack.producer.events import CloudProvider, ReportCategory, ReportType

STATUS = ("pending", "running", "completed", "failed", "cancelled", "timeout")
TRIGGER = ("manual", "scheduled", "api", "webhook")


def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """ORM sessions on ``engine`` (the consumer itself writes with Core statements only)."""
    return async_sessionmaker(engine, expire_on_commit=False)


def enum(values: tuple[str, ...]) -> str:
    return "enum(" + ",".join(f"'{v}'" for v in values) + ")"


TS = "timestamp(6)"
# table -> column -> (column type, nullable); "json" means JSON (MariaDB: longtext)
EXPECTED_COLUMNS: dict[str, dict[str, tuple[str, bool]]] = {
    "users": {
        "id": ("int(11)", False),
        "username": ("varchar(255)", True),
        "email": ("varchar(255)", True),
        "display_name": ("varchar(255)", True),
        "created_at": (TS, False),
        "updated_at": (TS, False),
    },
    "reports": {
        "id": ("int(11)", False),
        "report_id": ("varchar(255)", False),
        "name": ("varchar(255)", False),
        "description": ("text", True),
        "report_type": (enum(tuple(ReportType)), True),
        "category": (enum(tuple(ReportCategory)), True),
        "provider": (enum(tuple(CloudProvider)), True),
        "query_config": ("json", True),
        "scheduling_config": ("json", True),
        "notification_config": ("json", True),
        "parameters_schema": ("json", True),
        "is_active": ("tinyint(1)", False),
        "is_public": ("tinyint(1)", False),
        "created_by": ("int(11)", True),
        "last_modified_by": ("int(11)", True),
        "version": ("int(11)", False),
        "created_at": (TS, False),
        "updated_at": (TS, False),
        "defined_at": (TS, True),
        "definition_event_id": ("varchar(255)", True),
    },
    "report_executions": {
        "id": ("int(11)", False),
        "execution_id": ("varchar(255)", False),
        "report_id": ("varchar(255)", False),
        "status": (enum(STATUS), False),
        "trigger_type": (enum(TRIGGER), True),
        "started_by": ("int(11)", True),
        "start_time": (TS, True),
        "end_time": (TS, True),
        "duration_ms": ("bigint(20)", True),
        "records_processed": ("bigint(20)", True),
        "output_size_bytes": ("bigint(20)", True),
        "execution_parameters": ("json", True),
        "result_summary": ("json", True),
        "error_details": ("json", True),
        "output_location": ("varchar(500)", True),
        "retention_until": (TS, True),
        "created_at": (TS, False),
        "last_event_at": (TS, False),
        "fold_keys": ("json", False),
    },
    "purged_executions": {  # revision 0002: tombstones (docs/retention.md)
        "execution_id": ("varchar(255)", False),
        "purged_at": (TS, False),
    },
    "dead_letter_redrives": {  # revision 0004: dlq redrive (docs/read/dead-letters.md)
        "dlq_topic": ("varchar(249)", False),
        "dlq_partition": ("int(11)", False),
        "dlq_offset": ("bigint(20)", False),
        "reason": ("varchar(64)", True),
        "record_key": ("varchar(255)", True),
        "claimed_at": (TS, False),
        "claimed_by": ("varchar(255)", False),
        "redriven_at": (TS, True),
        "target_topic": ("varchar(249)", True),
        "target_partition": ("int(11)", True),
        "target_offset": ("bigint(20)", True),
    },
}

# index name -> (table, columns, unique)
EXPECTED_INDEXES: dict[str, tuple[str, tuple[str, ...], bool]] = {
    "uq_users_username": ("users", ("username",), True),
    "uq_users_email": ("users", ("email",), True),
    "uq_reports_report_id": ("reports", ("report_id",), True),
    "ix_reports_report_type": ("reports", ("report_type",), False),
    "ix_reports_category": ("reports", ("category",), False),
    "ix_reports_provider": ("reports", ("provider",), False),
    "ix_reports_is_active": ("reports", ("is_active",), False),
    "ix_reports_created_by": ("reports", ("created_by",), False),
    "ix_reports_last_modified_by": ("reports", ("last_modified_by",), False),
    "ix_reports_created_at": ("reports", ("created_at",), False),
    "ix_reports_updated_at": ("reports", ("updated_at",), False),
    "ix_reports_type_provider": ("reports", ("report_type", "provider"), False),
    "ix_reports_category_active": ("reports", ("category", "is_active"), False),
    "ix_reports_public_active": ("reports", ("is_public", "is_active"), False),
    "uq_report_executions_execution_id": ("report_executions", ("execution_id",), True),
    "ix_report_executions_report_created": (
        "report_executions",
        ("report_id", "created_at"),
        False,
    ),
    "ix_report_executions_report_status": ("report_executions", ("report_id", "status"), False),
    "ix_report_executions_status_created": ("report_executions", ("status", "created_at"), False),
    "ix_report_executions_status_last_event": (
        "report_executions",
        ("status", "last_event_at"),
        False,
    ),
    "ix_report_executions_trigger_type": ("report_executions", ("trigger_type",), False),
    "ix_report_executions_started_by_created": (
        "report_executions",
        ("started_by", "created_at"),
        False,
    ),
    "ix_report_executions_start_time": ("report_executions", ("start_time",), False),
    "ix_report_executions_end_time": ("report_executions", ("end_time",), False),
    "ix_report_executions_created_at": ("report_executions", ("created_at",), False),
    "ix_report_executions_retention_until": ("report_executions", ("retention_until",), False),
    # revision 0003: the read side's
    "ix_report_executions_last_event_at": ("report_executions", ("last_event_at",), False),
    "ix_report_executions_duration_ms": ("report_executions", ("duration_ms",), False),
    "ix_report_executions_report_last_event": (
        "report_executions",
        ("report_id", "last_event_at"),
        False,
    ),
    "ix_report_executions_report_end": ("report_executions", ("report_id", "end_time"), False),
    "ix_purged_executions_purged_at": ("purged_executions", ("purged_at",), False),
    "ix_dead_letter_redrives_claimed_at": ("dead_letter_redrives", ("claimed_at",), False),
}

# (table, column) -> (referenced table, referenced column, ON DELETE, ON UPDATE)
EXPECTED_FKS = {
    ("reports", "created_by"): ("users", "id", "SET NULL", "CASCADE"),
    ("reports", "last_modified_by"): ("users", "id", "SET NULL", "CASCADE"),
    ("report_executions", "report_id"): ("reports", "report_id", "CASCADE", "CASCADE"),
    ("report_executions", "started_by"): ("users", "id", "SET NULL", "CASCADE"),
}


async def rows(engine: AsyncEngine, sql: str) -> list[Any]:
    async with engine.connect() as conn:
        return list((await conn.execute(text(sql))).all())


def normalize_type(column_type: str) -> str:
    # MySQL 8.0 hides integer display widths; MariaDB shows them.
    for bare, wide in (("int", "int(11)"), ("bigint", "bigint(20)")):
        if column_type == bare:
            return wide
    return "json" if column_type == "longtext" else column_type


async def test_columns_types_and_nullability(engine: AsyncEngine) -> None:
    found = await rows(
        engine,
        "SELECT TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE FROM information_schema.COLUMNS "
        "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME <> 'alembic_version' "
        "ORDER BY TABLE_NAME, ORDINAL_POSITION",
    )
    actual: dict[str, dict[str, tuple[str, bool]]] = {}
    for table, column, column_type, nullable in found:
        actual.setdefault(table, {})[column] = (normalize_type(column_type), nullable == "YES")
    assert actual == EXPECTED_COLUMNS


async def test_json_columns_reject_invalid_json(db: AsyncEngine) -> None:
    async with db.begin() as conn:
        await conn.execute(text("INSERT INTO reports (report_id, name) VALUES ('r', 'r')"))
    with pytest.raises((IntegrityError, DBAPIError)):
        async with db.begin() as conn:
            await conn.execute(
                text("UPDATE reports SET query_config = '{not json' WHERE report_id = 'r'")
            )


async def test_identifiers_are_case_sensitive_utf8mb4(engine: AsyncEngine) -> None:
    found = await rows(
        engine,
        "SELECT TABLE_NAME, COLUMN_NAME, CHARACTER_SET_NAME, COLLATION_NAME "
        "FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() "
        "AND COLUMN_NAME IN ('execution_id', 'report_id')",
    )
    assert {(t, c) for t, c, _, _ in found} == {
        ("reports", "report_id"),
        ("report_executions", "execution_id"),
        ("report_executions", "report_id"),
        ("purged_executions", "execution_id"),
    }
    assert {(cs, coll) for _, _, cs, coll in found} == {("utf8mb4", "utf8mb4_bin")}
    tables = await rows(
        engine,
        "SELECT TABLE_NAME, ENGINE, TABLE_COLLATION FROM information_schema.TABLES "
        "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME <> 'alembic_version'",
    )
    assert {(e, c) for _, e, c in tables} == {("InnoDB", "utf8mb4_unicode_ci")}


async def test_indexes(engine: AsyncEngine) -> None:
    found = await rows(
        engine,
        "SELECT TABLE_NAME, INDEX_NAME, NON_UNIQUE, COLUMN_NAME FROM information_schema.STATISTICS "
        "WHERE TABLE_SCHEMA = DATABASE() AND INDEX_NAME <> 'PRIMARY' "
        "AND TABLE_NAME <> 'alembic_version' ORDER BY TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX",
    )
    actual: dict[str, tuple[str, tuple[str, ...], bool]] = {}
    for table, name, non_unique, column in found:
        _, cols, _ = actual.get(name, (table, (), False))
        actual[name] = (table, (*cols, column), not non_unique)
    assert actual == EXPECTED_INDEXES
    assert len(EXPECTED_INDEXES) >= 20


async def test_foreign_keys_and_rules(engine: AsyncEngine) -> None:
    found = await rows(
        engine,
        "SELECT k.TABLE_NAME, k.COLUMN_NAME, k.REFERENCED_TABLE_NAME, k.REFERENCED_COLUMN_NAME, "
        "r.DELETE_RULE, r.UPDATE_RULE FROM information_schema.KEY_COLUMN_USAGE k "
        "JOIN information_schema.REFERENTIAL_CONSTRAINTS r "
        "ON r.CONSTRAINT_SCHEMA = k.CONSTRAINT_SCHEMA AND r.CONSTRAINT_NAME = k.CONSTRAINT_NAME "
        "WHERE k.TABLE_SCHEMA = DATABASE() AND k.REFERENCED_TABLE_NAME IS NOT NULL",
    )
    assert {(t, c): (rt, rc, d, u) for t, c, rt, rc, d, u in found} == EXPECTED_FKS


async def test_cascades_with_real_deletes(db: AsyncEngine) -> None:
    now = datetime.now(UTC)
    async with sessionmaker(db)() as session, session.begin():
        session.add(User(id=7, username="ana"))
        await session.flush()
        session.add(Report(report_id="r-1", name="VPC inventory", created_by=7, last_modified_by=7))
        session.add(Report(report_id="r-2", name="Subnets"))
        await session.flush()
        for i, report in enumerate(["r-1", "r-1", "r-2"]):
            session.add(
                ReportExecution(
                    execution_id=f"e-{i}",
                    report_id=report,
                    started_by=7,
                    last_event_at=now,
                    fold_keys={},
                )
            )
    async with db.begin() as conn:
        # ON UPDATE CASCADE: renaming a report follows into its executions
        await conn.execute(text("UPDATE reports SET report_id = 'r-1b' WHERE report_id = 'r-1'"))
        # ON DELETE SET NULL: deleting the user keeps reports and executions
        await conn.execute(text("DELETE FROM users WHERE id = 7"))
    assert await rows(
        db,
        "SELECT execution_id, report_id, started_by FROM report_executions ORDER BY execution_id",
    ) == [
        ("e-0", "r-1b", None),
        ("e-1", "r-1b", None),
        ("e-2", "r-2", None),
    ]
    assert await rows(db, "SELECT created_by, last_modified_by FROM reports") == [
        (None, None),
        (None, None),
    ]
    async with db.begin() as conn:
        # ON DELETE CASCADE: deleting a report deletes its executions, only those
        await conn.execute(text("DELETE FROM reports WHERE report_id = 'r-1b'"))
    assert await rows(db, "SELECT execution_id FROM report_executions") == [("e-2",)]


async def test_execution_needs_an_existing_report(db: AsyncEngine) -> None:
    with pytest.raises(IntegrityError):
        async with db.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO report_executions (execution_id, report_id, last_event_at, "
                    "fold_keys) VALUES ('e', 'missing', NOW(6), '{}')"
                )
            )


async def test_times_round_trip_in_utc_with_microseconds(db: AsyncEngine) -> None:
    plus_two = timezone(timedelta(hours=2))
    start = datetime(2026, 3, 29, 3, 30, 15, 123456, tzinfo=plus_two)  # a DST night in Europe
    async with sessionmaker(db)() as session, session.begin():
        session.add(Report(report_id="r", name="r"))
        await session.flush()
        session.add(
            ReportExecution(
                execution_id="e",
                report_id="r",
                start_time=start,
                last_event_at=start,
                fold_keys={"k": [1]},
            )
        )
    async with sessionmaker(db)() as session:
        got = (await session.execute(select(ReportExecution))).scalar_one()
    assert got.start_time == start
    assert got.start_time is not None
    assert got.start_time.tzinfo == UTC
    assert got.fold_keys == {"k": [1]}
    # the stored value is UTC whatever the client's zone: read it raw as text
    assert await rows(db, "SELECT CAST(start_time AS CHAR) FROM report_executions") == [
        ("2026-03-29 01:30:15.123456",)
    ]


async def test_alembic_check_finds_no_drift(database_url: str) -> None:
    await migrate.check(database_url)


async def test_upgrade_downgrade_round_trip(scratch_database: str) -> None:
    engine = create_engine(DatabaseSettings(), url=scratch_database)
    try:
        await migrate.upgrade(scratch_database)
        assert {r[0] for r in await rows(engine, "SHOW TABLES")} == {
            "alembic_version",
            "users",
            "reports",
            "report_executions",
            "purged_executions",
            "dead_letter_redrives",
        }
        await migrate.downgrade(scratch_database, "base")
        assert {r[0] for r in await rows(engine, "SHOW TABLES")} == {"alembic_version"}
        with pytest.raises(CommandError, match="not up to date"):
            await migrate.check(scratch_database)
        await migrate.upgrade(scratch_database)
        await migrate.check(scratch_database)
    finally:
        await engine.dispose()
