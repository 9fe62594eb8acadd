"""Kafka connection settings, shared by the producer library and the consumer service.

Every setting comes from the environment once (``EXECTRACK_`` prefix, nested groups
joined by ``__``), e.g. ``EXECTRACK_KAFKA__BOOTSTRAP_SERVERS=broker:9092``. Secrets
can also be mounted as files (``secrets_dir``, see docs/configuration.md).
"""

from __future__ import annotations

import ssl
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_TOPIC = "report-execution-events"
DEFAULT_PARTITIONS = 12
DEFAULT_SOURCE = "/services/exectrack-cli"

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
CompressionType = Literal["zstd", "lz4", "gzip", "snappy", "none"]


class KafkaSettings(BaseModel):
    """Where the broker is, which topics we use, and how we authenticate."""

    bootstrap_servers: str = "127.0.0.1:9092"
    topic: str = DEFAULT_TOPIC
    dlq_topic: str = f"{DEFAULT_TOPIC}.dlq"
    partitions: int = Field(default=DEFAULT_PARTITIONS, ge=1)
    replication_factor: int = Field(default=1, ge=1)
    client_id: str = "exectrack"
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    metadata_max_age_ms: int = Field(default=300_000, ge=1_000)
    """How often a client refreshes its cluster metadata even when nothing failed
    (aiokafka's ``metadata_max_age_ms``; 5 minutes, like the Java client's
    ``metadata.max.age.ms``). Partitions added to the topic are seen only then:
    a consumer group starts reading them at most this long after they appear
    (docs/operations.md, "Scaling")."""

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments common to every aiokafka client (producer, consumer, admin).

        SASL (``SASL_PLAINTEXT``/``SASL_SSL``) adds the mechanism and credentials;
        ``SSL``/``SASL_SSL`` adds an ``ssl_context`` verifying the brokers against
        ``ssl_cafile`` (the system's CAs when unset), with the client certificate
        when ``ssl_certfile`` is set.

        Raises:
            OSError: a CA, certificate or key file cannot be read.
            ssl.SSLError: one of them is not PEM, or the key does not match.
        """
        kwargs: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "client_id": self.client_id,
            "security_protocol": self.security_protocol,
            "metadata_max_age_ms": self.metadata_max_age_ms,
        }
        if self.security_protocol.startswith("SASL"):
            kwargs["sasl_mechanism"] = self.sasl_mechanism or "PLAIN"
            kwargs["sasl_plain_username"] = self.sasl_username
            kwargs["sasl_plain_password"] = (
                self.sasl_password.get_secret_value() if self.sasl_password else None
            )
        if self.security_protocol.endswith("SSL"):
            context = ssl.create_default_context(cafile=self.ssl_cafile)
            if self.ssl_certfile:
                context.load_cert_chain(self.ssl_certfile, self.ssl_keyfile)
            kwargs["ssl_context"] = context
        return kwargs


class PublisherSettings(BaseModel):
    """How ``Publisher`` batches, compresses and retries (aiokafka producer options).

    ``acks="all"`` and idempotence are not settings: they are what makes a
    retry safe (no duplicate, no reordering within a partition), so they are
    always on. With idempotence aiokafka retries a retriable error until the
    broker answers; ``request_timeout_ms`` bounds each attempt and how long
    ``send`` waits for room in a full partition queue.
    """

    linger_ms: int = Field(default=5, ge=0)
    """Wait this long for more messages to fill a batch (latency for throughput)."""
    max_batch_size: int = Field(default=256 * 1024, ge=1024)
    """Bytes per partition batch; ~700 simulated events."""
    compression_type: CompressionType = "zstd"
    """zstd (level 3, via ``cramjam``, a dependency): ~0.4 µs a message and ~6.5x
    smaller on simulated events. aiokafka runs its codecs in the event loop at
    fixed levels: lz4 at level 9 (~1.4 µs, 4.2x), gzip at level 9 (~4.7 µs: it
    costs a third of the throughput of one core); snappy is fastest (0.1 µs)
    but compresses least (3.6x). Measured by docs/events.md's method."""
    request_timeout_ms: int = Field(default=30_000, ge=1_000)
    retry_backoff_ms: int = Field(default=200, ge=1)
    max_request_size: int = Field(default=1_048_576 + 64 * 1024, ge=1024)
    """Largest single message: an event is at most 1 MiB plus key and headers."""

    def producer_kwargs(self) -> dict[str, Any]:
        """The aiokafka ``AIOKafkaProducer`` keyword arguments these settings stand for."""
        return {
            "acks": "all",
            "enable_idempotence": True,
            "linger_ms": self.linger_ms,
            "max_batch_size": self.max_batch_size,
            "compression_type": None if self.compression_type == "none" else self.compression_type,
            "request_timeout_ms": self.request_timeout_ms,
            "retry_backoff_ms": self.retry_backoff_ms,
            "max_request_size": self.max_request_size,
        }


class ProducerSettings(BaseSettings):
    """Settings of a service that emits events (and of the producer CLI)."""

    model_config = SettingsConfigDict(
        env_prefix="EXECTRACK_",
        env_nested_delimiter="__",
        extra="ignore",
    )

    kafka: KafkaSettings = KafkaSettings()
    publisher: PublisherSettings = PublisherSettings()
    source: str = DEFAULT_SOURCE
    """CloudEvents ``source`` of the events this service emits (``EXECTRACK_SOURCE``)."""
