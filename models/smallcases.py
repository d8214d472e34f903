"""Smallcases, their constituents, investments, execution runs and orders, position history."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import (
    Base,
    CreatedAt,
    Money,
    Price,
    PrimaryKey,
    Quantity,
    Str20,
    Str100,
    Timestamps,
    Weight,
    in_set,
)
from saras.domain.enums import (
    UNFINISHED_RUN_STATUSES,
    ExecutionMode,
    InvestmentStatus,
    OrderSide,
    OrderStatus,
    OrderType,
    RiskLevel,
    RunStatus,
    RunType,
)

OPEN_INVESTMENT_STATUSES = (
    InvestmentStatus.PENDING,
    InvestmentStatus.ACTIVE,
    InvestmentStatus.EXITING,
)


class Smallcase(Timestamps, Base):
    """A basket of assets with target weights; ``metadata`` keeps earlier compositions."""

    __tablename__ = "smallcases"
    __table_args__ = (
        UniqueConstraint("name"),
        CheckConstraint(
            "risk_level IS NULL OR " + in_set("risk_level", RiskLevel), name="risk_level"
        ),
        CheckConstraint("min_investment IS NULL OR min_investment >= 0", name="min_investment"),
    )

    id: Mapped[PrimaryKey]
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    category: Mapped[Str100 | None]
    min_investment: Mapped[Money | None]
    risk_level: Mapped[Str20 | None]
    is_active: Mapped[bool] = mapped_column(server_default=text("true"), default=True)
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata")


class SmallcaseConstituent(Timestamps, Base):
    """An asset's target weight in a smallcase; goes with its smallcase."""

    __tablename__ = "smallcase_constituents"
    __table_args__ = (
        UniqueConstraint("smallcase_id", "asset_id"),
        CheckConstraint("weight_percentage > 0 AND weight_percentage <= 100", name="weight_range"),
        Index(None, "asset_id"),
    )

    id: Mapped[PrimaryKey]
    smallcase_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("smallcases.id", ondelete="CASCADE"))
    asset_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("assets.id", ondelete="RESTRICT"))
    weight_percentage: Mapped[Weight]
    rationale: Mapped[str | None] = mapped_column(String(1000))


class UserSmallcaseInvestment(Timestamps, Base):
    """A user's investment in a smallcase through one broker connection."""

    __tablename__ = "user_smallcase_investments"
    __table_args__ = (
        CheckConstraint(in_set("status", InvestmentStatus), name="status"),
        CheckConstraint(in_set("execution_mode", ExecutionMode), name="execution_mode"),
        CheckConstraint("investment_amount >= 0", name="amount_non_negative"),
        Index(None, "smallcase_id", "status"),
        Index(None, "broker_connection_id"),
        Index(None, "portfolio_id"),
        # one open investment per user and smallcase: a second invest is a top-up
        Index(
            "uq_user_smallcase_investments_open",
            "user_id",
            "smallcase_id",
            unique=True,
            postgresql_where=text(in_set("status", OPEN_INVESTMENT_STATUSES)),
            sqlite_where=text(in_set("status", OPEN_INVESTMENT_STATUSES)),
        ),
    )

    id: Mapped[PrimaryKey]
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"))
    smallcase_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("smallcases.id", ondelete="RESTRICT")
    )
    portfolio_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("portfolios.id", ondelete="RESTRICT")
    )
    broker_connection_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("user_broker_connections.id", ondelete="RESTRICT")
    )
    investment_amount: Mapped[Money]
    status: Mapped[Str20] = mapped_column(
        default=InvestmentStatus.PENDING.value, server_default=InvestmentStatus.PENDING.value
    )
    execution_mode: Mapped[Str20] = mapped_column(
        default=ExecutionMode.PAPER.value, server_default=ExecutionMode.PAPER.value
    )
    invested_at: Mapped[datetime | None]
    closed_at: Mapped[datetime | None]


class SmallcaseExecutionRun(Timestamps, Base):
    """One planned-then-executed batch of orders for one investment."""

    __tablename__ = "smallcase_execution_runs"
    __table_args__ = (
        CheckConstraint(in_set("run_type", RunType), name="run_type"),
        CheckConstraint(in_set("status", RunStatus), name="status"),
        # at most one unfinished run per investment, enforced by the database
        Index(
            "uq_smallcase_execution_runs_unfinished",
            "investment_id",
            unique=True,
            postgresql_where=text(in_set("status", UNFINISHED_RUN_STATUSES)),
            sqlite_where=text(in_set("status", UNFINISHED_RUN_STATUSES)),
        ),
        Index(None, "investment_id", "created_at"),
        Index(None, "broker_connection_id", "status"),
        Index(None, "status"),
    )

    id: Mapped[PrimaryKey]
    investment_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("user_smallcase_investments.id", ondelete="RESTRICT")
    )
    broker_connection_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("user_broker_connections.id", ondelete="RESTRICT")
    )
    run_type: Mapped[Str20]
    status: Mapped[Str20] = mapped_column(
        default=RunStatus.PLANNED.value, server_default=RunStatus.PLANNED.value
    )
    total_amount: Mapped[Money | None]
    execution_plan: Mapped[dict[str, Any] | None]
    started_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]


class SmallcaseExecutionOrder(Timestamps, Base):
    """One order of a run; its id is what the broker order id is derived from."""

    __tablename__ = "smallcase_execution_orders"
    __table_args__ = (
        CheckConstraint(in_set("side", OrderSide), name="side"),
        CheckConstraint(in_set("order_type", OrderType), name="order_type"),
        CheckConstraint(in_set("status", OrderStatus), name="status"),
        CheckConstraint("quantity > 0", name="quantity_positive"),
        CheckConstraint("price IS NULL OR price >= 0", name="price_non_negative"),
        Index(
            None,
            "execution_run_id",
            "broker_order_id",
            unique=True,
            postgresql_where=text("broker_order_id IS NOT NULL"),
            sqlite_where=text("broker_order_id IS NOT NULL"),
        ),
        Index(None, "execution_run_id", "status"),
        Index(None, "asset_id"),
    )

    id: Mapped[PrimaryKey]
    execution_run_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("smallcase_execution_runs.id", ondelete="RESTRICT")
    )
    asset_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("assets.id", ondelete="RESTRICT"))
    side: Mapped[Str20]
    quantity: Mapped[Quantity]
    price: Mapped[Price | None]
    order_type: Mapped[Str20] = mapped_column(
        default=OrderType.MARKET.value, server_default=OrderType.MARKET.value
    )
    status: Mapped[Str20] = mapped_column(
        default=OrderStatus.PLANNED.value, server_default=OrderStatus.PLANNED.value
    )
    broker_order_id: Mapped[Str100 | None]
    order_metadata: Mapped[dict[str, Any] | None]


class UserSmallcasePositionHistory(CreatedAt, Base):
    """A nightly snapshot of one investment's position in one asset.

    ``snapshot_date`` is a timestamp in the seed; Saras writes the snapshot day at 00:00 UTC,
    so the unique key means one row per investment, asset and day.
    """

    __tablename__ = "user_smallcase_position_history"
    __table_args__ = (
        UniqueConstraint(
            "investment_id",
            "asset_id",
            "snapshot_date",
            name="uq_position_history_investment_asset_day",
        ),
        Index(None, "snapshot_date"),
        Index(None, "asset_id"),
        Index(None, "broker_connection_id"),
    )

    id: Mapped[PrimaryKey]
    investment_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("user_smallcase_investments.id", ondelete="RESTRICT")
    )
    asset_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("assets.id", ondelete="RESTRICT"))
    broker_connection_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("user_broker_connections.id", ondelete="RESTRICT")
    )
    quantity: Mapped[Quantity]
    average_price: Mapped[Price | None]
    market_value: Mapped[Money | None]
    unrealized_pnl: Mapped[Money | None]
    snapshot_date: Mapped[datetime]


__all__ = [
    "OPEN_INVESTMENT_STATUSES",
    "Decimal",
    "Smallcase",
    "SmallcaseConstituent",
    "SmallcaseExecutionOrder",
    "SmallcaseExecutionRun",
    "UserSmallcaseInvestment",
    "UserSmallcasePositionHistory",
]
