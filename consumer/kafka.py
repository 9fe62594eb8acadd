"""The one place an ``AIOKafkaConsumer`` is built: every reader of the topic reads committed.

CONTRACT.md, Transport: "Only committed records count: an event inside an aborted
Kafka transaction never happened (readers use ``read_committed``)". A transactional
producer (aiokafka ``transactional_id``, a Java or librdkafka client with
exactly-once on) writes its records to the log before it decides; an aborted
transaction's records stay in the log, followed by an abort marker. A consumer
with Kafka's default ``isolation_level=read_uncommitted`` returns them like any
other record, so the fold would apply them and the dead-letter path would
dead-letter the invalid ones. With ``read_committed`` (KIP-98) the broker returns
records only up to the partition's last stable offset (LSO: the first offset of
its oldest undecided transaction) and the client drops aborted batches and the
transaction markers.

So the consume loop, replay, the benchmarks and the test helpers all get their
consumer from :func:`reader`; tests/unit/test_kafka_readers.py fails if any
``AIOKafkaConsumer(...)`` is built anywhere else in the code base.

Consequences, written down in docs/design.md ("Transactions"):

- an open transaction holds its partition at the LSO: records after it, even
  non-transactional ones, are not returned until the transaction commits or
  aborts (at the latest when the broker aborts it after the producer's
  ``transaction.timeout.ms``); ``exectrack_transaction_held_records`` shows it;
- ``end_offsets`` of a read_committed consumer are LSOs, so "the end" of a
  partition (replay's plan, the tests' drain checks) is what can be read.
"""

from __future__ import annotations

from typing import Any, Final

from aiokafka import AIOKafkaConsumer

__all__ = ["ISOLATION_LEVEL", "reader"]

ISOLATION_LEVEL: Final = "read_committed"


def reader(**options: Any) -> AIOKafkaConsumer:
    """An ``AIOKafkaConsumer`` that reads only committed records.

    Arguments:
        options: any ``AIOKafkaConsumer`` keyword argument (``bootstrap_servers``,
            ``group_id``, ``enable_auto_commit``, the ``KafkaSettings.client_kwargs()``
            ...) except ``isolation_level``.

    Returns:
        The consumer, not started (``await consumer.start()``, as aiokafka's own).

    Raises:
        TypeError: ``isolation_level`` was passed: it is not a caller's choice.
    """
    if "isolation_level" in options:
        raise TypeError(
            "isolation_level is always read_committed (CONTRACT.md, Transport): "
            "an aborted transaction's records never happened"
        )
    return AIOKafkaConsumer(isolation_level=ISOLATION_LEVEL, **options)
