"""Breaks a user found in the read side (issue #15), on the real database.

Break 3: a handler that raised left no ``request`` line. Break 4: a page walk in
the default order skipped (or repeated) rows while events landed on them (the
user's /tmp/readbreak/move.py and move2.py). Break 8: ``list | cat`` drew an
80-column table with cut cells. docs/reliability/found-by-users.md, "The read
side (issue #15)"; the CLI's huge values are tests/unit/test_read_breaks.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy.ext.asyncio import AsyncEngine

from exectrack.consumer.ingest.fold import fold_events
from exectrack.consumer.ingest.writer import BatchWriter
from exectrack.consumer.logs import configure_logging
from exectrack.consumer.read.api import build_app
from exectrack.consumer.retention.policy import RetentionPolicy
from exectrack.consumer.settings import Settings
from exectrack.producer.events import EventType, execution_event
from tests.support.read import Run, write_runs

pytestmark = pytest.mark.integration

CONSUMER = Path(sys.executable).parent / "exectrack-consumer"
RUNS = tuple(
    Run(f"walk-{i:02d}", f"rep-{i % 3}", "running" if i % 2 else "pending", 200 - i)
    for i in range(40)
)


async def client_for(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


@pytest.fixture
async def client(db: AsyncEngine, database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    app = build_app(Settings.model_validate({"database": {"url": database_url}}))

    async def boom() -> None:
        raise OverflowError("date value out of range")

    app.add_api_route("/api/boom", boom)
    async for c in client_for(app):
        yield c


async def test_a_handler_that_raises_logs_a_request_line_with_status_500(
    client: httpx.AsyncClient, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("json", "info")
    try:
        capsys.readouterr()
        r = await client.get("/api/boom")
        assert r.status_code == 500
        r = await client.get("/api/boom?again=1")
        assert r.status_code == 500
        logged = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]
    finally:
        configure_logging("auto", "info")
    requests = [line for line in logged if line["event"] == "request"]
    assert len(requests) == 2, logged
    for line in requests:
        assert line["status"] == 500
        assert line["path"] == "/api/boom"
        assert line["error"] == "OverflowError: date value out of range"
        assert line["level"] == "error"
        assert "again" not in json.dumps(line)  # the path only, never the query string


async def progress(engine: AsyncEngine, execution_id: str, n: int) -> None:
    """A progress event for ``execution_id`` stamped now: its last_event_at moves to now."""
    run = next(r for r in RUNS if r.execution_id == execution_id)
    event = execution_event(
        EventType.PROGRESS, execution_id=execution_id, report_id=run.report_id, source="/tests",
        id=f"{execution_id}-p{n}", sequence=100 + n, time=datetime.now(UTC),
        records_processed=n,
    )  # fmt: skip
    await BatchWriter(engine, RetentionPolicy()).write(fold_events([event]), {})


async def walk(
    client: httpx.AsyncClient, engine: AsyncEngine, params: dict[str, Any]
) -> tuple[list[str], list[str]]:
    """Every page of ``params`` (limit 5); between pages, events land on a row already
    listed and a row not yet listed (move.py/move2.py). Returns (walked, moved)."""
    walked: list[str] = []
    moved: list[str] = []
    cursor: dict[str, str] = {}
    for n in range(100):
        r = await client.get("/api/executions", params={**params, "limit": 5, **cursor})
        assert r.status_code == 200, r.text
        page = r.json()
        walked += [item["execution_id"] for item in page["items"]]
        if page["next_cursor"] is None:
            return walked, moved
        cursor = {"cursor": page["next_cursor"]}
        ahead = [run.execution_id for run in RUNS if run.execution_id not in walked]
        for victim in (walked[0], walked[-1], ahead[len(ahead) // 2], ahead[-1]):
            await progress(engine, victim, n)
            moved.append(victim)
    raise AssertionError("no last page")


@pytest.mark.parametrize("order", [{}, {"order": "asc"}], ids=["desc", "asc"])
async def test_the_default_sort_walks_every_row_once_while_events_land(
    client: httpx.AsyncClient, db: AsyncEngine, order: dict[str, str]
) -> None:
    await write_runs(db, RUNS, datetime.now(UTC) - timedelta(minutes=1))
    walked, moved = await walk(client, db, order)
    assert len(moved) > 20
    assert sorted(walked) == sorted(run.execution_id for run in RUNS)  # each exactly once


async def test_pages_over_last_event_at_may_skip_rows_as_documented(
    client: httpx.AsyncClient, db: AsyncEngine
) -> None:
    """The documented limit of a changing key (SORT_DESCRIPTION), seen: not every row once."""
    await write_runs(db, RUNS, datetime.now(UTC) - timedelta(minutes=1))
    walked, _ = await walk(client, db, {"sort": "last_event_at"})
    assert sorted(walked) != sorted(run.execution_id for run in RUNS)


LONG_ID = "399f" + "0123456789abcdef" * 8 + "-end"
LONG_REPORT = "team/" + "monthly-cost-allocation-by-account-" * 3 + "end"


async def test_piped_list_and_stats_print_whole_cells_as_tab_separated_lines(
    db: AsyncEngine, database_url: str
) -> None:
    runs = (
        Run(LONG_ID, LONG_REPORT, "completed", 20, 12.5, records=7),
        Run("short-1", "r", "failed", 30, 1.0, error={"message": "no"}),
    )
    await write_runs(db, runs, datetime.now(UTC) - timedelta(minutes=1))
    env = {**os.environ, "EXECTRACK_DATABASE__URL": database_url, "EXECTRACK_LOG_LEVEL": "error",
           "COLUMNS": "80"}  # fmt: skip
    env.pop("TTY_COMPATIBLE", None)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        # capture_output: stdout is a pipe, not a terminal
        return subprocess.run(
            [str(CONSUMER), *args], env=env, capture_output=True, text=True, timeout=60,
            check=False,
        )  # fmt: skip

    listed, stats, as_json = await asyncio.gather(
        asyncio.to_thread(run, "list", "--limit", "1"),
        asyncio.to_thread(run, "stats", "--since", "1d"),
        asyncio.to_thread(run, "list", "--json"),
    )
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    header = lines[0].split("\t")
    assert header[:3] == ["execution_id", "report_id", "status"]
    rows = [line.split("\t") for line in lines[1:]]
    assert len(rows) == 1  # --limit 1; the next cursor went to stderr
    assert rows[0][:3] == [LONG_ID, LONG_REPORT, "completed"]
    assert all(len(row) == len(header) for row in rows)
    assert "…" not in listed.stdout
    assert "more: --cursor " in listed.stderr
    assert stats.returncode == 0, stats.stderr
    by_report = {line.split("\t")[0]: line.split("\t") for line in stats.stdout.splitlines()}
    assert set(by_report) == {"report_id", LONG_REPORT, "r"}
    assert by_report[LONG_REPORT][2] == "1"  # total
    assert as_json.returncode == 0, as_json.stderr
    page = json.loads(as_json.stdout)
    assert [item["execution_id"] for item in page["items"]] == [LONG_ID, "short-1"]


async def test_under_uvicorn_each_different_crash_is_one_json_traceback_and_a_request_line(
    db: AsyncEngine, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """serve's own server (uvicorn, log_config=None as serve sets it), in process."""
    app = build_app(Settings.model_validate({"database": {"url": database_url}}))
    crashes = {"a": OverflowError("date value out of range"), "b": ValueError("bad ²")}

    async def boom(kind: str) -> None:
        raise crashes[kind]

    app.add_api_route("/api/boom/{kind}", boom)
    configure_logging("json", "info")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_config=None, access_log=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            await asyncio.sleep(0.05)
        capsys.readouterr()
        base = f"http://127.0.0.1:{sock.getsockname()[1]}"
        async with httpx.AsyncClient(base_url=base) as client:
            statuses = [(await client.get(f"/api/boom/{k}")).status_code for k in "aba"]
        assert statuses == [500, 500, 500]
        logged = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]
    finally:
        server.should_exit = True
        await task
        sock.close()
        configure_logging("auto", "info")
    requests = [line["error"] for line in logged if line["event"] == "request"]
    assert requests == [
        "OverflowError: date value out of range", "ValueError: bad ²",
        "OverflowError: date value out of range",
    ]  # fmt: skip
    tracebacks = [line for line in logged if str(line["event"]).startswith("Exception in ASGI")]
    # two different crashes: two tracebacks; the repeat of the first: left out (one a minute)
    causes = [str(line["exception"]).strip().splitlines()[-1] for line in tracebacks]
    assert causes == ["OverflowError: date value out of range", "ValueError: bad ²"]
