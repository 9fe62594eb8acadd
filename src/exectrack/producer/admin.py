"""Create the event topic and its dead-letter topic when they are missing."""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from exectrack.producer._kafka import publish_error
from exectrack.producer.errors import PublishError
from exectrack.producer.settings import KafkaSettings

__all__ = ["DLQ_PARTITIONS", "ensure_topics", "missing_topics"]

DLQ_PARTITIONS = 1
"""The dead-letter topic is small and read by people: one partition keeps it in order."""


async def ensure_topics(settings: KafkaSettings, *, timeout_ms: int = 30_000) -> list[str]:
    """Create ``settings.topic`` (``partitions``, ``replication_factor``) and the DLQ if missing.

    Idempotent, also against a concurrent creator (TopicAlreadyExists is
    success). An existing topic is left alone, whatever its partition count.
    Returns the names of the topics this call created. Broker errors raise
    ``PublishError``.
    """
    wanted = {
        settings.topic: settings.partitions,
        settings.dlq_topic: DLQ_PARTITIONS,
    }
    admin = AIOKafkaAdminClient(request_timeout_ms=timeout_ms, **settings.client_kwargs())
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(name, num_partitions=count, replication_factor=settings.replication_factor)
            for name, count in wanted.items()
            if name not in existing
        ]
        if not missing:
            return []
        response = await admin.create_topics(missing, timeout_ms=timeout_ms)
        created = []
        for name, code, *message in response.topic_errors:
            error = for_code(code)
            if code == 0:
                created.append(name)
            elif error is not TopicAlreadyExistsError:
                detail = message[0] if message and message[0] else error.__name__
                raise PublishError(f"could not create topic {name!r}: {detail}", retriable=False)
        return created
    except KafkaError as exc:
        raise publish_error(exc) from exc
    finally:
        await admin.close()


async def missing_topics(
    settings: KafkaSettings, topics: list[str], *, timeout_ms: int = 30_000
) -> list[str]:
    """Which of ``topics`` the cluster does not have (its metadata, via the admin client).

    Broker errors raise ``PublishError``.
    """
    admin = AIOKafkaAdminClient(request_timeout_ms=timeout_ms, **settings.client_kwargs())
    try:
        await admin.start()
        existing = set(await admin.list_topics())
    except KafkaError as exc:
        raise publish_error(exc) from exc
    finally:
        await admin.close()
    return [name for name in topics if name not in existing]
