"""Retention policy: how long a terminal execution is kept. Pure, no I/O.

Precedence, first match wins:
1. a hold on the execution or on its report: never expires (``None``);
2. an override for the report's ``report_type`` and the status;
3. an override for the report's ``category`` and the status;
4. the default for the status.
An explicit ``retention_until`` carried by an event beats all of these; that
rule lives in the fold (consumer.fold.ExecutionFold.retention_until).

Periods are pydantic ``timedelta`` values: seconds or ISO 8601 durations
("P90D"), in settings/env (``EXECTRACK_RETENTION__DEFAULT__COMPLETED=P30D``).
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, Field, field_validator

from producer.events import ExecutionStatus, ReportCategory, ReportType

DAY = timedelta(days=1)
Periods = dict[ExecutionStatus, timedelta]


def _defaults() -> Periods:
    return {
        ExecutionStatus.COMPLETED: 90 * DAY,
        ExecutionStatus.FAILED: 180 * DAY,
        ExecutionStatus.CANCELLED: 30 * DAY,
        ExecutionStatus.TIMEOUT: 90 * DAY,
    }


class RetentionPolicy(BaseModel):
    default: Periods = Field(default_factory=_defaults)
    report_types: dict[ReportType, Periods] = Field(default_factory=dict)
    categories: dict[ReportCategory, Periods] = Field(default_factory=dict)
    hold_reports: frozenset[str] = frozenset()
    hold_executions: frozenset[str] = frozenset()

    @field_validator("default", mode="after")
    @classmethod
    def _keep_unset_defaults(cls, value: Periods) -> Periods:
        """Overriding one status keeps the built-in periods of the others: a partial
        override must never turn "expires" into "kept forever" by omission."""
        return {**_defaults(), **value}

    def period(
        self,
        status: ExecutionStatus,
        *,
        report_type: ReportType | None = None,
        category: ReportCategory | None = None,
        report_id: str | None = None,
        execution_id: str | None = None,
    ) -> timedelta | None:
        """The retention period for a terminal execution; None = kept forever."""
        if execution_id in self.hold_executions or report_id in self.hold_reports:
            return None
        if report_type is not None and status in self.report_types.get(report_type, {}):
            return self.report_types[report_type][status]
        if category is not None and status in self.categories.get(category, {}):
            return self.categories[category][status]
        return self.default.get(status)
