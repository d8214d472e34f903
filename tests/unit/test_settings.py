"""Settings are typed, lazy, and map URLs to the drivers Saras uses."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from saras.settings import Settings, get_settings, resolve_database_url


def test_postgresql_urls_use_psycopg3() -> None:
    assert resolve_database_url("postgresql://u@h/db", Path("x")) == "postgresql+psycopg://u@h/db"
    assert resolve_database_url("postgres://u@h/db", Path("x")) == "postgresql+psycopg://u@h/db"
    assert (
        resolve_database_url("postgresql+psycopg://u@h/db", Path("x"))
        == "postgresql+psycopg://u@h/db"
    )


def test_unset_url_means_embedded_sqlite_in_the_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SARAS_DATABASE_URL", raising=False)
    monkeypatch.setenv("SARAS_DATA_DIR", str(tmp_path))
    settings = Settings()
    assert settings.embedded
    assert settings.resolved_database_url() == f"sqlite:///{tmp_path / 'saras.sqlite3'}"


def test_settings_are_cached_and_read_lazily(monkeypatch: pytest.MonkeyPatch) -> None:
    get_settings.cache_clear()
    monkeypatch.setenv("SARAS_DATABASE_URL", "postgresql://a@b/c")
    try:
        assert get_settings() is get_settings()
        assert get_settings().resolved_database_url() == "postgresql+psycopg://a@b/c"
    finally:
        get_settings.cache_clear()


def test_secret_keys_are_masked() -> None:
    settings = Settings(secret_keys="super-secret-key")
    assert "super-secret-key" not in repr(settings)
    assert "super-secret-key" not in str(settings.model_dump())


def test_importing_saras_reads_no_settings_and_opens_nothing(tmp_path: Path) -> None:
    code = (
        "import saras.settings as s, saras.db, saras.cli, models, saras.services.admin;"
        "assert s.get_settings.cache_info().currsize == 0, 'settings read at import';"
        "import saras.db as d; assert d._engine_for.cache_info().currsize == 0, 'engine at import'"
    )
    env = {"SARAS_DATA_DIR": str(tmp_path / "never"), "PATH": ""}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
    assert not (tmp_path / "never").exists()
    importlib.import_module("saras")
