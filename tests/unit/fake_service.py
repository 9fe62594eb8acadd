"""A tiny "service" as users write them: it builds its own publisher, nothing is passed in."""

from __future__ import annotations

from exectrack.producer.publisher import Publisher  # bound at import time, before any test runs
from exectrack.producer.sync import SyncPublisher, track_sync
from exectrack.producer.tracking import track

SOURCE = "/services/fake"


class ScanFailed(Exception):
    pass


async def run_report(rows: int = 3, *, fail: bool = False) -> str:
    """One tracked run through the service's own ``Publisher``; its execution_id."""
    async with (
        Publisher(source=SOURCE) as pub,
        track(pub, report_id="fake-report", trigger_type="scheduled") as run,
    ):
        await run.progress(records_processed=rows)
        if fail:
            raise ScanFailed(run.execution_id)
        run.set(result_summary={"rows": rows})
    return run.execution_id


def run_report_sync(rows: int = 2) -> str:
    """The same, for code without asyncio."""
    with (
        SyncPublisher(source=SOURCE, timeout=10) as pub,
        track_sync(pub, report_id="fake-report") as run,
    ):
        run.progress(records_processed=rows)
    return run.execution_id
