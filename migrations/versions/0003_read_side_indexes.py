"""Indexes for the read side's queries (exectrack.consumer.read.queries, docs/read/queries.md).

- ``last_event_at``: the default listing (newest event first, no filter) and
  its keyset pages read the index in order instead of sorting the table;
- ``duration_ms``: the listing sorted by duration;
- ``(report_id, last_event_at)``: one report's executions, newest event first;
- ``(report_id, end_time)``: one report's duration series (ended in a window).

The seed's indexes stay. Portable to MySQL 8.0 and MariaDB 10.6+ (InnoDB builds
them online: ``ALGORITHM=INPLACE``, concurrent writes allowed).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES: dict[str, list[str]] = {
    "ix_report_executions_last_event_at": ["last_event_at"],
    "ix_report_executions_duration_ms": ["duration_ms"],
    "ix_report_executions_report_last_event": ["report_id", "last_event_at"],
    "ix_report_executions_report_end": ["report_id", "end_time"],
}


def upgrade() -> None:
    for name, columns in INDEXES.items():
        op.create_index(name, "report_executions", columns)


def downgrade() -> None:
    for name in reversed(INDEXES):
        op.drop_index(name, table_name="report_executions")
