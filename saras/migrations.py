"""Run the Alembic history programmatically (``saras db ...``, tests, the demo)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from saras.db import get_engine

REPO_ROOT = Path(__file__).resolve().parents[1]


def alembic_config(engine: Engine | None = None) -> Config:
    """Return an Alembic config for the repository's history, bound to ``engine``'s URL."""
    ini = REPO_ROOT / "alembic.ini"
    if not ini.exists():
        raise FileNotFoundError(
            f"{ini} not found: Saras migrates from a clone installed with `pip install -e .`"
        )
    config = Config(str(ini))
    config.set_main_option("script_location", str(REPO_ROOT / "migrations"))
    if engine is not None:
        config.set_main_option(
            "sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%")
        )
    return config


def upgrade(revision: str = "head", engine: Engine | None = None) -> None:
    """Upgrade the database to ``revision``."""
    command.upgrade(alembic_config(engine or get_engine()), revision)


def downgrade(revision: str, engine: Engine | None = None) -> None:
    """Downgrade the database to ``revision`` (``base`` empties it)."""
    command.downgrade(alembic_config(engine or get_engine()), revision)


def current_revision(engine: Engine | None = None) -> str | None:
    """Return the database's current revision, or None when it has none."""
    with (engine or get_engine()).connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revisions() -> tuple[str, ...]:
    """Return the history's heads (there must be exactly one)."""
    return tuple(ScriptDirectory.from_config(alembic_config()).get_heads())
