"""After-execution reports: ``execution_run_reports`` and ``execution_run_report_legs``.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30

Why: after a rebalance executes, the analyst's report (planned against filled quantity and
price per asset, slippage in bps against the planned price, cost, drift left per investment)
must be queryable in SQL, not only shown as a Prefect artifact. One row per run
(``execution_run_reports``) and one per run, asset and side (``execution_run_report_legs``).
Risks: none for existing rows: two new tables. Downgrade drops them (the reports are lost; they
can be recomputed from the orders, except the drift left, which depends on prices at the time).
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TSTZ = sa.DateTime(timezone=True)


def _created() -> list[sa.Column[Any]]:
    return [sa.Column("created_at", TSTZ, server_default=sa.func.now(), nullable=False)]


def upgrade() -> None:
    op.create_table(
        "execution_run_reports",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("execution_run_id", sa.Uuid(), nullable=False),
        sa.Column("investment_id", sa.Uuid(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("run_status", sa.String(20), nullable=False),
        sa.Column("planned_value", sa.Numeric(20, 4), nullable=False),
        sa.Column("filled_value", sa.Numeric(20, 4), nullable=False),
        sa.Column("cost", sa.Numeric(20, 4), nullable=False),
        sa.Column("slippage_bps", sa.Numeric(12, 4), nullable=True),
        sa.Column("drift_left_pct", sa.Numeric(12, 4), nullable=True),
        *_created(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_execution_run_reports")),
        sa.UniqueConstraint(
            "execution_run_id", name=op.f("uq_execution_run_reports_execution_run_id")
        ),
        sa.ForeignKeyConstraint(
            ["execution_run_id"],
            ["smallcase_execution_runs.id"],
            name=op.f("fk_execution_run_reports_execution_run_id"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["investment_id"],
            ["user_smallcase_investments.id"],
            name=op.f("fk_execution_run_reports_investment_id"),
            ondelete="CASCADE",
        ),
    )
    op.create_index(
        op.f("ix_execution_run_reports_investment_id"),
        "execution_run_reports",
        ["investment_id"],
    )
    op.create_table(
        "execution_run_report_legs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("report_id", sa.Uuid(), nullable=False),
        sa.Column("asset_id", sa.Uuid(), nullable=False),
        sa.Column("side", sa.String(20), nullable=False),
        sa.Column("planned_quantity", sa.Numeric(24, 9), nullable=False),
        sa.Column("filled_quantity", sa.Numeric(24, 9), nullable=False),
        sa.Column("planned_price", sa.Numeric(20, 6), nullable=True),
        sa.Column("avg_fill_price", sa.Numeric(20, 6), nullable=True),
        sa.Column("slippage_bps", sa.Numeric(12, 4), nullable=True),
        sa.Column("cost", sa.Numeric(20, 4), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_execution_run_report_legs")),
        sa.UniqueConstraint(
            "report_id",
            "asset_id",
            "side",
            name=op.f("uq_execution_run_report_legs_report_id_asset_id_side"),
        ),
        sa.ForeignKeyConstraint(
            ["report_id"],
            ["execution_run_reports.id"],
            name=op.f("fk_execution_run_report_legs_report_id"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["asset_id"],
            ["assets.id"],
            name=op.f("fk_execution_run_report_legs_asset_id"),
            ondelete="RESTRICT",
        ),
    )


def downgrade() -> None:
    op.drop_table("execution_run_report_legs")
    op.drop_index(
        op.f("ix_execution_run_reports_investment_id"), table_name="execution_run_reports"
    )
    op.drop_table("execution_run_reports")
