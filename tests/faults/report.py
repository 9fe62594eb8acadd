"""Render a results file of the fault scenarios as the Markdown table of docs/reliability.md.

.venv/bin/python -m tests.faults.report tests/faults/results/long-*.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def rows(document: dict[str, Any]) -> list[str]:
    lines = [
        f"Scale `{document['scale']}`, started {document['started']}.",
        "",
        "| scenario | faults | events in | valid / invalid (DLQ) | rows out = expected "
        "| lost | duplicates in stream | recover s | elapsed s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in document["scenarios"]:
        c = s["counts"]
        recover = ", ".join(f"{x:g}" for x in s["recover_s"]) or "-"
        lines.append(
            f"| {s['scenario']} | {'; '.join(s['faults'])} | {c['events_in']} "
            f"| {c['valid_events']} / {c['invalid_events']} ({c['dead_lettered']}) "
            f"| {c['rows_out']} = {c['rows_expected']} | {c['lost']} "
            f"| {c['duplicates_in_stream']} | {recover} | {s['elapsed_s']} |"
        )
    return lines


def main(paths: list[str]) -> None:
    for path in paths:
        print("\n".join(rows(json.loads(Path(path).read_text()))))
        print()


if __name__ == "__main__":
    main(sys.argv[1:])
