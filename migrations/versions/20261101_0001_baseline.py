"""Baseline: the platform's schema as it was before the seed's fixes.

Revision ID: 0001_baseline
Revises:
Create Date: 2026-11-01

Why: existing platform databases were created from this schema. Starting the history here lets
them be stamped at 0001 and upgraded in place (`alembic stamp 0001_baseline`, then
`alembic upgrade head`). It has the fifteen tables, their keys and foreign keys, but
`user_broker_connections` has no `alias` and `portfolio_holdings` no `updated_at` (added by 0002
and 0003), and none of the CHECK constraints and secondary indexes (0004).
Risks: none on an empty database; never run it against a database that already has the tables.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001_baseline"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TSTZ = sa.DateTime(timezone=True)
JSONB = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
INET = sa.String(length=45).with_variant(postgresql.INET(), "postgresql")

TABLES_IN_DROP_ORDER = (
    "smallcase_execution_orders",
    "user_smallcase_position_history",
    "smallcase_execution_runs",
    "user_smallcase_investments",
    "trading_transactions",
    "portfolio_holdings",
    "user_sessions",
    "user_broker_connections",
    "smallcase_constituents",
    "price_history",
    "portfolios",
    "audit_logs",
    "users",
    "smallcases",
    "assets",
)


def upgrade() -> None:
    op.create_table(
        "assets",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("symbol", sa.String(length=50), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=True),
        sa.Column("asset_type", sa.String(length=20), server_default="equity", nullable=False),
        sa.Column("exchange", sa.String(length=20), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("metadata", JSONB, nullable=True),
        sa.Column("created_at", TSTZ, server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", TSTZ, server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_assets")),
        sa.UniqueConstraint("symbol", "exchange", name=op.f("uq_assets_symbol_exchange")),
    )
    op.create_table(
        "smallcases",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("category", sa.String(length=100), nullable=True),
        sa.Column("min_investment", sa.Numeric(precision=20, scale=4), nullable=True),
        sa.Column("risk_level", sa.String(length=20), nullable=True),
        sa.Column("is_active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("metadata", JSONB, nullable=True),
        sa.Column("created_at", TSTZ, server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", TSTZ, server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_smallcases")),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=True),
        sa.Column("first_name", sa.String(length=100), nullable=True),
        sa.Column("last_name", sa.String(length=100), nullable=True),
        sa.Column("created_at", TSTZ, server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", TSTZ, server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("email", name=op.f("uq_users_email")),
    )
    op.create_table(
        "audit_logs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("event_type", sa.String(length=100), nullable=False),
        sa.Column("request_id", sa.Uuid(), nullable=True),
        sa.Column("timestamp", TSTZ, nullable=False),
        sa.Column("client_ip", INET, nullable=True),
        sa.Column("user_agent", sa.Text(), nullable=True),
        sa.Column("path", sa.String(length=500), nullable=True),
        sa.Column("method", sa.String(length=20), nullable=True),
        sa.Column("user_id", sa.Uuid(), nullable=True),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("processing_time_ms", sa.Numeric(precision=14, scale=3), nullable=True),
        sa.Column("success", sa.Boolean(), nullable=False),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("created_at", TSTZ, server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_audit_logs_user_id"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_logs")),
    )
    op.create_table(
        "portfolios",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column(
            "total_value",
            sa.Numeric(precision=20, scale=4),
            server_default=sa.text("0"),
            nullable=False,
        ),
        sa.Column(
            "cash_balance",
            sa.Numeric(precision=20, scale=4),
            server_default=sa.text("0"),
            nullable=False,
        ),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("created_at", TSTZ, server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", TSTZ, server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_portfolios_user_id"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_portfolios")),
    )
    op.create_table(
        "price_history",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("asset_id", sa.Uuid(), nullable=False),
        sa.Column("open_price", sa.Numeric(precision=20, scale=6), nullable=False),
        sa.Column("high_price", sa.Numeric(precision=20, scale=6), nullable=False),
        sa.Column("low_price", sa.Numeric(precision=20, scale=6), nullable=False),
        sa.Column("close_price", sa.Numeric(precision=20, scale=6), nullable=False),
        sa.Column("volume", sa.Numeric(precision=24, scale=4), nullable=False),
        sa.Column("price_date", sa.Date(), nullable=False),
        sa.Column("created_at", TSTZ, server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(
            ["asset_id"], ["assets.id"], name=op.f("fk_price_history_asset_id"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_price_history")),
        sa.UniqueConstraint(
            "asset_id", "price_date", name=op.f("uq_price_history_asset_id_price_date")
        ),
    )
    op.create_table(
        "smallcase_constituents",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("smallcase_id", sa.Uuid(), nullable=False),
        sa.Column("asset_id", sa.Uuid(), nullable=False),
        sa.Column("weight_percentage", sa.Numeric(precision=7, scale=4), nullable=False),
        sa.Column("rationale", sa.String(length=1000), nullable=True),
        sa.Column("created_at", TSTZ, server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", TSTZ, server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(
            ["asset_id"],
            ["assets.id"],
            name=op.f("fk_smallcase_constituents_asset_id"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["smallcase_id"],
            ["smallcases.id"],
            name=op.f("fk_smallcase_constituents_smallcase_id"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_smallcase_constituents")),
        sa.UniqueConstraint(
            "smallcase_id", "asset_id", name=op.f("uq_smallcase_constituents_smallcase_id_asset_id")
        ),
    )
    op.create_table(
        "user_broker_connections",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("broker_type", sa.String(length=50), nullable=False),
        sa.Column("api_key", sa.Text(), nullable=True),
        sa.Column("api_secret", sa.Text(), nullable=True),
        sa.Column("credentials", JSONB, nullable=True),
        sa.Column("paper_trading", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("status", sa.String(length=20), server_default="active", nullable=False),
        sa.Column("connection_metadata", JSONB, nullable=True),
        sa.Column("created_at", TSTZ, server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", TSTZ, server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_user_broker_connections_user_id"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_user_broker_connections")),
    )
    op.create_table(
        "user_sessions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("session_token", sa.String(length=255), nullable=False),
        sa.Column("expires_at", TSTZ, nullable=False),
        sa.Column("session_data", JSONB, nullable=True),
        sa.Column("created_at", TSTZ, server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", TSTZ, server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_user_sessions_user_id"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_user_sessions")),
        sa.UniqueConstraint("session_token", name=op.f("uq_user_sessions_session_token")),
    )
    op.create_table(
        "portfolio_holdings",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("portfolio_id", sa.Uuid(), nullable=False),
        sa.Column("asset_id", sa.Uuid(), nullable=False),
        sa.Column("quantity", sa.Numeric(precision=24, scale=9), nullable=False),
        sa.Column("average_price", sa.Numeric(precision=20, scale=6), nullable=True),
        sa.Column("current_price", sa.Numeric(precision=20, scale=6), nullable=True),
        sa.Column("total_value", sa.Numeric(precision=20, scale=4), nullable=True),
        sa.Column("unrealized_pnl", sa.Numeric(precision=20, scale=4), nullable=True),
        sa.Column("created_at", TSTZ, server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(
            ["asset_id"],
            ["assets.id"],
            name=op.f("fk_portfolio_holdings_asset_id"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["portfolio_id"],
            ["portfolios.id"],
            name=op.f("fk_portfolio_holdings_portfolio_id"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_portfolio_holdings")),
        sa.UniqueConstraint(
            "portfolio_id", "asset_id", name=op.f("uq_portfolio_holdings_portfolio_id_asset_id")
        ),
    )
    op.create_table(
        "trading_transactions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("portfolio_id", sa.Uuid(), nullable=False),
        sa.Column("asset_id", sa.Uuid(), nullable=True),
        sa.Column("transaction_type", sa.String(length=20), nullable=False),
        sa.Column("quantity", sa.Numeric(precision=24, scale=9), nullable=False),
        sa.Column("price", sa.Numeric(precision=20, scale=6), nullable=True),
        sa.Column(
            "fees", sa.Numeric(precision=20, scale=4), server_default=sa.text("0"), nullable=False
        ),
        sa.Column("broker_transaction_id", sa.String(length=100), nullable=True),
        sa.Column("transaction_date", TSTZ, nullable=False),
        sa.Column("created_at", TSTZ, server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", TSTZ, server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(
            ["asset_id"],
            ["assets.id"],
            name=op.f("fk_trading_transactions_asset_id"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["portfolio_id"],
            ["portfolios.id"],
            name=op.f("fk_trading_transactions_portfolio_id"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trading_transactions")),
    )
    op.create_table(
        "user_smallcase_investments",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("smallcase_id", sa.Uuid(), nullable=False),
        sa.Column("portfolio_id", sa.Uuid(), nullable=False),
        sa.Column("broker_connection_id", sa.Uuid(), nullable=False),
        sa.Column("investment_amount", sa.Numeric(precision=20, scale=4), nullable=False),
        sa.Column("status", sa.String(length=20), server_default="pending", nullable=False),
        sa.Column("execution_mode", sa.String(length=20), server_default="paper", nullable=False),
        sa.Column("invested_at", TSTZ, nullable=True),
        sa.Column("closed_at", TSTZ, nullable=True),
        sa.Column("created_at", TSTZ, server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", TSTZ, server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(
            ["broker_connection_id"],
            ["user_broker_connections.id"],
            name=op.f("fk_user_smallcase_investments_broker_connection_id"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["portfolio_id"],
            ["portfolios.id"],
            name=op.f("fk_user_smallcase_investments_portfolio_id"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["smallcase_id"],
            ["smallcases.id"],
            name=op.f("fk_user_smallcase_investments_smallcase_id"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_user_smallcase_investments_user_id"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_user_smallcase_investments")),
    )
    op.create_table(
        "smallcase_execution_runs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("investment_id", sa.Uuid(), nullable=False),
        sa.Column("broker_connection_id", sa.Uuid(), nullable=False),
        sa.Column("run_type", sa.String(length=20), nullable=False),
        sa.Column("status", sa.String(length=20), server_default="planned", nullable=False),
        sa.Column("total_amount", sa.Numeric(precision=20, scale=4), nullable=True),
        sa.Column("execution_plan", JSONB, nullable=True),
        sa.Column("started_at", TSTZ, nullable=True),
        sa.Column("completed_at", TSTZ, nullable=True),
        sa.Column("created_at", TSTZ, server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", TSTZ, server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(
            ["broker_connection_id"],
            ["user_broker_connections.id"],
            name=op.f("fk_smallcase_execution_runs_broker_connection_id"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["investment_id"],
            ["user_smallcase_investments.id"],
            name=op.f("fk_smallcase_execution_runs_investment_id"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_smallcase_execution_runs")),
    )
    op.create_table(
        "user_smallcase_position_history",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("investment_id", sa.Uuid(), nullable=False),
        sa.Column("asset_id", sa.Uuid(), nullable=False),
        sa.Column("broker_connection_id", sa.Uuid(), nullable=True),
        sa.Column("quantity", sa.Numeric(precision=24, scale=9), nullable=False),
        sa.Column("average_price", sa.Numeric(precision=20, scale=6), nullable=True),
        sa.Column("market_value", sa.Numeric(precision=20, scale=4), nullable=True),
        sa.Column("unrealized_pnl", sa.Numeric(precision=20, scale=4), nullable=True),
        sa.Column("snapshot_date", TSTZ, nullable=False),
        sa.Column("created_at", TSTZ, server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(
            ["asset_id"],
            ["assets.id"],
            name=op.f("fk_user_smallcase_position_history_asset_id"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["broker_connection_id"],
            ["user_broker_connections.id"],
            name=op.f("fk_user_smallcase_position_history_broker_connection_id"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["investment_id"],
            ["user_smallcase_investments.id"],
            name=op.f("fk_user_smallcase_position_history_investment_id"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_user_smallcase_position_history")),
        sa.UniqueConstraint(
            "investment_id",
            "asset_id",
            "snapshot_date",
            name="uq_position_history_investment_asset_day",
        ),
    )
    op.create_table(
        "smallcase_execution_orders",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("execution_run_id", sa.Uuid(), nullable=False),
        sa.Column("asset_id", sa.Uuid(), nullable=False),
        sa.Column("side", sa.String(length=20), nullable=False),
        sa.Column("quantity", sa.Numeric(precision=24, scale=9), nullable=False),
        sa.Column("price", sa.Numeric(precision=20, scale=6), nullable=True),
        sa.Column("order_type", sa.String(length=20), server_default="market", nullable=False),
        sa.Column("status", sa.String(length=20), server_default="planned", nullable=False),
        sa.Column("broker_order_id", sa.String(length=100), nullable=True),
        sa.Column("order_metadata", JSONB, nullable=True),
        sa.Column("created_at", TSTZ, server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", TSTZ, server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(
            ["asset_id"],
            ["assets.id"],
            name=op.f("fk_smallcase_execution_orders_asset_id"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["execution_run_id"],
            ["smallcase_execution_runs.id"],
            name=op.f("fk_smallcase_execution_orders_execution_run_id"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_smallcase_execution_orders")),
    )


def downgrade() -> None:
    for table in TABLES_IN_DROP_ORDER:
        op.drop_table(table)
