"""Statement size: every statement the writer sends fits the server's ``max_allowed_packet``.

The server refuses a client packet larger than its ``max_allowed_packet``
(MySQL 8.0 reference, "Replication and max_allowed_packet" / "Packet Too
Large"; the same variable in MariaDB): it answers error 1153 and closes the
connection, and a client still sending the rest of a long statement sees only
the connection drop (2013 "Lost connection to MySQL server during query").
Retrying such a statement can never succeed. So the writer bounds each
multi-row statement by bytes as well as by rows:

- the limit is the session's ``@@max_allowed_packet``, read once per DBAPI
  connection (cached in the pool record's ``info``, which SQLAlchemy clears
  when the connection is replaced), less ``PROTOCOL_SLACK`` for the command
  byte and packet headers; ``EXECTRACK_DB_MAX_STATEMENT_BYTES`` replaces it
  (a proxy in between with a smaller limit than the server's);
- rows (or keys) are packed into one statement while it stays under
  ``FILL`` of that limit and ``MAX_ROWS`` rows: a statement near the limit
  gains nothing in throughput and leaves no room for what the server or a
  proxy adds;
- one row alone larger than the whole limit can never be written: it is
  refused as ``RowTooLarge`` (a ``PoisonBatch`` naming the row's key), which
  the writer dead-letters as ``db_refused`` without holding up the rest.

Sizes are UTF-8 bytes of the rendered SQL text, which the renderers know as
they render (``utf8_len`` is O(1) for ASCII text).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from sqlalchemy.ext.asyncio import AsyncConnection

from exectrack.consumer.errors import RowTooLarge

MAX_ROWS = 1000  # rows (or keys) per statement
FILL = 0.75  # pack rows into one statement up to this fraction of the limit
PROTOCOL_SLACK = 1024  # the COM_QUERY byte, packet headers, with room to spare
INFO_KEY = "exectrack.max_allowed_packet"


async def max_allowed_packet(conn: AsyncConnection) -> int:
    """The session's ``max_allowed_packet`` in bytes, read once per DBAPI connection.

    ``SELECT @@max_allowed_packet`` answers the session value on MySQL 8.0 and
    MariaDB alike (read-only there: the global value when the session began).
    """
    raw = await conn.get_raw_connection()
    value = raw.info.get(INFO_KEY)
    if value is None:
        result = await conn.exec_driver_sql("SELECT @@max_allowed_packet")
        value = raw.info[INFO_KEY] = int(result.scalar_one())
    return int(value)


async def statement_limit(conn: AsyncConnection, override: int | None = None) -> int:
    """Bytes one statement may have on this connection: ``override``, else the server's
    ``max_allowed_packet`` less ``PROTOCOL_SLACK`` (MySQL reference manual, "Packet
    Too Large": a statement longer than ``max_allowed_packet`` is refused)."""
    if override is not None:
        return override
    return await max_allowed_packet(conn) - PROTOCOL_SLACK


def ids_per_statement(limit: int, text: int = 2048) -> int:
    """How many integer ids (BIGINT: at most 20 digits and ``", "``) one ``IN (...)``
    list may hold in a statement of ``limit`` bytes with ``text`` bytes of its own."""
    return max(1, (limit - text) // 22)


def utf8_len(text: str) -> int:
    """Bytes of ``text`` in UTF-8 (what the driver sends): O(1) for ASCII text."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def runs(
    sizes: Sequence[int],
    keys: Sequence[str],
    fixed: int,
    limit: int,
    *,
    sep: int = 2,
    max_rows: int = MAX_ROWS,
) -> Iterator[slice]:
    """Split rows (or keys) into runs, one statement each: slices of ``keys``.

    Arguments:
        sizes: bytes of each row's (or key's) SQL text, in order (``utf8_len``).
        keys: the key of each row (execution_id, report_id...), for the error.
        fixed: bytes of the statement around the rows (head, tail).
        limit: bytes one statement may have (``statement_limit``).
        sep: bytes between two rows (``", "``).
        max_rows: rows per statement at most.

    Each run's statement (``fixed`` + rows + separators) stays under
    ``FILL * limit`` unless a single row needs more, which is sent alone as
    long as it fits ``limit``.

    Raises:
        RowTooLarge: naming every row that cannot fit ``limit`` even alone,
            before any run is yielded.
    """
    if too_large := {keys[i]: fixed + n for i, n in enumerate(sizes) if fixed + n > limit}:
        raise RowTooLarge(too_large, limit)
    fill = int(limit * FILL)
    start, size = 0, fixed
    for index, length in enumerate(sizes):
        if index > start and (size + sep + length > fill or index - start >= max_rows):
            yield slice(start, index)
            start, size = index, fixed
        size += length + (sep if index > start else 0)
    if start < len(keys):
        yield slice(start, len(keys))
