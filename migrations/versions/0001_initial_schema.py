"""Initial schema: users (minimal), reports and report_executions (the seed).

Written by hand from the seed document and checked against the models by
``alembic check`` in the test suite. Portable to MySQL 8.0 and MariaDB 10.6+:
native ENUMs, JSON columns (MariaDB: LONGTEXT + json_valid CHECK), TIMESTAMP(6)
in UTC, InnoDB, utf8mb4. See docs/schema.md for every choice.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

from exectrack.consumer.db.types import ID_COLLATION, enum_of
from exectrack.producer.events import (
    CloudProvider,
    ExecutionStatus,
    ReportCategory,
    ReportType,
    TriggerType,
)

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_unicode_ci",
}
NOW6 = sa.text("CURRENT_TIMESTAMP(6)")
NOW6_ON_UPDATE = sa.text("CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6)")


def ts(name: str, *, nullable: bool = True, **kw: object) -> sa.Column[object]:
    return sa.Column(name, mysql.TIMESTAMP(fsp=6), nullable=nullable, **kw)  # type: ignore[arg-type]


def ident(name: str, **kw: object) -> sa.Column[object]:
    return sa.Column(name, sa.String(255, collation=ID_COLLATION), **kw)  # type: ignore[arg-type]


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("username", sa.String(255), nullable=True),
        sa.Column("email", sa.String(255), nullable=True),
        sa.Column("display_name", sa.String(255), nullable=True),
        ts("created_at", nullable=False, server_default=NOW6),
        ts("updated_at", nullable=False, server_default=NOW6_ON_UPDATE),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("username", name="uq_users_username"),
        sa.UniqueConstraint("email", name="uq_users_email"),
        **TABLE,
    )

    op.create_table(
        "reports",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        ident("report_id", nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("report_type", enum_of(ReportType, "report_type"), nullable=True),
        sa.Column("category", enum_of(ReportCategory, "category"), nullable=True),
        sa.Column("provider", enum_of(CloudProvider, "provider"), nullable=True),
        sa.Column("query_config", sa.JSON(), nullable=True),
        sa.Column("scheduling_config", sa.JSON(), nullable=True),
        sa.Column("notification_config", sa.JSON(), nullable=True),
        sa.Column("parameters_schema", sa.JSON(), nullable=True),
        sa.Column("is_active", sa.Boolean(), nullable=False, server_default=sa.text("1")),
        sa.Column("is_public", sa.Boolean(), nullable=False, server_default=sa.text("0")),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("last_modified_by", sa.Integer(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False, server_default=sa.text("1")),
        ts("created_at", nullable=False, server_default=NOW6),
        ts("updated_at", nullable=False, server_default=NOW6_ON_UPDATE),
        ts("defined_at"),
        sa.Column("definition_event_id", sa.String(255), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_reports"),
        sa.UniqueConstraint("report_id", name="uq_reports_report_id"),
        sa.ForeignKeyConstraint(
            ["created_by"],
            ["users.id"],
            name="fk_reports_created_by_users",
            ondelete="SET NULL",
            onupdate="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["last_modified_by"],
            ["users.id"],
            name="fk_reports_last_modified_by_users",
            ondelete="SET NULL",
            onupdate="CASCADE",
        ),
        **TABLE,
    )
    for name, cols in [
        ("ix_reports_report_type", ["report_type"]),
        ("ix_reports_category", ["category"]),
        ("ix_reports_provider", ["provider"]),
        ("ix_reports_is_active", ["is_active"]),
        ("ix_reports_created_by", ["created_by"]),
        ("ix_reports_last_modified_by", ["last_modified_by"]),
        ("ix_reports_created_at", ["created_at"]),
        ("ix_reports_updated_at", ["updated_at"]),
        ("ix_reports_type_provider", ["report_type", "provider"]),
        ("ix_reports_category_active", ["category", "is_active"]),
        ("ix_reports_public_active", ["is_public", "is_active"]),
    ]:
        op.create_index(name, "reports", cols)

    op.create_table(
        "report_executions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        ident("execution_id", nullable=False),
        ident("report_id", nullable=False),
        sa.Column(
            "status",
            enum_of(ExecutionStatus, "status"),
            nullable=False,
            server_default=sa.text("'pending'"),
        ),
        sa.Column("trigger_type", enum_of(TriggerType, "trigger_type"), nullable=True),
        sa.Column("started_by", sa.Integer(), nullable=True),
        ts("start_time"),
        ts("end_time"),
        sa.Column("duration_ms", sa.BigInteger(), nullable=True),
        sa.Column("records_processed", sa.BigInteger(), nullable=True),
        sa.Column("output_size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("execution_parameters", sa.JSON(), nullable=True),
        sa.Column("result_summary", sa.JSON(), nullable=True),
        sa.Column("error_details", sa.JSON(), nullable=True),
        sa.Column("output_location", sa.String(500), nullable=True),
        ts("retention_until"),
        ts("created_at", nullable=False, server_default=NOW6),
        ts("last_event_at", nullable=False),
        sa.Column("fold_keys", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_report_executions"),
        sa.UniqueConstraint("execution_id", name="uq_report_executions_execution_id"),
        sa.ForeignKeyConstraint(
            ["report_id"],
            ["reports.report_id"],
            name="fk_report_executions_report_id_reports",
            ondelete="CASCADE",
            onupdate="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["started_by"],
            ["users.id"],
            name="fk_report_executions_started_by_users",
            ondelete="SET NULL",
            onupdate="CASCADE",
        ),
        **TABLE,
    )
    for name, cols in [
        ("ix_report_executions_report_created", ["report_id", "created_at"]),
        ("ix_report_executions_report_status", ["report_id", "status"]),
        ("ix_report_executions_status_created", ["status", "created_at"]),
        ("ix_report_executions_status_last_event", ["status", "last_event_at"]),
        ("ix_report_executions_trigger_type", ["trigger_type"]),
        ("ix_report_executions_started_by_created", ["started_by", "created_at"]),
        ("ix_report_executions_start_time", ["start_time"]),
        ("ix_report_executions_end_time", ["end_time"]),
        ("ix_report_executions_created_at", ["created_at"]),
        ("ix_report_executions_retention_until", ["retention_until"]),
    ]:
        op.create_index(name, "report_executions", cols)


def downgrade() -> None:
    # Dropping a table drops its indexes; children before parents.
    op.drop_table("report_executions")
    op.drop_table("reports")
    op.drop_table("users")
