"""Keyset pagination: a table read in index order, one page a query, in flat memory.

Each page is ``<the query> AND <keys after the last row's> ORDER BY <keys> LIMIT n``:
it starts right after the last row of the page before, along an index whose
columns are the keys (InnoDB appends the primary key to a secondary index, so
``(retention_until, id)`` is the order of ``ix_report_executions_retention_until``).
"After" is written ``k1 >= :k1 AND (k1 > :k1 OR k2 > :k2)``, not as a row
constructor ``(k1, k2) > (:k1, :k2)``: MariaDB uses no index for a row
constructor compared with ``>`` (MariaDB docs, "Row Constructor Optimization"),
and MySQL advises the expanded form (MySQL 8.0 Reference Manual, "Row Constructor
Expression Optimization"); its first conjunct is a range on the index's leading
column. Unlike ``OFFSET``, a page
never walks again what the pages before it passed, nor the entries a purge just
deleted, delete-marked until InnoDB's purge thread removes them.

Each page is its own statement on a connection of its own (a consistent read,
no lock, no read view held between pages). The users: the purge
(``(retention_until, id)``), the reaper (``(last_event_at, id)`` per status), the
reapply (``id``) and verify (``execution_id``, ``report_id``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Row, Select, and_, or_
from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["after", "pages"]


def after(keys: Sequence[ColumnElement[Any]], last: Sequence[Any]) -> ColumnElement[bool]:
    """The rows whose ``keys`` come after the values ``last`` (one a key), in ascending order.

    Raises ``ValueError`` when ``keys`` is empty or ``last`` has another length.
    """
    if not keys or len(keys) != len(last):
        raise ValueError(f"{len(keys)} keys, {len(last)} values: one value a key, at least one")
    first, *rest = keys
    if not rest:
        beyond: ColumnElement[bool] = first > last[0]
        return beyond
    return and_(first >= last[0], or_(first > last[0], after(rest, last[1:])))


async def pages(
    engine: AsyncEngine,
    query: Select[Any],
    keys: Sequence[ColumnElement[Any]],
    size: int | Callable[[], int],
    *,
    pause_s: float = 0.0,
) -> AsyncIterator[Sequence[Row[Any]]]:
    """The rows of ``query`` in ascending ``keys`` order, a page (a list of rows) at a time.

    Arguments:
        query: a ``SELECT`` of at least the ``keys`` columns; its ``WHERE`` holds
            on every page, its ``ORDER BY`` and ``LIMIT`` are set here.
        keys: columns that order the rows and identify one (end with the primary key).
        size: rows a page, or a callable asked before each page (a run capped at
            a number of rows); a size of 0 or less ends the pages.
        pause_s: seconds to sleep after a full page, before the next query (room
            for the consumer's transactions).

    Yields pages of SQLAlchemy rows; ends after an empty page or one shorter than
    asked (the end of the range: rows added behind it later are not read).
    Database errors propagate as SQLAlchemy raises them.
    """
    last: list[Any] | None = None
    while True:
        limit = size() if callable(size) else size
        if limit <= 0:
            return
        page = query if last is None else query.where(after(keys, last))
        async with engine.connect() as conn:
            rows = (await conn.execute(page.order_by(*keys).limit(limit))).all()
        if not rows:
            return
        yield rows
        if len(rows) < limit:
            return
        last = [rows[-1]._mapping[key] for key in keys]
        if pause_s:
            await asyncio.sleep(pause_s)
