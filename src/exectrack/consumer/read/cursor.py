"""Opaque keyset cursors for ``list_executions``: where the next page starts.

A cursor is base64url (no padding) of the JSON ``[sort, descending, value, id]``:
the sort key and direction that issued it, the last row's sort value (a time
as integer microseconds since the epoch, ``duration_ms`` as is, or null) and
its ``id``. Opaque to callers; decoded only here, and refused (``BadCursor``)
unless it has exactly that shape and continues the same sort and direction.

``after`` is the rows past the cursor in the order ``ORDER BY col dir, id dir``
with MySQL's NULL order (NULL is the smallest value: first ascending, last
descending), written as ``col > v OR (col = v AND id > i)`` (and the NULL
branches), not as a row constructor: MariaDB uses no index for ``(a, b) > (x, y)``
(exectrack.consumer.db.keyset says why).
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, or_

from exectrack.consumer.errors import BadCursor

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)


def encode(sort: str, descending: bool, value: Any, row_id: int) -> str:
    """The cursor of the row whose sort value is ``value`` (a datetime, an int or None)."""
    if isinstance(value, datetime):
        value = (value - EPOCH) // _MICRO
    raw = json.dumps([sort, descending, value, row_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode(cursor: str, sort: str, descending: bool, *, is_time: bool) -> tuple[Any, int]:
    """``(value, id)`` of a cursor ``encode`` made for this ``sort`` and direction.

    ``value`` is an aware datetime when ``is_time``, else an int, or None.

    Raises:
        BadCursor: not base64url JSON of that shape, or issued for another sort/direction.
    """
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        parts = json.loads(raw)
    except (binascii.Error, ValueError):
        raise BadCursor("not a cursor this listing issued (malformed)") from None
    if not (
        isinstance(parts, list)
        and len(parts) == 4
        and isinstance(parts[1], bool)
        and (parts[2] is None or _is_int(parts[2]))
        and _is_int(parts[3])
    ):
        raise BadCursor("not a cursor this listing issued (wrong shape)")
    if parts[0] != sort or parts[1] is not descending:
        order = "descending" if descending else "ascending"
        raise BadCursor(f"issued for another sort than {sort} {order}")
    value = parts[2]
    if is_time and value is not None:
        try:
            value = EPOCH + value * _MICRO
        except OverflowError:
            raise BadCursor("time out of range") from None
    return value, parts[3]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def after(
    col: ColumnElement[Any],
    row_id: ColumnElement[int],
    value: Any,
    last_id: int,
    *,
    descending: bool,
    nullable: bool,
) -> ColumnElement[bool]:
    """Rows after ``(value, last_id)`` in ``ORDER BY col, id`` (both DESC when ``descending``).

    The non-NULL part is ``col >= v AND (col > v OR id > i)`` (``<=``/``<``
    descending): its first conjunct is a range on ``col``'s index, as in
    exectrack.consumer.db.keyset.
    """
    if value is None:  # on within the NULLs; ascending, then every non-NULL value
        beyond_id = row_id < last_id if descending else row_id > last_id
        among_nulls = and_(col.is_(None), beyond_id)
        return among_nulls if descending else or_(among_nulls, col.is_not(None))
    if descending:
        later = and_(col <= value, or_(col < value, row_id < last_id))
        return or_(later, col.is_(None)) if nullable else later
    return and_(col >= value, or_(col > value, row_id > last_id))
