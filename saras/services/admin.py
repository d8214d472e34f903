"""Admin use cases behind ``saras users|assets|connections|portfolios|smallcases``."""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from models import (
    Asset,
    Portfolio,
    Smallcase,
    SmallcaseConstituent,
    User,
    UserBrokerConnection,
)
from saras.domain.enums import AssetType, BrokerType
from saras.errors import InvalidInputError, NotFoundError
from saras.repositories.connections import create_connection
from saras.secrets import SecretBox

WEIGHT_TOLERANCE = Decimal("0.01")


def get_user(session: Session, email_or_id: str) -> User:
    """Find a user by e-mail (case-insensitive) or id."""
    user: User | None
    try:
        user = session.get(User, uuid.UUID(email_or_id))
    except ValueError:
        user = session.scalars(select(User).where(User.email == email_or_id.lower())).first()
    if user is None:
        raise NotFoundError(f"no user {email_or_id!r}")
    return user


def add_user(
    session: Session, email: str, first_name: str | None = None, last_name: str | None = None
) -> User:
    """Create a user; e-mails are unique regardless of case."""
    email = email.strip().lower()
    if "@" not in email:
        raise InvalidInputError(f"email {email!r} is not an e-mail address")
    if session.scalars(select(User.id).where(User.email == email)).first() is not None:
        raise InvalidInputError(f"a user with email {email!r} already exists")
    user = User(email=email, first_name=first_name, last_name=last_name)
    session.add(user)
    session.flush()
    return user


def find_asset(session: Session, symbol: str, exchange: str | None = None) -> Asset:
    """Find an asset by symbol (and exchange when the symbol is listed on several)."""
    query = select(Asset).where(Asset.symbol == symbol.strip().upper())
    if exchange:
        query = query.where(Asset.exchange == exchange.strip().upper())
    found = list(session.scalars(query))
    if not found:
        where = f" on {exchange.upper()}" if exchange else ""
        raise NotFoundError(f"unknown symbol {symbol!r}{where}: add it with `saras assets add`")
    if len(found) > 1:
        exchanges = ", ".join(sorted(a.exchange for a in found))
        raise InvalidInputError(f"symbol {symbol!r} is listed on {exchanges}: name the exchange")
    return found[0]


def add_asset(
    session: Session,
    symbol: str,
    exchange: str,
    currency: str,
    name: str | None = None,
    asset_type: str = AssetType.EQUITY.value,
    metadata: Mapping[str, Any] | None = None,
) -> Asset:
    """Create an asset, unique per (symbol, exchange)."""
    symbol, exchange = symbol.strip().upper(), exchange.strip().upper()
    if not symbol or not exchange:
        raise InvalidInputError("an asset needs a symbol and an exchange")
    existing = session.scalars(
        select(Asset).where(Asset.symbol == symbol, Asset.exchange == exchange)
    ).first()
    if existing is not None:
        raise InvalidInputError(f"asset {symbol} on {exchange} already exists")
    asset = Asset(
        symbol=symbol,
        exchange=exchange,
        currency=currency.strip().upper(),
        name=name,
        asset_type=asset_type,
        metadata_=dict(metadata or {}),
    )
    session.add(asset)
    session.flush()
    return asset


def add_portfolio(
    session: Session,
    user: User,
    name: str,
    currency: str,
    cash_balance: Decimal = Decimal(0),
    description: str | None = None,
) -> Portfolio:
    """Create a portfolio for a user."""
    if cash_balance < 0:
        raise InvalidInputError(f"cash balance {cash_balance} is negative")
    portfolio = Portfolio(
        user_id=user.id,
        name=name,
        currency=currency.strip().upper(),
        cash_balance=cash_balance,
        total_value=cash_balance,
        description=description,
    )
    session.add(portfolio)
    session.flush()
    return portfolio


def add_connection(
    session: Session,
    box: SecretBox | None,
    user: User,
    broker_type: str,
    *,
    paper_trading: bool = True,
    alias: str | None = None,
    api_key: str | None = None,
    api_secret: str | None = None,
    credentials: Mapping[str, str] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> UserBrokerConnection:
    """Create a broker connection, encrypting its secrets before they reach the database."""
    known = {b.value for b in BrokerType}
    if broker_type not in known:
        raise InvalidInputError(f"broker type {broker_type!r}: expected one of {sorted(known)}")
    has_secrets = bool(api_key or api_secret or credentials)
    if has_secrets and box is None:
        raise InvalidInputError("secrets given but no encryption key configured")
    return create_connection(
        session,
        user_id=user.id,
        broker_type=broker_type,
        paper_trading=paper_trading,
        alias=alias,
        api_key=box.encrypt(api_key) if (box and api_key) else None,
        api_secret=box.encrypt(api_secret) if (box and api_secret) else None,
        credentials=box.encrypt_json(dict(credentials)) if (box and credentials) else None,
        connection_metadata=dict(metadata or {}),
    )


@dataclass(frozen=True)
class ConstituentInput:
    """One row of a smallcase composition: symbol, weight in percent, rationale."""

    symbol: str
    weight: Decimal
    rationale: str | None = None
    exchange: str | None = None


def parse_constituents_csv(text: str) -> list[ConstituentInput]:
    """Parse a CSV of ``symbol, weight, rationale`` (optionally ``exchange``) with a header."""
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None:
        raise InvalidInputError("constituents CSV is empty")
    fields = {f.strip().lower(): f for f in reader.fieldnames}
    for needed in ("symbol", "weight"):
        if needed not in fields:
            raise InvalidInputError(f"constituents CSV has no {needed!r} column")
    rows = []
    for line_no, row in enumerate(reader, start=2):
        symbol = (row.get(fields["symbol"]) or "").strip()
        raw_weight = (row.get(fields["weight"]) or "").strip()
        try:
            weight = Decimal(raw_weight)
        except InvalidOperation as exc:
            raise InvalidInputError(
                f"constituents CSV line {line_no}: weight {raw_weight!r} of {symbol!r} "
                "is not a number"
            ) from exc
        rationale = row.get(fields["rationale"]) if "rationale" in fields else None
        exchange = row.get(fields["exchange"]) if "exchange" in fields else None
        rows.append(ConstituentInput(symbol, weight, rationale or None, exchange or None))
    return rows


def validate_constituents(
    session: Session, rows: Iterable[ConstituentInput]
) -> list[tuple[Asset, ConstituentInput]]:
    """Check a composition (known symbols, no duplicates, weights sum to 100); return assets."""
    rows = list(rows)
    if not rows:
        raise InvalidInputError("a smallcase needs at least one constituent")
    seen: set[str] = set()
    resolved = []
    for row in rows:
        if not row.symbol:
            raise InvalidInputError("a constituent has no symbol")
        key = row.symbol.upper()
        if key in seen:
            raise InvalidInputError(f"symbol {row.symbol!r} appears twice")
        seen.add(key)
        if not (Decimal(0) < row.weight <= Decimal(100)):
            raise InvalidInputError(f"weight {row.weight} of {row.symbol!r} is not in (0, 100]")
        resolved.append((find_asset(session, row.symbol, row.exchange), row))
    total = sum((r.weight for r in rows), Decimal(0))
    if abs(total - Decimal(100)) > WEIGHT_TOLERANCE:
        raise InvalidInputError(f"weights sum to {total}, not 100 (tolerance {WEIGHT_TOLERANCE})")
    currencies = {asset.currency for asset, _ in resolved}
    if len(currencies) > 1:
        raise InvalidInputError(f"constituents mix currencies {sorted(currencies)}")
    return resolved


def add_smallcase(
    session: Session,
    name: str,
    constituents: Iterable[ConstituentInput],
    *,
    description: str | None = None,
    category: str | None = None,
    min_investment: Decimal | None = None,
    risk_level: str | None = None,
) -> Smallcase:
    """Create a smallcase with a validated composition."""
    if session.scalars(select(Smallcase.id).where(Smallcase.name == name)).first():
        raise InvalidInputError(f"a smallcase named {name!r} already exists")
    resolved = validate_constituents(session, constituents)
    smallcase = Smallcase(
        name=name,
        description=description,
        category=category,
        min_investment=min_investment,
        risk_level=risk_level,
        metadata_={"compositions": []},
    )
    session.add(smallcase)
    session.flush()
    session.add_all(
        SmallcaseConstituent(
            smallcase_id=smallcase.id,
            asset_id=asset.id,
            weight_percentage=row.weight,
            rationale=row.rationale,
        )
        for asset, row in resolved
    )
    session.flush()
    return smallcase


def get_smallcase(session: Session, name_or_id: str) -> Smallcase:
    """Find a smallcase by name or id."""
    smallcase: Smallcase | None
    try:
        smallcase = session.get(Smallcase, uuid.UUID(name_or_id))
    except ValueError:
        smallcase = session.scalars(select(Smallcase).where(Smallcase.name == name_or_id)).first()
    if smallcase is None:
        raise NotFoundError(f"no smallcase {name_or_id!r}")
    return smallcase
