"""Databases for the tests: a throwaway PostgreSQL server, migrated copies, settings pointed at one.

Migrating takes seconds (the whole Alembic history); copying a migrated database takes a
fraction of that. So each test session migrates one PostgreSQL template database and one SQLite
file once, and every migrated database a test asks for is a copy of them (``CREATE DATABASE ...
TEMPLATE`` on PostgreSQL, a file copy on SQLite). Tests of the migrations themselves still
start from an empty database (``PostgresServer.create_database``).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from models import Base
from saras import db as saras_db
from saras import migrations
from saras.brokers.paper import paper_metadata
from saras.db import make_engine
from saras.settings import get_settings

PG_URL = os.environ.get(
    "SARAS_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
#: the SQLite file name Saras uses in its data directory
SQLITE_NAME = "saras.sqlite3"


def in_ci() -> bool:
    """Whether this run is CI (a missing PostgreSQL fails instead of skipping)."""
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def worker_tag() -> str:
    """Return what makes this process's database names its own (pytest-xdist worker, pid)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    return f"{worker}_{os.getpid()}"


class PostgresServer:
    """Creates and drops throwaway databases on the test PostgreSQL server."""

    def __init__(self, admin_url: str):
        self.admin_url = admin_url
        self._admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        self.created: list[str] = []
        self._template: str | None = None

    def check(self) -> None:
        with self._admin.connect() as conn:
            conn.execute(text("SELECT 1"))

    def url_of(self, name: str) -> str:
        return make_url(self.admin_url).set(database=name).render_as_string(hide_password=False)

    def create_database(self, prefix: str = "saras_test", *, template: str | None = None) -> str:
        """Create an empty database (or a copy of ``template``) and return its URL."""
        name = f"{prefix}_{worker_tag()}_{uuid.uuid4().hex[:8]}"
        copy = f' TEMPLATE "{template}"' if template else ""
        with self._admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"{copy}'))
        self.created.append(name)
        return self.url_of(name)

    def migrated_database(self, prefix: str = "saras_test") -> str:
        """Create a database migrated to head (a copy of the session's migrated template)."""
        if self._template is None:
            url = self.create_database("saras_template")
            engine = make_engine(url)
            migrations.upgrade("head", engine)
            engine.dispose()  # a template must have no connections while it is copied
            self._template = make_url(url).database
        return self.create_database(prefix, template=self._template)

    def drop_database(self, url: str) -> None:
        name = make_url(url).database
        with self._admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        if name in self.created:
            self.created.remove(name)

    def close(self) -> None:
        for name in list(self.created):
            with self._admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self._admin.dispose()


class SqliteTemplate:
    """One migrated SQLite file per session; migrated databases are copies of it."""

    def __init__(self, root: Path):
        self.root = root
        self._path: Path | None = None

    def copy_to(self, directory: Path) -> str:
        """Put a migrated ``saras.sqlite3`` in ``directory`` and return its URL."""
        if self._path is None:
            path = self.root / SQLITE_NAME
            engine = make_engine(f"sqlite:///{path}")
            migrations.upgrade("head", engine)
            engine.dispose()
            self._path = path
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / SQLITE_NAME
        shutil.copyfile(self._path, target)
        return f"sqlite:///{target}"


def empty_all_tables(engine: Engine) -> None:
    """Delete every row of Saras' and the paper broker's tables, children first.

    DELETE rather than TRUNCATE: on the few rows a test leaves it is far faster (TRUNCATE
    makes new files to fsync). The paper tables exist only once a paper broker was opened.
    """
    with engine.begin() as conn:
        present = set(
            conn.execute(
                text(
                    "SELECT table_name FROM information_schema.tables "
                    "WHERE table_schema = current_schema()"
                )
                if engine.dialect.name == "postgresql"
                else text("SELECT name FROM sqlite_master WHERE type = 'table'")
            ).scalars()
        )
        for metadata in (paper_metadata, Base.metadata):
            for table in reversed(metadata.sorted_tables):
                if table.name in present:
                    conn.execute(text(f"DELETE FROM {table.name}"))


def point_settings_at(
    monkeypatch: pytest.MonkeyPatch,
    data_dir: Path,
    url: str | None,
    env: Mapping[str, str | None],
) -> Iterator[Engine]:
    """Point Saras' settings at a database (``None``: the data dir's SQLite), then empty it.

    ``env`` sets (or, for ``None``, removes) further variables first; settings and the engine
    cache are cleared on the way in and out, so the flows see this database.
    """
    monkeypatch.setenv("SARAS_DATA_DIR", str(data_dir))
    if url is None:
        monkeypatch.delenv("SARAS_DATABASE_URL", raising=False)
    else:
        monkeypatch.setenv("SARAS_DATABASE_URL", url)
    for name, value in env.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    saras_db._engine_for.cache_clear()
    engine = saras_db.get_engine()
    try:
        yield engine
    finally:
        empty_all_tables(engine)
        engine.dispose()
        saras_db._engine_for.cache_clear()
        get_settings.cache_clear()
