"""Engines and sessions: one cached engine per URL, nothing opened at import time."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, Numeric, String, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.attributes import instance_state

from saras.domain.inputs import to_decimal
from saras.errors import InvalidInputError
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
    # flows' parallel execution tasks (flows/kit/review.py MAX_EXECUTION_TASKS) and more
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


def concurrent_writes(engine: Engine | None = None) -> bool:
    """Tell whether several writers may use the database at the same time.

    PostgreSQL: yes. The embedded SQLite database has one writer at a time, and a transaction
    that read before another committed cannot then write (SQLITE_BUSY_SNAPSHOT), so flows run
    their writing tasks one after another there (``flows.kit.batches``).
    """
    return is_postgres(engine or get_engine())


@contextmanager
def session_scope(engine: Engine | None = None) -> Iterator[Session]:
    """Open a session in one transaction: committed on success, rolled back on error."""
    factory = sessionmaker(bind=engine or get_engine(), expire_on_commit=False)
    with factory() as session, session.begin():
        yield session


# --- the same limits on every database -----------------------------------------------------


@event.listens_for(Session, "before_flush")
def _check_column_limits(session: Session, _context: Any, _instances: Any) -> None:
    """Refuse, on every database, a value its column cannot hold: what PostgreSQL refuses.

    SQLite keeps any string in a ``varchar(n)`` and any number in a ``numeric(p, s)``; this
    check makes the embedded default refuse them too, with one message on both databases
    (``assets.symbol 'XXX...': longer than 50 characters``). Core bulk writes (prices) are
    checked where their rows are validated.
    """
    for obj in session.new:
        check_row(obj, changed_only=False)
    for obj in session.dirty:
        check_row(obj, changed_only=True)


def check_row(obj: object, *, changed_only: bool = False) -> None:
    """Check an ORM object's string lengths and numeric ranges against its columns."""
    state = instance_state(obj)
    mapper = state.mapper
    for attr in mapper.column_attrs:
        if changed_only and not state.attrs[attr.key].history.has_changes():
            continue
        value = state.dict.get(attr.key)
        if value is None:
            continue
        column = attr.columns[0]
        message = _column_problem(column.type, value)
        if message:
            where = f"{mapper.persist_selectable.description}.{column.name}"
            raise InvalidInputError(f"{where} {_shown(value)}: {message}")


def _column_problem(type_: Any, value: Any) -> str | None:
    if isinstance(type_, String) and type_.length and isinstance(value, str):
        if len(value) > type_.length:
            return f"longer than {type_.length} characters ({len(value)})"
        return None
    if (
        isinstance(type_, Numeric)
        and type_.precision is not None
        and type_.scale is not None
        and isinstance(value, Decimal | int | float)
        and not isinstance(value, bool)
    ):
        # PostgreSQL rounds extra decimals to the scale (the ledger relies on it) and refuses
        # only what does not fit: so does this check
        try:
            number = to_decimal(value)
        except ValueError as exc:
            return str(exc)
        limit = Decimal(10) ** (type_.precision - type_.scale)
        if abs(number) >= limit:
            return f"out of range (must be below 10^{type_.precision - type_.scale})"
    return None


def _shown(value: Any) -> str:
    text = str(value)
    return repr(text if len(text) <= 60 else text[:57] + "...")
