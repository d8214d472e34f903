"""Investing with whole shares spends the money: the invest flow on a whole-share paper account."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from flows.investments import invest_in_smallcase
from models import (
    Asset,
    Portfolio,
    PortfolioHolding,
    PriceHistory,
    User,
)
from saras.marketdata import calendars
from saras.secrets import get_secret_box
from saras.services import admin
from saras.services.demo import seed_demo

FAST = {"poll_interval": 0.01, "deadline_seconds": 10, "retry_backoff": 0.01}
RAVI = "ravi@example.in"  # the demo's Indian investor: a paper account with whole shares


def _basket(engine: Engine, name: str, legs: dict[str, tuple[str, str]]) -> None:
    """Create NSE assets with a flat close over the last sessions, and a smallcase of them."""
    last = calendars.last_completed_session("NSE", datetime.now(UTC))
    days = calendars.sessions("NSE", last - timedelta(days=10), last)
    with Session(engine) as session, session.begin():
        constituents = []
        for symbol, (weight, price) in legs.items():
            asset = admin.add_asset(
                session, symbol, "NSE", "INR", metadata={"lot_size": 1, "tick_size": "0.05"}
            )
            p = Decimal(price)
            for day in days:
                session.add(
                    PriceHistory(
                        asset_id=asset.id,
                        price_date=day,
                        open_price=p,
                        high_price=p,
                        low_price=p,
                        close_price=p,
                        volume=Decimal(1000),
                    )
                )
            constituents.append(admin.ConstituentInput(symbol, Decimal(weight), exchange="NSE"))
        admin.add_smallcase(session, name, constituents, min_investment=Decimal(1000))


def _holdings(engine: Engine, symbols: set[str]) -> dict[str, Decimal]:
    with Session(engine) as session:
        rows = session.execute(
            select(Asset.symbol, PortfolioHolding.quantity)
            .join(Portfolio, Portfolio.id == PortfolioHolding.portfolio_id)
            .join(User, User.id == Portfolio.user_id)
            .join(Asset, Asset.id == PortfolioHolding.asset_id)
            .where(User.email == RAVI, Asset.symbol.in_(symbols), PortfolioHolding.quantity > 0)
        ).all()
    return {s: Decimal(str(q)).normalize() for s, q in rows}


@pytest.fixture
def demo(flow_db: Engine) -> Engine:
    get_secret_box(generate=True)
    with Session(flow_db) as session, session.begin():
        seed_demo(session)
    return flow_db


def _invest(name: str, amount: str) -> None:
    state = invest_in_smallcase(RAVI, name, amount, execution=FAST, return_state=True)
    assert state.is_completed(), state.message


def test_whole_share_invest_buys_the_dear_share(demo: Engine) -> None:
    """Rs 2,400 in {A 40% at 1,000, B 30% at 10, C 30% at 10} buys one A, not 71 B + 71 C."""
    legs = {"WSA": ("40", "1000"), "WSB": ("30", "10"), "WSC": ("30", "10")}
    _basket(demo, "Whole Share Basket", legs)
    _invest("Whole Share Basket", "2400")
    held = _holdings(demo, set(legs))
    assert held.get("WSA") == 1
    # the shown better plan (1 A + 68 B + 68 C) or better: at most Rs 24 buffer + 10 idle
    assert held.get("WSB", 0) >= 68 and held.get("WSC", 0) >= 68
    invested = sum((q * Decimal(legs[s][1]) for s, q in held.items()), Decimal(0))
    assert Decimal(2400) - invested < Decimal(24) + Decimal(10)


def test_whole_share_invest_spends_on_the_heavy_leg(demo: Engine) -> None:
    """Rs 1,020 in {A 98% at 1,000, B 2% at 1} buys 1 A and 9 B, not 20 B and no A."""
    legs = {"WHA": ("98", "1000"), "WHB": ("2", "1")}
    _basket(demo, "Heavy Leg Basket", legs)
    _invest("Heavy Leg Basket", "1020")
    assert _holdings(demo, set(legs)) == {"WHA": Decimal(1), "WHB": Decimal(9)}
