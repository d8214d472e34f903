"""Typed settings, read lazily from the environment (``SARAS_*``) through ``get_settings()``."""

from __future__ import annotations

import logging
import os
import stat
from functools import lru_cache
from pathlib import Path

import platformdirs
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

log = logging.getLogger(__name__)

#: the data directory: only its owner may list or enter it
PRIVATE_DIR_MODE = 0o700
#: the embedded database, its WAL files and the key file: only their owner may read them
PRIVATE_FILE_MODE = 0o600


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
    alpaca_api_key: SecretStr | None = Field(
        default=None, description="Alpaca market-data key when no connection is named."
    )
    alpaca_api_secret: SecretStr | None = Field(
        default=None, description="Alpaca market-data secret when no connection is named."
    )
    kite_api_key: SecretStr | None = Field(
        default=None, description="Kite market-data API key when no connection is named."
    )
    kite_access_token: SecretStr | None = Field(
        default=None, description="Kite market-data access token when no connection is named."
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
    # --- maintenance and repair (flows/maintenance.py, flows/repair.py) ---
    approval_max_age_hours: float = Field(
        default=24.0,
        gt=0,
        description="An approved run not started within this many hours is expired, not started.",
    )
    approval_start_grace_seconds: float = Field(
        default=900.0,
        ge=0,
        description="Maintenance leaves a run approved this recently to the flow that approved it.",
    )
    stuck_approval_hours: float = Field(
        default=4.0, gt=0, description="Plans awaiting approval longer than this are stuck work."
    )
    repair_max_attempts: int = Field(
        default=2, ge=0, description="Repair runs allowed per original run (0: never repair)."
    )
    repair_window_hours: float = Field(
        default=72.0,
        gt=0,
        description="Maintenance plans repairs only for runs that ended within this many hours.",
    )
    repair_auto_approve: bool = Field(
        default=False,
        description="Execute repair runs without an analyst's approval (policy flag).",
    )
    paper_fill_retention_days: int = Field(
        default=90, ge=1, description="Paper broker fills of finished orders older than this purge."
    )
    rebalance_slot_lease_seconds: int = Field(
        default=300,
        ge=60,
        le=86400,
        description=(
            "Lease of a rebalance's per-smallcase slot: renewed every 75% of it while the run "
            "lives (an approval pause included); a dead run's slot is free again after it."
        ),
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


def private_dir(path: Path) -> Path:
    """Create a directory (and its parents) readable by its owner only; tighten it if loose."""
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    _tighten(path, PRIVATE_DIR_MODE)
    return path


def private_file(path: Path) -> Path:
    """Create an empty file readable by its owner only (if absent); tighten it if loose.

    A missing directory is created owner-only; an existing one is left as it is (it may be
    the user's own project folder): ``check_private_files`` tightens the data directory.
    """
    path.parent.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE))
    except FileExistsError:
        _tighten(path, PRIVATE_FILE_MODE)
    return path


def _tighten(path: Path, mode: int) -> bool:
    """Remove group and other access from a path we own; say so when we had to."""
    info = path.stat()
    if not info.st_mode & 0o077 or info.st_uid != os.getuid():
        return False
    os.chmod(path, stat.S_IMODE(info.st_mode) & mode)
    log.warning("%s was readable by others: now %o (owner only)", path, mode)
    return True


def check_private_files(settings: Settings | None = None) -> list[Path]:
    """Tighten the data directory (0700), the embedded database and the key file (0600).

    Runs on every start of the CLI and whenever the embedded database is opened; returns the
    paths whose permissions it had to tighten.
    """
    settings = settings or get_settings()
    fixed = []
    if settings.data_dir.is_dir() and _tighten(settings.data_dir, PRIVATE_DIR_MODE):
        fixed.append(settings.data_dir)
    db = settings.sqlite_path
    for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        if path.is_file() and _tighten(path, PRIVATE_FILE_MODE):
            fixed.append(path)
    key = settings.data_dir / "secret.key"
    if key.is_file() and _tighten(key, PRIVATE_FILE_MODE):
        fixed.append(key)
    return fixed
