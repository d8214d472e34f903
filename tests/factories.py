"""Small builders for rows the tests need (plain functions, real rows)."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from models import (
    Asset,
    Portfolio,
    Smallcase,
    SmallcaseConstituent,
    User,
    UserBrokerConnection,
    UserSmallcaseInvestment,
)


def user(db: Session, email: str | None = None) -> User:
    row = User(email=email or f"u{uuid.uuid4().hex[:10]}@example.com", first_name="Test")
    db.add(row)
    db.flush()
    return row


def asset(db: Session, symbol: str | None = None, exchange: str = "NASDAQ", **kw: Any) -> Asset:
    row = Asset(
        symbol=symbol or f"T{uuid.uuid4().hex[:6].upper()}",
        exchange=exchange,
        currency=kw.pop("currency", "INR" if exchange in ("NSE", "BSE") else "USD"),
        metadata_=kw.pop("metadata", {"fractionable": exchange not in ("NSE", "BSE")}),
        **kw,
    )
    db.add(row)
    db.flush()
    return row


def connection(
    db: Session, owner: User, broker_type: str = "paper", **kw: Any
) -> UserBrokerConnection:
    row = UserBrokerConnection(
        user_id=owner.id,
        broker_type=broker_type,
        alias=kw.pop("alias", f"{broker_type}_{uuid.uuid4().hex[:6]}"),
        paper_trading=kw.pop("paper_trading", broker_type != "zerodha"),
        connection_metadata=kw.pop("connection_metadata", {}),
        **kw,
    )
    db.add(row)
    db.flush()
    return row


def portfolio(db: Session, owner: User, currency: str = "USD", cash: str = "10000") -> Portfolio:
    row = Portfolio(
        user_id=owner.id,
        name=f"p-{uuid.uuid4().hex[:6]}",
        currency=currency,
        cash_balance=Decimal(cash),
    )
    db.add(row)
    db.flush()
    return row


def smallcase(db: Session, weights: dict[Asset, str], name: str | None = None) -> Smallcase:
    row = Smallcase(name=name or f"sc-{uuid.uuid4().hex[:8]}", metadata_={})
    db.add(row)
    db.flush()
    for a, w in weights.items():
        db.add(
            SmallcaseConstituent(smallcase_id=row.id, asset_id=a.id, weight_percentage=Decimal(w))
        )
    db.flush()
    return row


def investment(
    db: Session, owner: User, sc: Smallcase, pf: Portfolio, conn: UserBrokerConnection, **kw: Any
) -> UserSmallcaseInvestment:
    row = UserSmallcaseInvestment(
        user_id=owner.id,
        smallcase_id=sc.id,
        portfolio_id=pf.id,
        broker_connection_id=conn.id,
        investment_amount=Decimal(kw.pop("amount", "1000")),
        status=kw.pop("status", "active"),
        **kw,
    )
    db.add(row)
    db.flush()
    return row
