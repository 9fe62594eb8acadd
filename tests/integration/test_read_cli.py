"""``exectrack-consumer list|stats|watch|status``: the console script against known rows.

Expected values come from tests/support/reads.py's oracle over the inserted rows.
"""

from __future__ import annotations

import ast
import asyncio
import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from exectrack.consumer.cli import main as consumer_cli
from exectrack.consumer.db import migrate
from exectrack.consumer.db.engine import create_engine
from exectrack.consumer.db.repository import EXECUTIONS, write_batch
from exectrack.consumer.ingest.fold import decode_keys, fold_events
from exectrack.consumer.read.queries import ExecutionFilter
from exectrack.consumer.retention.policy import RetentionPolicy
from exectrack.consumer.settings import DatabaseSettings
from exectrack.producer.events import (
    EventType,
    ExecutionStatus,
    ReportCategory,
    ReportType,
    TriggerType,
    execution_event,
)
from tests.conftest import MakeDatabase
from tests.support.reads import dataset, expected_stats, ordered, seed, selected

CONSUMER = Path(sys.executable).parent / "exectrack-consumer"
S = ExecutionStatus
NOW = datetime.now(UTC)
Known = tuple[AsyncEngine, str, list[dict[str, Any]]]


@pytest.fixture(scope="module")
async def known(new_database_module: MakeDatabase) -> AsyncIterator[Known]:
    """A migrated database with ``dataset(NOW)``, and a fold-written execution ``d1``."""
    url = await new_database_module()
    await migrate.upgrade(url)
    engine = create_engine(DatabaseSettings(), url=url)
    try:
        rows = await seed(engine, dataset(NOW, count=120, seed=7))
        t = datetime(2026, 5, 1, tzinfo=UTC)
        events = [
            execution_event(EventType.STARTED, execution_id="d1", report_id="r-a", source="/t",
                            id="ev-1", time=t, trigger_type=TriggerType.API),
            execution_event(EventType.COMPLETED, execution_id="d1", report_id="r-a", source="/t",
                            id="ev-2", time=t + timedelta(seconds=3), duration_ms=3000,
                            result_summary={"rows": 3}),
        ]  # fmt: skip
        async with engine.begin() as conn:
            await write_batch(conn, fold_events(events), {}, RetentionPolicy())
        yield engine, url, rows
    finally:
        await engine.dispose()


async def cli(url: str, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EXECTRACK_DATABASE__URL": url, "EXECTRACK_LOG_LEVEL": "error",
           "COLUMNS": "250", **extra}  # fmt: skip
    return await asyncio.to_thread(
        subprocess.run, [str(CONSUMER), *args], env=env, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip


async def listed(url: str, *args: str) -> list[str]:
    """execution_ids of every page of ``list --json ARGS``, following next_cursor."""
    found: list[str] = []
    cursor: list[str] = []
    for _ in range(100):
        done = await cli(url, "list", "--json", *args, *cursor)
        assert done.returncode == 0, done.stderr
        page = json.loads(done.stdout)
        assert set(page) == {"items", "next_cursor"}
        found += [item["execution_id"] for item in page["items"]]
        if page["next_cursor"] is None:
            return found
        cursor = ["--cursor", page["next_cursor"]]
    raise AssertionError("no last page")


async def test_list_filters_sorts_and_pages(known: Known) -> None:
    _, url, rows = known
    rows = [*rows]  # d1 is not in the oracle's rows: the filters below exclude it
    flt = ExecutionFilter(status=[S.FAILED, S.COMPLETED, S.TIMEOUT], report_id=["r-b", "r-c"])
    args = ["--status", "failed", "--status", "completed", "--status", "timeout",
            "--report", "r-b", "--report", "r-c", "--limit", "15"]  # fmt: skip
    expected = ordered(selected(rows, flt, NOW), "created_at", descending=True)  # the default
    assert len(expected) > 30  # three pages and more, through --cursor
    assert await listed(url, *args) == expected
    by_event = ordered(selected(rows, flt, NOW), "last_event_at", descending=True)
    assert await listed(url, *args, "--sort", "last_event_at") == by_event
    by_duration = ordered(selected(rows, flt, NOW), "duration_ms", descending=False)
    assert await listed(url, *args, "--sort", "duration_ms", "--asc", "--limit", "500") == (
        by_duration
    )

    created_from, created_to = NOW - timedelta(hours=60), NOW - timedelta(hours=20)
    flt = ExecutionFilter(
        created_from=created_from, created_to=created_to,
        trigger_type=[TriggerType.API, TriggerType.SCHEDULED],
        report_type=ReportType.VPC_INVENTORY, category=ReportCategory.INFRASTRUCTURE,
    )  # fmt: skip
    args = ["--created-since", created_from.isoformat(), "--created-until",
            created_to.isoformat(), "--trigger", "api", "--trigger", "scheduled", "--report-type",
            "vpc_inventory", "--category", "infrastructure", "--limit", "500"]  # fmt: skip
    expected = ordered(selected(rows, flt, NOW), "created_at", descending=True)
    assert expected
    assert await listed(url, *args, "--sort", "created_at") == expected


async def test_list_relative_times_and_stuck(known: Known) -> None:
    _, url, rows = known
    before = datetime.now(UTC)
    found = await listed(url, "--ended-since", "30h", "--started-by", "2", "--limit", "500")
    after = datetime.now(UTC)
    candidates = [
        ordered(selected(rows, ExecutionFilter(ended_from=t - timedelta(hours=30),
                                               started_by=2), NOW), "created_at", True)
        for t in (before, after)
    ]  # fmt: skip
    assert found in candidates
    assert found
    stuck = ordered(selected(rows, ExecutionFilter(stuck_for_s=3600), NOW), "created_at", False)
    assert stuck
    assert await listed(url, "--stuck-for", "1h", "--asc", "--limit", "500") == stuck


async def test_list_prints_a_table_and_the_next_cursor(known: Known) -> None:
    _, url, rows = known
    # stdout is a pipe here: TTY_COMPATIBLE=1 asks for the terminal's table
    done = await cli(url, "list", "--status", "running", "--limit", "3", TTY_COMPATIBLE="1")
    assert done.returncode == 0, done.stderr
    expected = ordered(selected(rows, ExecutionFilter(status=[S.RUNNING]), NOW),
                       "created_at", True)[:3]  # fmt: skip
    for eid in expected:
        assert eid in done.stdout
    assert "3 executions" in done.stdout
    assert "more: --cursor " in done.stdout


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["list", "--created-since", "yesterday"], "--created-since"),
        (["list", "--ended-until", "2026-13-01"], "--ended-until"),
        (["list", "--stuck-for", "0"], "--stuck-for"),
        (["list", "--stuck-for", "soon"], "--stuck-for"),
        (["list", "--cursor", "garbage!"], "--cursor"),
        (["list", "--limit", "0"], "--limit"),
        (["list", "--status", "done"], "--status"),
        (["list", "--sort", "id"], "--sort"),
        (["stats", "--since", "1h", "--until", "2h"], "--until"),
        (["watch", "--started-since", "later"], "--started-since"),
    ],
)
async def test_a_bad_value_is_a_usage_error_naming_the_option(
    known: Known, args: list[str], option: str
) -> None:
    """In process (click's runner: the console script's code, without its start-up time)."""
    env = {"EXECTRACK_DATABASE__URL": known[1], "EXECTRACK_LOG_LEVEL": "error"}
    done = await asyncio.to_thread(CliRunner().invoke, consumer_cli, args, env=env)
    assert done.exit_code == 2, done.output
    assert "Usage:" in done.stderr
    assert f"'{option}'" in done.stderr, done.stderr
    assert done.exception is None or isinstance(done.exception, SystemExit)


async def test_the_console_script_ends_a_bad_value_in_a_usage_error(known: Known) -> None:
    done = await cli(known[1], "list", "--cursor", "garbage!")
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Error: Invalid value for '--cursor'" in done.stderr
    assert "Traceback" not in done.stderr


async def test_stats_json_and_table(known: Known) -> None:
    _, url, rows = known
    since, until = NOW - timedelta(hours=80), NOW - timedelta(minutes=1)
    done = await cli(url, "stats", "--json", "--since", since.isoformat(), "--until",
                     until.isoformat())  # fmt: skip
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    expected = expected_stats(rows, since, until)
    assert [r["report_id"] for r in document["reports"]] == sorted(expected)
    for found in document["reports"]:
        want = expected[found["report_id"]]
        assert found == {**want, "counts": {str(k): v for k, v in want["counts"].items()}}
    assert datetime.fromisoformat(document["since"]) == since
    table = await cli(url, "stats", "--since", "80h", "--report", "r-b")
    assert table.returncode == 0, table.stderr
    assert "SG audit" in table.stdout
    assert "VPC inventory" not in table.stdout


async def test_watch_shows_only_the_filtered_executions(known: Known) -> None:
    _, url, rows = known
    done = await cli(url, "watch", "--duration", "0.5", "--interval", "0.2",
                     "--status", "failed", "--status", "running", "--report", "r-a")  # fmt: skip
    assert done.returncode == 0, done.stderr
    flt = ExecutionFilter(status=[S.FAILED, S.RUNNING], report_id=["r-a"])
    counts: dict[str, int] = {}
    for row in selected(rows, flt, NOW):
        counts[row["status"].value] = counts.get(row["status"].value, 0) + 1
    # the summary follows the live view's last frame (no newline off a terminal)
    summary = re.search(r"(\d+) executions in \S+: (\{.*\})$", done.stdout.strip())
    assert summary, done.stdout
    assert counts
    assert int(summary[1]) == sum(counts.values())
    assert ast.literal_eval(summary[2]) == counts


async def test_status_output_is_unchanged(known: Known) -> None:
    """The document ``status`` printed before the read side existed, built from the raw row."""
    engine, url, _ = known
    async with engine.connect() as conn:
        query = select(EXECUTIONS).where(EXECUTIONS.c.execution_id == "d1")
        row = dict((await conn.execute(query)).mappings().one())
    keys = decode_keys(row.pop("fold_keys"))
    row["supplied_by"] = {
        name: {"event_id": k[3], "rank": k[0], "sequence": k[1], "time": k[2].isoformat()}
        for name, k in sorted(keys.items())
    }
    expected = json.dumps(
        row, indent=2, default=lambda v: v.isoformat() if isinstance(v, datetime) else str(v)
    )
    done = await cli(url, "status", "d1")
    assert done.returncode == 0, done.stderr
    assert done.stdout == expected + "\n"
