"""Shared fixtures: a migrated PostgreSQL database per test session, SQLite alongside.

PostgreSQL comes from ``SARAS_TEST_PG_URL`` (default: the local server, trust auth). Each test
session creates its own database, migrates it with the Alembic history, and drops it at the end.
Each test runs in a transaction rolled back at the end (SQLAlchemy's savepoint recipe), so
tests see a clean database and may commit freely. Under ``CI=true`` a missing PostgreSQL is a
failure, never a skip.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from saras import migrations
from saras.db import make_engine

PG_URL = os.environ.get(
    "SARAS_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REFERENCE_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "reference"


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


class PostgresServer:
    """Creates and drops throwaway databases on the test PostgreSQL server."""

    def __init__(self, admin_url: str):
        self.admin_url = admin_url
        self._admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        self.created: list[str] = []

    def check(self) -> None:
        with self._admin.connect() as conn:
            conn.execute(text("SELECT 1"))

    def create_database(self, prefix: str = "saras_test") -> str:
        name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        with self._admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        self.created.append(name)
        return make_url(self.admin_url).set(database=name).render_as_string(hide_password=False)

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


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """The PostgreSQL server tests run against (skip, or fail under CI, when it is down)."""
    server = PostgresServer(PG_URL)
    try:
        server.check()
    except OperationalError as exc:
        server.close()
        message = f"PostgreSQL is not reachable at {make_url(PG_URL).render_as_string()}: {exc}"
        if _in_ci():
            pytest.fail(message)
        pytest.skip(message)
    yield server
    server.close()


@pytest.fixture(scope="session")
def pg_engine(pg_server: PostgresServer) -> Iterator[Engine]:
    """A PostgreSQL database migrated to head, for the whole test session."""
    url = pg_server.create_database()
    engine = make_engine(url)
    migrations.upgrade("head", engine)
    yield engine
    engine.dispose()
    pg_server.drop_database(url)


@pytest.fixture(scope="session")
def sqlite_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """An embedded SQLite database migrated to head, for the whole test session."""
    path = tmp_path_factory.mktemp("sqlite") / "saras.sqlite3"
    engine = make_engine(f"sqlite:///{path}")
    migrations.upgrade("head", engine)
    yield engine
    engine.dispose()


@pytest.fixture(params=["postgresql", "sqlite"])
def engine(request: pytest.FixtureRequest) -> Engine:
    """A migrated engine, once per backend."""
    name = "pg_engine" if request.param == "postgresql" else "sqlite_engine"
    return request.getfixturevalue(name)


def _isolated_session(engine: Engine) -> Iterator[Session]:
    connection = engine.connect()
    transaction = connection.begin()
    session = Session(bind=connection, join_transaction_mode="create_savepoint")
    try:
        yield session
    finally:
        session.close()
        transaction.rollback()
        connection.close()


@pytest.fixture
def db(engine: Engine) -> Iterator[Session]:
    """A session on each backend whose work is rolled back after the test."""
    yield from _isolated_session(engine)


@pytest.fixture
def pg_db(pg_engine: Engine) -> Iterator[Session]:
    """A PostgreSQL session whose work is rolled back after the test."""
    yield from _isolated_session(pg_engine)


@pytest.fixture
def reference_dir() -> Path:
    """The shared reference material, or skip when this checkout has none beside it."""
    if not REFERENCE_DIR.is_dir():
        pytest.skip("../shared/reference is not present")
    return REFERENCE_DIR
