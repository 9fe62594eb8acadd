"""Column types shared by the models and the migrations.

``UtcTimestamp`` is the seed's TIMESTAMP with microseconds: MySQL stores TIMESTAMP
in UTC and converts on the way in and out using the *session* time zone, so every
connection pins ``time_zone = '+00:00'`` (exectrack.consumer.db.engine) and Python only ever
sees aware UTC datetimes. Its range is 1970-01-01 00:00:01 to 2038-01-19
03:14:07.999999 UTC (docs/schema.md, "The 2038 limit"): the event contract
refuses an envelope time outside it, and the fold saturates or drops the
optional data times outside it (exectrack.consumer.ingest.fold.storable).

``enum_of`` stores a ``StrEnum`` by *value* as a native MySQL ENUM, so the
database and the event contract share one list of values (exectrack.producer.events).
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Dialect, Enum, TypeDecorator
from sqlalchemy.dialects import mysql

# Identifiers (execution_id, report_id) compare byte-wise: "Run-1" and "run-1"
# are different executions. utf8mb4_bin exists on MySQL 8.0 and MariaDB alike.
ID_COLLATION = "utf8mb4_bin"


class UtcTimestamp(TypeDecorator[datetime]):
    """TIMESTAMP(6) that accepts and returns timezone-aware UTC datetimes only."""

    impl = mysql.TIMESTAMP(fsp=6)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: exectrack stores aware UTC times only")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime from the driver, got {type(value).__name__}")
        return value.replace(tzinfo=UTC)


def enum_of(enum_cls: type[enum.StrEnum], name: str) -> Enum:
    """A native ENUM whose members are the StrEnum's values, in declaration order."""
    return Enum(
        enum_cls,
        name=name,
        values_callable=lambda members: [m.value for m in members],
        validate_strings=True,
    )
