"""exectrack producer: the event contract and the tools services use to emit events.

- ``producer.events``: the contract (models, ``parse_event``, ``to_json``, constructors)
- ``producer.publisher``: ``Publisher`` (aiokafka), ``ensure_topics``
- ``producer.tracking``: ``track``, the lifecycle of one execution as a ``with`` block
- ``producer.sync``: ``SyncPublisher`` and ``track_sync`` for code without asyncio
- ``producer.testing``: ``InMemoryPublisher`` for the tests of services
- ``producer.simulate``: deterministic simulated traffic, ``run_simulation``
- ``producer.cli``: ``exectrack-producer emit|simulate``

Nothing here imports ``consumer``. See docs/events.md.
"""
