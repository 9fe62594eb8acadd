"""Retention policy: how long a terminal execution is kept. Pure, no I/O.

Precedence, first match wins:
1. a hold on the execution or on its report: never expires (``None``);
2. an override for the report's ``report_type`` and the status;
3. an override for the report's ``category`` and the status;
4. the default for the status.
An explicit ``retention_until`` carried by an event beats 2-4; that rule lives
in the fold (exectrack.consumer.ingest.fold.ExecutionFold.retention_until). For the purge a hold
beats even an explicit ``retention_until``: a held execution is never deleted
(exectrack.consumer.retention.purge; docs/retention.md).

A period is a ``timedelta`` >= 0 or ``None`` (kept forever). Accepted spellings,
in the policy file (exectrack.consumer.retention.policy_file) and in the environment
(``EXECTRACK_RETENTION__DEFAULT__COMPLETED=P30D``): seconds (``3600``), ISO 8601
durations (``P90D``, ``PT36H``), a number and one unit (``90d``, ``36h``,
``15m``, ``30s``, ``2w``), and ``never``.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
)

from exectrack.consumer.errors import BadPeriod
from exectrack.producer.events import TERMINAL_STATUSES, ExecutionStatus, ReportCategory, ReportType

DAY = timedelta(days=1)
NEVER = "never"
_SHORT = re.compile(r"([+-]?\d+(?:\.\d+)?)\s*(w|d|h|m|s)", re.IGNORECASE)
_UNITS = {"w": "weeks", "d": "days", "h": "hours", "m": "minutes", "s": "seconds"}
_TIMEDELTA: TypeAdapter[timedelta] = TypeAdapter(timedelta)


def parse_period(value: Any) -> timedelta | None:
    """One period from any accepted spelling; raises ``BadPeriod`` with a short reason."""
    if value is None or isinstance(value, timedelta):
        period = value
    elif isinstance(value, bool):
        raise BadPeriod(f"bad duration {value!r}: a number of seconds or a string like '90d'")
    elif isinstance(value, int | float):
        try:
            period = timedelta(seconds=value)
        except (OverflowError, ValueError):  # beyond 999,999,999 days, or NaN
            raise BadPeriod(
                f"bad duration {value!r}: not a number of seconds up to 999999999 days"
            ) from None
    elif isinstance(value, str):
        text = value.strip()
        if text.lower() in (NEVER, "forever"):
            return None
        short = _SHORT.fullmatch(text)
        if short:
            try:
                period = timedelta(**{_UNITS[short[2].lower()]: float(short[1])})
            except OverflowError:  # beyond timedelta's 999,999,999 days (issue #15, break 6)
                raise BadPeriod(f"bad duration {value!r}: longer than 999999999 days") from None
        else:
            try:
                period = _TIMEDELTA.validate_python(text)
            except ValidationError:
                raise BadPeriod(
                    f"bad duration {value!r}: use seconds, '90d', '36h', 'P90D' or 'never'"
                ) from None
    else:
        raise BadPeriod(f"bad duration {value!r}: a number of seconds or a string like '90d'")
    if period is not None and period < timedelta(0):
        raise BadPeriod(f"negative period {value!r}")
    return period


Period = Annotated[timedelta | None, BeforeValidator(parse_period)]
Periods = dict[ExecutionStatus, Period]


def _defaults() -> Periods:
    return {
        ExecutionStatus.COMPLETED: 90 * DAY,
        ExecutionStatus.FAILED: 180 * DAY,
        ExecutionStatus.CANCELLED: 30 * DAY,
        ExecutionStatus.TIMEOUT: 90 * DAY,
    }


def _terminal_only(value: Periods) -> Periods:
    wrong = sorted(str(s) for s in value if s not in TERMINAL_STATUSES)
    if wrong:
        raise ValueError(f"status {', '.join(wrong)} is not terminal: only terminal rows expire")
    return value


class RetentionPolicy(BaseModel):
    """How long terminal executions are kept (CONTRACT.md, "Retention"; docs/retention.md).

    ``default``: a period per terminal status (the built-in ones for statuses
    not given); ``report_types``, ``categories``: overrides per report type or
    category, per status; ``hold_reports``, ``hold_executions``: ids never
    purged. A period of None keeps forever. An explicit ``retention_until`` on
    an event overrides all of it (``ExecutionFold.retention_until``).
    """

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
        return {**_defaults(), **_terminal_only(value)}

    @field_validator("report_types", "categories", mode="after")
    @classmethod
    def _overrides_are_terminal(cls, value: dict[Any, Periods]) -> dict[Any, Periods]:
        for periods in value.values():
            _terminal_only(periods)
        return value

    def held(self, *, report_id: str | None = None, execution_id: str | None = None) -> bool:
        """On hold: never expires by policy and is never purged."""
        return execution_id in self.hold_executions or report_id in self.hold_reports

    def period(
        self,
        status: ExecutionStatus,
        *,
        report_type: ReportType | None = None,
        category: ReportCategory | None = None,
        report_id: str | None = None,
        execution_id: str | None = None,
    ) -> timedelta | None:
        """The retention period for a terminal execution; None = kept forever.

        Most specific first: a hold (``report_id``, ``execution_id``), then the
        ``report_type`` override, then the ``category`` one, then ``default``.
        """
        if self.held(report_id=report_id, execution_id=execution_id):
            return None
        if report_type is not None and status in self.report_types.get(report_type, {}):
            return self.report_types[report_type][status]
        if category is not None and status in self.categories.get(category, {}):
            return self.categories[category][status]
        return self.default.get(status)

    def describe(self) -> list[str]:
        """The effective policy, one line per rule, most specific first (``retention show``)."""
        lines = [
            *(f"hold execution {e}" for e in sorted(self.hold_executions)),
            *(f"hold report {r}" for r in sorted(self.hold_reports)),
        ]
        for scope, table in (("report_type", self.report_types), ("category", self.categories)):
            for name, periods in sorted(table.items()):
                lines += [f"{scope} {name}: {s} {format_period(p)}" for s, p in periods.items()]
        lines += [f"default: {s} {format_period(p)}" for s, p in self.default.items()]
        return lines


def format_period(period: timedelta | None) -> str:
    """``90d``, ``36h``, ``1d 30m``...; ``never`` for None."""
    if period is None:
        return NEVER
    seconds = period.total_seconds()
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{int(count)}{unit}")
    if seconds or not parts:
        parts.append(f"{seconds:g}s")
    return " ".join(parts)
