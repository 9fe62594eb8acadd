"""The database schema as typed SQLAlchemy models (the seed document, faithfully).

Four tables. ``reports`` and ``report_executions`` are the seed's; ``users`` is the
minimal table its foreign keys point to; ``purged_executions`` (revision 0002)
keeps a tombstone per purged execution. The alembic revisions create exactly
this; ``alembic check`` (tests/integration/test_schema.py) proves the
models and the migrations agree.

Bookkeeping beyond the seed, all needed by the fold (docs/schema.md):
- ``report_executions.fold_keys`` (JSON): for each field, the order key of the
  event that supplied its value, so a later or earlier event can be merged
  exactly whatever the arrival order.
- ``report_executions.last_event_at``: the greatest event ``time`` seen; the
  reaper finds stale pending/running executions with it.
- ``reports.defined_at`` and ``reports.definition_event_id``: with ``version``
  they form the order key (version, time, id) of the winning ``report.defined``
  event; both NULL means the row is a placeholder created by an execution event.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from exectrack.consumer.db.types import ID_COLLATION, UtcTimestamp, enum_of
from exectrack.producer.events import (
    CloudProvider,
    ExecutionStatus,
    ReportCategory,
    ReportType,
    TriggerType,
)

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

TABLE_ARGS = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_unicode_ci",
}

NOW6 = text("CURRENT_TIMESTAMP(6)")


def identifier() -> String:
    """``VARCHAR(255)`` in ``ID_COLLATION`` (binary): ids match exactly, case and accents count."""
    return String(255, collation=ID_COLLATION)


class Base(DeclarativeBase):
    """The models' base: constraint names by ``NAMING_CONVENTION``, aware UTC ``TIMESTAMP(6)``."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {  # noqa: RUF012 - SQLAlchemy reads this class attribute
        datetime: UtcTimestamp(),
        dict[str, Any]: JSON(),
    }


class User(Base):
    """Minimal users table: the target of the seed's created_by/started_by keys.

    A row with a NULL username is a placeholder created because an event named a
    user id this database did not know yet (CONTRACT.md: foreign keys never cost
    an event).
    """

    __tablename__ = "users"
    __table_args__ = TABLE_ARGS

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str | None] = mapped_column(String(255), unique=True)
    email: Mapped[str | None] = mapped_column(String(255), unique=True)
    display_name: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(server_default=NOW6)
    updated_at: Mapped[datetime] = mapped_column(
        server_default=text("CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6)")
    )


class Report(Base):
    """A report definition (seed: reports)."""

    __tablename__ = "reports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    report_id: Mapped[str] = mapped_column(identifier(), unique=True)
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text)
    # NULL only on placeholder rows, until the report's definition arrives.
    report_type: Mapped[ReportType | None] = mapped_column(enum_of(ReportType, "report_type"))
    category: Mapped[ReportCategory | None] = mapped_column(enum_of(ReportCategory, "category"))
    provider: Mapped[CloudProvider | None] = mapped_column(enum_of(CloudProvider, "provider"))
    query_config: Mapped[dict[str, Any] | None]
    scheduling_config: Mapped[dict[str, Any] | None]
    notification_config: Mapped[dict[str, Any] | None]
    parameters_schema: Mapped[dict[str, Any] | None]
    is_active: Mapped[bool] = mapped_column(Boolean, server_default=text("1"))
    is_public: Mapped[bool] = mapped_column(Boolean, server_default=text("0"))
    created_by: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL", onupdate="CASCADE")
    )
    last_modified_by: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL", onupdate="CASCADE")
    )
    version: Mapped[int] = mapped_column(Integer, server_default=text("1"))
    created_at: Mapped[datetime] = mapped_column(server_default=NOW6)
    updated_at: Mapped[datetime] = mapped_column(
        server_default=text("CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6)")
    )
    # fold bookkeeping: order key (version, defined_at, definition_event_id)
    defined_at: Mapped[datetime | None]
    definition_event_id: Mapped[str | None] = mapped_column(String(255))

    __table_args__ = (
        Index("ix_reports_report_type", "report_type"),
        Index("ix_reports_category", "category"),
        Index("ix_reports_provider", "provider"),
        Index("ix_reports_is_active", "is_active"),
        Index("ix_reports_created_by", "created_by"),
        Index("ix_reports_last_modified_by", "last_modified_by"),
        Index("ix_reports_created_at", "created_at"),
        Index("ix_reports_updated_at", "updated_at"),
        Index("ix_reports_type_provider", "report_type", "provider"),
        Index("ix_reports_category_active", "category", "is_active"),
        Index("ix_reports_public_active", "is_public", "is_active"),
        TABLE_ARGS,
    )


class ReportExecution(Base):
    """One execution of a report: the fold of its lifecycle events (seed: report_executions)."""

    __tablename__ = "report_executions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    execution_id: Mapped[str] = mapped_column(identifier(), unique=True)
    report_id: Mapped[str] = mapped_column(
        identifier(),
        ForeignKey("reports.report_id", ondelete="CASCADE", onupdate="CASCADE"),
    )
    status: Mapped[ExecutionStatus] = mapped_column(
        enum_of(ExecutionStatus, "status"), server_default=text("'pending'")
    )
    trigger_type: Mapped[TriggerType | None] = mapped_column(enum_of(TriggerType, "trigger_type"))
    started_by: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL", onupdate="CASCADE")
    )
    start_time: Mapped[datetime | None]
    end_time: Mapped[datetime | None]
    duration_ms: Mapped[int | None] = mapped_column(BigInteger)
    records_processed: Mapped[int | None] = mapped_column(BigInteger)
    output_size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    execution_parameters: Mapped[dict[str, Any] | None]
    result_summary: Mapped[dict[str, Any] | None]
    error_details: Mapped[dict[str, Any] | None]
    output_location: Mapped[str | None] = mapped_column(String(500))
    retention_until: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(server_default=NOW6)
    # fold bookkeeping (docs/schema.md)
    last_event_at: Mapped[datetime]
    fold_keys: Mapped[dict[str, Any]]

    __table_args__ = (
        Index("ix_report_executions_report_created", "report_id", "created_at"),
        Index("ix_report_executions_report_status", "report_id", "status"),
        Index("ix_report_executions_status_created", "status", "created_at"),
        Index("ix_report_executions_status_last_event", "status", "last_event_at"),
        Index("ix_report_executions_trigger_type", "trigger_type"),
        Index("ix_report_executions_started_by_created", "started_by", "created_at"),
        Index("ix_report_executions_start_time", "start_time"),
        Index("ix_report_executions_end_time", "end_time"),
        Index("ix_report_executions_created_at", "created_at"),
        Index("ix_report_executions_retention_until", "retention_until"),
        # the read side's (revision 0003, exectrack.consumer.read.queries)
        Index("ix_report_executions_last_event_at", "last_event_at"),
        Index("ix_report_executions_duration_ms", "duration_ms"),
        Index("ix_report_executions_report_last_event", "report_id", "last_event_at"),
        Index("ix_report_executions_report_end", "report_id", "end_time"),
        TABLE_ARGS,
    )


class PurgedExecution(Base):
    """A tombstone: this execution was purged (revision 0002, docs/retention.md).

    The consumer never creates a row for an execution that has one, so a late
    event cannot resurrect what the purge deleted (CONTRACT.md: purged
    executions stay purged). The purge writes it in the transaction that
    deletes the row, and deletes tombstones older than
    ``EXECTRACK_TOMBSTONE_TTL_S``.
    """

    __tablename__ = "purged_executions"

    execution_id: Mapped[str] = mapped_column(identifier(), primary_key=True)
    purged_at: Mapped[datetime]

    __table_args__ = (
        Index("ix_purged_executions_purged_at", "purged_at"),
        TABLE_ARGS,
    )
