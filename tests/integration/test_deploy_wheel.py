"""The container image's install path, without Docker: the built wheel and
deploy/requirements.lock in a fresh venv (as deploy/Dockerfile does), i.e.
``pip install 'exectrack[consumer]'`` with the image's pins. From outside the
source tree, ``exectrack-consumer migrate`` must find the alembic scripts the
wheel carries (consumer/_migrations) and create the schema, and
``exectrack-consumer consume`` must fold a published event into its row.

The venv is built once for this module (tests/support/install.py): about 25 s.
The producer-only install is test_install.py.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name
from sqlalchemy import inspect

from exectrack.consumer.db.engine import create_engine
from exectrack.consumer.settings import DatabaseSettings
from exectrack.producer.events import EventType, execution_event, kafka_headers, to_json
from tests.conftest import MakeDatabase, Topics
from tests.support.install import Venv, build_wheel, make_venv, outside_the_package
from tests.support.kafka import publish
from tests.support.lock import IMAGE_LOCK, PROJECT, read_lock
from tests.support.service import rows_of


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("image-install")


@pytest.fixture(scope="module")
def image_venv(work: Path) -> Venv:
    """What the Dockerfile's build stage does: the image's lock, then the wheel, both
    --no-deps, then pip check."""
    wheels = work / "wheels"
    wheels.mkdir()
    return make_venv(work / "venv", IMAGE_LOCK, build_wheel(wheels))


def test_it_holds_the_image_lock(image_venv: Venv) -> None:
    pinned = {name: pin.version for name, pin in read_lock(IMAGE_LOCK).items() if pin.applies()}
    assert image_venv.distributions() == {
        **pinned,
        canonicalize_name("exectrack"): PROJECT["version"],
    }


def test_both_packages_import_from_the_wheel(image_venv: Venv, work: Path) -> None:
    found = image_venv.run(
        image_venv.python, "-c",
        "import exectrack.producer, exectrack.consumer, exectrack.consumer.service\n"
        "print(exectrack.consumer.__file__)",
        cwd=work,
    ).stdout  # fmt: skip
    assert Path(found.strip()).is_relative_to(image_venv.path)  # not the checkout's
    for cli in ("exectrack-consumer", "exectrack-producer"):
        version = image_venv.run(image_venv.bin(cli), "--version", cwd=work).stdout
        assert version.strip() == f"{cli}, version {PROJECT['version']}"


def test_pip_show_lists_only_the_package(image_venv: Venv) -> None:
    files = image_venv.installed_files()
    assert {"exectrack/py.typed", "exectrack/consumer/_migrations/env.py"} <= set(files)
    # the read side's page: templates and vendored assets ship in the package (no CDN)
    assert {
        "exectrack/consumer/read/templates/base.html",
        "exectrack/consumer/read/static/app.css",
        "exectrack/consumer/read/static/vendor/uplot-1.6.32.iife.min.js",
        "exectrack/consumer/read/static/vendor/htmx-2.0.11.min.js",
    } <= set(files)
    assert outside_the_package(image_venv, files) == []


async def test_wheel_installs_and_migrates(
    image_venv: Venv, work: Path, scratch_database: str
) -> None:
    located = await asyncio.to_thread(
        image_venv.run, image_venv.python, "-c",
        "from exectrack.consumer.db.migrate import script_location; print(script_location())",
        cwd=work,
    )  # fmt: skip
    scripts = Path(located.stdout.strip())
    assert scripts.name == "_migrations"
    assert image_venv.path in scripts.parents  # the installed copy, not the checkout's migrations/
    assert (scripts / "env.py").is_file()

    done = await asyncio.to_thread(
        image_venv.run, image_venv.bin("exectrack-consumer"), "migrate", cwd=work,
        env={"EXECTRACK_DATABASE__URL": scratch_database, "EXECTRACK_LOG_FORMAT": "json"},
    )  # fmt: skip
    assert '"event": "migrated"' in done.stdout + done.stderr

    engine = create_engine(DatabaseSettings(), url=scratch_database)
    try:
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda sync: set(inspect(sync).get_table_names()))
    finally:
        await engine.dispose()
    assert {"report_executions", "reports", "users", "alembic_version"} <= tables


def start(argv: list[str], cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start ``argv`` with its output (both streams) going to ``log``."""
    with log.open("wb") as out:  # the child keeps its own copy of the file
        return subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen[bytes]) -> int:
    """SIGTERM (what a container runtime sends), SIGKILL if it lingers; its exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(timeout=10)


async def test_wheel_consumes_into_the_table(
    image_venv: Venv, work: Path, new_database: MakeDatabase, topics: Topics
) -> None:
    url = await new_database()
    settings = {
        "EXECTRACK_DATABASE__URL": url,
        "EXECTRACK_KAFKA__BOOTSTRAP_SERVERS": topics.bootstrap,
        "EXECTRACK_KAFKA__TOPIC": topics.topic,
        "EXECTRACK_KAFKA__DLQ_TOPIC": topics.dlq,
        "EXECTRACK_GROUP_ID": topics.group_id,
        "EXECTRACK_HEALTH_PORT": "0",
        "EXECTRACK_SESSION_TIMEOUT_MS": "6000",
        "EXECTRACK_LOG_FORMAT": "json",
        "PYTHONUNBUFFERED": "1",  # every log line in the file, however the process ends
    }
    consumer = image_venv.bin("exectrack-consumer")
    await asyncio.to_thread(image_venv.run, consumer, "migrate", cwd=work, env=settings)
    events = [
        execution_event(
            EventType.PENDING, execution_id="wheel-1", report_id="vpc-weekly", source="/tests",
            sequence=0, trigger_type="manual",
        ),
        execution_event(
            EventType.COMPLETED, execution_id="wheel-1", report_id="vpc-weekly", source="/tests",
            sequence=1, records_processed=3,
        ),
    ]  # fmt: skip
    await publish(
        topics.bootstrap, topics.topic, [(e.key, to_json(e), kafka_headers(e)) for e in events]
    )

    log = work / f"consume-{topics.topic}.log"
    env = image_venv.env(settings)
    proc = await asyncio.to_thread(start, [str(consumer), "consume"], work, env, log)
    rows: dict[str, dict[str, object]] = {}
    try:
        deadline = time.monotonic() + 90
        while rows.get("wheel-1", {}).get("status") != "completed":
            if proc.poll() is not None or time.monotonic() > deadline:
                break  # the consumer exited, or no row in time: fails below, with its output
            await asyncio.sleep(0.5)
            rows = await rows_of(url)
    finally:
        code = await asyncio.to_thread(stop, proc)  # also when the test fails
    output = log.read_text()
    assert rows.get("wheel-1", {}).get("status") == "completed", f"{rows}\n{output}"
    assert code == 0, output
    row = rows["wheel-1"]
    assert (row["report_id"], row["records_processed"], row["trigger_type"]) == (
        "vpc-weekly", 3, "manual"
    )  # fmt: skip
    logged = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert logged[-1]["event"] == "consumer_stopped", output
    assert logged[-1]["records"] == 2
