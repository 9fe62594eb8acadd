"""Publishing and tracking for code without asyncio (threads, WSGI, scripts).

::

    with SyncPublisher() as pub:                        # settings from the environment
        with track_sync(pub, report_id="vpc-inventory") as run:
            run.progress(records_processed=10)
            run.set(result_summary={"vpcs": 12})

One ``SyncPublisher`` owns one background thread running one event loop, on
which its async ``Publisher`` lives; every call hands a coroutine to that
loop and blocks until it is done (or ``timeout`` seconds pass: then a
retriable ``PublishError``). It is safe to share between threads: calls are
serialised by the loop. Create one per process and ``stop()`` it (or use
``with``) before exiting: the thread is a daemon, so messages still queued
when the interpreter exits without ``stop()`` are lost.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar

from exectrack.producer.errors import PublishError
from exectrack.producer.events import Event, ExecutionEvent, TriggerType
from exectrack.producer.publisher import Publisher
from exectrack.producer.settings import KafkaSettings, ProducerSettings
from exectrack.producer.tracking import OnPublishError, Run, Tracking, track

__all__ = ["AsyncPublisher", "SyncPublisher", "SyncRun", "SyncTracking", "track_sync"]

T = TypeVar("T")


class AsyncPublisher(Protocol):
    """What ``SyncPublisher`` drives: ``Publisher`` or ``InMemoryPublisher``."""

    async def start(self) -> None:
        """Connect (``Publisher.start``)."""

    async def stop(self) -> None:
        """Flush, then disconnect (``Publisher.stop``)."""

    async def flush(self) -> None:
        """Wait for every message sent so far (``Publisher.flush``)."""

    async def publish(self, event: Event, /) -> Any:
        """Send one event and wait for the acknowledgement (``Publisher.publish``)."""


class SyncPublisher:
    """A blocking facade over an async publisher, running on its own loop thread.

    ``publisher`` is the async one to drive (default: a ``Publisher`` built
    from ``settings``, ``topic`` and ``source``, as ``Publisher`` takes them).
    ``timeout`` (seconds) bounds every call; past it the call raises a
    retriable ``PublishError`` (the coroutine is cancelled).
    """

    def __init__(
        self,
        publisher: AsyncPublisher | None = None,
        settings: KafkaSettings | ProducerSettings | None = None,
        *,
        topic: str | None = None,
        source: str | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.publisher: AsyncPublisher = publisher or Publisher(
            settings, topic=topic, source=source
        )
        self.source: str | None = source or getattr(self.publisher, "source", None)
        self.timeout = timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the loop thread and the publisher on it (idempotent).

        Raises:
            StartFailed: no broker answered (``Publisher.start``); the thread is stopped.
            PublishError: no answer within ``timeout`` seconds.
        """
        if self._loop is not None:
            return
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="exectrack-publisher", daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        try:
            self.run(self.publisher.start())
        except BaseException:
            self._close_loop()
            raise

    def stop(self) -> None:
        """Flush and stop the publisher, then the loop and its thread."""
        if self._loop is None:
            return
        try:
            self.run(self.publisher.stop())
        finally:
            self._close_loop()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run a coroutine on the publisher's loop and wait for its result.

        Args:
            coroutine: run on the loop thread; closed unrun when not started.
            timeout: seconds to wait (default: the instance's ``timeout``).

        Returns:
            The coroutine's result; its exception is raised here.

        Raises:
            PublishError: retriable, no result within the timeout (the coroutine
                is cancelled).
            RuntimeError: not started.
        """
        loop = self._loop
        if loop is None:
            coroutine.close()
            raise RuntimeError("SyncPublisher is not started: use `with SyncPublisher(...)`")
        future = asyncio.run_coroutine_threadsafe(coroutine, loop)
        wait = self.timeout if timeout is None else timeout
        try:
            return future.result(wait)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise PublishError(f"no answer within {wait} s", retriable=True) from None

    def publish(self, event: Event) -> Any:
        """Publish one event and wait for the acknowledgement.

        Returns:
            What the async publisher's ``publish`` returns (a ``Delivery``).

        Raises:
            PublishError: not stored (``Publisher.publish``), or no answer within ``timeout``.
        """
        return self.run(self.publisher.publish(event))

    def flush(self) -> None:
        """Wait for every message sent so far.

        Raises:
            PublishError: one of them failed since the last flush (``Publisher.flush``).
        """
        self.run(self.publisher.flush())

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _close_loop(self) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


class _OnLoop:
    """Adapts the async publisher for ``Run``, which already runs on the loop thread."""

    def __init__(self, publisher: SyncPublisher) -> None:
        self._publisher = publisher
        self.source = publisher.source

    async def publish(self, event: ExecutionEvent, /) -> object:
        return await self._publisher.publisher.publish(event)


class SyncRun:
    """The blocking face of ``exectrack.producer.tracking.Run``."""

    def __init__(self, run: Run, publisher: SyncPublisher) -> None:
        self.run = run
        self._publisher = publisher

    @property
    def execution_id(self) -> str:
        """The execution's id (``Run.execution_id``)."""
        return self.run.execution_id

    @property
    def publish_errors(self) -> int:
        """Events of this execution that failed to publish (``Run.publish_errors``)."""
        return self.run.publish_errors

    def progress(self, records_processed: int | None = None, **fields: Any) -> None:
        """Publish a ``progress`` event and wait for it (``Run.progress``: same arguments)."""
        self._publisher.run(self.run.progress(records_processed, **fields))

    def set(self, **fields: Any) -> None:
        """Fields for the terminal event (``Run.set``); nothing is sent now."""
        self.run.set(**fields)


class SyncTracking:
    """The context manager ``track_sync`` returns; ``with`` gives the ``SyncRun``."""

    def __init__(self, tracking: Tracking, publisher: SyncPublisher) -> None:
        self._tracking = tracking
        self._publisher = publisher

    def __enter__(self) -> SyncRun:
        self._publisher.run(self._tracking.__aenter__())
        return SyncRun(self._tracking.run, self._publisher)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._publisher.run(self._tracking.__aexit__(exc_type, exc, tb))


def track_sync(
    publisher: SyncPublisher,
    *,
    report_id: str,
    execution_id: str | None = None,
    trigger_type: TriggerType | str | None = None,
    started_by: int | None = None,
    execution_parameters: dict[str, Any] | None = None,
    source: str | None = None,
    on_publish_error: OnPublishError = "log",
) -> SyncTracking:
    """``exectrack.producer.tracking.track`` for blocking code; same events, same arguments."""
    tracking = track(
        _OnLoop(publisher),
        report_id=report_id,
        execution_id=execution_id,
        trigger_type=trigger_type,
        started_by=started_by,
        execution_parameters=execution_parameters,
        source=source,
        on_publish_error=on_publish_error,
    )
    return SyncTracking(tracking, publisher)
