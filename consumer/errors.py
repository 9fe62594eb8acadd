"""Consumer-side errors, under exectrack.producer.errors' single root.

::

    ExectrackError                        retriable = False
     ├── InvalidEvent (exectrack.producer.errors)   bad input: dead-letter it
     ├── PublishError (exectrack.producer.errors)   retriable: broker trouble
     ├── StorageError                     retriable = True: database away or busy
     │    ├── ConcurrentInsert            a row we saw absent was inserted: redo
     │    └── ConnectionLost              the connection dropped mid-statement (2006/2013)
     ├── PoisonBatch                      retriable = False: rows refused for good
     │    └── RowTooLarge                 one row over the statement limit (max_allowed_packet)
     └── StartupFailed                    the service cannot start as configured
          ├── HealthServerFailed          EXECTRACK_HEALTH_PORT in use, host not ours
          └── TopicMissing                EXECTRACK_CREATE_TOPICS=false, no such topic

``exectrack.consumer.db.repository.classify`` turns SQLAlchemy/driver errors into these,
so the loop decides retry vs isolate by one flag. ``StartupFailed`` ends
``exectrack-consumer consume`` with one log line (its ``event`` and message)
and exit status 1.
"""

from __future__ import annotations

from collections.abc import Mapping

from exectrack.producer.errors import ExectrackError


class StorageError(ExectrackError):
    """The database is away or busy (lost connection, lock wait timeout, deadlock): retry.

    ``exectrack.consumer.db.repository.classify`` returns it for the MySQL errors
    that a retry of the same transaction can get past.
    """

    retriable = True


class ConcurrentInsert(StorageError):
    """A row we read as absent was inserted meanwhile (another consumer): redo the batch."""


class ConnectionLost(StorageError):
    """The server dropped the connection during a statement (client errors 2006, 2013, 2055).

    An outage looks like this, and so does a statement the server refuses by
    hanging up (larger than ``max_allowed_packet``, or one that crashes it).
    The writer tells them apart by probing the server on a fresh connection
    (exectrack.consumer.ingest.writer): retried while the server is away, isolated when the
    same batch keeps losing its connection to a server that answers.
    """


class PoisonBatch(ExectrackError):
    """The database rejected the rows for a reason retrying cannot fix (data, schema)."""

    retriable = False


class RowTooLarge(PoisonBatch):
    """Rows that render larger than one statement may be: the server's ``max_allowed_packet``.

    ``sizes`` maps each such row's key (an execution_id, a report_id) to the
    bytes of the statement it needs alone; ``limit`` is the bytes allowed
    (exectrack.consumer.db.packet).
    """

    def __init__(self, sizes: Mapping[str, int], limit: int) -> None:
        self.sizes, self.limit = dict(sizes), limit
        reasons = [self.reason(key) for key in list(self.sizes)[:3]]
        more = len(self.sizes) - len(reasons)
        super().__init__("; ".join(reasons) + (f"; and {more} more rows" if more else ""))

    def reason(self, key: str) -> str:
        """Why the row of ``key`` cannot be written (a dead letter's error)."""
        return (
            f"the row of {key!r} needs a {self.sizes[key]}-byte statement, over the "
            f"{self.limit}-byte limit (the server's max_allowed_packet less protocol "
            "overhead, or EXECTRACK_DB_MAX_STATEMENT_BYTES): the database cannot be sent it"
        )


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
