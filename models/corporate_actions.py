"""Corporate actions, the ledger adjustments they cause, and reconciliation with the brokers."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Index, Numeric, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, Money, Price, PrimaryKey, Quantity, Str20, Str50, Timestamps, in_set
from saras.domain.enums import (
    AdjustmentKind,
    CorporateActionStatus,
    CorporateActionType,
    DifferenceClass,
    DifferenceKind,
    DifferenceStatus,
)


class CorporateAction(Timestamps, Base):
    """A split, reverse split, bonus issue or dividend of one asset, as a source reported it.

    ``ratio`` is the number of shares held after the action per share held before (4:1 split: 4;
    1:10 reverse split: 0.1; 1:1 bonus: 2); ``cash_amount`` a dividend per share in ``currency``.
    One action per asset, type and ex-date: a second source reporting it changes nothing.
    """

    __tablename__ = "corporate_actions"
    __table_args__ = (
        UniqueConstraint("asset_id", "action_type", "ex_date"),
        CheckConstraint(in_set("action_type", CorporateActionType), name="action_type"),
        CheckConstraint(in_set("status", CorporateActionStatus), name="status"),
        CheckConstraint(
            "(action_type = 'dividend' AND cash_amount IS NOT NULL AND cash_amount >= 0) OR "
            "(action_type <> 'dividend' AND ratio IS NOT NULL AND ratio > 0)",
            name="amount",
        ),
        Index(None, "status"),
    )

    id: Mapped[PrimaryKey]
    asset_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("assets.id", ondelete="RESTRICT"))
    action_type: Mapped[Str20]
    ex_date: Mapped[date]
    ratio: Mapped[Decimal | None] = mapped_column(Numeric(24, 12))
    cash_amount: Mapped[Price | None]
    currency: Mapped[str | None] = mapped_column(String(3))
    source: Mapped[Str50]
    status: Mapped[Str20] = mapped_column(
        default=CorporateActionStatus.DETECTED.value,
        server_default=CorporateActionStatus.DETECTED.value,
    )
    details: Mapped[dict[str, Any] | None]
    applied_at: Mapped[datetime | None]


class PositionAdjustment(Timestamps, Base):
    """A move of an investment's ledger position or cash that is not a fill.

    Positions are the investment's fills plus these rows: a split or bonus (``quantity_delta``
    the shares it added or took, ``average_price`` the position's average after it), its cash in
    lieu, a dividend (``cash_delta``), or a reconciliation difference accepted into the ledger.
    Each has its ``trading_transactions`` row; one per action (or difference), investment and
    kind, so applying twice changes nothing.
    """

    __tablename__ = "position_adjustments"
    __table_args__ = (
        UniqueConstraint("corporate_action_id", "investment_id", "kind"),
        UniqueConstraint("difference_id", "investment_id", "kind"),
        CheckConstraint(in_set("kind", AdjustmentKind), name="kind"),
        Index(None, "investment_id", "asset_id"),
    )

    id: Mapped[PrimaryKey]
    investment_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("user_smallcase_investments.id", ondelete="RESTRICT")
    )
    asset_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("assets.id", ondelete="RESTRICT"))
    corporate_action_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("corporate_actions.id", ondelete="RESTRICT")
    )
    difference_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("reconciliation_differences.id", ondelete="RESTRICT")
    )
    kind: Mapped[Str20]
    quantity_delta: Mapped[Quantity] = mapped_column(default=Decimal(0))
    average_price: Mapped[Price | None]
    cash_delta: Mapped[Money] = mapped_column(default=Decimal(0))
    transaction_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("trading_transactions.id", ondelete="RESTRICT")
    )
    effective_at: Mapped[datetime]


class Reconciliation(Timestamps, Base):
    """One connection's reconciliation on one day: the broker's cash and our ledger's flows.

    Cash is reconciled against the first reconciliation of the connection (its anchor): the
    broker's cash should have moved since then exactly as our ledger's cash flows through the
    connection (fills, fees, dividends, cash in lieu, accepted differences) moved.
    """

    __tablename__ = "reconciliations"
    __table_args__ = (UniqueConstraint("broker_connection_id", "snapshot_date"),)

    id: Mapped[PrimaryKey]
    broker_connection_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("user_broker_connections.id", ondelete="CASCADE")
    )
    snapshot_date: Mapped[date]
    broker_cash: Mapped[Money | None]
    ledger_cash_flow: Mapped[Money | None]
    currency: Mapped[str | None] = mapped_column(String(3))
    differences: Mapped[int] = mapped_column(default=0)


class ReconciliationDifference(Timestamps, Base):
    """A difference between our ledger and a broker, kept until resolved or accepted.

    ``exchange`` is '' when the broker reported a symbol we cannot place on an exchange; a cash
    difference has symbol '' and ``currency`` set. ``open`` differences stop the next plan of
    every investment on the connection.
    """

    __tablename__ = "reconciliation_differences"
    __table_args__ = (
        UniqueConstraint(
            "broker_connection_id",
            "snapshot_date",
            "kind",
            "symbol",
            "exchange",
            name="uq_reconciliation_differences_day_asset",
        ),
        CheckConstraint(in_set("kind", DifferenceKind), name="kind"),
        CheckConstraint(in_set("classification", DifferenceClass), name="classification"),
        CheckConstraint(in_set("status", DifferenceStatus), name="status"),
        Index(None, "broker_connection_id", "status"),
    )

    id: Mapped[PrimaryKey]
    broker_connection_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("user_broker_connections.id", ondelete="CASCADE")
    )
    snapshot_date: Mapped[date]
    kind: Mapped[Str20]
    asset_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("assets.id", ondelete="RESTRICT"))
    symbol: Mapped[Str50] = mapped_column(default="")
    exchange: Mapped[Str20] = mapped_column(default="")
    currency: Mapped[str | None] = mapped_column(String(3))
    ours: Mapped[Quantity]
    broker: Mapped[Quantity]
    classification: Mapped[Str20]
    detail: Mapped[str | None] = mapped_column(Text)
    status: Mapped[Str20] = mapped_column(
        default=DifferenceStatus.OPEN.value, server_default=DifferenceStatus.OPEN.value
    )
    resolved_at: Mapped[datetime | None]
    accepted_by: Mapped[str | None] = mapped_column(String(255))
