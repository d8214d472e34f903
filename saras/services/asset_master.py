"""The asset master from the brokers' own lists (Alpaca assets, Kite instruments)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from models import Asset
from saras.brokers.base import AssetLister, BrokerAsset
from saras.errors import InvalidInputError


@dataclass
class ImportCounts:
    """What an import did."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0


def import_assets(
    session: Session, assets: Iterable[BrokerAsset], symbols: Iterable[str] | None = None
) -> ImportCounts:
    """Create or refresh assets (symbol, exchange) from a broker's list; keep our own metadata."""
    wanted = {s.upper() for s in symbols} if symbols else None
    counts = ImportCounts()
    rows = [a for a in assets if a.tradable and (wanted is None or a.symbol in wanted)]
    if wanted is not None:
        missing = wanted - {a.symbol for a in rows}
        if missing:
            raise InvalidInputError(f"the broker lists no tradable {', '.join(sorted(missing))}")
    existing = {
        (a.symbol, a.exchange): a
        for a in session.scalars(select(Asset).where(Asset.symbol.in_({r.symbol for r in rows})))
    }
    for item in rows:
        found = existing.get((item.symbol, item.exchange))
        if found is None:
            session.add(
                Asset(
                    symbol=item.symbol,
                    exchange=item.exchange,
                    currency=item.currency,
                    name=item.name,
                    asset_type=item.asset_type,
                    metadata_=dict(item.metadata),
                )
            )
            counts.created += 1
            continue
        merged = {**(found.metadata_ or {}), **item.metadata}
        if merged != (found.metadata_ or {}) or (item.name and item.name != found.name):
            found.metadata_ = merged
            found.name = item.name or found.name
            counts.updated += 1
        else:
            counts.unchanged += 1
    session.flush()
    return counts


def list_broker_assets(broker: object, exchange: str | None = None) -> list[BrokerAsset]:
    """Ask a broker adapter for its instruments (a clear error when it cannot list them)."""
    if not isinstance(broker, AssetLister):
        raise InvalidInputError(f"{type(broker).__name__} cannot list its instruments")
    return list(broker.list_assets(exchange))
