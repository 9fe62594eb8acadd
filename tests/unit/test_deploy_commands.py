"""Every exectrack command that deploy/ runs exists, with the options it passes.

Each (command, args) found in compose.yaml, the Kubernetes base, the systemd units
and the Dockerfile's CMD is invoked with ``--help`` appended through click's runner:
click parses the options first, so an unknown subcommand or option fails the test.
"""

from __future__ import annotations

import json
import re

import click
import pytest
from click.testing import CliRunner

from exectrack.consumer.cli import main as consumer_main
from exectrack.producer.cli import main as producer_main
from tests.support.deploy import (
    DEPLOY,
    base_resources,
    compose_commands,
    kubernetes_commands,
    systemd_commands,
)

MAINS: dict[str, click.Group] = {
    "exectrack-consumer": consumer_main,
    "exectrack-producer": producer_main,
}


def dockerfile_commands() -> list[tuple[str, list[str]]]:
    text = (DEPLOY / "Dockerfile").read_text()
    entrypoint = json.loads(re.search(r"^ENTRYPOINT (.+)$", text, re.M)[1])  # type: ignore[index]
    cmd = json.loads(re.search(r"^CMD (.+)$", text, re.M)[1])  # type: ignore[index]
    return [(entrypoint[0], [*entrypoint[1:], *cmd])]


COMMANDS = sorted(
    {
        (cli, tuple(args))
        for cli, args in [
            *compose_commands(),
            *kubernetes_commands(base_resources()),
            *systemd_commands(),
            *dockerfile_commands(),
        ]
    }
)


def test_found_the_commands() -> None:
    subcommands = {args[0] for _, args in COMMANDS}
    assert {"consume", "migrate", "purge", "reap", "simulate"} <= subcommands


@pytest.mark.parametrize(("cli", "args"), COMMANDS, ids=[" ".join([c, *a]) for c, a in COMMANDS])
def test_command_exists(cli: str, args: tuple[str, ...]) -> None:
    assert cli in MAINS, f"{cli}: not an exectrack console script"
    result = CliRunner().invoke(MAINS[cli], [*args, "--help"])
    assert result.exit_code == 0, f"{cli} {' '.join(args)}: {result.output}"
    assert "Usage:" in result.output
