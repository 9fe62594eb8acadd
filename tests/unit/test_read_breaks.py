"""Breaks a user found in the read side (issue #15), fixed as kinds; no service needed.

Break 3: the repeat filter merged two different crashes logged under one message.
Break 4: the default sort was a key that changes with every event (the walk itself
is tests/integration/test_read_breaks.py). Break 6: a time or duration beyond the
datetime range ended the CLI in a traceback. Break 8: piped output was a table cut
to 80 columns (the console script itself: tests/integration/test_read_breaks.py).
docs/reliability/found-by-users.md, "The read side (issue #15)".
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from exectrack.consumer.cli import main as consumer_cli
from exectrack.consumer.logs import configure_logging
from exectrack.consumer.read import cli as read_cli
from exectrack.consumer.read import queries, web
from exectrack.consumer.read.api import build_app
from exectrack.consumer.settings import Settings


@pytest.fixture
def json_logs(capsys: pytest.CaptureFixture[str]) -> Iterator[pytest.CaptureFixture[str]]:
    configure_logging("json", "info")
    yield capsys
    configure_logging("auto", "info")


def crash(exc: Exception) -> None:
    """What uvicorn does when an application raises: one line, the traceback attached."""
    try:
        raise exc
    except Exception:
        logging.getLogger("uvicorn.error").error("Exception in ASGI application", exc_info=True)


def lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    return [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]


def test_two_different_crashes_within_the_window_are_both_logged(
    json_logs: pytest.CaptureFixture[str],
) -> None:
    crash(OverflowError("date value out of range"))
    crash(ValueError("invalid literal for int() with base 10: '²'"))
    crash(ValueError("something else"))
    logged = lines(json_logs)
    assert [line["event"] for line in logged] == ["Exception in ASGI application"] * 3
    causes = [str(line["exception"]).strip().splitlines()[-1] for line in logged]
    assert causes == [
        "OverflowError: date value out of range",
        "ValueError: invalid literal for int() with base 10: '²'",
        "ValueError: something else",
    ]
    assert all(line["logger"] == "uvicorn.error" for line in logged)


def test_the_same_crash_repeated_is_still_collapsed(
    json_logs: pytest.CaptureFixture[str],
) -> None:
    for _ in range(5):
        crash(OverflowError("date value out of range"))
    logged = lines(json_logs)
    assert len(logged) == 1
    # another logger with the same message and exception is another line
    try:
        raise OverflowError("date value out of range")
    except OverflowError:
        logging.getLogger("sqlalchemy.pool").error("Exception in ASGI application", exc_info=True)
    assert len(lines(json_logs)) == 1


def test_the_default_sort_is_created_at_everywhere() -> None:
    assert queries.DEFAULT_SORT == "created_at"
    assert (queries.list_executions.__kwdefaults__ or {})["sort"] == "created_at"
    sort = next(p for p in read_cli.list_command.params if p.name == "sort")
    assert sort.default == "created_at"
    assert web._list_options({})["sort"] == "created_at"
    document = build_app(Settings()).openapi()
    parameters = document["paths"]["/api/executions"]["get"]["parameters"]
    spec = next(p for p in parameters if p["name"] == "sort")
    assert spec["schema"]["default"] == "created_at"
    assert "may skip" in spec["description"]
    assert "exactly once" in spec["description"]


HUGE = ["99999999d", "99999999999d", "999999999999999999999s", "9999999999w", "1e300s"]
TIME_OPTIONS = [
    (command, option)
    for command in ("list", "watch")
    for option in ("--created-since", "--created-until", "--started-since", "--started-until",
                   "--ended-since", "--ended-until")
] + [("stats", "--since"), ("stats", "--until")]  # fmt: skip
DURATION_OPTIONS = [("list", "--stuck-for"), ("watch", "--stuck-for")]


@pytest.mark.parametrize("value", HUGE)
@pytest.mark.parametrize(("command", "option"), TIME_OPTIONS + DURATION_OPTIONS)
def test_a_huge_time_or_duration_is_a_usage_error_naming_the_option(
    command: str, option: str, value: str
) -> None:
    done = CliRunner().invoke(consumer_cli, [command, option, value])
    assert done.exit_code == 2, (done.output, done.exception)
    assert f"Invalid value for '{option}'" in done.stderr, done.stderr
    assert "Traceback" not in done.output


@pytest.mark.parametrize("value", ["9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+05:00"])
@pytest.mark.parametrize(("command", "option"), TIME_OPTIONS)
def test_an_iso_time_beyond_the_utc_range_is_a_usage_error(
    command: str, option: str, value: str
) -> None:
    done = CliRunner().invoke(consumer_cli, [command, option, value])
    assert done.exit_code == 2, (done.output, done.exception)
    assert f"Invalid value for '{option}'" in done.stderr, done.stderr


def test_tsv_cells_are_whole_and_escaped() -> None:
    cells = ["a\tb", "c\nd", "e\\f", "g\rh", ""]
    assert read_cli.tsv_line(cells) == "a\\tb\tc\\nd\te\\\\f\tg\\rh\t"


def test_piped_output_is_tsv_and_a_terminal_gets_the_table(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TTY_COMPATIBLE", raising=False)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False, raising=False)
    assert not read_cli.on_terminal()
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    assert read_cli.on_terminal()
