"""The throwaway PostgreSQL database every benchmark runs in: created, migrated, dropped."""

from __future__ import annotations

import os

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from saras import migrations
from saras.db import make_engine


def create_database(admin_url: str) -> tuple[str, str]:
    """Create ``saras_bench_<pid>`` on the server of ``admin_url``, migrated; return (url, name)."""
    name = f"saras_bench_{os.getpid()}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    engine = make_engine(url)
    try:
        migrations.upgrade("head", engine)
    except BaseException:
        engine.dispose()
        drop_database(admin_url, name)
        raise
    engine.dispose()
    return url, name


def drop_database(admin_url: str, name: str) -> None:
    """Drop a throwaway database, whoever is still connected to it."""
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()
