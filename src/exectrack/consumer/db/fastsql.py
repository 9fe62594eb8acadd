"""The hot statements of a batch as plain SQL text, sent straight to the driver.

SQLAlchemy Core compiles a 1,000-row ``VALUES`` list and expands a
1,000-element ``IN`` list anew for every batch, and runs each value through
its type processors: profiling put that at about 60% of the consumer's write
time (docs/performance.md). For the three statements that carry a whole
batch (lock the executions, insert new ones, overwrite locked ones) this
module renders the SQL itself, with the same rules as the models
(consumer/db/types.py: aware UTC datetimes <-> naive UTC TIMESTAMP, JSON <->
text, enums <-> values). Everything else keeps using Core.

Values are rendered as SQL literals here, one converter per column, instead
of being handed to the driver as parameters: the driver's generic per-value
escaping (a type dispatch, then the escape) was the next 25% of the write
path. The quoting follows the driver's rule (pymysql's escape table: ``\\0``,
``\\``, newline, carriage return, ``^Z``, the single quote; not the double
quote, which needs nothing inside single quotes), or doubled single quotes
when the session has ``NO_BACKSLASH_ESCAPES``; tests/integration/
test_fastsql.py writes hostile text through it and reads it back unchanged.
Because SQLAlchemy hands the statement to the driver with an empty parameter
tuple, which pymysql applies with ``%``, every ``%`` in a literal is doubled.

Each of them takes any number of rows (keys) and sends as many statements as
keep each under the connection's ``max_allowed_packet`` and 1,000 rows
(exectrack.consumer.db.packet); the byte count comes from the rendered text itself.

The statements are portable: multi-row ``INSERT``, ``SELECT ... FOR UPDATE``
and ``INSERT ... ON DUPLICATE KEY UPDATE col = VALUES(col)``, which MariaDB
and MySQL 8.0 both accept (MySQL 8.0.20+ prefers a row alias and warns;
VALUES() keeps working there).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import cache
from typing import Any

from pymysql.constants import SERVER_STATUS
from sqlalchemy.ext.asyncio import AsyncConnection

from exectrack.consumer.db import packet
from exectrack.producer.events import ExecutionStatus, TriggerType, dumps_json, loads_json

TABLE = "report_executions"
TOMBSTONES = "purged_executions"
KEY = "execution_id"
JSON_COLUMNS = frozenset({"execution_parameters", "result_summary", "error_details", "fold_keys"})
TIME_COLUMNS = frozenset(
    {"start_time", "end_time", "retention_until", "created_at", "last_event_at"}
)
ENUM_COLUMNS: dict[str, type[enum.Enum]] = {"status": ExecutionStatus, "trigger_type": TriggerType}

Quote = Callable[[str], str]
Render = Callable[[Any], str]

# What must not appear raw inside a single-quoted literal: the quote, the
# backslash (unless NO_BACKSLASH_ESCAPES), "%" (see the module docstring);
# NUL, ^Z, CR and LF are escaped as pymysql does, for logs and tools. A double
# quote needs nothing inside single quotes, and JSON text is full of them.
_BACKSLASH = {0: "\\0", 0x5C: "\\\\", 0x0A: "\\n", 0x0D: "\\r", 0x1A: "\\Z", 0x27: "\\'",
              0x25: "%%"}  # fmt: skip
_NO_BACKSLASH = {0x27: "''", 0x25: "%%"}


@cache
def quoting(no_backslash_escapes: bool) -> Quote:
    """A function str -> quoted SQL string literal, for the session's escaping mode."""
    mapping = _NO_BACKSLASH if no_backslash_escapes else _BACKSLASH
    table = str.maketrans(mapping)
    # most values need no escaping at all: one C-speed scan says so (str.translate
    # with multi-character replacements walks the string in Python objects)
    special = re.compile("[" + re.escape("".join(map(chr, mapping))) + "]")

    def quote(text: str) -> str:
        if special.search(text) is None:
            return "'" + text + "'"
        return "'" + text.translate(table) + "'"

    return quote


def _time(value: datetime) -> str:
    if value.tzinfo is UTC:  # what the event models hold: skip the conversion
        return value.isoformat(" ")[:-6]  # without "+00:00"
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: exectrack stores aware UTC times only")
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ")


def _renderer(column: str, quote: Quote) -> Render:
    if column in TIME_COLUMNS:
        return lambda value: "'" + _time(value) + "'"
    if column in JSON_COLUMNS:
        return lambda value: quote(dumps_json(value).decode())  # any integer exactly

    def scalar(value: Any) -> str:
        if isinstance(value, str):  # also the enums (StrEnum): their value
            return quote(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        raise TypeError(f"{column}: cannot store {type(value).__name__} {value!r}")

    return scalar


@cache
def renderers(columns: tuple[str, ...], no_backslash_escapes: bool) -> tuple[Render, ...]:
    """One converter value -> SQL literal per column, in ``columns`` order (cached).

    Times: aware -> ``'YYYY-MM-DD HH:MM:SS.ffffff'`` in UTC; JSON columns: the
    JSON text quoted; strings and enums quoted; integers as digits. A converter
    raises ``ValueError`` for a naive datetime and ``TypeError`` for any other type.
    """
    quote = quoting(no_backslash_escapes)
    return tuple(_renderer(column, quote) for column in columns)


def render_each(
    columns: tuple[str, ...], rows: Sequence[dict[str, Any]], no_backslash_escapes: bool = False
) -> list[str]:
    """``["(v, ...)", ...]``: each row as SQL literals, in ``columns`` order.

    Args:
        columns: the columns to render; every row must have each as a key.
        rows: column -> value (None renders as ``NULL``).
        no_backslash_escapes: the session's SQL mode has ``NO_BACKSLASH_ESCAPES``
            (MySQL reference manual, "String Literals"): quotes are doubled instead.

    Raises:
        KeyError: a row lacks a column.
        TypeError, ValueError: a value the column cannot hold (``renderers``).
    """
    spec = tuple(zip(columns, renderers(columns, no_backslash_escapes), strict=True))
    return [
        "("
        + ", ".join(["NULL" if (v := row[c]) is None else render(v) for c, render in spec])
        + ")"
        for row in rows
    ]


def from_db(column: str, value: Any) -> Any:
    """A value read from ``column`` as the models hold it.

    TIMESTAMP (naive, UTC) -> aware UTC datetime; JSON text -> the decoded
    value (integers of any size exactly); ``status``/``trigger_type`` -> their
    enums; anything else and NULL (None) as read.
    """
    if value is None:
        return None
    if column in TIME_COLUMNS:
        return value.replace(tzinfo=UTC)
    if column in JSON_COLUMNS:
        return loads_json(value)
    kind = ENUM_COLUMNS.get(column)
    return kind(value) if kind is not None else value


@cache
def insert_head(columns: tuple[str, ...]) -> str:
    """``INSERT INTO report_executions (columns) VALUES `` (cached per column tuple)."""
    return f"INSERT INTO {TABLE} ({', '.join(columns)}) VALUES "


@cache
def upsert_tail(columns: tuple[str, ...]) -> str:
    """`` ON DUPLICATE KEY UPDATE c = VALUES(c), ...`` for every column (cached).

    ``VALUES(col)`` works on MariaDB and MySQL 8.0 (deprecated since 8.0.20,
    MySQL reference manual, "INSERT ... ON DUPLICATE KEY UPDATE Statement").
    """
    return " ON DUPLICATE KEY UPDATE " + ", ".join(f"{c} = VALUES({c})" for c in columns)


async def _no_backslash_escapes(conn: AsyncConnection) -> bool:
    """The session's escaping mode, as the server last reported it to the driver."""
    raw = await conn.get_raw_connection()
    status = getattr(raw.driver_connection, "server_status", 0)
    return bool(status & SERVER_STATUS.SERVER_STATUS_NO_BACKSLASH_ESCAPES)


async def lock_rows(
    conn: AsyncConnection,
    columns: tuple[str, ...],
    keys: Sequence[str],
    *,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Lock and read the rows of ``keys`` (``SELECT ... FOR UPDATE``), any number of keys.

    As many statements as ``packet.runs`` needs to keep each under ``limit``
    bytes (default: the connection's, exectrack.consumer.db.packet).

    Returns:
        The rows found (column -> value, ``from_db``), ordered by ``execution_id``
        within each statement; a key without a row is absent.

    Raises:
        RowTooLarge: a key too long for one statement.
    """
    if not keys:
        return []
    quote = quoting(await _no_backslash_escapes(conn))
    head = f"SELECT {', '.join(columns)} FROM {TABLE} WHERE {KEY} IN ("
    tail = f") ORDER BY {KEY} FOR UPDATE"
    quoted = [quote(k) for k in keys]
    found = []
    limit = await _limit(conn, limit)
    for run in packet.runs([*map(packet.utf8_len, quoted)], keys, len(head) + len(tail), limit):
        result = await conn.exec_driver_sql(head + ", ".join(quoted[run]) + tail)
        found += [
            {column: from_db(column, value) for column, value in zip(columns, row, strict=True)}
            for row in result.fetchall()
        ]
    return found


async def tombstoned(
    conn: AsyncConnection, keys: Sequence[str], *, limit: int | None = None
) -> set[str]:
    """Which of these executions were purged (have a row in ``purged_executions``).

    Returns:
        The subset of ``keys`` with a tombstone (CONTRACT.md, "Retention":
        purged executions stay purged). Statements split as for ``lock_rows``.
    """
    if not keys:
        return set()
    quote = quoting(await _no_backslash_escapes(conn))
    head = f"SELECT {KEY} FROM {TOMBSTONES} WHERE {KEY} IN ("
    quoted = [quote(k) for k in keys]
    found: set[str] = set()
    limit = await _limit(conn, limit)
    for run in packet.runs([*map(packet.utf8_len, quoted)], keys, len(head) + 1, limit):
        result = await conn.exec_driver_sql(head + ", ".join(quoted[run]) + ")")
        found |= {row[0] for row in result}
    return found


async def write_rows(
    conn: AsyncConnection,
    columns: tuple[str, ...],
    rows: Sequence[dict[str, Any]],
    *,
    overwrite: bool,
    limit: int | None = None,
) -> None:
    """Insert (or, ``overwrite``, upsert) ``rows``, any number of them.

    As many multi-row statements as keep each under ``limit`` bytes (default:
    the connection's ``max_allowed_packet``, exectrack.consumer.db.packet) and
    ``packet.MAX_ROWS`` rows.

    Raises:
        RowTooLarge: a row that cannot fit one statement (its ``execution_id``).
    """
    if not rows:
        return
    head = insert_head(columns)
    tail = upsert_tail(columns) if overwrite else ""
    rendered = render_each(columns, rows, await _no_backslash_escapes(conn))
    keys = [row[KEY] for row in rows]
    limit = await _limit(conn, limit)
    sizes = [*map(packet.utf8_len, rendered)]
    for run in packet.runs(sizes, keys, len(head) + len(tail), limit):
        await conn.exec_driver_sql(head + ", ".join(rendered[run]) + tail)


async def _limit(conn: AsyncConnection, limit: int | None) -> int:
    return limit if limit is not None else await packet.statement_limit(conn)
