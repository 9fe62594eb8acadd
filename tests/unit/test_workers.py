"""``consume --workers N`` without Kafka: the restart policy (pure), and the supervisor
driving stand-in worker processes (tiny Python scripts that crash, exit 2, ignore
SIGTERM, or stop cleanly on it), so every branch runs in a second.

The same supervisor with real workers on the real broker: tests/integration/test_workers.py.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import MutableMapping, Sequence
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from click.testing import CliRunner
from structlog.testing import capture_logs

from exectrack.consumer.cli import main
from exectrack.consumer.retry import Backoff
from exectrack.consumer.settings import Settings
from exectrack.consumer.workers import supervisor as supervising
from exectrack.consumer.workers.health import SupervisorMetrics, WorkerView, build_app, probe_host
from exectrack.consumer.workers.restarts import (
    RestartPolicy,
    Restarts,
    clean_stop,
    describe_exit,
)
from exectrack.consumer.workers.supervisor import Supervisor, worker_port

# ------------------------------------------------------------------ the policy


def test_waits_double_per_failure_in_a_row_up_to_the_cap() -> None:
    restarts = Restarts(RestartPolicy(Backoff(initial_s=1.0, max_s=10.0, jitter=0.0), 60.0))
    waits = [restarts.failed(ran_s=0.5) for _ in range(6)]
    assert waits == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert restarts.failures == 6


def test_a_stable_run_resets_the_row() -> None:
    restarts = Restarts(RestartPolicy(Backoff(initial_s=1.0, max_s=60.0, jitter=0.0), 60.0))
    for _ in range(4):
        restarts.failed(ran_s=59.9)  # each ran just short of stable: still a row
    assert restarts.failures == 4
    assert restarts.failed(ran_s=60.0) == 1.0  # ran the stable period: first failure again
    assert restarts.failures == 1
    assert restarts.failed(ran_s=1.0) == 2.0


def test_the_waits_are_jittered_within_20_percent() -> None:
    policy = RestartPolicy.create(initial_s=1.0, max_s=60.0, stable_s=60.0)
    waits = [Restarts(policy).failed(ran_s=0.0) for _ in range(200)]
    assert all(0.8 <= w <= 1.2 for w in waits)
    assert len(set(waits)) > 100  # workers failing together come back apart


def test_the_settings_give_the_policy() -> None:
    settings = Settings(
        worker_restart_initial_s=0.5, worker_restart_max_s=8.0, worker_stable_s=30.0
    )
    supervisor = Supervisor(settings, 2)
    policy = supervisor.workers[0].restarts.policy
    assert (policy.backoff.initial_s, policy.backoff.max_s, policy.stable_s) == (0.5, 8.0, 30.0)
    assert Settings().worker_restart_initial_s == 1.0
    assert Settings().worker_restart_max_s == 60.0
    assert Settings().worker_stable_s == 60.0


def test_exits_as_log_fields() -> None:
    assert describe_exit(1) == {"exit_code": 1}
    assert describe_exit(0) == {"exit_code": 0}
    assert describe_exit(-signal.SIGKILL) == {"signal": "SIGKILL"}
    assert describe_exit(-signal.SIGSEGV) == {"signal": "SIGSEGV"}


def test_what_a_clean_stop_is() -> None:
    assert clean_stop(0, signal.SIGTERM)
    assert clean_stop(None, signal.SIGTERM)  # waiting for a restart: nothing to stop
    assert clean_stop(-signal.SIGTERM, signal.SIGTERM)  # killed while starting: no batch yet
    assert not clean_stop(1, signal.SIGTERM)  # e.g. shutdown_timeout_s passed
    assert not clean_stop(-signal.SIGKILL, signal.SIGTERM)


def test_worker_ports_follow_the_supervisors() -> None:
    assert [worker_port(8080, i) for i in range(3)] == [8081, 8082, 8083]
    assert worker_port(0, 5) == 0  # no health server anywhere
    assert probe_host("0.0.0.0")  # noqa: S104 - a name, nothing is bound == "127.0.0.1"
    assert probe_host("::") == "::1"
    assert probe_host("10.0.0.7") == "10.0.0.7"


def test_usage_errors_exit_2() -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["consume", "--workers", "0"])
    assert result.exit_code == 2
    assert "--workers" in result.output
    result = runner.invoke(
        main, ["consume", "--workers", "3"], env={"EXECTRACK_HEALTH_PORT": "65533"}
    )
    assert result.exit_code == 2
    assert "65533..65536" in result.output


# ------------------------------------------------------------------ the supervisor
STAND_IN = """
import os, signal, sys, time
mode = sys.argv[1]
if mode == "clean":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
elif mode == "deaf":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
elif mode == "crash":
    time.sleep(0.05)
    sys.exit(1)
elif mode == "usage":
    sys.exit(2)
print(f"ready {os.getpid()}", flush=True)
while True:
    time.sleep(0.05)
"""


def stand_ins(*modes: str) -> supervising.Command:
    """Worker i runs the stand-in in ``modes[i]``."""

    def command(index: int) -> Sequence[str]:
        return [sys.executable, "-c", STAND_IN, modes[index]]

    return command


def quick(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "health_port": 0,
        "worker_restart_initial_s": 0.05,
        "worker_restart_max_s": 0.2,
        "worker_stable_s": 30.0,
        "shutdown_timeout_s": 5.0,
    }
    return Settings(**{**values, **overrides})


async def until(condition: Any, timeout_s: float = 15) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.02)


def events(logs: Sequence[MutableMapping[str, Any]], name: str) -> list[MutableMapping[str, Any]]:
    return [entry for entry in logs if entry["event"] == name]


async def test_a_crashing_worker_is_restarted_with_backoff_and_the_other_left_alone() -> None:
    supervisor = Supervisor(quick(), 2, command=stand_ins("crash", "clean"))
    with capture_logs() as logs:
        run = asyncio.create_task(supervisor.run())
        await until(lambda: len(supervisor.workers[0].pids) >= 4)
        supervisor.request_stop()
        status = await asyncio.wait_for(run, 15)
    assert status == 0
    assert len(supervisor.workers[1].pids) == 1  # never touched
    exited = [e for e in events(logs, "worker_exited") if e["worker"] == 0]
    assert len(exited) >= 3
    assert [e["failures_in_a_row"] for e in exited[:3]] == [1, 2, 3]
    assert all(e["exit_code"] == 1 and e["pid"] in supervisor.workers[0].pids for e in exited)
    waits = [e["restart_in_s"] for e in exited[:3]]
    assert waits[0] <= 0.06 < waits[1] <= 0.12 < waits[2] <= 0.24  # 0.05, 0.1, 0.2 +-20%
    assert supervisor.metrics.restarts.labels("0")._value.get() == len(exited)
    assert events(logs, "workers_stopped")


async def test_a_killed_worker_is_logged_with_its_signal_and_restarted() -> None:
    supervisor = Supervisor(quick(), 2, command=stand_ins("clean", "clean"))
    with capture_logs() as logs:
        run = asyncio.create_task(supervisor.run())
        await until(lambda: all(w.pids for w in supervisor.workers))
        await asyncio.sleep(0.3)
        victim = supervisor.workers[1].pids[0]
        os.kill(victim, signal.SIGKILL)
        await until(lambda: len(supervisor.workers[1].pids) == 2)
        await asyncio.sleep(0.3)
        supervisor.request_stop()
        status = await asyncio.wait_for(run, 15)
    assert status == 0
    (exited,) = events(logs, "worker_exited")
    assert exited["worker"] == 1
    assert exited["pid"] == victim
    assert exited["signal"] == "SIGKILL"
    assert len(supervisor.workers[0].pids) == 1
    assert all(w.last_exit == 0 for w in supervisor.workers)  # both stopped on SIGTERM


async def test_a_worker_exiting_2_stops_everything_with_exit_2() -> None:
    supervisor = Supervisor(quick(), 2, command=stand_ins("clean", "usage"))
    with capture_logs() as logs:
        status = await asyncio.wait_for(supervisor.run(), 15)
    assert status == 2
    (unusable,) = events(logs, "worker_unusable")
    assert unusable["worker"] == 1
    assert unusable["exit_code"] == 2
    assert not events(logs, "worker_exited")  # not restarted
    assert supervisor.workers[0].last_exit == 0  # the other one was stopped cleanly


async def test_a_worker_that_ignores_sigterm_is_killed_and_the_stop_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(supervising, "STOP_GRACE_S", 0.5)
    supervisor = Supervisor(quick(shutdown_timeout_s=0.5), 2, command=stand_ins("clean", "deaf"))
    with capture_logs() as logs:
        run = asyncio.create_task(supervisor.run())
        await until(lambda: all(w.pids for w in supervisor.workers))
        await asyncio.sleep(0.5)  # the deaf one has installed SIG_IGN
        supervisor.request_stop()
        status = await asyncio.wait_for(run, 15)
    assert status == 1
    (killed,) = events(logs, "workers_killed")
    assert killed["workers"] == [1]
    (failed,) = events(logs, "workers_stop_failed")
    assert failed["exits"] == {"1": {"signal": "SIGKILL"}}


async def test_a_stop_while_a_worker_waits_for_its_restart_is_clean() -> None:
    settings = quick(worker_restart_initial_s=30.0, worker_restart_max_s=30.0)
    supervisor = Supervisor(settings, 2, command=stand_ins("crash", "clean"))
    with capture_logs():
        run = asyncio.create_task(supervisor.run())
        await until(lambda: supervisor.metrics.restarts.labels("0")._value.get() == 1)
        supervisor.request_stop()  # worker 0 sleeps 30 s before its restart: not waited for
        status = await asyncio.wait_for(run, 10)
    assert status == 0
    assert len(supervisor.workers[0].pids) == 1


async def test_an_unstartable_command_is_retried_not_fatal() -> None:
    supervisor = Supervisor(quick(), 1, command=lambda _: ["/nonexistent/exectrack-worker"])
    with capture_logs() as logs:
        run = asyncio.create_task(supervisor.run())
        await until(lambda: len(events(logs, "worker_exited")) >= 2)
        supervisor.request_stop()
        status = await asyncio.wait_for(run, 10)
    assert status == 0
    assert "cannot start" in events(logs, "worker_exited")[0]["error"]


# ------------------------------------------------------------------ the aggregated probes
async def fake_worker(live: int, ready: int) -> tuple[web.AppRunner, int]:
    """A worker's health server answering ``/livez`` with ``live``, ``/readyz`` with ``ready``."""

    async def livez(_: web.Request) -> web.Response:
        return web.Response(status=live)

    async def readyz(_: web.Request) -> web.Response:
        return web.Response(status=ready)

    app = web.Application()
    app.router.add_get("/livez", livez)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, port


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def probes(views: list[WorkerView]) -> dict[str, tuple[int, str]]:
    app = build_app(lambda: views, "127.0.0.1", SupervisorMetrics(len(views)))
    async with TestClient(TestServer(app)) as client:
        found = {}
        for path in ("/livez", "/readyz", "/metrics"):
            response = await client.get(path)
            found[path] = (response.status, await response.text())
        return found


async def test_the_supervisor_aggregates_the_workers_probes() -> None:
    good, good_port = await fake_worker(200, 200)
    stuck, stuck_port = await fake_worker(503, 503)
    try:
        all_good = await probes([WorkerView(0, 10, good_port), WorkerView(1, 11, good_port)])
        assert all_good["/livez"][0] == 200
        assert all_good["/readyz"][0] == 200
        assert "worker 1 pid 11 port" in all_good["/readyz"][1]
        assert "exectrack_workers 2.0" in all_good["/metrics"][1]
        assert "exectrack_events_consumed" not in all_good["/metrics"][1]  # the workers' own

        # one starting (nothing listens yet), one waiting for its restart: live, not ready
        waiting = await probes([WorkerView(0, 10, free_port()), WorkerView(1, None, 1)])
        assert waiting["/livez"][0] == 200
        assert waiting["/readyz"][0] == 503
        assert "starting" in waiting["/livez"][1]
        assert "restart pending" in waiting["/livez"][1]

        # one stuck: the unit is not live
        one_stuck = await probes([WorkerView(0, 10, good_port), WorkerView(1, 11, stuck_port)])
        assert one_stuck["/livez"][0] == 503
        assert "worker 1 pid 11" in one_stuck["/livez"][1]
        assert one_stuck["/readyz"][0] == 503
    finally:
        await good.cleanup()
        await stuck.cleanup()
