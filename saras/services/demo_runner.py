"""``saras demo``: migrate the embedded default database, seed it, run the flows end to end."""

from __future__ import annotations

from collections.abc import Callable

from saras import migrations
from saras.db import get_engine, session_scope
from saras.secrets import get_secret_box, key_file
from saras.services.demo import seed_demo
from saras.settings import get_settings


def run_demo(*, seed_only: bool = False, echo: Callable[[str], None] = print) -> None:
    """Run the demo and tell the story of what it did."""
    settings = get_settings()
    where = (
        f"embedded SQLite at {settings.sqlite_path}" if settings.embedded else "SARAS_DATABASE_URL"
    )
    echo(f"Saras demo on {where}")
    fresh_key = settings.secret_keys is None and not key_file(settings).exists()
    get_secret_box(settings, generate=True)
    if fresh_key:
        echo(f"  generated a local encryption key at {key_file(settings)}")
    migrations.upgrade("head", get_engine())
    echo(f"  database migrated to {migrations.current_revision()}")
    with session_scope() as session:
        seed = seed_demo(session)
    echo(f"  seeded: {len(seed.created)} created, {len(seed.existing)} already there")
    for item in seed.created:
        echo(f"    + {item}")
    if seed_only:
        return
