"""exectrack: execution lifecycle events on Kafka, folded into MySQL rows.

- ``exectrack.producer``: what a service installs to emit events
  (``pip install exectrack``): the contract, the publisher, ``track``, fakes for tests.
- ``exectrack.consumer``: the service that folds the topic into ``report_executions``,
  its retention, replay and read side (``pip install 'exectrack[consumer]'``).

Nothing is imported here, so ``import exectrack.producer`` never pulls the consumer's
dependencies. The version is the distribution's: ``importlib.metadata.version("exectrack")``.
"""

__all__: list[str] = []
