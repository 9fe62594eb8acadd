"""The policy file: the example loads, every mistake is one line with file:line: reason,
and the environment overrides the file key by key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from exectrack.consumer.cli import main
from exectrack.consumer.retention.policy import RetentionPolicy
from exectrack.consumer.retention.policy_file import PolicyFileError, load_policy_file
from exectrack.consumer.settings import Settings
from exectrack.producer.events import ExecutionStatus, ReportCategory, ReportType

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "local" / "retention.example.toml"
CONSUMER = Path(sys.executable).parent / "exectrack-consumer"
S, D = ExecutionStatus, timedelta(days=1)


def test_the_example_file_loads() -> None:
    policy = RetentionPolicy.model_validate(load_policy_file(EXAMPLE))
    assert policy.period(S.COMPLETED) == 90 * D
    assert policy.period(S.FAILED, report_type=ReportType.VPC_INVENTORY) == 365 * D
    assert policy.period(S.COMPLETED, category=ReportCategory.COMPLIANCE) is None
    assert policy.period(S.CANCELLED, report_type=ReportType.COST_ALLOCATION) == 7 * D
    assert policy.hold_reports == {"audit-2026-q3"}
    assert policy.hold_executions == {"0f9c2a54-5b1e-4ad3-9a43-6c2d0d9f4e11"}


def test_an_empty_file_is_the_built_in_policy(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text("# nothing yet\n")
    assert RetentionPolicy.model_validate(load_policy_file(path)) == RetentionPolicy()


BAD = [
    ('[default]\ncompleted = "30d"\nfailed = 3d\n', 3, "invalid TOML: "),
    ('[default]\ncompleted = "30d"\n[default]\n', 3, "invalid TOML: "),
    ('[defaults]\ncompleted = "30d"\n', 1, "unknown section 'defaults' (known: default, "),
    ('[default]\n\ncomplete = "30d"\n', 3, "unknown status 'complete' in [default]"),
    ('[default]\nrunning = "1h"\n', 2, "pending and running never expire 'running'"),
    ('[default]\ncompleted = "-5d"\n', 2, "[default] completed: negative period '-5d'"),
    ("[default]\ncompleted = -1\n", 2, "[default] completed: negative period -1"),
    (
        '[default]\ncompleted = "ninety days"\n',
        2,
        "[default] completed: bad duration 'ninety days'",
    ),
    ("[default]\ncompleted = true\n", 2, "[default] completed: bad duration True"),
    (
        '# types\n[report_types.vpc_invntory]\nfailed = "1d"\n',
        2,
        "unknown report_type 'vpc_invntory' (known: vpc_inventory, ",
    ),
    (
        '[report_types]\nvpc_inventory = { failed = "1d", complete = "2d" }\n',
        2,
        "unknown status 'complete' in [report_types.vpc_inventory]",
    ),
    ('[categories."sec urity"]\nfailed = "1d"\n', 1, "unknown category 'sec urity' (known: "),
    ('[categories.security]\nfailed = "soon"\n', 2, "[categories.security] failed: bad duration"),
    ('categories.cost.failed = "-1s"\n', 1, "[categories.cost] failed: negative period '-1s'"),
    ('default = "30d"\n', 1, "[default] must be a table, not a string"),
    ('[holds]\nreports = "audit"\n', 2, "[holds] reports must be a list of non-empty ids"),
    ('[holds]\nexecutions = ["a", ""]\n', 2, "[holds] executions must be a list of non-empty ids"),
    (
        '[holds]\nreport = ["a"]\n',
        2,
        "unknown key 'report' in [holds] (known: reports, executions)",
    ),
]


@pytest.mark.parametrize(("text", "line", "reason"), BAD)
def test_each_mistake_is_one_line_with_file_line_and_reason(
    tmp_path: Path, text: str, line: int, reason: str
) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(text)
    with pytest.raises(PolicyFileError) as caught:
        load_policy_file(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:{line}: {reason}"), message
    assert "\n" not in message
    assert isinstance(caught.value, ValueError)


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(PolicyFileError, match=r"missing.toml: cannot read the retention policy: "):
        load_policy_file(tmp_path / "missing.toml")
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe[default]")
    with pytest.raises(PolicyFileError, match=r"bin.toml: not UTF-8 text"):
        load_policy_file(tmp_path / "bin.toml")
    with pytest.raises(PolicyFileError, match="cannot read"):
        load_policy_file(tmp_path)  # a directory


def test_environment_overrides_the_file_key_by_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "p.toml"
    path.write_text(
        '[default]\ncompleted = "10d"\nfailed = "20d"\n'
        '[report_types.custom]\nfailed = "1d"\n[holds]\nreports = ["a", "b"]\n'
    )
    monkeypatch.setenv("EXECTRACK_RETENTION_FILE", str(path))
    monkeypatch.setenv("EXECTRACK_RETENTION__DEFAULT__COMPLETED", "5d")
    monkeypatch.setenv("EXECTRACK_RETENTION__HOLD_REPORTS", '["c"]')
    policy = Settings().retention
    assert policy.period(S.COMPLETED) == 5 * D  # the environment wins for this key
    assert policy.period(S.FAILED) == 20 * D  # the file's other keys stay
    assert policy.period(S.CANCELLED) == 30 * D  # unset anywhere: built-in
    assert policy.period(S.FAILED, report_type=ReportType.CUSTOM) == D
    assert policy.hold_reports == {"c"}  # lists are replaced, not merged
    # keyword arguments win whole, as for every setting
    assert Settings(retention=RetentionPolicy()).retention == RetentionPolicy()


def test_no_file_no_change(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EXECTRACK_RETENTION_FILE", raising=False)
    assert Settings().retention == RetentionPolicy()


@pytest.mark.parametrize("command", [["retention", "show"], ["purge", "--dry-run"], ["consume"]])
def test_every_command_fails_at_start_with_one_line(tmp_path: Path, command: list[str]) -> None:
    path = tmp_path / "policy.toml"
    path.write_text('[default]\ncompleted = "30d"\n[report_types.nope]\nfailed = "1d"\n')
    result = CliRunner().invoke(main, command, env={"EXECTRACK_RETENTION_FILE": str(path)})
    assert result.exit_code == 1
    assert result.output.count("\n") == 1
    failed = json.loads(result.output)  # stderr is not a terminal: one JSON log event
    assert failed["event"] == "command_failed"
    assert failed["error"].startswith(f"{path}:3: unknown report_type 'nope' (known: ")


def test_retention_check_command(tmp_path: Path) -> None:
    ok = CliRunner().invoke(main, ["retention", "check", str(EXAMPLE)])
    assert ok.exit_code == 0, ok.output
    assert ok.output.splitlines()[0] == f"{EXAMPLE}: ok"
    assert "category compliance: completed never" in ok.output
    bad = tmp_path / "bad.toml"
    bad.write_text("[holds]\nreports = [1]\n")
    result = CliRunner().invoke(main, ["retention", "check", str(bad)])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1
    assert json.loads(result.output)["error"] == (
        f"{bad}:2: [holds] reports must be a list of non-empty ids"
    )


PYTHONPATH = {k: v for k, v in os.environ.items() if k == "PYTHONPATH"}  # a worktree's copy


def test_the_real_process_prints_no_traceback(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text('[default]\ncompleted = "-1d"\n')
    proc = subprocess.run(
        [str(CONSUMER), "consume"], capture_output=True, text=True, timeout=60, check=False,
        env={"PATH": "/usr/bin:/bin", "EXECTRACK_RETENTION_FILE": str(path), **PYTHONPATH},
    )  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1
    failed = json.loads(proc.stderr)
    assert failed["error"] == f"{path}:2: [default] completed: negative period '-1d'"
    assert failed["level"] == "error"
    assert "exception" not in failed
    console = subprocess.run(  # on a terminal's format: click's line, as before
        [str(CONSUMER), "consume"], capture_output=True, text=True, timeout=60, check=False,
        env={"PATH": "/usr/bin:/bin", "EXECTRACK_RETENTION_FILE": str(path),
             "EXECTRACK_LOG_FORMAT": "console", **PYTHONPATH},
    )  # fmt: skip
    assert console.returncode == 1
    assert console.stderr == f"Error: {path}:2: [default] completed: negative period '-1d'\n"
