"""Redrives of dead letters: each one republished once (``exectrack-consumer dlq redrive``).

One row per dead letter (dead-letter topic, partition, offset), claimed before
the send and completed with where the copy landed (docs/read/dead-letters.md).
Portable to MySQL 8.0 and MariaDB 10.6+.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

from exectrack.consumer.db.types import ID_COLLATION

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TOPIC_CHARS = 249  # the longest Kafka topic name


def upgrade() -> None:
    op.create_table(
        "dead_letter_redrives",
        sa.Column("dlq_topic", sa.String(TOPIC_CHARS, collation=ID_COLLATION), nullable=False),
        sa.Column("dlq_partition", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("dlq_offset", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("reason", sa.String(64), nullable=True),
        sa.Column("record_key", sa.String(255), nullable=True),
        sa.Column("claimed_at", mysql.TIMESTAMP(fsp=6), nullable=False),
        sa.Column("claimed_by", sa.String(255), nullable=False),
        sa.Column("redriven_at", mysql.TIMESTAMP(fsp=6), nullable=True),
        sa.Column("target_topic", sa.String(TOPIC_CHARS, collation=ID_COLLATION), nullable=True),
        sa.Column("target_partition", sa.Integer(), nullable=True),
        sa.Column("target_offset", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint(
            "dlq_topic", "dlq_partition", "dlq_offset", name="pk_dead_letter_redrives"
        ),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_unicode_ci",
    )
    op.create_index("ix_dead_letter_redrives_claimed_at", "dead_letter_redrives", ["claimed_at"])


def downgrade() -> None:
    op.drop_index("ix_dead_letter_redrives_claimed_at", table_name="dead_letter_redrives")
    op.drop_table("dead_letter_redrives")
