"""Compare a rebuilt database with the live one, row by row, in bounded memory.

``exectrack-consumer verify --rebuilt-url URL [--live-url URL]`` (or ``replay --verify``):

- ``report_executions`` by ``execution_id``, every column but ``id`` (the
  auto-increment surrogate, which depends on insert order); ``fold_keys`` too;
- ``reports`` by ``report_id``, every column but ``id``, ``created_at`` and
  ``updated_at``: those two are the database's wall-clock times of the row's
  insert and last update, so they differ between any two databases;
- ``users`` is not compared: events carry only user ids (placeholders), and
  the rest of a users row is administered in the database, not on the topic.

Not compared, but counted as ignored: executions past retention
(``retention_until <= now``) on every side that has them (a replay never
writes them, the live table keeps them until the purge runs); and, given
``ignore_newer_than``, executions with an event (reports with a definition)
at or after it on either side (the live table keeps moving while a replay
reads up to the end offsets it captured).

Both tables are read in key order with keyset pagination (``page_size`` rows
a query: ``WHERE key > :last ORDER BY key LIMIT n``) and merge-joined here, so
memory stays flat whatever the table size. Keys are ``utf8mb4_bin``: the
server's order is code point order, which is Python's ``str`` order; the
merge checks that every side really arrives in increasing order.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any, Literal

from sqlalchemy import Table, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from exectrack.consumer.db.engine import create_engine
from exectrack.consumer.db.keyset import pages
from exectrack.consumer.db.repository import EXECUTION_COLUMNS, EXECUTIONS, REPORTS
from exectrack.consumer.settings import DatabaseSettings
from exectrack.producer.errors import ExectrackError

Row = Mapping[str, Any]
Kind = Literal["missing", "extra", "differs"]
PAGE_SIZE = 5000
MAX_SHOWN = 20
VALUE_WIDTH = 120

REPORT_COLUMNS = tuple(
    c.name for c in REPORTS.columns if c.name not in {"id", "created_at", "updated_at"}
)


class VerifyError(ExectrackError, ValueError):
    """The comparison cannot be made (rows out of key order, a table missing)."""


@dataclass(frozen=True)
class Difference:
    """One key whose rows differ: ``missing`` in rebuilt, ``extra`` in rebuilt, or ``differs``.

    ``columns`` (``differs`` only): column name -> (live value, rebuilt value).
    """

    key: str
    kind: Kind
    columns: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # name -> (live, rebuilt)


@dataclass
class TableDiff:
    """Counts of one table's comparison, and the first ``max_shown`` differences."""

    table: str
    max_shown: int = MAX_SHOWN
    equal: int = 0
    missing: int = 0  # in live, not in rebuilt
    extra: int = 0  # in rebuilt, not in live
    differing: int = 0
    ignored: Counter[str] = field(default_factory=Counter)  # why -> rows
    columns: Counter[str] = field(default_factory=Counter)  # column -> differing rows
    shown: list[Difference] = field(default_factory=list)

    @property
    def differences(self) -> int:
        """Keys missing, extra or differing in this table."""
        return self.missing + self.extra + self.differing

    def record(self, difference: Difference | None) -> None:
        """Count one compared key (None: equal); keep it among the first ``max_shown``."""
        if difference is None:
            self.equal += 1
            return
        if difference.kind == "missing":
            self.missing += 1
        elif difference.kind == "extra":
            self.extra += 1
        else:
            self.differing += 1
            self.columns.update(difference.columns.keys())
        if len(self.shown) < self.max_shown:
            self.shown.append(difference)

    def lines(self) -> list[str]:
        """The table's counts on one line, then each difference kept, for people."""
        compared = self.equal + self.differences
        head = (
            f"{self.table}: {compared:,} compared, {self.equal:,} equal, "
            f"{self.missing:,} missing in rebuilt, {self.extra:,} extra in rebuilt, "
            f"{self.differing:,} differing"
        )
        if self.columns:
            head += " (" + ", ".join(f"{c}: {n:,}" for c, n in self.columns.most_common()) + ")"
        if self.ignored:
            head += "; ignored: " + ", ".join(f"{n:,} {why}" for why, n in self.ignored.items())
        out = [head]
        for diff in self.shown:
            out.append(f"  {diff.kind:<8} {diff.key}")
            for name, (live, rebuilt) in diff.columns.items():
                out.append(f"      {name}: live={show(live)} rebuilt={show(rebuilt)}")
        if self.differences > len(self.shown):
            out.append(f"  ... and {self.differences - len(self.shown):,} more differences")
        return out


@dataclass
class VerifyReport:
    """The comparison of both tables; ``live``/``rebuilt``: the URLs, passwords hidden."""

    live: str
    rebuilt: str
    tables: list[TableDiff]

    @property
    def differences(self) -> int:
        """Differences over every table."""
        return sum(t.differences for t in self.tables)

    @property
    def ok(self) -> bool:
        """No differences (ignored rows do not count): the replay agrees with the live table."""
        return self.differences == 0

    def render(self) -> str:
        """The report for people, ending with the verdict (``OK`` or ``FAILED``)."""
        lines = [f"verify: live {self.live}", f"    against rebuilt {self.rebuilt}"]
        for table in self.tables:
            lines += table.lines()
        verdict = "OK: no differences" if self.ok else f"FAILED: {self.differences:,} differences"
        return "\n".join([*lines, verdict])


def show(value: Any) -> str:
    """A value as the report prints it: enums by value, times in ISO 8601, else ``repr``
    cut to ``VALUE_WIDTH`` characters."""
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, datetime):
        return value.isoformat()
    text = repr(value)
    return text if len(text) <= VALUE_WIDTH else text[: VALUE_WIDTH - 3] + "..."


def compare(
    key: str, live: Row | None, rebuilt: Row | None, columns: Sequence[str]
) -> Difference | None:
    """The difference between the two sides' rows of one key (None: equal)."""
    if rebuilt is None:
        return Difference(key, "missing")
    if live is None:
        return Difference(key, "extra")
    changed = {c: (live[c], rebuilt[c]) for c in columns if live[c] != rebuilt[c]}
    return Difference(key, "differs", changed) if changed else None


async def merge_join(
    live: AsyncIterator[Row], rebuilt: AsyncIterator[Row], key: str
) -> AsyncIterator[tuple[str, Row | None, Row | None]]:
    """Pair rows of two key-ordered streams: (key, live row or None, rebuilt row or None)."""
    sides = [_ordered(live, key, "live"), _ordered(rebuilt, key, "rebuilt")]
    left, right = [await anext(side, None) for side in sides]
    while left is not None or right is not None:
        if left is not None and (right is None or left[key] < right[key]):
            yield left[key], left, None
            left = await anext(sides[0], None)
        elif right is not None and (left is None or right[key] < left[key]):
            yield right[key], None, right
            right = await anext(sides[1], None)
        elif left is not None and right is not None:  # the same key on both sides
            yield left[key], left, right
            left, right = await anext(sides[0], None), await anext(sides[1], None)


async def _ordered(rows: AsyncIterator[Row], key: str, side: str) -> AsyncIterator[Row]:
    previous: str | None = None
    async for row in rows:
        if previous is not None and not row[key] > previous:
            raise VerifyError(
                f"{side} rows are not in increasing {key} order ({previous!r} then "
                f"{row[key]!r}): is the column's collation binary (utf8mb4_bin)?"
            )
        previous = row[key]
        yield row


Ignore = Callable[[Row | None, Row | None], str | None]


async def diff_rows(
    table: str,
    pairs: AsyncIterator[tuple[str, Row | None, Row | None]],
    columns: Sequence[str],
    *,
    ignore: Ignore = lambda live, rebuilt: None,
    max_shown: int = MAX_SHOWN,
) -> TableDiff:
    """Compare merge-joined rows; ``ignore(live, rebuilt)`` names why a key is skipped, if so."""
    result = TableDiff(table, max_shown=max_shown)
    async for key, live, rebuilt in pairs:
        reason = ignore(live, rebuilt)
        if reason is not None:
            result.ignored[reason] += 1
        else:
            result.record(compare(key, live, rebuilt, columns))
    return result


def execution_filter(now: datetime, newer_than: datetime | None) -> Ignore:
    """Skip an execution with an event at or after ``newer_than`` on either side, or
    past retention on every side that has it."""

    def ignore(live: Row | None, rebuilt: Row | None) -> str | None:
        present = [r for r in (live, rebuilt) if r is not None]
        if newer_than is not None and any(r["last_event_at"] >= newer_than for r in present):
            return f"with events since {newer_than.isoformat()}"
        if all(r["retention_until"] is not None and r["retention_until"] <= now for r in present):
            return "past retention"
        return None

    return ignore


def report_filter(newer_than: datetime | None) -> Ignore:
    """Skip a report defined at or after ``newer_than`` on either side."""

    def ignore(live: Row | None, rebuilt: Row | None) -> str | None:
        times = [r["defined_at"] for r in (live, rebuilt) if r is not None]
        if newer_than is not None and any(t is not None and t >= newer_than for t in times):
            return f"defined since {newer_than.isoformat()}"
        return None

    return ignore


async def keyset(
    engine: AsyncEngine, table: Table, key: str, columns: Sequence[str], page_size: int = PAGE_SIZE
) -> AsyncIterator[Row]:
    """Every row of ``table`` in ``key`` order, ``page_size`` rows a query (db.keyset.pages)."""
    query = select(*(table.c[c] for c in dict.fromkeys([key, *columns])))
    async for page in pages(engine, query, (table.c[key],), page_size):
        for row in page:
            yield dict(row._mapping)


async def verify(
    database: DatabaseSettings,
    live_url: str,
    rebuilt_url: str,
    *,
    page_size: int = PAGE_SIZE,
    max_shown: int = MAX_SHOWN,
    ignore_newer_than: datetime | None = None,
    now: datetime | None = None,
) -> VerifyReport:
    """Compare report_executions and reports of the two databases (docstring above).

    Args:
        database: TLS and timeouts for both connections (their URLs are given).
        page_size: rows per keyset query.
        max_shown: differences kept per table for the report.
        ignore_newer_than: aware; rows with an event (a definition) at or after
            it on either side are counted as ignored, not compared.
        now: what "past retention" is measured against (default: now).

    Raises:
        VerifyError: a side returned rows out of key order.
        sqlalchemy.exc.SQLAlchemyError: a database cannot be read (a table missing...).
    """
    now = now or datetime.now(UTC)
    live = create_engine(database, url=live_url)
    rebuilt = create_engine(database, url=rebuilt_url)
    try:
        tables = []
        for table, key, columns, ignore in (
            (
                EXECUTIONS,
                "execution_id",
                EXECUTION_COLUMNS,
                execution_filter(now, ignore_newer_than),
            ),
            (REPORTS, "report_id", REPORT_COLUMNS, report_filter(ignore_newer_than)),
        ):
            pairs = merge_join(
                keyset(live, table, key, columns, page_size),
                keyset(rebuilt, table, key, columns, page_size),
                key,
            )
            tables.append(
                await diff_rows(table.name, pairs, columns, ignore=ignore, max_shown=max_shown)
            )
    finally:
        await live.dispose()
        await rebuilt.dispose()
    return VerifyReport(_display(live_url), _display(rebuilt_url), tables)


def _display(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)
