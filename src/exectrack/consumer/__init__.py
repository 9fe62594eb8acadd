"""exectrack consumer: folds execution events into MySQL rows.

Needs the ``consumer`` extra (``pip install 'exectrack[consumer]'``); importing
it without raises ``ImportError`` whose message names what to install.

- ``ingest/``: where an event becomes a row (decode, fold, write)
- ``dlq/``: dead letters (build, send, the topic's limits)
- ``retention/``: the policy, purge, reap, reapply, their jobs and commands
- ``replay/``: rebuild the tables from the topic, verify against the live ones
- ``read/``: what people use to see executions
- ``db/``: the schema's models, the engine, the statements, locks and migrations
- ``service``: the consume loop; ``cli``: ``exectrack-consumer``; ``settings``;
  ``errors``; ``retry`` (the one backoff and retry loop); ``kafka`` (the topic
  readers); ``health``, ``metrics``, ``logs``, ``failures`` (one-line failures
  at the command line)
"""

from exectrack._extras import INSTALL_HINT, missing_consumer_modules

if _missing := missing_consumer_modules():
    raise ImportError(
        f"exectrack.consumer needs the consumer extra ({', '.join(_missing)} missing): "
        f"{INSTALL_HINT}"
    )

__all__ = [
    "cli",
    "db",
    "dlq",
    "errors",
    "health",
    "ingest",
    "kafka",
    "logs",
    "metrics",
    "read",
    "replay",
    "retention",
    "retry",
    "service",
    "settings",
]
