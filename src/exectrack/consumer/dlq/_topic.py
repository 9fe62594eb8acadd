"""What the broker says of the dead-letter topic: does it exist, is its name valid, and
its ``max.message.bytes`` (the broker's ``message.max.bytes`` unless the topic sets its
own), by ``describe_configs`` (Kafka protocol DescribeConfigs; needs the
DESCRIBE_CONFIGS ACL on the topic where an authorizer is on).

Used by ``exectrack.consumer.dlq.send``: at start, after the broker refuses a letter as too
large, and every ``PROBE_EVERY_S`` while the topic is missing or invalid.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import InvalidTopicError, KafkaError, UnknownTopicOrPartitionError, for_code

PROBE_EVERY_S = 5.0  # a missing or invalid DLQ topic is described again this often
TopicStatus = Literal["ok", "missing", "invalid", "unknown"]


@dataclass
class Topic:
    """The last answer about the topic ``name``.

    ``status``: ``ok``; ``missing`` (UNKNOWN_TOPIC_OR_PARTITION, since
    ``missing_since``, ``time.monotonic()`` seconds); ``invalid``
    (INVALID_TOPIC_EXCEPTION: a name the broker refuses); ``unknown`` (could not
    ask, e.g. no DESCRIBE_CONFIGS ACL or the broker away: the send will tell).
    ``max_message_bytes`` keeps the last value read (None until one is).
    """

    name: str
    status: TopicStatus = "unknown"
    max_message_bytes: int | None = None
    detail: str = ""
    checked_at: float = float("-inf")  # time.monotonic() of the last describe
    missing_since: float | None = None

    async def describe(self, client_kwargs: dict[str, Any]) -> None:
        """Ask the broker (one admin connection, 10 s timeout); never raises a KafkaError."""
        now = time.monotonic()
        self.checked_at = now
        admin = AIOKafkaAdminClient(request_timeout_ms=10_000, **client_kwargs)
        try:
            await admin.start()
            resource = ConfigResource(
                ConfigResourceType.TOPIC, self.name, {"max.message.bytes": None}
            )
            (response,) = await admin.describe_configs([resource])
            code, message, _, _, entries = response.resources[0][:5]
        except KafkaError as exc:
            self.status, self.detail = "unknown", f"{type(exc).__name__}: {exc}"
            return
        finally:
            await admin.close()
        error = for_code(code)
        if code == 0:
            self.status, self.detail, self.missing_since = "ok", "", None
            for name, value, *_ in entries:
                if name == "max.message.bytes" and value:
                    self.max_message_bytes = int(value)
        elif error is UnknownTopicOrPartitionError:
            self.status, self.detail = "missing", message or error.__name__
            self.missing_since = self.missing_since or now
        elif error is InvalidTopicError:
            self.status, self.detail = "invalid", message or error.__name__
        else:  # e.g. TOPIC_AUTHORIZATION_FAILED for DescribeConfigs: the send will tell
            self.status, self.detail = "unknown", message or error.__name__
