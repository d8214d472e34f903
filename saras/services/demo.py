"""The demo platform: two users, a US and an Indian smallcase, paper connections, portfolios."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from models import Asset, Portfolio, Smallcase, User, UserBrokerConnection
from saras.domain.enums import BrokerType
from saras.domain.exchanges import exchange as exchange_row
from saras.services import admin

US_ASSETS: tuple[tuple[str, str, str], ...] = (
    ("AAPL", "NASDAQ", "Apple Inc."),
    ("MSFT", "NASDAQ", "Microsoft Corporation"),
    ("NVDA", "NASDAQ", "NVIDIA Corporation"),
    ("GOOGL", "NASDAQ", "Alphabet Inc. Class A"),
    ("AMZN", "NASDAQ", "Amazon.com, Inc."),
)
IN_ASSETS: tuple[tuple[str, str, str], ...] = (
    ("RELIANCE", "NSE", "Reliance Industries Ltd"),
    ("TCS", "NSE", "Tata Consultancy Services Ltd"),
    ("INFY", "NSE", "Infosys Ltd"),
    ("HDFCBANK", "NSE", "HDFC Bank Ltd"),
    ("SBIN", "NSE", "State Bank of India"),
)
SMALLCASES: dict[str, dict[str, Any]] = {
    "US Tech Leaders": {
        "description": "Five large US technology companies.",
        "category": "Technology",
        "min_investment": Decimal("1000"),
        "risk_level": "medium",
        "weights": {"AAPL": 25, "MSFT": 25, "NVDA": 20, "GOOGL": 15, "AMZN": 15},
    },
    "India Bluechips": {
        "description": "Five of India's largest listed companies.",
        "category": "Large cap",
        "min_investment": Decimal("50000"),
        "risk_level": "low",
        "weights": {"RELIANCE": 25, "TCS": 20, "INFY": 20, "HDFCBANK": 20, "SBIN": 15},
    },
}
USERS: tuple[dict[str, Any], ...] = (
    {
        "email": "asha@example.com",
        "first_name": "Asha",
        "last_name": "Rao",
        "portfolio": ("US portfolio", "USD", Decimal("100000")),
    },
    {
        "email": "ravi@example.in",
        "first_name": "Ravi",
        "last_name": "Kumar",
        "portfolio": ("India portfolio", "INR", Decimal("1000000")),
    },
)


@dataclass
class DemoSeed:
    """What the demo seeding created (or found already there)."""

    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)

    def note(self, created: bool, what: str) -> None:
        """Record one seeded thing."""
        (self.created if created else self.existing).append(what)


def seed_demo(session: Session) -> DemoSeed:
    """Create the demo platform; running it again creates nothing new."""
    seed = DemoSeed()
    for symbol, exchange, name in US_ASSETS + IN_ASSETS:
        found = session.scalars(
            select(Asset).where(Asset.symbol == symbol, Asset.exchange == exchange)
        ).first()
        if found is None:
            currency = exchange_row(exchange).currency
            us = currency == "USD"
            admin.add_asset(
                session,
                symbol,
                exchange,
                currency,
                name=name,
                metadata={"fractionable": True} if us else {"lot_size": 1, "tick_size": "0.05"},
            )
        seed.note(found is None, f"asset {symbol} ({exchange})")
    for name, spec in SMALLCASES.items():
        found_sc = session.scalars(select(Smallcase).where(Smallcase.name == name)).first()
        if found_sc is None:
            admin.add_smallcase(
                session,
                name,
                [admin.ConstituentInput(s, Decimal(w)) for s, w in spec["weights"].items()],
                description=spec["description"],
                category=spec["category"],
                min_investment=spec["min_investment"],
                risk_level=spec["risk_level"],
            )
        seed.note(found_sc is None, f"smallcase {name!r}")
    for spec in USERS:
        user = session.scalars(select(User).where(User.email == spec["email"])).first()
        seed.note(user is None, f"user {spec['email']}")
        if user is None:
            user = admin.add_user(session, spec["email"], spec["first_name"], spec["last_name"])
        pname, currency, cash = spec["portfolio"]
        portfolio = session.scalars(
            select(Portfolio).where(Portfolio.user_id == user.id, Portfolio.name == pname)
        ).first()
        if portfolio is None:
            admin.add_portfolio(session, user, pname, currency, cash)
        seed.note(portfolio is None, f"portfolio {pname!r} of {spec['email']}")
        connection = session.scalars(
            select(UserBrokerConnection).where(
                UserBrokerConnection.user_id == user.id,
                UserBrokerConnection.broker_type == BrokerType.PAPER.value,
            )
        ).first()
        new_connection = connection is None
        if connection is None:
            connection = admin.add_connection(
                session,
                None,
                user,
                BrokerType.PAPER.value,
                paper_trading=True,
                metadata={
                    "paper_currency": currency,
                    "paper_starting_cash": str(cash),
                    # Kite-like whole shares for the Indian account, fractional for the US one
                    "paper_fractional": currency == "USD",
                    "paper_fee_bps": "5",
                },
            )
        seed.note(new_connection, f"paper connection {connection.alias} of {spec['email']}")
    return seed
