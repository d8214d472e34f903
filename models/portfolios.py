"""Portfolios, their holdings, and the transaction ledger."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, Money, Price, PrimaryKey, Quantity, Str20, Str100, Timestamps, in_set
from saras.domain.enums import TransactionType


class Portfolio(Timestamps, Base):
    """A user's portfolio in one currency; never deleted while it has transactions."""

    __tablename__ = "portfolios"
    __table_args__ = (Index(None, "user_id"),)

    id: Mapped[PrimaryKey]
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    total_value: Mapped[Money] = mapped_column(server_default=text("0"), default=Decimal(0))
    cash_balance: Mapped[Money] = mapped_column(server_default=text("0"), default=Decimal(0))
    currency: Mapped[str] = mapped_column(String(3))


class PortfolioHolding(Timestamps, Base):
    """A portfolio's current position in one asset (derived from fills; goes with the portfolio)."""

    __tablename__ = "portfolio_holdings"
    __table_args__ = (
        UniqueConstraint("portfolio_id", "asset_id"),
        CheckConstraint("quantity >= 0", name="quantity_non_negative"),
        Index(None, "asset_id"),
    )

    id: Mapped[PrimaryKey]
    portfolio_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("portfolios.id", ondelete="CASCADE"))
    asset_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("assets.id", ondelete="RESTRICT"))
    quantity: Mapped[Quantity]
    average_price: Mapped[Price | None]
    current_price: Mapped[Price | None]
    total_value: Mapped[Money | None]
    unrealized_pnl: Mapped[Money | None]


class TradingTransaction(Timestamps, Base):
    """One ledger entry: a fill, a deposit, a fee. Never deleted by a cascade."""

    __tablename__ = "trading_transactions"
    __table_args__ = (
        CheckConstraint(in_set("transaction_type", TransactionType), name="transaction_type"),
        CheckConstraint("quantity >= 0", name="quantity_non_negative"),
        CheckConstraint("price IS NULL OR price >= 0", name="price_non_negative"),
        CheckConstraint("fees >= 0", name="fees_non_negative"),
        Index(
            None,
            "portfolio_id",
            "broker_transaction_id",
            unique=True,
            postgresql_where=text("broker_transaction_id IS NOT NULL"),
            sqlite_where=text("broker_transaction_id IS NOT NULL"),
        ),
        Index(None, "portfolio_id", "transaction_date"),
        Index(None, "asset_id"),
    )

    id: Mapped[PrimaryKey]
    portfolio_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("portfolios.id", ondelete="RESTRICT")
    )
    asset_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("assets.id", ondelete="RESTRICT"))
    transaction_type: Mapped[Str20]
    quantity: Mapped[Quantity]
    price: Mapped[Price | None]
    fees: Mapped[Money] = mapped_column(server_default=text("0"), default=Decimal(0))
    broker_transaction_id: Mapped[Str100 | None]
    transaction_date: Mapped[datetime]
