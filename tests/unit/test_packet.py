"""Packing rows into statements under a byte limit (consumer/db/packet.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exectrack.consumer.db.packet import FILL, MAX_ROWS, ids_per_statement, runs, utf8_len
from exectrack.consumer.errors import PoisonBatch, RowTooLarge


def statement_sizes(sizes: list[int], fixed: int, limit: int, **kw: int) -> list[int]:
    keys = [f"k{n}" for n in range(len(sizes))]
    found = []
    for run in runs(sizes, keys, fixed, limit, **kw):
        part = sizes[run]
        found.append(fixed + sum(part) + 2 * (len(part) - 1))
    return found


def test_rows_are_packed_up_to_the_fill_and_never_over_the_limit() -> None:
    # fill = 750: 100-byte rows after 50 bytes of statement text, 2-byte separators:
    # six rows are 50 + 600 + 10 = 660, a seventh would make 762
    assert statement_sizes([100] * 20, 50, 1000) == [660, 660, 660, 252]


def test_a_row_over_the_fill_goes_alone_when_it_fits_the_limit() -> None:
    assert statement_sizes([100, 900, 100], 50, 1000) == [150, 950, 150]


def test_rows_over_the_limit_are_refused_by_key_before_any_statement() -> None:
    found = runs([10, 951, 10, 2000], ["a", "b", "c", "d"], 50, 1000)
    with pytest.raises(RowTooLarge) as caught:
        next(found)  # nothing is yielded: no statement of the batch goes out first
    assert (caught.value.sizes, caught.value.limit) == ({"b": 1001, "d": 2050}, 1000)
    assert isinstance(caught.value, PoisonBatch)
    assert "'b' needs a 1001-byte statement" in caught.value.reason("b")
    assert "max_allowed_packet" in caught.value.reason("d")


def test_rows_per_statement_are_bounded_too() -> None:
    found = runs([1] * 2500, ["k"] * 2500, 0, 10**9)
    assert [run.stop - run.start for run in found] == [MAX_ROWS, MAX_ROWS, 500]


def test_integer_ids_per_statement_fit_the_limit() -> None:
    # the purge's chunks of ids: 20-digit BIGINTs and ", " after 2,048 bytes of text
    assert ids_per_statement(64 * 2**20) == (64 * 2**20 - 2048) // 22
    assert ids_per_statement(1024 * 1024 - 1024) * 22 + 2048 <= 1024 * 1024 - 1024
    assert ids_per_statement(100) == 1


def test_no_rows_no_statement() -> None:
    assert list(runs([], [], 50, 1000)) == []


def test_utf8_len_counts_bytes() -> None:
    assert [utf8_len(t) for t in ("", "abc", "é", "漢", "😀", "a\\'")] == [0, 3, 2, 3, 4, 3]


@given(
    sizes=st.lists(st.integers(0, 3000), max_size=200),
    fixed=st.integers(0, 500),
    limit=st.integers(3600, 20_000),
    max_rows=st.integers(1, 50),
)
def test_runs_cover_every_row_once_in_order_within_bounds(
    sizes: list[int], fixed: int, limit: int, max_rows: int
) -> None:
    keys = [str(n) for n in range(len(sizes))]
    covered: list[str] = []
    for run in runs(sizes, keys, fixed, limit, max_rows=max_rows):
        part = sizes[run]
        size = fixed + sum(part) + 2 * (len(part) - 1)
        assert 1 <= len(part) <= max_rows
        assert size <= limit
        assert len(part) == 1 or size <= FILL * limit
        covered += keys[run]
    assert covered == keys
