"""The hot statements of a batch as plain SQL text, sent straight to the driver.

SQLAlchemy Core compiles a 1,000-row ``VALUES`` list and expands a
1,000-element ``IN`` list anew for every batch, and runs each value through
its type processors: profiling put that at about 60% of the consumer's write
time (docs/performance.md). For the three statements that carry a whole
batch (lock the executions, insert new ones, overwrite locked ones) this
module caches the SQL text per row count and converts values once, with the
same rules as the models (consumer/db/types.py: aware UTC datetimes <->
naive UTC TIMESTAMP, JSON <-> text, enums <-> values). Everything else keeps
using Core.

The statements are portable: multi-row ``INSERT``, ``SELECT ... FOR UPDATE``
and ``INSERT ... ON DUPLICATE KEY UPDATE col = VALUES(col)``, which MariaDB
and MySQL 8.0 both accept (MySQL 8.0.20+ prefers a row alias and warns;
VALUES() keeps working there).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import cache
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection

from producer.events import ExecutionStatus, TriggerType

TABLE = "report_executions"
KEY = "execution_id"
JSON_COLUMNS = frozenset({"execution_parameters", "result_summary", "error_details", "fold_keys"})
TIME_COLUMNS = frozenset(
    {"start_time", "end_time", "retention_until", "created_at", "last_event_at"}
)
ENUM_COLUMNS: dict[str, type[enum.Enum]] = {"status": ExecutionStatus, "trigger_type": TriggerType}


def to_db(value: Any) -> Any:
    """One Python value as the driver should send it."""
    if value is None or isinstance(value, int | str):  # StrEnum is a str
        return value.value if isinstance(value, enum.Enum) else value
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: exectrack stores aware UTC times only")
        return value.astimezone(UTC).replace(tzinfo=None)
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return value


def from_db(column: str, value: Any) -> Any:
    if value is None:
        return None
    if column in TIME_COLUMNS:
        return value.replace(tzinfo=UTC)
    if column in JSON_COLUMNS:
        return orjson.loads(value)
    kind = ENUM_COLUMNS.get(column)
    return kind(value) if kind is not None else value


@cache
def select_for_update(columns: tuple[str, ...], count: int) -> str:
    marks = ", ".join(["%s"] * count)
    return (
        f"SELECT {', '.join(columns)} FROM {TABLE} WHERE {KEY} IN ({marks}) "
        f"ORDER BY {KEY} FOR UPDATE"
    )


@cache
def insert(columns: tuple[str, ...], count: int, *, overwrite: bool) -> str:
    row = "(" + ", ".join(["%s"] * len(columns)) + ")"
    sql = f"INSERT INTO {TABLE} ({', '.join(columns)}) VALUES " + ", ".join([row] * count)
    if overwrite:
        sql += " ON DUPLICATE KEY UPDATE " + ", ".join(f"{c} = VALUES({c})" for c in columns)
    return sql


async def lock_rows(
    conn: AsyncConnection, columns: tuple[str, ...], keys: Sequence[str]
) -> list[dict[str, Any]]:
    result = await conn.exec_driver_sql(select_for_update(columns, len(keys)), tuple(keys))
    return [
        {column: from_db(column, value) for column, value in zip(columns, row, strict=True)}
        for row in result.fetchall()
    ]


async def write_rows(
    conn: AsyncConnection,
    columns: tuple[str, ...],
    rows: Sequence[dict[str, Any]],
    *,
    overwrite: bool,
) -> None:
    params = tuple(to_db(row[column]) for row in rows for column in columns)
    await conn.exec_driver_sql(insert(columns, len(rows), overwrite=overwrite), params)
