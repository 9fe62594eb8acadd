"""Consumer-side errors, under producer.errors' single root.

::

    ExectrackError                        retriable = False
     ├── InvalidEvent (producer.errors)   bad input: dead-letter it
     ├── PublishError (producer.errors)   retriable: broker trouble
     ├── StorageError                     retriable = True: database away or busy
     │    ├── ConcurrentInsert            a row we saw absent was inserted: redo
     │    └── ConnectionLost              the connection dropped mid-statement (2006/2013)
     └── PoisonBatch                      retriable = False: rows refused for good
          └── RowTooLarge                 one row over the statement limit (max_allowed_packet)

``consumer.db.repository.classify`` turns SQLAlchemy/driver errors into these,
so the loop decides retry vs isolate by one flag.
"""

from __future__ import annotations

from producer.errors import ExectrackError


class StorageError(ExectrackError):
    retriable = True


class ConcurrentInsert(StorageError):
    """A row we read as absent was inserted meanwhile (another consumer): redo the batch."""


class ConnectionLost(StorageError):
    """The server dropped the connection during a statement (client errors 2006, 2013, 2055).

    An outage looks like this, and so does a statement the server refuses by
    hanging up (larger than ``max_allowed_packet``, or one that crashes it).
    The writer tells them apart by probing the server on a fresh connection
    (consumer.writer): retried while the server is away, isolated when the
    same batch keeps losing its connection to a server that answers.
    """


class PoisonBatch(ExectrackError):
    """The database rejected the rows for a reason retrying cannot fix (data, schema)."""

    retriable = False


class RowTooLarge(PoisonBatch):
    """One row renders larger than one statement may be: the server's ``max_allowed_packet``.

    ``key`` is the row's key (an execution_id, a report_id), ``size`` the
    statement it needs and ``limit`` the bytes allowed (consumer.db.packet).
    """

    def __init__(self, key: str, size: int, limit: int) -> None:
        super().__init__(
            f"the row of {key!r} needs a {size}-byte statement, over the {limit}-byte limit "
            "(the server's max_allowed_packet less protocol overhead, or "
            "EXECTRACK_DB_MAX_STATEMENT_BYTES): the database cannot be sent it"
        )
        self.key, self.size, self.limit = key, size, limit
