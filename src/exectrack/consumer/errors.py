"""Consumer-side errors, under exectrack.producer.errors' single root.

::

    ExectrackError                        retriable = False
     ├── InvalidEvent (exectrack.producer.errors)   bad input: dead-letter it
     ├── PublishError (exectrack.producer.errors)   retriable: broker trouble
     ├── ConnectFailed (exectrack.producer.errors)  credentials or TLS refused: one line, exit 1
     ├── StorageError                     retriable = True: database away or busy
     │    ├── ConcurrentInsert            a row we saw absent was inserted: redo
     │    └── ConnectionLost              the connection dropped mid-statement (2006/2013)
     ├── PoisonBatch                      retriable = False: rows refused for good
     │    └── RowTooLarge                 one row over the statement limit (max_allowed_packet)
     ├── Stopped                          told to stop while a retriable failure persisted
     ├── DatabaseTlsError (ValueError)    the database TLS settings cannot be used
     ├── BadPeriod (ValueError)           a retention period that is no duration >= 0
     ├── PolicyFileError (exectrack.consumer.retention.policy_file)  a bad policy file
     ├── ReplayError (exectrack.consumer.replay.report)   a replay cannot run as asked
     ├── VerifyError (exectrack.consumer.replay.verify)   a comparison cannot be made
     ├── BadQuery (ValueError)            a read-side query argument out of its domain
     │    └── BadCursor                   a pagination cursor this query did not issue
     └── StartupFailed                    the service cannot start as configured
          ├── HealthServerFailed          EXECTRACK_HEALTH_PORT in use, host not ours
          └── TopicMissing                EXECTRACK_CREATE_TOPICS=false, no such topic

``exectrack.consumer.db.repository.classify`` turns SQLAlchemy/driver errors into these,
so the loop decides retry vs isolate by one flag (exectrack.consumer.retry). ``StartupFailed``
ends ``exectrack-consumer consume`` with one log line (its ``event`` and message)
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


class Stopped(ExectrackError):
    """``keep_going()`` turned false while a retriable failure persisted (exectrack.consumer.retry).

    Raised by the batch writer (exectrack.consumer.ingest.writer) and the dead-letter
    sender (exectrack.consumer.dlq.send); ``str()`` is the last failure. Nothing may be
    committed past the batch: the next owner of its partitions reads it again.
    """


class DatabaseTlsError(ExectrackError, ValueError):
    """The TLS settings cannot be used (an unreadable file), or TLS was required and not had.

    Raised by exectrack.consumer.db.engine (``tls_context``, and on each new connection
    when ``EXECTRACK_DATABASE__SSL_MODE`` requires TLS); ``str()`` names the setting.
    """


class BadPeriod(ExectrackError, ValueError):
    """A retention period that is not a duration, or is negative.

    Raised by ``exectrack.consumer.retention.policy.parse_period``; a ``ValueError``
    too, so pydantic reports it as a settings validation error.
    """


class BadQuery(ExectrackError, ValueError):
    """A read-side query was given an argument outside its domain (exectrack.consumer.read.queries).

    ``argument`` names the argument (``limit``, ``sort``, ``bucket_s``...); ``str()``
    starts with it, so the CLI and the HTTP API can name the option or parameter.
    A ``ValueError`` too.
    """

    def __init__(self, argument: str, problem: str) -> None:
        self.argument = argument
        super().__init__(f"{argument}: {problem}")


class BadCursor(BadQuery):
    """A pagination cursor that is not one ``list_executions`` issued for this sort.

    Malformed base64url, wrong JSON shape, or a cursor of another sort key:
    ``argument`` is ``"cursor"``.
    """

    def __init__(self, problem: str) -> None:
        super().__init__("cursor", problem)


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
