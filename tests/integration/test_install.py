"""``pip install exectrack`` as a service team does it: the built wheel in a fresh
venv with the producer's dependencies only (issue #14, "Installs").

The venv holds the pins of requirements.lock that pyproject's ``dependencies`` need
(their closure, tests/support/lock.py), hashes required, then the wheel without
dependencies: what ``pip install exectrack`` resolves to, with the lock's versions.
In it the producer imports, publishes to the real broker and type-checks a user's
script (``py.typed``); the consumer says in one line what to install. The full
install (the image's lock, migrate and consume) is tests/integration/test_deploy_wheel.py.

The venv is built once for this module: about 15 s (tests/support/install.py).
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from packaging.utils import canonicalize_name

from exectrack._extras import CONSUMER_MODULES, INSTALL_HINT
from exectrack.producer.events import EventType, ExecutionEvent, parse_event
from tests.stack import Services
from tests.support.install import Venv, build_wheel, make_venv, outside_the_package, run
from tests.support.kafka import read_all
from tests.support.lock import ENV_LOCK, PRODUCER, PROJECT, closure, write_subset

CONSUMER_DISTRIBUTIONS = {
    "sqlalchemy",
    "aiomysql",
    "alembic",
    "aiohttp",
    "rich",
    "prometheus-client",
}


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("producer-install")


@pytest.fixture(scope="module")
def producer_venv(work: Path) -> Venv:
    """The wheel and the producer's pins of requirements.lock, in a fresh venv."""
    wheels = work / "wheels"
    wheels.mkdir()
    wheel = build_wheel(wheels)
    lock = write_subset(ENV_LOCK, closure(PRODUCER), work / "producer.lock")
    return make_venv(work / "venv", lock, wheel)


def python(venv: Venv, code: str, work: Path, *, ok: bool = True) -> str:
    done = venv.run(venv.python, "-c", code, cwd=work, ok=ok)
    return done.stdout if ok else done.stderr


def test_it_holds_the_producers_dependencies_only(producer_venv: Venv) -> None:
    installed = producer_venv.distributions()
    assert not CONSUMER_DISTRIBUTIONS & installed.keys()
    assert installed.keys() == closure(PRODUCER) | {canonicalize_name("exectrack")}
    assert {"aiokafka", "cramjam", "pydantic", "click", "orjson", "structlog"} <= installed.keys()


def test_the_producer_imports_from_the_wheel(producer_venv: Venv, work: Path) -> None:
    found = python(
        producer_venv,
        "import exectrack, exectrack.producer.events, exectrack.producer.publisher, "
        "exectrack.producer.tracking, exectrack.producer.testing, exectrack.producer.sync, "
        "exectrack.producer.cli, exectrack.producer.simulate\n"
        "import sys; print(exectrack.__file__)\n"
        f"print(sorted(m for m in {CONSUMER_MODULES!r} if m in sys.modules))",
        work,
    ).splitlines()
    assert Path(found[0]).is_relative_to(producer_venv.path)  # the wheel, not the checkout
    assert found[1] == "[]"  # nothing of the consumer extra was loaded on the way


@pytest.mark.parametrize("module", ["exectrack.consumer", "exectrack.consumer.service"])
def test_importing_the_consumer_says_what_to_install(
    producer_venv: Venv, work: Path, module: str
) -> None:
    said = python(
        producer_venv,
        f"try:\n    import {module}\n"
        "except ImportError as exc:\n    print(repr(str(exc)))\n"
        "else:\n    raise SystemExit('imported')\n",
        work,
    )
    message = eval(said)  # noqa: S307 - the repr printed just above
    assert "\n" not in message
    assert message.endswith(INSTALL_HINT), message
    assert "sqlalchemy" in message  # names what is missing
    traceback = python(producer_venv, f"import {module}", work, ok=False)
    assert traceback.strip().splitlines()[-1] == f"ImportError: {message}"


def test_the_consumer_command_says_what_to_install(producer_venv: Venv, work: Path) -> None:
    done = producer_venv.run(producer_venv.bin("exectrack-consumer"), "--help", cwd=work, ok=False)
    assert done.returncode == 1
    assert done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith("exectrack-consumer needs the consumer extra")
    assert line.endswith(INSTALL_HINT)


def test_the_producer_command_runs(producer_venv: Venv, work: Path) -> None:
    cli = producer_venv.bin("exectrack-producer")
    shown = producer_venv.run(cli, "--help", cwd=work).stdout
    assert "emit" in shown
    assert "simulate" in shown
    assert producer_venv.run(cli, "emit", "--help", cwd=work).stdout.startswith("Usage:")
    version = producer_venv.run(cli, "--version", cwd=work).stdout
    assert version.strip() == f"exectrack-producer, version {PROJECT['version']}"


def test_pip_show_lists_only_the_package(producer_venv: Venv) -> None:
    files = producer_venv.installed_files()
    assert "exectrack/py.typed" in files
    assert "exectrack/producer/publisher.py" in files
    assert "exectrack/consumer/service.py" in files  # shipped; it needs the extra to import
    assert outside_the_package(producer_venv, files) == []
    top = {path.name for path in producer_venv.site_packages().iterdir()}
    assert not {"producer", "consumer"} & top


@pytest.fixture
async def fresh_topic(stack: Services) -> AsyncIterator[str]:
    """A topic name no one uses; the command creates it (and its DLQ); deleted after."""
    topic = f"exectrack-install-{uuid.uuid4().hex[:10]}"
    yield topic
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        if gone := [name for name in (topic, f"{topic}.dlq") if name in existing]:
            await admin.delete_topics(gone)
    finally:
        await admin.close()


async def test_emit_publishes_to_the_real_broker(
    producer_venv: Venv, work: Path, stack: Services, fresh_topic: str
) -> None:
    execution_id = f"install-{uuid.uuid4().hex[:8]}"
    done = await asyncio.to_thread(
        producer_venv.run,
        producer_venv.bin("exectrack-producer"), "emit", "--create-topics",
        "--type", "started", "--execution-id", execution_id, "--report-id", "vpc-weekly",
        "--sequence", "1", "--field", "records_processed=7",
        cwd=work,
        env={
            "EXECTRACK_KAFKA__BOOTSTRAP_SERVERS": stack.kafka_bootstrap,
            "EXECTRACK_KAFKA__TOPIC": fresh_topic,
            "EXECTRACK_KAFKA__DLQ_TOPIC": f"{fresh_topic}.dlq",
            "EXECTRACK_KAFKA__PARTITIONS": "3",
            "EXECTRACK_SOURCE": "/tests/install",
        },
    )  # fmt: skip
    printed = dict(item.split("=", 1) for item in done.stdout.split())
    assert printed["topic"] == fresh_topic
    assert printed["key"] == execution_id

    (record,) = await read_all(stack.kafka_bootstrap, fresh_topic)
    assert record.key == execution_id.encode()
    assert (record.partition, record.offset) == (int(printed["partition"]), int(printed["offset"]))
    event = parse_event(record.value, record.headers, record.key)
    assert isinstance(event, ExecutionEvent)
    assert (event.type, event.id, event.source) == (
        EventType.STARTED, printed["id"], "/tests/install"
    )  # fmt: skip
    assert (event.data.execution_id, event.data.report_id, event.data.sequence) == (
        execution_id, "vpc-weekly", 1
    )  # fmt: skip
    assert json.loads(record.value)["data"]["records_processed"] == 7


USER_SCRIPT = '''\
"""A service that emits events, as its developer writes it and tests it."""

import asyncio

from exectrack.producer.events import EventType
from exectrack.producer.publisher import Publisher
from exectrack.producer.testing import InMemoryPublisher, captured_events
from exectrack.producer.tracking import exectrack_execution_id, track


async def run_report(pub: Publisher | InMemoryPublisher, pages: int) -> str:
    async with track(pub, report_id="vpc-inventory", trigger_type="scheduled") as run:
        for page in range(pages):
            await run.progress(records_processed=page)
        run.set(result_summary={"vpcs": pages})
    return run.execution_id


async def service() -> str:
    async with Publisher(topic="exectrack.executions", source="/services/vpc") as pub:
        return await run_report(pub, 2)


async def check() -> None:
    with captured_events() as captured:
        execution_id = await service()
    types: list[EventType] = captured.types_for(execution_id)
    assert types == [
        EventType.PENDING, EventType.STARTED, EventType.PROGRESS, EventType.PROGRESS,
        EventType.COMPLETED,
    ], types
    async with InMemoryPublisher() as memory:
        try:
            async with track(memory, report_id="r"):
                raise ValueError("boom")
        except ValueError as exc:
            failed: str | None = exectrack_execution_id(exc)
    assert failed is not None
    assert memory.types_for(failed)[-1] is EventType.FAILED
    print("ok")


if __name__ == "__main__":
    asyncio.run(check())
'''

WRONG = {
    'track(pub, report_id="vpc-inventory"': "track(pub, report_id=42",
    "failed: str | None = exectrack_execution_id(exc)": "failed: int = exectrack_execution_id(exc)",
}


def mypy(venv: Venv, script: Path, work: Path) -> tuple[int, str]:
    """mypy --strict (the dev environment's, pinned by requirements.lock) of ``script``,
    importing from ``venv`` (``--python-executable``: its site-packages, PEP 561)."""
    (work / "mypy.ini").write_text("[mypy]\n")  # not this checkout's configuration
    done = run(
        sys.executable, "-m", "mypy", "--strict", "--config-file", work / "mypy.ini",
        "--python-executable", venv.python, "--cache-dir", work / f".mypy_cache-{venv.path.name}",
        "--show-error-codes", script,
        cwd=work, ok=False,
    )  # fmt: skip
    return done.returncode, done.stdout + done.stderr


@pytest.fixture(scope="module")
def scripts(work: Path) -> Path:
    folder = work / "user"
    folder.mkdir()
    return folder


def test_a_users_script_type_checks_against_the_installed_wheel(
    producer_venv: Venv, scripts: Path
) -> None:
    script = scripts / "service.py"
    script.write_text(USER_SCRIPT)
    code, said = mypy(producer_venv, script, scripts)
    assert code == 0, said
    assert "Success: no issues found in 1 source file" in said
    ran = producer_venv.run(producer_venv.python, script, cwd=scripts)  # and it runs, no broker
    assert ran.stdout.strip() == "ok"


def test_a_wrong_script_fails_the_type_check(producer_venv: Venv, scripts: Path) -> None:
    """The check above is real: mypy reads exectrack's annotations from the venv."""
    text = USER_SCRIPT
    for right, wrong in WRONG.items():
        assert right in text
        text = text.replace(right, wrong)
    script = scripts / "wrong.py"
    script.write_text(text)
    code, said = mypy(producer_venv, script, scripts)
    assert code == 1, said
    assert 'Argument "report_id" to "track" has incompatible type "int"; expected "str"' in said
    assert 'expression has type "str | None", variable has type "int"' in said
    assert "import-not-found" not in said
    assert "import-untyped" not in said


def test_the_type_check_reads_the_venv(scripts: Path) -> None:
    """mypy finds exectrack through ``--python-executable`` only: against a venv
    without the wheel the same script does not type-check."""
    empty = scripts / "empty-venv"
    run(sys.executable, "-m", "venv", "--without-pip", empty, cwd=scripts)
    script = scripts / "service.py"
    script.write_text(USER_SCRIPT)
    code, said = mypy(Venv(empty), script, scripts)
    assert code == 1, said
    assert 'Cannot find implementation or library stub for module named "exectrack' in said
