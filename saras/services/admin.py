"""Admin use cases behind ``saras users|assets|connections|portfolios|smallcases``."""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
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
from saras.brokers.base import ConnectionConfig
from saras.brokers.registry import (
    broker_capabilities,
    broker_types,
    capabilities,
    check_config,
)
from saras.domain.enums import AssetType
from saras.domain.inputs import (
    AssetInput,
    ConnectionInput,
    ConstituentRow,
    PortfolioInput,
    SmallcaseInput,
    UserInput,
    parse,
)
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
    checked = parse(UserInput, email=email, first_name=first_name, last_name=last_name)
    email, first_name, last_name = checked.email, checked.first_name, checked.last_name
    if session.scalars(select(User.id).where(User.email == email)).first() is not None:
        raise InvalidInputError(f"a user with email {email!r} already exists")
    user = User(email=email, first_name=first_name, last_name=last_name)
    session.add(user)
    session.flush()
    return user


def find_asset(session: Session, symbol: str, exchange: str | None = None) -> Asset:
    """Find an asset by (symbol, exchange); the exchange may be left out only if unambiguous."""
    query = select(Asset).where(Asset.symbol == symbol.strip().upper())
    if exchange:
        query = query.where(Asset.exchange == exchange.strip().upper())
    found = list(session.scalars(query))
    if not found:
        where = f" on {exchange.strip().upper()}" if exchange else ""
        raise NotFoundError(f"unknown symbol {symbol!r}{where}: add it with `saras assets add`")
    if len(found) > 1:
        exchanges = ", ".join(sorted(a.exchange for a in found))
        raise InvalidInputError(
            f"symbol {symbol!r} is listed on {exchanges}: name the exchange (symbol, exchange)"
        )
    return found[0]


def add_asset(
    session: Session,
    symbol: str,
    exchange: str,
    currency: str,
    name: str | None = None,
    asset_type: str = AssetType.EQUITY.value,
    metadata: Mapping[str, Any] | None = None,
    *,
    fractionable: bool | None = None,
    lot_size: int | None = None,
) -> Asset:
    """Create an asset, unique per (symbol, exchange), on an exchange of the exchange table."""
    checked = parse(
        AssetInput,
        symbol=symbol,
        exchange=exchange,
        currency=currency,
        name=name,
        asset_type=asset_type,
        lot_size=lot_size,
    )
    symbol, exchange = checked.symbol, checked.exchange
    metadata = dict(metadata or {})
    if fractionable is not None:
        metadata["fractionable"] = fractionable
    if checked.lot_size is not None:
        metadata["lot_size"] = checked.lot_size
    existing = session.scalars(
        select(Asset).where(Asset.symbol == symbol, Asset.exchange == exchange)
    ).first()
    if existing is not None:
        raise InvalidInputError(f"asset {symbol} on {exchange} already exists")
    asset = Asset(
        symbol=symbol,
        exchange=exchange,
        currency=checked.currency,
        name=checked.name,
        asset_type=checked.asset_type.value,
        metadata_=metadata,
    )
    session.add(asset)
    session.flush()
    return asset


def add_portfolio(
    session: Session,
    user: User,
    name: str,
    currency: str,
    cash_balance: Decimal | str = Decimal(0),
    description: str | None = None,
) -> Portfolio:
    """Create a portfolio for a user in a currency Saras trades in."""
    checked = parse(
        PortfolioInput, name=name, currency=currency, cash=cash_balance, description=description
    )
    # compared in Python (casefold), so both databases agree: SQLite's lower() folds ASCII only
    names = session.scalars(select(Portfolio.name).where(Portfolio.user_id == user.id))
    wanted = checked.name.casefold()
    if (existing := next((n for n in names if n.casefold() == wanted), None)) is not None:
        raise InvalidInputError(f"{user.email} already has a portfolio named {existing!r}")
    portfolio = Portfolio(
        user_id=user.id,
        name=checked.name,
        currency=checked.currency,
        cash_balance=checked.cash,
        total_value=checked.cash,
        description=checked.description,
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
    paper_trading: bool | None = None,
    alias: str | None = None,
    api_key: str | None = None,
    api_secret: str | None = None,
    credentials: Mapping[str, str] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> UserBrokerConnection:
    """Create a broker connection, encrypting its secrets before they reach the database.

    ``paper_trading`` None means the broker's nature: paper for ``paper`` and ``alpaca`` (its
    paper endpoint), live for ``zerodha`` (Kite has no paper environment, so a zerodha
    connection that says paper is refused, and so is a "paper" connection whose metadata
    reaches a live account, e.g. an Alpaca ``base_url`` at the live endpoint).
    """
    known = broker_types()
    if broker_type not in known:
        raise InvalidInputError(f"broker_type {broker_type!r}: expected one of {known}")
    caps = broker_capabilities(broker_type)
    if paper_trading is None:
        paper_trading = caps.paper_environment
    if paper_trading and not caps.paper_environment:
        raise InvalidInputError(
            f"paper_trading True: a {broker_type} connection is live ({broker_type} has no "
            "paper environment); add it with --live, or use broker type paper to practise"
        )
    checked = parse(ConnectionInput, alias=alias, paper_trading=paper_trading)
    config = ConnectionConfig("", broker_type, checked.paper_trading, dict(metadata or {}))
    try:  # settings the broker cannot use (e.g. paper_fee_bps "abc") never reach the row
        check_config(config)
    except ValueError as exc:
        raise InvalidInputError(f"connection metadata: {exc}") from None
    if checked.paper_trading and capabilities(config).real_money:
        # e.g. an Alpaca row whose base_url is the live endpoint: "paper" would be a lie
        where = (metadata or {}).get("base_url")
        raise InvalidInputError(
            f"connection: paper_trading, but this {broker_type} connection reaches a live "
            f"account{f' (base_url {where!r})' if where else ''}: add it with --live (its "
            "orders then need SARAS_LIVE_TRADING=true)"
        )
    has_secrets = bool(api_key or api_secret or credentials)
    if has_secrets and box is None:
        raise InvalidInputError("secrets given but no encryption key configured")
    return create_connection(
        session,
        user_id=user.id,
        broker_type=broker_type,
        paper_trading=checked.paper_trading,
        alias=checked.alias,
        api_key=box.encrypt(api_key) if (box and api_key) else None,
        api_secret=box.encrypt(api_secret) if (box and api_secret) else None,
        credentials=box.encrypt_json(dict(credentials)) if (box and credentials) else None,
        connection_metadata=dict(metadata or {}),
    )


@dataclass(frozen=True)
class ConstituentInput:
    """One row of a smallcase composition: (symbol, exchange), weight in percent, rationale."""

    symbol: str
    weight: Decimal
    rationale: str | None = None
    exchange: str | None = None


CONSTITUENT_COLUMNS = ("symbol", "exchange", "weight", "rationale")


def parse_constituents_csv(text: str) -> list[ConstituentInput]:
    """Parse a CSV with a header of ``symbol, exchange, weight, rationale`` (exchange optional).

    A UTF-8 byte-order mark (what spreadsheet programs write) is ignored. Every refusal names
    the line, the field and the value.
    """
    text = text.removeprefix("\ufeff")
    if not text.strip():
        raise InvalidInputError("constituents CSV is empty: expected a header row " + _HEADER)
    reader = csv.DictReader(io.StringIO(text))
    names = reader.fieldnames or []
    fields = {f.strip().lower(): f for f in names if f is not None}
    if len(fields) < len(names):
        twice = next(f for f in fields if [n.strip().lower() for n in names].count(f) > 1)
        raise InvalidInputError(f"constituents CSV header: column {twice!r} appears twice")
    missing = [c for c in ("symbol", "weight") if c not in fields]
    if missing:
        header = ",".join(names)
        raise InvalidInputError(
            f"constituents CSV header {header!r}: no {missing[0]!r} column; "
            f"expected a header row {_HEADER}"
        )
    unknown = sorted(set(fields) - set(CONSTITUENT_COLUMNS))
    if unknown:
        raise InvalidInputError(
            f"constituents CSV header: unknown column {unknown[0]!r}; expected {_HEADER}"
        )
    rows = []
    for line_no, row in enumerate(reader, start=2):
        if None in row:
            raise InvalidInputError(
                f"constituents CSV line {line_no}: more cells than the header has columns"
            )
        cells = {c: row.get(fields[c]) for c in CONSTITUENT_COLUMNS if c in fields}
        if not any((v or "").strip() for v in cells.values()):
            continue  # a blank line
        try:
            checked = parse(
                ConstituentRow,
                symbol=cells.get("symbol") or "",
                exchange=(cells.get("exchange") or "").strip() or None,
                weight=cells.get("weight") or "",
                rationale=(cells.get("rationale") or "").strip() or None,
            )
        except InvalidInputError as exc:
            raise InvalidInputError(f"constituents CSV line {line_no}: {exc}") from None
        rows.append(
            ConstituentInput(checked.symbol, checked.weight, checked.rationale, checked.exchange)
        )
    if not rows:
        raise InvalidInputError("constituents CSV has a header but no constituent")
    return rows


_HEADER = "'symbol,exchange,weight,rationale'"


def validate_constituents(
    session: Session, rows: Iterable[ConstituentInput]
) -> list[tuple[Asset, ConstituentInput]]:
    """Check a composition (known assets, no duplicates, weights sum to 100); return assets."""
    rows = list(rows)
    if not rows:
        raise InvalidInputError("a smallcase needs at least one constituent")
    seen: set[tuple[str, str]] = set()
    resolved = []
    for row in rows:
        checked = parse(
            ConstituentRow,
            symbol=row.symbol,
            exchange=row.exchange,
            weight=row.weight,
            rationale=row.rationale,
        )
        asset = find_asset(session, checked.symbol, checked.exchange)
        key = (asset.symbol, asset.exchange)
        if key in seen:
            raise InvalidInputError(f"symbol {row.symbol!r} on {asset.exchange} appears twice")
        seen.add(key)
        resolved.append(
            (
                asset,
                ConstituentInput(asset.symbol, checked.weight, checked.rationale, asset.exchange),
            )
        )
    total = sum((r.weight for _, r in resolved), Decimal(0))
    if abs(total - Decimal(100)) > WEIGHT_TOLERANCE:
        raise InvalidInputError(f"weights sum to {total}, not 100 (tolerance {WEIGHT_TOLERANCE})")
    currencies = {asset.currency for asset, _ in resolved}
    if len(currencies) > 1:
        by_currency = ", ".join(
            f"{c}: " + " ".join(f"{a.symbol}@{a.exchange}" for a, _ in resolved if a.currency == c)
            for c in sorted(currencies)
        )
        raise InvalidInputError(f"constituents mix currencies ({by_currency})")
    return resolved


def add_smallcase(
    session: Session,
    name: str,
    constituents: Iterable[ConstituentInput],
    *,
    description: str | None = None,
    category: str | None = None,
    min_investment: Decimal | str | None = None,
    risk_level: str | None = None,
) -> Smallcase:
    """Create a smallcase with a validated composition."""
    checked = parse(
        SmallcaseInput,
        name=name,
        description=description,
        category=category,
        min_investment=min_investment,
        risk_level=risk_level,
    )
    name = checked.name
    if session.scalars(select(Smallcase.id).where(Smallcase.name == name)).first():
        raise InvalidInputError(f"a smallcase named {name!r} already exists")
    resolved = validate_constituents(session, constituents)
    smallcase = Smallcase(
        name=name,
        description=checked.description,
        category=checked.category,
        min_investment=checked.min_investment,
        risk_level=checked.risk_level.value if checked.risk_level else None,
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
