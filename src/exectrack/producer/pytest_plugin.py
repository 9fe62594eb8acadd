"""The pytest fixture ``exectrack_events``, for the tests of a service that emits events.

Enable it in the service's ``conftest.py`` (there is deliberately no ``pytest11``
entry point, so it loads only where it is asked for)::

    pytest_plugins = ["exectrack.producer.pytest_plugin"]

    async def test_report_emits_its_lifecycle(exectrack_events):
        execution_id = await my_service.run_report()   # does `async with Publisher()`
        assert exectrack_events.types_for(execution_id) == [PENDING, STARTED, COMPLETED]

The fixture is ``exectrack.producer.testing.captured_events`` around the test: every
``Publisher`` the test's code starts publishes into the yielded
``InMemoryPublisher``, with no network; the real behaviour is back after the
test, also when it fails.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from exectrack.producer.testing import InMemoryPublisher, captured_events

__all__ = ["exectrack_events"]


@pytest.fixture
def exectrack_events() -> Iterator[InMemoryPublisher]:
    """The ``InMemoryPublisher`` every ``Publisher`` started during the test publishes into."""
    with captured_events() as memory:
        yield memory
