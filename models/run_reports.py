"""After-execution reports: per run, and per run, asset and side (queryable in SQL)."""

from __future__ import annotations

import uuid
from decimal import Decimal

from sqlalchemy import ForeignKey, Numeric, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, CreatedAt, Money, Price, PrimaryKey, Quantity, Str20


class ExecutionRunReport(CreatedAt, Base):
    """How one run's execution went against its plan (``saras.domain.execution_report``).

    ``slippage_bps`` is the legs' slippage weighted by filled value (positive: a cost);
    ``drift_left_pct`` the largest gap, in points, between a weight and its target afterwards.
    Written again (replaced) if the run is reported again.
    """

    __tablename__ = "execution_run_reports"
    __table_args__ = (UniqueConstraint("execution_run_id"),)

    id: Mapped[PrimaryKey]
    execution_run_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("smallcase_execution_runs.id", ondelete="CASCADE")
    )
    investment_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("user_smallcase_investments.id", ondelete="CASCADE"), index=True
    )
    currency: Mapped[str] = mapped_column(String(3))
    run_status: Mapped[Str20]
    planned_value: Mapped[Money]
    filled_value: Mapped[Money]
    cost: Mapped[Money]
    slippage_bps: Mapped[Decimal | None] = mapped_column(Numeric(12, 4))
    drift_left_pct: Mapped[Decimal | None] = mapped_column(Numeric(12, 4))


class ExecutionRunReportLeg(Base):
    """One asset and side of a run's report: planned against filled."""

    __tablename__ = "execution_run_report_legs"
    __table_args__ = (UniqueConstraint("report_id", "asset_id", "side"),)

    id: Mapped[PrimaryKey]
    report_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("execution_run_reports.id", ondelete="CASCADE")
    )
    asset_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("assets.id", ondelete="RESTRICT"))
    side: Mapped[Str20]
    planned_quantity: Mapped[Quantity]
    filled_quantity: Mapped[Quantity]
    planned_price: Mapped[Price | None]
    avg_fill_price: Mapped[Price | None]
    slippage_bps: Mapped[Decimal | None] = mapped_column(Numeric(12, 4))
    cost: Mapped[Money]
