"""The asset master and daily price history."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, CreatedAt, Price, PrimaryKey, Str20, Str50, Timestamps, Volume
from saras.domain.enums import AssetType


class Asset(Timestamps, Base):
    """A tradable instrument, unique per (symbol, exchange).

    ``metadata`` holds broker facts: ``fractionable`` (Alpaca), ``instrument_token``,
    ``lot_size``, ``tick_size`` (Kite).
    """

    __tablename__ = "assets"
    __table_args__ = (UniqueConstraint("symbol", "exchange"),)

    id: Mapped[PrimaryKey]
    symbol: Mapped[Str50]
    name: Mapped[str | None] = mapped_column(String(255))
    asset_type: Mapped[Str20] = mapped_column(
        default=AssetType.EQUITY.value, server_default=AssetType.EQUITY.value
    )
    exchange: Mapped[Str20]
    currency: Mapped[str] = mapped_column(String(3))
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata")


class PriceHistory(CreatedAt, Base):
    """One daily OHLCV bar per asset and trading day. Never deleted by a cascade."""

    __tablename__ = "price_history"
    __table_args__ = (
        UniqueConstraint("asset_id", "price_date"),
        CheckConstraint("low_price <= high_price", name="low_le_high"),
        CheckConstraint(
            "open_price >= 0 AND high_price >= 0 AND low_price >= 0 AND close_price >= 0",
            name="prices_non_negative",
        ),
        CheckConstraint("volume >= 0", name="volume_non_negative"),
    )

    id: Mapped[PrimaryKey]
    asset_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("assets.id", ondelete="RESTRICT"))
    open_price: Mapped[Price]
    high_price: Mapped[Price]
    low_price: Mapped[Price]
    close_price: Mapped[Price]
    volume: Mapped[Volume]
    price_date: Mapped[date]
