"""Corporate actions, position adjustments, and reconciliations kept as data.

Revision ID: 0005
Revises: 0004_integrity
Create Date: 2026-11-30

Why: the ledger must follow the market. A 4:1 split rewrote the price history while the holdings
stayed as they were, and the next plan bought four times too much. Splits, reverse splits, bonus
issues and dividends are now stored (``corporate_actions``, one per asset, type and ex-date) and
applied to each investment once (``position_adjustments``, unique per action, investment and
kind, each with its ``trading_transactions`` row of the new types ``split``, ``bonus``,
``cash_in_lieu`` or ``adjustment``). Reconciliation with the brokers is kept too
(``reconciliations``: the broker's cash and our ledger's cash flow per connection and day;
``reconciliation_differences``: what differed, classified, until resolved or accepted), so the
planner can refuse an investment whose ledger is not the broker's.
Risks: none for existing rows: four new tables, and the CHECK on
``trading_transactions.transaction_type`` widened. Downgrade drops the four tables (their data
is lost) and narrows the CHECK again, which fails, naming the constraint, while ledger rows of
the new types exist: delete or convert those rows first.
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004_integrity"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TSTZ = sa.DateTime(timezone=True)
JSONB = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")

OLD_TYPES = "'buy', 'sell', 'deposit', 'withdrawal', 'dividend', 'fee'"
NEW_TYPES = OLD_TYPES + ", 'split', 'bonus', 'cash_in_lieu', 'adjustment'"
TYPE_CHECK = "ck_trading_transactions_transaction_type"


def _timestamps() -> list[sa.Column[Any]]:
    return [
        sa.Column("created_at", TSTZ, server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", TSTZ, server_default=sa.func.now(), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "corporate_actions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("asset_id", sa.Uuid(), nullable=False),
        sa.Column("action_type", sa.String(20), nullable=False),
        sa.Column("ex_date", sa.Date(), nullable=False),
        sa.Column("ratio", sa.Numeric(24, 12), nullable=True),
        sa.Column("cash_amount", sa.Numeric(20, 6), nullable=True),
        sa.Column("currency", sa.String(3), nullable=True),
        sa.Column("source", sa.String(50), nullable=False),
        sa.Column("status", sa.String(20), server_default="detected", nullable=False),
        sa.Column("details", JSONB, nullable=True),
        sa.Column("applied_at", TSTZ, nullable=True),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_corporate_actions")),
        sa.UniqueConstraint(
            "asset_id",
            "action_type",
            "ex_date",
            name=op.f("uq_corporate_actions_asset_id_action_type_ex_date"),
        ),
        sa.CheckConstraint(
            "action_type IN ('split', 'reverse_split', 'bonus', 'dividend')",
            name=op.f("ck_corporate_actions_action_type"),
        ),
        sa.CheckConstraint(
            "status IN ('detected', 'applied', 'dismissed')",
            name=op.f("ck_corporate_actions_status"),
        ),
        sa.CheckConstraint(
            "(action_type = 'dividend' AND cash_amount IS NOT NULL AND cash_amount >= 0) OR "
            "(action_type <> 'dividend' AND ratio IS NOT NULL AND ratio > 0)",
            name=op.f("ck_corporate_actions_amount"),
        ),
        sa.ForeignKeyConstraint(
            ["asset_id"],
            ["assets.id"],
            name=op.f("fk_corporate_actions_asset_id"),
            ondelete="RESTRICT",
        ),
    )
    op.create_index(op.f("ix_corporate_actions_status"), "corporate_actions", ["status"])

    op.create_table(
        "reconciliations",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("broker_connection_id", sa.Uuid(), nullable=False),
        sa.Column("snapshot_date", sa.Date(), nullable=False),
        sa.Column("broker_cash", sa.Numeric(20, 4), nullable=True),
        sa.Column("ledger_cash_flow", sa.Numeric(20, 4), nullable=True),
        sa.Column("currency", sa.String(3), nullable=True),
        sa.Column("differences", sa.Integer(), nullable=False),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reconciliations")),
        sa.UniqueConstraint(
            "broker_connection_id",
            "snapshot_date",
            name=op.f("uq_reconciliations_broker_connection_id_snapshot_date"),
        ),
        sa.ForeignKeyConstraint(
            ["broker_connection_id"],
            ["user_broker_connections.id"],
            name=op.f("fk_reconciliations_broker_connection_id"),
            ondelete="CASCADE",
        ),
    )

    op.create_table(
        "reconciliation_differences",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("broker_connection_id", sa.Uuid(), nullable=False),
        sa.Column("snapshot_date", sa.Date(), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("asset_id", sa.Uuid(), nullable=True),
        sa.Column("symbol", sa.String(50), nullable=False),
        sa.Column("exchange", sa.String(20), nullable=False),
        sa.Column("currency", sa.String(3), nullable=True),
        sa.Column("ours", sa.Numeric(24, 9), nullable=False),
        sa.Column("broker", sa.Numeric(24, 9), nullable=False),
        sa.Column("classification", sa.String(20), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("status", sa.String(20), server_default="open", nullable=False),
        sa.Column("resolved_at", TSTZ, nullable=True),
        sa.Column("accepted_by", sa.String(255), nullable=True),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reconciliation_differences")),
        sa.UniqueConstraint(
            "broker_connection_id",
            "snapshot_date",
            "kind",
            "symbol",
            "exchange",
            name=op.f("uq_reconciliation_differences_day_asset"),
        ),
        sa.CheckConstraint(
            "kind IN ('position', 'cash')", name=op.f("ck_reconciliation_differences_kind")
        ),
        sa.CheckConstraint(
            "classification IN ('split_not_applied', 'fill_not_recorded', 'external_trade', "
            "'cash', 'unknown')",
            name=op.f("ck_reconciliation_differences_classification"),
        ),
        sa.CheckConstraint(
            "status IN ('open', 'resolved', 'accepted')",
            name=op.f("ck_reconciliation_differences_status"),
        ),
        sa.ForeignKeyConstraint(
            ["broker_connection_id"],
            ["user_broker_connections.id"],
            name=op.f("fk_reconciliation_differences_broker_connection_id"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["asset_id"],
            ["assets.id"],
            name=op.f("fk_reconciliation_differences_asset_id"),
            ondelete="RESTRICT",
        ),
    )
    op.create_index(
        op.f("ix_reconciliation_differences_broker_connection_id_status"),
        "reconciliation_differences",
        ["broker_connection_id", "status"],
    )

    op.create_table(
        "position_adjustments",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("investment_id", sa.Uuid(), nullable=False),
        sa.Column("asset_id", sa.Uuid(), nullable=True),
        sa.Column("corporate_action_id", sa.Uuid(), nullable=True),
        sa.Column("difference_id", sa.Uuid(), nullable=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("quantity_delta", sa.Numeric(24, 9), nullable=False),
        sa.Column("average_price", sa.Numeric(20, 6), nullable=True),
        sa.Column("cash_delta", sa.Numeric(20, 4), nullable=False),
        sa.Column("transaction_id", sa.Uuid(), nullable=True),
        sa.Column("effective_at", TSTZ, nullable=False),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_position_adjustments")),
        sa.UniqueConstraint(
            "corporate_action_id",
            "investment_id",
            "kind",
            name=op.f("uq_position_adjustments_corporate_action_id_investment_id_kind"),
        ),
        sa.UniqueConstraint(
            "difference_id",
            "investment_id",
            "kind",
            name=op.f("uq_position_adjustments_difference_id_investment_id_kind"),
        ),
        sa.CheckConstraint(
            "kind IN ('split', 'bonus', 'cash_in_lieu', 'dividend', 'accepted_difference')",
            name=op.f("ck_position_adjustments_kind"),
        ),
        sa.ForeignKeyConstraint(
            ["investment_id"],
            ["user_smallcase_investments.id"],
            name=op.f("fk_position_adjustments_investment_id"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["asset_id"],
            ["assets.id"],
            name=op.f("fk_position_adjustments_asset_id"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["corporate_action_id"],
            ["corporate_actions.id"],
            name=op.f("fk_position_adjustments_corporate_action_id"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["difference_id"],
            ["reconciliation_differences.id"],
            name=op.f("fk_position_adjustments_difference_id"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["trading_transactions.id"],
            name=op.f("fk_position_adjustments_transaction_id"),
            ondelete="RESTRICT",
        ),
    )
    op.create_index(
        op.f("ix_position_adjustments_investment_id_asset_id"),
        "position_adjustments",
        ["investment_id", "asset_id"],
    )

    with op.batch_alter_table("trading_transactions") as batch:
        batch.drop_constraint(op.f(TYPE_CHECK), type_="check")
        batch.create_check_constraint(op.f(TYPE_CHECK), f"transaction_type IN ({NEW_TYPES})")


def downgrade() -> None:
    with op.batch_alter_table("trading_transactions") as batch:
        batch.drop_constraint(op.f(TYPE_CHECK), type_="check")
        batch.create_check_constraint(op.f(TYPE_CHECK), f"transaction_type IN ({OLD_TYPES})")
    op.drop_index(
        op.f("ix_position_adjustments_investment_id_asset_id"), table_name="position_adjustments"
    )
    op.drop_table("position_adjustments")
    op.drop_index(
        op.f("ix_reconciliation_differences_broker_connection_id_status"),
        table_name="reconciliation_differences",
    )
    op.drop_table("reconciliation_differences")
    op.drop_table("reconciliations")
    op.drop_index(op.f("ix_corporate_actions_status"), table_name="corporate_actions")
    op.drop_table("corporate_actions")
