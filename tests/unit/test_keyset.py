"""Keyset pagination's "after the last row" condition (exectrack.consumer.db.keyset)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy.dialects import mysql

from exectrack.consumer.db.keyset import after
from exectrack.consumer.db.repository import EXECUTIONS

C = EXECUTIONS.c


def sql(clause: object) -> str:
    compiled = clause.compile(  # type: ignore[attr-defined]
        dialect=mysql.dialect(), compile_kwargs={"literal_binds": True}
    )
    return str(compiled).replace("report_executions.", "")


def test_one_key_is_a_plain_range() -> None:
    assert sql(after([C.id], [41])) == "id > 41"


def test_two_keys_lead_with_a_range_on_the_first() -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert sql(after([C.retention_until, C.id], [when, 7])) == (
        "retention_until >= '2026-01-02 03:04:05' "
        "AND (retention_until > '2026-01-02 03:04:05' OR id > 7)"
    )


def test_three_keys_nest() -> None:
    assert sql(after([C.report_id, C.status, C.id], ["r", "running", 3])) == (
        "report_id >= 'r' AND (report_id > 'r' OR "
        "status >= 'running' AND (status > 'running' OR id > 3))"
    )


@pytest.mark.parametrize(("keys", "last"), [([], []), ([C.id], [1, 2])])
def test_one_value_a_key(keys: list[object], last: list[object]) -> None:
    with pytest.raises(ValueError, match="one value a key"):
        after(keys, last)  # type: ignore[arg-type]
