"""The consumer's settings: one pydantic-settings object, built once, passed down.

Sources, highest priority first: keyword arguments, environment variables
(``EXECTRACK_`` prefix, ``__`` between nested names, e.g.
``EXECTRACK_DATABASE__URL``), secret files in ``EXECTRACK_SECRETS_DIR`` (one file
per setting, named like the variable without prefix, e.g. ``database__url``),
then the defaults below, which match ``deploy/local``.
"""

from __future__ import annotations

import os
from ipaddress import ip_address
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NestedSecretsSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from exectrack.consumer.retention.policy import RetentionPolicy
from exectrack.consumer.retention.policy_file import PolicyFileSource
from exectrack.producer.settings import KafkaSettings

DEFAULT_DATABASE_URL = "mysql+aiomysql://exectrack:exectrack@127.0.0.1:3306/exectrack"

SslMode = Literal["disabled", "preferred", "required", "verify_ca", "verify_identity"]
"""MySQL's ``--ssl-mode``, lower case (docs/configuration.md, "Database TLS")."""
VERIFYING: tuple[SslMode, ...] = ("verify_ca", "verify_identity")

DRIVER = "mysql+aiomysql"
"""The one SQLAlchemy dialect+driver exectrack writes with (async, MySQL and MariaDB)."""
URL_ADVICE = "exectrack stores in MySQL/MariaDB; use mysql+aiomysql://user:pass@host:3306/db"


class DatabaseUrlError(ValueError):
    """A database URL exectrack cannot use (another database, a synchronous driver, no URL).

    The message never repeats the URL: it may hold a password.
    """


def database_url(url: str) -> tuple[str, bool]:
    """``url`` as exectrack uses it, and whether a driver was filled in.

    - ``mysql+aiomysql://...``: as given.
    - ``mysql://...``, ``mariadb://...``, ``mariadb+aiomysql://...`` (no driver, the
      spelling of most tools; SQLAlchemy would pick the synchronous ``mysqldb``):
      rewritten to ``mysql+aiomysql://...``, everything after the scheme kept.
    - another driver (``mysql+pymysql``, ``mysql+asyncmy``...), another database
      (``postgresql://``, ``sqlite://``), or no URL at all: ``DatabaseUrlError``.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DatabaseUrlError(URL_ADVICE) from None
    backend, _, driver = parsed.drivername.lower().partition("+")
    if backend not in ("mysql", "mariadb"):
        raise DatabaseUrlError(URL_ADVICE)
    if driver not in ("", "aiomysql"):
        raise DatabaseUrlError(
            f"the {driver} driver is not supported (exectrack writes asynchronously, "
            f"with aiomysql); use {DRIVER}://user:pass@host:3306/db"
        )
    if parsed.drivername == DRIVER:
        return url, False
    rest = url.split("://", 1)[1]
    return f"{DRIVER}://{rest}", True


class DatabaseSettings(BaseModel):
    """The MySQL-compatible database the fold writes to."""

    url: SecretStr = SecretStr(DEFAULT_DATABASE_URL)
    pool_size: int = Field(default=5, ge=1)
    connect_timeout_s: float = Field(default=10.0, gt=0)
    echo: bool = False
    # TLS, named after the MySQL client's --ssl-mode, --ssl-ca, --ssl-cert, --ssl-key
    ssl_mode: SslMode = "disabled"  # deploy/local speaks no TLS
    ssl_ca: Path | None = None  # CA bundle (PEM) for verify_ca/verify_identity; else the system's
    ssl_cert: Path | None = None  # client certificate (PEM), for servers that REQUIRE X509
    ssl_key: Path | None = None  # its private key (PEM, unencrypted)
    _url_rewritten: bool = PrivateAttr(default=False)

    @field_validator("url", mode="after")
    @classmethod
    def _mysql_url(cls, url: SecretStr) -> SecretStr:
        """Refuse a URL of another database or driver; complete ``mysql://`` (``database_url``)."""
        return SecretStr(database_url(url.get_secret_value())[0])

    @model_validator(mode="wrap")
    @classmethod
    def _note_rewrite(cls, data: Any, handler: ModelWrapValidatorHandler[DatabaseSettings]) -> Any:
        model = handler(data)
        given = data.get("url") if isinstance(data, dict) else None
        given = given.get_secret_value() if isinstance(given, SecretStr) else given
        model._url_rewritten = isinstance(given, str) and given != model.url.get_secret_value()
        return model

    @property
    def url_rewritten(self) -> bool:
        """Whether ``url`` was given without the driver (``mysql://``) and completed."""
        return self._url_rewritten

    @model_validator(mode="after")
    def _tls_combination(self) -> DatabaseSettings:
        """Refuse settings that would silently not do what they say (files are read later)."""
        prefix = "EXECTRACK_DATABASE__"
        if (self.ssl_cert is None) != (self.ssl_key is None):
            raise ValueError(
                f"{prefix}SSL_CERT and {prefix}SSL_KEY go together: set both or neither"
            )
        if self.ssl_mode == "disabled" and (self.ssl_ca or self.ssl_cert):
            raise ValueError(
                f"{prefix}SSL_CA/SSL_CERT/SSL_KEY are set but {prefix}SSL_MODE is disabled: "
                "set SSL_MODE to verify_identity (or verify_ca, required)"
            )
        if self.ssl_ca is not None and self.ssl_mode not in VERIFYING:
            raise ValueError(
                f"{prefix}SSL_CA is only used to verify the server, which "
                f"{prefix}SSL_MODE={self.ssl_mode} does not do: use verify_identity or verify_ca"
            )
        return self

    @property
    def display_url(self) -> str:
        """The URL with its password masked: safe for logs and error messages."""
        return make_url(self.url.get_secret_value()).render_as_string(hide_password=True)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine only: ``localhost`` or an address in 127.0.0.0/8 or ::1."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


class ReadSettings(BaseModel):
    """The read side's HTTP server, ``exectrack-consumer serve`` (``EXECTRACK_READ__*``).

    Stateless: replicas with the same settings answer alike (docs/read/api.md).
    """

    host: str = "127.0.0.1"
    port: int = Field(default=8081, ge=1, le=65535)
    # unset: EXECTRACK_DATABASE__URL; point it at a read replica to keep reads off the primary
    database_url: SecretStr | None = None
    # bearer tokens, separated by commas or white space (a secret file may hold one per line);
    # required when ``host`` is not a loopback address
    tokens: Annotated[list[SecretStr], NoDecode] = []

    @field_validator("tokens", mode="before")
    @classmethod
    def _split_tokens(cls, value: Any) -> Any:
        """``"a,b c"`` (an environment variable or a secret file) -> ``["a", "b", "c"]``."""
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if isinstance(value, str):
            return value.replace(",", " ").split()
        return value

    @field_validator("database_url", mode="after")
    @classmethod
    def _mysql_url(cls, url: SecretStr | None) -> SecretStr | None:
        """The same rules as ``EXECTRACK_DATABASE__URL`` (``database_url``)."""
        return None if url is None else SecretStr(database_url(url.get_secret_value())[0])

    @property
    def open_to_others(self) -> bool:
        """Whether ``host`` lets other machines connect (then tokens are required)."""
        return not is_loopback(self.host)


class Settings(BaseSettings):
    """Everything the consumer service and its commands need."""

    model_config = SettingsConfigDict(
        env_prefix="EXECTRACK_",
        env_nested_delimiter="__",
        secrets_dir=os.environ.get("EXECTRACK_SECRETS_DIR") or None,
        secrets_prefix="",
        secrets_nested_delimiter="__",
        extra="ignore",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # secret files may set nested values: /run/secrets/database__url
        nested = NestedSecretsSettingsSource(file_secret_settings)
        # the retention policy file comes last: the environment overrides it key by key
        policy_file = PolicyFileSource(settings_cls)
        return init_settings, env_settings, dotenv_settings, nested, policy_file

    kafka: KafkaSettings = KafkaSettings()
    database: DatabaseSettings = DatabaseSettings()
    retention: RetentionPolicy = RetentionPolicy()
    retention_file: Path | None = None  # TOML policy (docs/retention.md); env overrides it
    group_id: str = "exectrack"
    create_topics: bool = True  # create the topic and its DLQ at start-up if missing
    read: ReadSettings = ReadSettings()  # exectrack-consumer serve (docs/read/api.md)

    # the consume loop
    batch_max_records: int = Field(default=5000, ge=1)
    fetch_timeout_ms: int = Field(default=500, ge=1)
    # read-ahead per partition: bounds memory with a deep backlog (a larger record
    # batch is still fetched whole, so progress never stalls on one)
    max_partition_fetch_bytes: int = Field(default=1024 * 1024, ge=64 * 1024)
    max_poll_interval_ms: int = Field(default=300_000, ge=1000)
    session_timeout_ms: int = Field(default=10_000, ge=1000)
    db_retry_initial_s: float = Field(default=0.2, gt=0)
    db_retry_max_s: float = Field(default=10.0, gt=0)
    # bytes one statement may have; unset: the server's max_allowed_packet, read per
    # connection (consumer/db/packet.py). Set it lower behind a proxy with a smaller limit.
    db_max_statement_bytes: int | None = Field(default=None, ge=4096)
    # lost connections in a row on one batch, the server answering a probe after each,
    # that make the batch poison (isolated by bisection) instead of retried forever
    db_lost_connection_limit: int = Field(default=3, ge=1)
    # the server drops a consumer connection silent this long, even one frozen inside a
    # transaction, so a paused zombie's row locks cannot stall the group (consumer/db/engine.py)
    db_idle_timeout_s: int = Field(default=15, ge=5)
    shutdown_timeout_s: float = Field(default=30.0, gt=0)
    # a missing dead-letter topic is waited for this long, then dead letters are dropped
    # explicitly (logged, exectrack_dead_letters_dropped_total) until it exists
    # (consumer/dlq/send.py)
    dlq_missing_grace_s: float = Field(default=60.0, ge=0)

    # consume --workers N (consumer/workers/): a worker that exits unexpectedly is started
    # again after initial_s, doubling per failure in a row up to max_s (+-20% jitter);
    # a run of stable_s or more resets the row
    worker_restart_initial_s: float = Field(default=1.0, gt=0)
    worker_restart_max_s: float = Field(default=60.0, gt=0)
    worker_stable_s: float = Field(default=60.0, gt=0)

    # operability
    health_host: str = "127.0.0.1"
    health_port: int = Field(default=8080, ge=0, le=65535)  # 0 disables the HTTP server
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # execution gauges read from the database (exectrack_executions_active/_stuck,
    # consumer/read/gauges.py): every this many seconds (0: off); stuck = pending or
    # running with no event for this long (the reaper's stale, with a shorter window)
    execution_gauges_interval_s: float = Field(default=30.0, ge=0)
    execution_stuck_after_s: float = Field(default=900.0, gt=0)

    # retention jobs (docs/retention.md); an interval of 0 leaves the job to a CronJob
    purge_interval_s: float = Field(default=0.0, ge=0)  # run the purge inside the consumer
    purge_chunk_size: int = Field(default=1000, ge=1, le=50_000)
    purge_pause_ms: int = Field(default=0, ge=0)  # between chunks
    # tombstones of purged executions older than this are deleted by the purge (0: never)
    tombstone_ttl_s: float = Field(default=90 * 86400.0, ge=0)
    reap_after_s: float = Field(default=6 * 3600.0, gt=0)  # pending/running this quiet: stale
    reap_interval_s: float = Field(default=0.0, ge=0)  # run the reaper inside the consumer
