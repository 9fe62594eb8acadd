"""exectrack producer: the event contract and the tools services use to emit events.

- ``exectrack.producer.events``: the contract (models, ``parse_event``, ``to_json``, constructors)
- ``exectrack.producer.publisher``: ``Publisher`` (aiokafka), ``ensure_topics``
- ``exectrack.producer.tracking``: ``track``, the lifecycle of one execution as a ``with`` block
- ``exectrack.producer.sync``: ``SyncPublisher`` and ``track_sync`` for code without asyncio
- ``exectrack.producer.testing``: ``InMemoryPublisher`` for the tests of services
- ``exectrack.producer.simulate``: deterministic simulated traffic, ``run_simulation``
- ``exectrack.producer.cli``: ``exectrack-producer emit|simulate``

Nothing here imports ``consumer``. See docs/events.md.
"""
