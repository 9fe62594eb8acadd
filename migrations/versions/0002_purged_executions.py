"""Tombstones of purged executions: a late event must not bring one back.

One row per execution the purge (or a replay's final sweep) deleted; the
consumer skips events of executions that have no row but a tombstone
(docs/retention.md). Portable to MySQL 8.0 and MariaDB 10.6+.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

from exectrack.consumer.db.types import ID_COLLATION

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "purged_executions",
        sa.Column("execution_id", sa.String(255, collation=ID_COLLATION), nullable=False),
        sa.Column("purged_at", mysql.TIMESTAMP(fsp=6), nullable=False),
        sa.PrimaryKeyConstraint("execution_id", name="pk_purged_executions"),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_unicode_ci",
    )
    op.create_index("ix_purged_executions_purged_at", "purged_executions", ["purged_at"])


def downgrade() -> None:
    op.drop_index("ix_purged_executions_purged_at", table_name="purged_executions")
    op.drop_table("purged_executions")
