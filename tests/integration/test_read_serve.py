"""``exectrack-consumer serve`` as a real process: starts on loopback, refuses what it must."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support.read import free_port

pytestmark = pytest.mark.integration

CONSUMER = str(Path(sys.executable).with_name("exectrack-consumer"))


def env(database_url: str, **extra: str) -> dict[str, str]:
    return {**os.environ, "EXECTRACK_DATABASE__URL": database_url,
            "EXECTRACK_LOG_FORMAT": "json", **extra}  # fmt: skip


def events(stderr: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def test_refuses_another_host_without_tokens(database_url: str) -> None:
    done = subprocess.run(
        [CONSUMER, "serve", "--host", "0.0.0.0"],  # noqa: S104 - refused before binding
        env=env(database_url), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    (event,) = events(line)
    assert event["event"] == "serve_refused"
    assert "EXECTRACK_READ__TOKENS" in str(event["error"])


def test_refuses_a_taken_port(database_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [CONSUMER, "serve", "--port", str(port)],
            env=env(database_url), capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert done.returncode == 1
    (event,) = events(done.stderr)
    assert (event["event"], "already in use" in str(event["error"])) == ("serve_refused", True)


def test_serves_on_loopback_and_stops_on_sigterm(database_url: str, tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [CONSUMER, "serve", "--port", str(port)], env=env(database_url),
            stdout=out, stderr=out,
        )  # fmt: skip
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                try:
                    health = httpx.get(f"{base}/healthz", timeout=2)
                    break
                except httpx.TransportError:
                    assert process.poll() is None, log.read_text()
                    assert time.monotonic() < deadline
                    time.sleep(0.2)
            assert (health.status_code, health.text) == (200, "ok\n")
            listed = httpx.get(f"{base}/api/executions", params={"token": "x"}, timeout=5)
            assert listed.status_code == 200
            assert "next_cursor" in listed.json()
            assert httpx.get(f"{base}/openapi.json", timeout=5).json()["info"]["title"]
            vendored = httpx.get(f"{base}/static/vendor/uplot-1.6.32.iife.min.js", timeout=5)
            assert vendored.status_code == 200
            assert "uPlot" in vendored.text
        finally:
            process.terminate()
            code = process.wait(timeout=20)
    assert code == 0
    lines = events(log.read_text())
    assert all(isinstance(e, dict) for e in lines)
    serving = [e for e in lines if e["event"] == "serving"]
    assert [e["url"] for e in serving] == [f"http://127.0.0.1:{port}/"]
    requests = [e for e in lines if e["event"] == "request"]
    assert {"/api/executions", "/openapi.json"} <= {e["path"] for e in requests}
    assert not any("token=" in json.dumps(e) for e in lines)  # query strings are not logged
