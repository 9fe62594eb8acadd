"""The contract as JSON Schema, for producers in other languages.

``python -m exectrack.producer.schema --write docs/schema/events.schema.json`` exports it;
``--check PATH`` exits 1 when the committed file is out of date (a test runs
that check, so a model change without a schema refresh fails).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from exectrack.producer._models import EVENT_ADAPTER

SCHEMA_ID = "urn:exectrack:schema:events:v1"
DESCRIPTION = "The exectrack event contract: the ONE schema producers and the consumer share."


def json_schema() -> dict[str, Any]:
    """JSON Schema (2020-12) of ``Event``: the contract for producers in other languages."""
    schema = EVENT_ADAPTER.json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "exectrack event (CloudEvents 1.0, structured mode)",
        "description": DESCRIPTION,
        **schema,
    }


def render_schema() -> str:
    """The exported file's exact text: pretty, sorted keys, trailing newline."""
    return json.dumps(json_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m exectrack.producer.schema [--write PATH | --check PATH]`` (stdout by default)."""
    parser = argparse.ArgumentParser(
        prog="python -m exectrack.producer.schema", description=json_schema.__doc__
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", metavar="PATH", type=Path, help="write the schema to PATH")
    group.add_argument("--check", metavar="PATH", type=Path, help="exit 1 if PATH is not current")
    args = parser.parse_args(argv)
    text = render_schema()
    if args.write is not None:
        args.write.parent.mkdir(parents=True, exist_ok=True)
        args.write.write_text(text, encoding="utf-8")
    elif args.check is not None:
        current = args.check.read_text(encoding="utf-8") if args.check.exists() else None
        if current != text:
            fix = f"python -m exectrack.producer.schema --write {args.check}"
            print(f"{args.check} is out of date; run: {fix}", file=sys.stderr)
            return 1
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
