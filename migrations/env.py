"""Alembic environment: the URL comes from Saras' settings, or from a connection handed in."""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy import Connection

from models import Base
from saras.db import make_engine
from saras.settings import get_settings

config = context.config
target_metadata = Base.metadata


def include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Leave out tables that are not the platform's (the paper broker keeps its own book)."""
    return not (type_ == "table" and name is not None and name.startswith("paper_"))


def _configure(connection: Connection) -> None:
    if connection.dialect.name == "sqlite":
        # Batch migrations rebuild tables; SQLite would check (and cascade) foreign keys while
        # a parent table is dropped and recreated. Off for the migration, back on by each new
        # connection (saras.db). A no-op inside a transaction, so it goes straight to the
        # driver before SQLAlchemy begins one.
        cursor = connection.connection.cursor()
        cursor.execute("PRAGMA foreign_keys=OFF")
        cursor.close()
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        include_object=include_object,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )


def run_migrations_offline() -> None:
    """Emit SQL to stdout instead of running it."""
    context.configure(
        url=config.get_main_option("sqlalchemy.url") or get_settings().resolved_database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        include_object=include_object,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run migrations on a connection handed in by Saras, or on the configured database."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = config.get_main_option("sqlalchemy.url") or get_settings().resolved_database_url()
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            _configure(conn)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
