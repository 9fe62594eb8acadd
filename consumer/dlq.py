"""Dead letters: the original record plus headers saying why, where from and when.

The value and key are kept byte for byte (truncated only if the record would
exceed what the broker accepts, which is then said in a header), so an
operator can fix and re-publish. Headers (all UTF-8):

===========================  ==================================================
exectrack.dlq.reason         InvalidReason code, or ``db_refused``
exectrack.dlq.error          human-readable detail (<= 1000 chars)
exectrack.dlq.topic          source topic
exectrack.dlq.partition      source partition
exectrack.dlq.offset         source offset
exectrack.dlq.timestamp      source record timestamp (ms since epoch)
exectrack.dlq.consumer       host name and group of the consumer
exectrack.dlq.at             when it was dead-lettered (RFC 3339, UTC)
exectrack.dlq.truncated      "true" with the original size, if the value was cut
===========================  ==================================================
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

HEADER_PREFIX = "exectrack.dlq."
MAX_DLQ_VALUE = 900 * 1024  # below the broker's default 1 MiB message limit


@dataclass(frozen=True)
class DeadLetter:
    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    reason: str
    error: str

    @classmethod
    def of(cls, record: Any, reason: str, error: str) -> DeadLetter:
        return cls(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            timestamp=record.timestamp,
            key=record.key,
            value=record.value,
            headers=tuple((k, v if v is not None else b"") for k, v in (record.headers or ())),
            reason=reason,
            error=error,
        )

    def message(
        self, consumer_id: str, now: datetime | None = None
    ) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]:
        """(key, value, headers) of the dead-letter record."""
        at = (now or datetime.now(UTC)).isoformat()
        value = self.value
        extra: list[tuple[str, bytes]] = []
        if value is not None and len(value) > MAX_DLQ_VALUE:
            extra.append(
                (HEADER_PREFIX + "truncated", f"true; original_bytes={len(value)}".encode())
            )
            value = value[:MAX_DLQ_VALUE]
        ours = {
            "reason": self.reason,
            "error": self.error[:1000],
            "topic": self.topic,
            "partition": str(self.partition),
            "offset": str(self.offset),
            "timestamp": str(self.timestamp),
            "consumer": consumer_id,
            "at": at,
        }
        headers = [h for h in self.headers if not h[0].startswith(HEADER_PREFIX)]
        headers += [(HEADER_PREFIX + k, v.encode("utf-8", "replace")) for k, v in ours.items()]
        return self.key, value, headers + extra


def consumer_identity(group_id: str) -> str:
    return f"{socket.gethostname()}/{group_id}"


async def send(producer: Any, topic: str, letters: list[DeadLetter], consumer_id: str) -> None:
    """Send every letter (pipelined) and wait until all are acknowledged."""
    futures = []
    for letter in letters:
        key, value, headers = letter.message(consumer_id)
        futures.append(await producer.send(topic, value=value, key=key, headers=headers))
    await asyncio.gather(*futures)
