"""Consumer-side errors, under producer.errors' single root.

::

    ExectrackError                        retriable = False
     ├── InvalidEvent (producer.errors)   bad input: dead-letter it
     ├── PublishError (producer.errors)   retriable: broker trouble
     ├── StorageError                     retriable = True: database away or busy
     │    └── ConcurrentInsert            a row we saw absent was inserted: redo
     ├── PoisonBatch                      retriable = False: rows refused for good
     └── StartupFailed                    the service cannot start as configured
          ├── HealthServerFailed          EXECTRACK_HEALTH_PORT in use, host not ours
          └── TopicMissing                EXECTRACK_CREATE_TOPICS=false, no such topic

``consumer.db.repository.classify`` turns SQLAlchemy/driver errors into these,
so the loop decides retry vs isolate by one flag. ``StartupFailed`` ends
``exectrack-consumer consume`` with one log line (its ``event`` and message)
and exit status 1.
"""

from __future__ import annotations

from producer.errors import ExectrackError


class StorageError(ExectrackError):
    retriable = True


class ConcurrentInsert(StorageError):
    """A row we read as absent was inserted meanwhile (another consumer): redo the batch."""


class PoisonBatch(ExectrackError):
    """The database rejected the rows for a reason retrying cannot fix (data, schema)."""

    retriable = False


class StartupFailed(ExectrackError):
    """The service cannot start as configured; retrying with the same settings will not help.

    ``event`` names the log event the command-line boundary writes; ``str()`` is
    the one-line cause, naming the setting to change. Never carries a secret.
    """

    event = "startup_failed"


class HealthServerFailed(StartupFailed):
    """The health/metrics HTTP server could not listen (``EXECTRACK_HEALTH_HOST``/``_PORT``)."""

    event = "health_server_failed"


class TopicMissing(StartupFailed):
    """The event topic does not exist and ``EXECTRACK_CREATE_TOPICS=false`` forbids creating it."""

    event = "topic_missing"
