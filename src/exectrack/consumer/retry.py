"""Retrying: the consumer's one backoff and one retry loop (on tenacity).

An attempt's failure is first turned into one of exectrack's errors by the
caller's ``classify`` (for the database, exectrack.consumer.db.repository.classify,
by the MySQL error code); its ``retriable`` flag decides (exectrack.consumer.errors):

- not retriable (``PoisonBatch``, a bug): raised at once, never retried;
- retriable (``StorageError``: the database away or busy, a deadlock, a lost
  connection): tried again after a ``Backoff`` wait, until ``attempts`` are
  spent (the last failure is raised) or ``keep_going()`` turns false (``Stopped``).

``keep_going()`` is asked after each retriable failure, before the wait; a wait
already begun is not cut short by a stop (it lasts at most ``Backoff.max_s``),
and cancelling the task ends it at once. The callers: the batch writer
(exectrack.consumer.ingest.writer: forever, while the consume loop keeps going),
the purge's chunks and the reapply's batches (exectrack.consumer.retention: a few
attempts per short transaction); the dead-letter sender (exectrack.consumer.dlq.send)
waits with the same ``Backoff``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import NoReturn, TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

from exectrack.consumer.errors import Stopped
from exectrack.producer.errors import ExectrackError

__all__ = ["JOB_ATTEMPTS", "JOB_BACKOFF", "Backoff", "OnRetry", "retry"]

T = TypeVar("T")


@dataclass(frozen=True)
class Backoff:
    """Capped exponential backoff with jitter, in seconds.

    ``initial_s`` before the first retry, doubled before each next one, at most
    ``max_s``; each wait is that times a random factor in ``[1 - jitter, 1 + jitter]``
    (consumers retrying the same outage do not come back in step).
    """

    initial_s: float
    max_s: float = math.inf
    jitter: float = 0.2

    def delay(self, retry: int) -> float:
        """Seconds before retry number ``retry`` (1: the first), jitter aside."""
        return min(self.initial_s * 2.0 ** min(retry - 1, 1000), self.max_s)

    def wait(self, retry: int) -> float:
        """Seconds to sleep before retry number ``retry``: ``delay(retry)`` with its jitter."""
        delay = self.delay(retry)
        if not self.jitter:
            return delay
        return delay * random.uniform(1 - self.jitter, 1 + self.jitter)  # noqa: S311 - jitter


JOB_ATTEMPTS = 5
"""Attempts of one short transaction of a retention job (a purge chunk, a reapply batch)."""
JOB_BACKOFF = Backoff(initial_s=0.05, jitter=0.0)
"""Their waits: 0.05, 0.1, 0.2, 0.4 s (a deadlock, a lock wait timeout, a lost connection)."""

OnRetry = Callable[[ExectrackError, int, float], None]
"""Called before each wait with (the failure, the retry's number from 1, ``Backoff.delay``)."""


async def retry(
    attempt: Callable[[], Awaitable[T]],
    *,
    classify: Callable[[Exception], ExectrackError],
    backoff: Backoff,
    attempts: int | None = None,
    keep_going: Callable[[], bool] | None = None,
    on_retry: OnRetry | None = None,
) -> T:
    """What ``attempt()`` returns, trying it again while it fails in a retriable way.

    Arguments:
        attempt: one try of the operation (a transaction of its own each time).
        classify: an exception ``attempt`` raised -> exectrack's error for it
            (the exception itself when it already is one).
        backoff: the waits between attempts.
        attempts: at most this many tries (None: no limit).
        keep_going: asked after each retriable failure; false ends the retries
            (None: always true).
        on_retry: called before each wait (logs, counters), see ``OnRetry``.

    Raises:
        the classified error of a failure that is not retriable, or of the last
        one when ``attempts`` are spent, caused by what ``attempt`` raised;
        ``Stopped`` (caused by the last failure) when ``keep_going()`` turned false.
    """

    async def classified() -> T:
        try:
            return await attempt()
        except Exception as exc:
            error = classify(exc)
            if error is exc:
                raise
            raise error from exc

    def spent(state: RetryCallState) -> bool:
        return (attempts is not None and state.attempt_number >= attempts) or (
            keep_going is not None and not keep_going()
        )

    def give_up(state: RetryCallState) -> NoReturn:
        error = _failure(state)
        if attempts is not None and state.attempt_number >= attempts:
            raise error
        raise Stopped(str(error)) from error

    def before_wait(state: RetryCallState) -> None:
        if on_retry is not None:
            on_retry(_failure(state), state.attempt_number, backoff.delay(state.attempt_number))

    retrying = AsyncRetrying(
        retry=retry_if_exception(lambda exc: isinstance(exc, ExectrackError) and exc.retriable),
        wait=lambda state: backoff.wait(state.attempt_number),
        stop=spent,
        retry_error_callback=give_up,
        before_sleep=before_wait,
    )
    result: T = await retrying(classified)
    return result


def _failure(state: RetryCallState) -> ExectrackError:
    """The classified error of the attempt that just failed."""
    error = state.outcome.exception() if state.outcome is not None else None
    if not isinstance(error, ExectrackError):  # only retriable ExectrackErrors get here
        raise TypeError(f"not a classified failure: {error!r}")
    return error
