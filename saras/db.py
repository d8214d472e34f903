"""Engines and sessions: one cached engine per URL, nothing opened at import time."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from saras.settings import get_settings, private_file


def make_engine(url: str, *, echo: bool = False, **kwargs: Any) -> Engine:
    """Create an engine for ``url`` with Saras' per-dialect defaults."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            private_file(Path(parsed.database))  # the data dir 0700, the database 0600
        kwargs.setdefault("connect_args", {"timeout": 30})
        engine = create_engine(url, echo=echo, **kwargs)
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    # an execution holds one connection for its run lock and uses another: room for the
    # flows' parallel execution tasks (tasks/orchestration.py MAX_EXECUTION_TASKS) and more
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 80)
    return create_engine(url, echo=echo, **kwargs)


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # pysqlite's own transaction handling skips BEGIN for DDL and breaks SAVEPOINT; take it
    # over (SQLAlchemy's documented recipe) so transactions, savepoints and DDL all behave.
    dbapi_connection.isolation_level = None
    # SQLite leaves foreign keys off unless asked, per connection; WAL lets readers and a
    # writer (parallel Prefect tasks) work at once.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_on_begin(conn: Any) -> None:
    conn.exec_driver_sql("BEGIN")


@lru_cache(maxsize=8)
def _engine_for(url: str, echo: bool) -> Engine:
    return make_engine(url, echo=echo)


def get_engine(url: str | None = None) -> Engine:
    """Return the cached engine for ``url`` (default: from settings)."""
    settings = get_settings()
    return _engine_for(url or settings.resolved_database_url(), settings.sql_echo)


def is_postgres(engine: Engine) -> bool:
    """Tell whether an engine talks to PostgreSQL."""
    return engine.dialect.name == "postgresql"


@contextmanager
def session_scope(engine: Engine | None = None) -> Iterator[Session]:
    """Open a session in one transaction: committed on success, rolled back on error."""
    factory = sessionmaker(bind=engine or get_engine(), expire_on_commit=False)
    with factory() as session, session.begin():
        yield session
