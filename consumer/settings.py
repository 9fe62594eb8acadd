"""The consumer's settings: one pydantic-settings object, built once, passed down.

Sources, highest priority first: keyword arguments, environment variables
(``EXECTRACK_`` prefix, ``__`` between nested names, e.g.
``EXECTRACK_DATABASE__URL``), secret files in ``EXECTRACK_SECRETS_DIR`` (one file
per setting, named like the variable without prefix, e.g. ``database__url``),
then the defaults below, which match ``deploy/local``.
"""

from __future__ import annotations

import os

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url

from producer.settings import KafkaSettings

DEFAULT_DATABASE_URL = "mysql+aiomysql://exectrack:exectrack@127.0.0.1:3306/exectrack"


class DatabaseSettings(BaseModel):
    """The MySQL-compatible database the fold writes to."""

    url: SecretStr = SecretStr(DEFAULT_DATABASE_URL)
    pool_size: int = Field(default=5, ge=1)
    connect_timeout_s: float = Field(default=10.0, gt=0)
    echo: bool = False

    @property
    def display_url(self) -> str:
        """The URL with its password masked: safe for logs and error messages."""
        return make_url(self.url.get_secret_value()).render_as_string(hide_password=True)


class Settings(BaseSettings):
    """Everything the consumer service and its commands need."""

    model_config = SettingsConfigDict(
        env_prefix="EXECTRACK_",
        env_nested_delimiter="__",
        secrets_dir=os.environ.get("EXECTRACK_SECRETS_DIR") or None,
        extra="ignore",
    )

    kafka: KafkaSettings = KafkaSettings()
    database: DatabaseSettings = DatabaseSettings()
    group_id: str = "exectrack"
