"""The retention policy file (TOML, ``EXECTRACK_RETENTION_FILE``): load, check, locate errors.

::

    [default]                        # per terminal status
    completed = "90d"
    [report_types.vpc_inventory]     # overrides per report_type ...
    failed = "365d"
    [categories.compliance]          # ... and per category
    completed = "never"
    [holds]                          # never purged
    reports = ["audit-2026"]
    executions = ["0f9c2a54-5b1e-4ad3-9a43-6c2d0d9f4e11"]

The file is checked whole at start-up; the first problem raises
``PolicyFileError`` whose message is one line: ``file:line: reason``. The TOML
parser gives the line of a syntax error; for the rest (unknown status,
report_type or category, bad or negative duration, unknown key) the line is
found by scanning the file's table headers and keys, so it points at the key
that is wrong (or the nearest enclosing one it can find).

``PolicyFileError`` is a ``ValueError`` (bad input) and a ``click.ClickException``:
settings are built at the start of every command, which ends with one line
carrying the message (a ``command_failed`` log event, exectrack.consumer.cli; click's
``Error: <message>`` on a terminal) and exit status 1, never a traceback.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click
from pydantic.fields import FieldInfo
from pydantic_settings import PydanticBaseSettingsSource

from exectrack.consumer.errors import BadPeriod
from exectrack.consumer.retention.policy import parse_period
from exectrack.producer.errors import ExectrackError
from exectrack.producer.events import TERMINAL_STATUSES, ReportCategory, ReportType

SECTIONS = ("default", "report_types", "categories", "holds")
HOLD_KEYS = {"reports": "hold_reports", "executions": "hold_executions"}
TERMINAL = sorted(str(s) for s in TERMINAL_STATUSES)
_TOML_WHERE = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")
_HEADER = re.compile(r"^\s*\[\[?\s*([^\[\]]+?)\s*\]\]?\s*(?:#.*)?$")
_ASSIGN = re.compile(
    r"""^\s*((?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*'))*)\s*="""
)
_PART = re.compile(r"""[A-Za-z0-9_-]+|"[^"]*"|'[^']*'""")


class PolicyFileError(ExectrackError, ValueError, click.ClickException):
    """The policy file cannot be read or is wrong; ``str()`` is ``file[:line]: reason``."""

    def __init__(self, message: str) -> None:
        click.ClickException.__init__(self, message)

    def __str__(self) -> str:
        return self.message


def _parts(dotted: str) -> tuple[str, ...]:
    return tuple(p.strip("\"'") for p in _PART.findall(dotted))


class _Lines:
    """Where each table header and key of a TOML text is: path prefix -> first line."""

    def __init__(self, text: str) -> None:
        self.first: dict[tuple[str, ...], int] = {}
        table: tuple[str, ...] = ()
        for number, line in enumerate(text.splitlines(), start=1):
            header = _HEADER.match(line)
            if header:
                table = _parts(header[1])
                self._note(table, number)
                continue
            assign = _ASSIGN.match(line)
            if assign:
                self._note(table + _parts(assign[1]), number)

    def _note(self, path: tuple[str, ...], number: int) -> None:
        for end in range(1, len(path) + 1):
            self.first.setdefault(path[:end], number)

    def of(self, path: tuple[str, ...]) -> int | None:
        for end in range(len(path), 0, -1):  # the key itself, else its nearest table
            if path[:end] in self.first:
                return self.first[path[:end]]
        return None


class _Checker:
    def __init__(self, path: Path, text: str) -> None:
        self.path, self.lines = path, _Lines(text)

    def fail(self, where: tuple[str, ...], reason: str) -> PolicyFileError:
        line = self.lines.of(where)
        return PolicyFileError(f"{self.path}{'' if line is None else f':{line}'}: {reason}")

    def table(self, value: Any, where: tuple[str, ...]) -> Mapping[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, f"[{'.'.join(where)}] must be a table, not {_kind(value)}")
        return value

    def periods(self, value: Any, where: tuple[str, ...]) -> dict[str, Any]:
        periods = {}
        for status, raw in self.table(value, where).items():
            if status not in TERMINAL:
                known = (
                    "pending and running never expire"
                    if status in ("pending", "running")
                    else "unknown status"
                )
                raise self.fail(
                    (*where, status),
                    f"{known} {status!r} in [{'.'.join(where)}] "
                    f"(terminal statuses: {', '.join(TERMINAL)})",
                )
            try:
                periods[status] = parse_period(raw)
            except BadPeriod as exc:
                raise self.fail((*where, status), f"[{'.'.join(where)}] {status}: {exc}") from None
        return periods

    def overrides(self, value: Any, section: str, known: list[str]) -> dict[str, Any]:
        result = {}
        for name, periods in self.table(value, (section,)).items():
            if name not in known:
                what = section[:-1] if section == "report_types" else "category"
                raise self.fail(
                    (section, name), f"unknown {what} {name!r} (known: {', '.join(known)})"
                )
            result[name] = self.periods(periods, (section, name))
        return result

    def holds(self, value: Any) -> dict[str, list[str]]:
        result = {}
        for key, ids in self.table(value, ("holds",)).items():
            if key not in HOLD_KEYS:
                raise self.fail(
                    ("holds", key), f"unknown key {key!r} in [holds] (known: reports, executions)"
                )
            if not isinstance(ids, list) or not all(isinstance(i, str) and i.strip() for i in ids):
                raise self.fail(("holds", key), f"[holds] {key} must be a list of non-empty ids")
            result[HOLD_KEYS[key]] = list(ids)
        return result

    def policy(self, doc: Mapping[str, Any]) -> dict[str, Any]:
        """The file as ``RetentionPolicy`` fields (only those it sets)."""
        result: dict[str, Any] = {}
        for section, value in doc.items():
            if section == "default":
                result["default"] = self.periods(value, ("default",))
            elif section == "report_types":
                result["report_types"] = self.overrides(
                    value, section, [str(t) for t in ReportType]
                )
            elif section == "categories":
                known = [str(c) for c in ReportCategory]
                result["categories"] = self.overrides(value, section, known)
            elif section == "holds":
                result.update(self.holds(value))
            else:
                raise self.fail(
                    (section,), f"unknown section {section!r} (known: {', '.join(SECTIONS)})"
                )
        return result


def _kind(value: Any) -> str:
    return {str: "a string", int: "a number", float: "a number", bool: "a boolean",
            list: "an array"}.get(type(value), type(value).__name__)  # fmt: skip


def load_policy_file(path: str | Path) -> dict[str, Any]:
    """Read and check a policy file; returns the ``RetentionPolicy`` fields it sets.

    Args:
        path: a TOML file (docs/retention.md shows the format; CONTRACT.md, "Retention").

    Returns:
        ``RetentionPolicy`` field name -> value, for the fields the file sets.

    Raises:
        PolicyFileError: unreadable, not UTF-8, not TOML, or a wrong table, key or
            value; ``str()`` is ``file[:line]: reason``.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyFileError(
            f"{path}: cannot read the retention policy: {exc.strerror or exc}"
        ) from None
    except UnicodeDecodeError as exc:
        raise PolicyFileError(f"{path}: not UTF-8 text: {exc.reason}") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        found = _TOML_WHERE.search(message)
        where = f":{found[1]}" if found else ""
        reason = _TOML_WHERE.sub("", message)
        raise PolicyFileError(f"{path}{where}: invalid TOML: {reason}") from None
    return _Checker(path, text).policy(doc)


class PolicyFileSource(PydanticBaseSettingsSource):
    """Settings source: ``{"retention": <the file>}`` when ``retention_file`` is set.

    Placed after the environment, so ``EXECTRACK_RETENTION__...`` variables
    override the file key by key (pydantic-settings merges nested dicts; a list
    such as ``hold_reports`` is replaced whole).
    """

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        """Unused (pydantic-settings asks it per field): the whole file is read by ``__call__``."""
        return None, field_name, False  # everything happens in __call__

    def __call__(self) -> dict[str, Any]:
        path = self.current_state.get("retention_file")
        if not path:
            return {}
        return {"retention": load_policy_file(path)}
