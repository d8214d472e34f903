"""The demo platform (``saras demo``'s users, smallcases and paper connections) ready to trade."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from saras.secrets import get_secret_box
from saras.services import prices
from saras.services.demo import seed_demo


def seed_demo_platform(engine: Engine, extra: Callable[[Session], None] | None = None) -> Engine:
    """Seed the demo platform (plus ``extra`` rows) and fresh simulated prices up to today.

    Prices run up to the last completed session of each exchange, so plans are not stale.
    """
    get_secret_box(generate=True)
    with Session(engine) as session, session.begin():
        seed_demo(session)
        if extra is not None:
            extra(session)
    now = datetime.now(UTC)
    with Session(engine) as session:
        items, _ = prices.plan_ingestion(session, now=now, source="simulated")
    prices.ingest_batch(engine, items, now=now)
    return engine
