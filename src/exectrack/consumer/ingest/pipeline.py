"""One batch written while the next one is decoded.

The consume loop (and replay) spend their CPU in two places: decoding and
folding a fetched batch, and rendering its statements; in between, the
process waits for the database (each statement's server time, the commit's
log flush) and the broker (dead letters, the offset commit). Without overlap
that wait is idle time for the process: measured at about 30% of the wall
clock (docs/performance.md).

``WritePipeline`` keeps at most one write in flight, as an asyncio task,
while the caller fetches and decodes the next batch (``decode_yielding``
hands the loop back often enough for the write to proceed). Writes stay
strictly sequential, so offsets are committed in order, one transaction at a
time, exactly as before; only the decoding moves earlier. ``submit`` first
waits for the write in flight, and re-raises whatever it raised.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


class WritePipeline:
    """At most one write in flight (an asyncio task) while the caller decodes the next batch.

    ``submit(write)`` waits for the previous write and re-raises its
    exception; ``settle()`` waits for the last one; ``cancel()`` abandons it
    (rolled back, so its batch is read again).
    """

    def __init__(self) -> None:
        self._in_flight: asyncio.Task[None] | None = None

    @property
    def busy(self) -> bool:
        """True while a write is in flight (submitted, not finished)."""
        return self._in_flight is not None and not self._in_flight.done()

    async def settle(self) -> None:
        """Wait for the write in flight, if any; its exception is raised here."""
        task, self._in_flight = self._in_flight, None
        if task is not None:
            await task

    async def submit(self, write: Coroutine[Any, Any, None]) -> None:
        """Wait for the previous write, then start this one in the background.

        Args:
            write: the coroutine that writes one batch and commits its offsets;
                closed unstarted when the previous write failed.

        Raises:
            BaseException: whatever the previous write raised.
        """
        try:
            await self.settle()
        except BaseException:
            write.close()  # never started: no "coroutine was never awaited" warning
            raise
        self._in_flight = asyncio.create_task(write)

    async def cancel(self) -> None:
        """Abandon the write in flight: its transaction rolls back, nothing is committed,
        so the batch is read again (by this consumer or the partitions' next owner)."""
        task, self._in_flight = self._in_flight, None
        if task is None:
            return
        task.cancel()
        await asyncio.wait([task])  # never raises the task's own error
        if not task.cancelled():
            task.exception()  # retrieved: the caller is already handling a failure
