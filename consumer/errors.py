"""Consumer-side errors, under producer.errors' single root.

::

    ExectrackError                        retriable = False
     ├── InvalidEvent (producer.errors)   bad input: dead-letter it
     ├── PublishError (producer.errors)   retriable: broker trouble
     ├── StorageError                     retriable = True: database away or busy
     │    └── ConcurrentInsert            a row we saw absent was inserted: redo
     └── PoisonBatch                      retriable = False: rows refused for good

``consumer.db.repository.classify`` turns SQLAlchemy/driver errors into these,
so the loop decides retry vs isolate by one flag.
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
