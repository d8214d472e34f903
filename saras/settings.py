"""Typed settings, read lazily from the environment (``SARAS_*``) through ``get_settings()``."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import platformdirs
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_data_dir() -> Path:
    return platformdirs.user_data_path("saras", appauthor=False)


class Settings(BaseSettings):
    """Everything Saras reads from its environment."""

    model_config = SettingsConfigDict(env_prefix="SARAS_", extra="ignore")

    database_url: str | None = Field(
        default=None,
        description="Any SQLAlchemy URL; postgresql:// means psycopg 3. Unset: embedded SQLite.",
    )
    data_dir: Path = Field(
        default_factory=_default_data_dir,
        description="Local data directory (embedded database, generated demo key, caches).",
    )
    secret_keys: SecretStr | None = Field(
        default=None,
        description="Comma-separated Fernet keys, newest first; the first encrypts, all decrypt.",
    )
    live_trading: bool = Field(
        default=False,
        description="Allow live (non-paper) broker connections to place orders.",
    )
    sql_echo: bool = False
    price_sources: dict[str, str] = Field(
        default_factory=lambda: {"NSE": "yfinance", "BSE": "yfinance", "*": "yfinance"},
        description="Default market-data source per exchange ('*' for any other), as JSON.",
    )
    price_history_days: int = Field(
        default=365, description="How far back a first ingestion of an asset reaches (days)."
    )
    ingestion_batch_size: int = Field(
        default=100, description="Symbols per ingestion task (task runs scale with batches)."
    )
    require_distinct_approver: bool = Field(
        default=False,
        description=(
            "Maker-checker: a plan's approver must be a Saras user other than the one who "
            "requested the run (a run that names no requester cannot then be approved)."
        ),
    )

    def source_for_exchange(self, exchange: str) -> str:
        """Return the default market-data source for an exchange."""
        return self.price_sources.get(exchange.upper(), self.price_sources.get("*", "yfinance"))

    @property
    def embedded(self) -> bool:
        """Whether Saras runs on its embedded default database."""
        return self.database_url is None

    @property
    def sqlite_path(self) -> Path:
        """Where the embedded default database lives."""
        return self.data_dir / "saras.sqlite3"

    def resolved_database_url(self) -> str:
        """Return the SQLAlchemy URL to connect to (``postgresql://`` mapped to psycopg 3)."""
        return resolve_database_url(self.database_url, self.sqlite_path)


def resolve_database_url(url: str | None, sqlite_path: Path) -> str:
    """Map a user-given URL to the driver Saras uses; None means the embedded SQLite file."""
    if not url:
        return f"sqlite:///{sqlite_path}"
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the process-wide settings, read from the environment on first use."""
    return Settings()
