"""Retry or isolate: the database error classification the writer relies on."""

from __future__ import annotations

import pymysql
import pytest
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, ProgrammingError

from exectrack.consumer.db.repository import classify
from exectrack.consumer.errors import ConcurrentInsert, ConnectionLost, PoisonBatch, StorageError


def wrapped(kind: type[DBAPIError], code: int, message: str) -> Exception:
    orig_kind: type[Exception] = {
        OperationalError: pymysql.err.OperationalError,
        IntegrityError: pymysql.err.IntegrityError,
        ProgrammingError: pymysql.err.ProgrammingError,
    }[kind]  # type: ignore[index]
    return kind("INSERT ...", {}, orig_kind(code, message))


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (wrapped(IntegrityError, 1062, "Duplicate entry 'e1'"), ConcurrentInsert),
        (wrapped(OperationalError, 1213, "Deadlock found"), StorageError),
        (wrapped(OperationalError, 1205, "Lock wait timeout exceeded"), StorageError),
        (wrapped(OperationalError, 2003, "Can't connect to MySQL server"), StorageError),
        # lost mid-statement: retried, and the writer probes the server (ingest.writer)
        (wrapped(OperationalError, 2013, "Lost connection to MySQL server"), ConnectionLost),
        (wrapped(OperationalError, 2006, "MySQL server has gone away"), ConnectionLost),
        (wrapped(OperationalError, 2055, "Lost connection to server at 'reading'"), ConnectionLost),
        # a packet (statement) or a value over max_allowed_packet: the rows, not the server
        (
            wrapped(OperationalError, 1153, "Got a packet bigger than 'max_allowed_packet'"),
            PoisonBatch,
        ),
        (
            wrapped(
                OperationalError,
                1301,
                "Result of json_binary::serialize() was larger than max_allowed_packet",
            ),
            PoisonBatch,
        ),
        (wrapped(OperationalError, 1290, "--read-only"), StorageError),
        (wrapped(OperationalError, 1644, "refused by trigger"), PoisonBatch),
        (wrapped(OperationalError, 1366, "Incorrect string value"), PoisonBatch),
        (wrapped(IntegrityError, 1452, "foreign key constraint fails"), PoisonBatch),
        # a misconfigured database is retried, never a reason to dead-letter
        (wrapped(ProgrammingError, 1146, "Table doesn't exist"), StorageError),
        (wrapped(OperationalError, 1049, "Unknown database"), StorageError),
        (wrapped(OperationalError, 1045, "Access denied for user"), StorageError),
        (wrapped(OperationalError, 1054, "Unknown column"), StorageError),
        (wrapped(OperationalError, 1406, "Data too long for column"), PoisonBatch),
        (ConnectionRefusedError(111, "refused"), StorageError),
        (ValueError("a bug"), PoisonBatch),
    ],
)
def test_classification(error: Exception, expected: type[Exception]) -> None:
    result = classify(error)
    assert type(result) is expected
    assert result.__cause__ is error
    assert "INSERT" not in str(result)  # the server's words, not the statement


def test_retriable_flag_is_what_the_loop_reads() -> None:
    assert classify(wrapped(OperationalError, 1213, "Deadlock")).retriable
    assert classify(wrapped(OperationalError, 2013, "Lost connection")).retriable
    assert not classify(wrapped(OperationalError, 1644, "no")).retriable
