"""The one retry helper (exectrack.consumer.retry): what is retried, how long, what stops it."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable

import pytest

from exectrack.consumer.db.repository import classify
from exectrack.consumer.errors import PoisonBatch, Stopped, StorageError
from exectrack.consumer.retry import JOB_ATTEMPTS, JOB_BACKOFF, Backoff, retry
from exectrack.producer.errors import ExectrackError

NO_WAIT = Backoff(initial_s=0.0, jitter=0.0)


def failing(
    *errors: BaseException, result: str = "done"
) -> tuple[list[int], Callable[[], Awaitable[str]]]:
    """An attempt that raises ``errors`` one per call, then returns ``result``."""
    calls = [0]

    async def attempt() -> str:
        calls[0] += 1
        if calls[0] <= len(errors):
            raise errors[calls[0] - 1]
        return result

    return calls, attempt


def test_backoff_doubles_up_to_its_cap() -> None:
    backoff = Backoff(initial_s=0.2, max_s=1.0, jitter=0.0)
    assert [backoff.delay(n) for n in range(1, 6)] == [0.2, 0.4, 0.8, 1.0, 1.0]
    assert [backoff.wait(n) for n in range(1, 6)] == [0.2, 0.4, 0.8, 1.0, 1.0]
    assert Backoff(0.2, 30.0).delay(100_000) == 30.0  # no overflow after a long outage
    assert [JOB_BACKOFF.wait(n) for n in range(1, JOB_ATTEMPTS)] == [0.05, 0.1, 0.2, 0.4]
    assert math.isinf(JOB_BACKOFF.max_s)


def test_backoff_jitter_stays_within_its_band() -> None:
    backoff = Backoff(initial_s=1.0, max_s=10.0)  # the loop's: +-20 %
    waits = [backoff.wait(3) for _ in range(200)]
    assert all(3.2 <= w <= 4.8 for w in waits)
    assert len(set(waits)) > 1


async def test_retriable_failures_are_retried_and_reported() -> None:
    calls, attempt = failing(StorageError("busy"), StorageError("deadlock"))
    seen: list[tuple[str, int, float]] = []
    backoff = Backoff(initial_s=0.001, jitter=0.0)
    result = await retry(
        attempt,
        classify=classify,
        backoff=backoff,
        attempts=3,
        on_retry=lambda error, n, delay: seen.append((str(error), n, delay)),
    )
    assert (result, calls[0]) == ("done", 3)
    assert seen == [("busy", 1, 0.001), ("deadlock", 2, 0.002)]


async def test_the_last_failure_is_raised_when_the_attempts_are_spent() -> None:
    calls, attempt = failing(*(StorageError(f"busy {n}") for n in range(9)))
    with pytest.raises(StorageError, match="busy 4"):
        await retry(attempt, classify=classify, backoff=NO_WAIT, attempts=5)
    assert calls[0] == 5


async def test_a_failure_that_is_not_retriable_is_raised_at_once_classified() -> None:
    cause = ValueError("a bug, or a row the database refuses")
    calls, attempt = failing(cause)
    with pytest.raises(PoisonBatch) as raised:
        await retry(attempt, classify=classify, backoff=NO_WAIT, attempts=5)
    assert calls[0] == 1
    assert raised.value.__cause__ is cause


async def test_keep_going_false_ends_the_retries_with_stopped() -> None:
    calls, attempt = failing(*(StorageError("database unavailable") for _ in range(9)))
    answers = iter([True, True, False])
    with pytest.raises(Stopped, match="database unavailable") as raised:
        await retry(
            attempt,
            classify=classify,
            backoff=NO_WAIT,
            keep_going=lambda: next(answers),
        )
    assert calls[0] == 3
    assert isinstance(raised.value.__cause__, StorageError)
    assert isinstance(raised.value, ExectrackError)
    assert not raised.value.retriable


async def test_cancellation_is_not_retried() -> None:
    calls, attempt = failing(asyncio.CancelledError())
    with pytest.raises(asyncio.CancelledError):
        await retry(attempt, classify=classify, backoff=NO_WAIT)
    assert calls[0] == 1
