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

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


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

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments common to every aiokafka client (producer, consumer, admin)."""
        kwargs: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "client_id": self.client_id,
            "security_protocol": self.security_protocol,
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


class ProducerSettings(BaseSettings):
    """Settings of a service that emits events (and of the producer CLI)."""

    model_config = SettingsConfigDict(
        env_prefix="EXECTRACK_",
        env_nested_delimiter="__",
        extra="ignore",
    )

    kafka: KafkaSettings = KafkaSettings()
    source: str = "/services/exectrack-cli"
