"""Integrity on top: CHECK constraints, partial unique indexes, lower-case e-mails, indexes.

Revision ID: 0004_integrity
Revises: 0003_holdings_updated_at
Create Date: 2026-11-04

Why: the platform's schema left to the application what must never be wrong. This revision
makes the database enforce it: closed sets for sides, statuses, modes and types; positive order
quantities; weights in (0, 100]; low <= high and non-negative prices and volumes; at most one
unfinished execution run per investment and one open investment per user and smallcase;
a broker order id at most once per run; a broker transaction id at most once per portfolio;
case-insensitive unique e-mails (stored lower-case); unique smallcase names; and the indexes
the nightly flows and the execution runs read by.
Risks: an existing database holding rows that break a rule fails this upgrade (nothing is
changed: it runs in one transaction on PostgreSQL) and names the constraint; fix the rows and
re-run. Lower-casing e-mails fails on two users whose addresses differ only in case.
Downgrade drops the constraints and indexes; no data is touched.
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0004_integrity"
down_revision: str | None = "0003_holdings_updated_at"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHECKS: tuple[tuple[str, str, str], ...] = (
    (
        "smallcases",
        "ck_smallcases_risk_level",
        "risk_level IS NULL OR risk_level IN ('low', 'medium', 'high')",
    ),
    ("smallcases", "ck_smallcases_min_investment", "min_investment IS NULL OR min_investment >= 0"),
    ("users", "ck_users_email_lowercase", "email = lower(email)"),
    ("price_history", "ck_price_history_low_le_high", "low_price <= high_price"),
    (
        "price_history",
        "ck_price_history_prices_non_negative",
        "open_price >= 0 AND high_price >= 0 AND low_price >= 0 AND close_price >= 0",
    ),
    ("price_history", "ck_price_history_volume_non_negative", "volume >= 0"),
    (
        "smallcase_constituents",
        "ck_smallcase_constituents_weight_range",
        "weight_percentage > 0 AND weight_percentage <= 100",
    ),
    (
        "user_broker_connections",
        "ck_user_broker_connections_status",
        "status IN ('active', 'inactive', 'expired', 'error', 'revoked')",
    ),
    ("portfolio_holdings", "ck_portfolio_holdings_quantity_non_negative", "quantity >= 0"),
    (
        "trading_transactions",
        "ck_trading_transactions_transaction_type",
        "transaction_type IN ('buy', 'sell', 'deposit', 'withdrawal', 'dividend', 'fee')",
    ),
    ("trading_transactions", "ck_trading_transactions_fees_non_negative", "fees >= 0"),
    (
        "trading_transactions",
        "ck_trading_transactions_price_non_negative",
        "price IS NULL OR price >= 0",
    ),
    ("trading_transactions", "ck_trading_transactions_quantity_non_negative", "quantity >= 0"),
    (
        "user_smallcase_investments",
        "ck_user_smallcase_investments_execution_mode",
        "execution_mode IN ('paper', 'live')",
    ),
    (
        "user_smallcase_investments",
        "ck_user_smallcase_investments_status",
        "status IN ('pending', 'active', 'exiting', 'closed', 'failed')",
    ),
    (
        "user_smallcase_investments",
        "ck_user_smallcase_investments_amount_non_negative",
        "investment_amount >= 0",
    ),
    (
        "smallcase_execution_runs",
        "ck_smallcase_execution_runs_run_type",
        "run_type IN ('invest', 'topup', 'rebalance', 'exit', 'repair')",
    ),
    (
        "smallcase_execution_runs",
        "ck_smallcase_execution_runs_status",
        "status IN ('planned', 'awaiting_approval', 'approved', 'executing', 'completed', 'partially_completed', 'failed', 'rejected', 'cancelled')",
    ),
    (
        "smallcase_execution_orders",
        "ck_smallcase_execution_orders_order_type",
        "order_type IN ('market', 'limit')",
    ),
    ("smallcase_execution_orders", "ck_smallcase_execution_orders_side", "side IN ('buy', 'sell')"),
    (
        "smallcase_execution_orders",
        "ck_smallcase_execution_orders_status",
        "status IN ('planned', 'submitting', 'submitted', 'partially_filled', 'filled', 'cancelled', 'rejected', 'expired', 'unknown')",
    ),
    (
        "smallcase_execution_orders",
        "ck_smallcase_execution_orders_price_non_negative",
        "price IS NULL OR price >= 0",
    ),
    (
        "smallcase_execution_orders",
        "ck_smallcase_execution_orders_quantity_positive",
        "quantity > 0",
    ),
)

UNIQUE_CONSTRAINTS: tuple[tuple[str, str, list[str]], ...] = (
    ("smallcases", "uq_smallcases_name", ["name"]),
)


#: (name, table, columns, unique, partial-index predicate)
INDEXES: tuple[tuple[str, str, list[str], bool, str | None], ...] = (
    ("ix_audit_logs_event_type_timestamp", "audit_logs", ["event_type", "timestamp"], False, None),
    ("ix_audit_logs_request_id", "audit_logs", ["request_id"], False, None),
    ("ix_audit_logs_user_id", "audit_logs", ["user_id"], False, None),
    ("ix_portfolios_user_id", "portfolios", ["user_id"], False, None),
    ("ix_smallcase_constituents_asset_id", "smallcase_constituents", ["asset_id"], False, None),
    (
        "ix_user_broker_connections_user_id_broker_type_status",
        "user_broker_connections",
        ["user_id", "broker_type", "status"],
        False,
        None,
    ),
    (
        "ix_user_sessions_user_id_expires_at",
        "user_sessions",
        ["user_id", "expires_at"],
        False,
        None,
    ),
    ("ix_portfolio_holdings_asset_id", "portfolio_holdings", ["asset_id"], False, None),
    ("ix_trading_transactions_asset_id", "trading_transactions", ["asset_id"], False, None),
    (
        "ix_trading_transactions_portfolio_id_broker_transaction_id",
        "trading_transactions",
        ["portfolio_id", "broker_transaction_id"],
        True,
        "broker_transaction_id IS NOT NULL",
    ),
    (
        "ix_trading_transactions_portfolio_id_transaction_date",
        "trading_transactions",
        ["portfolio_id", "transaction_date"],
        False,
        None,
    ),
    (
        "ix_user_smallcase_investments_broker_connection_id",
        "user_smallcase_investments",
        ["broker_connection_id"],
        False,
        None,
    ),
    (
        "ix_user_smallcase_investments_portfolio_id",
        "user_smallcase_investments",
        ["portfolio_id"],
        False,
        None,
    ),
    (
        "ix_user_smallcase_investments_smallcase_id_status",
        "user_smallcase_investments",
        ["smallcase_id", "status"],
        False,
        None,
    ),
    (
        "uq_user_smallcase_investments_open",
        "user_smallcase_investments",
        ["user_id", "smallcase_id"],
        True,
        "status IN ('pending', 'active', 'exiting')",
    ),
    (
        "ix_smallcase_execution_runs_broker_connection_id_status",
        "smallcase_execution_runs",
        ["broker_connection_id", "status"],
        False,
        None,
    ),
    (
        "ix_smallcase_execution_runs_investment_id_created_at",
        "smallcase_execution_runs",
        ["investment_id", "created_at"],
        False,
        None,
    ),
    ("ix_smallcase_execution_runs_status", "smallcase_execution_runs", ["status"], False, None),
    (
        "uq_smallcase_execution_runs_unfinished",
        "smallcase_execution_runs",
        ["investment_id"],
        True,
        "status IN ('planned', 'awaiting_approval', 'approved', 'executing')",
    ),
    (
        "ix_user_smallcase_position_history_asset_id",
        "user_smallcase_position_history",
        ["asset_id"],
        False,
        None,
    ),
    (
        "ix_user_smallcase_position_history_broker_connection_id",
        "user_smallcase_position_history",
        ["broker_connection_id"],
        False,
        None,
    ),
    (
        "ix_user_smallcase_position_history_snapshot_date",
        "user_smallcase_position_history",
        ["snapshot_date"],
        False,
        None,
    ),
    (
        "ix_smallcase_execution_orders_asset_id",
        "smallcase_execution_orders",
        ["asset_id"],
        False,
        None,
    ),
    (
        "ix_smallcase_execution_orders_execution_run_id_broker_order_id",
        "smallcase_execution_orders",
        ["execution_run_id", "broker_order_id"],
        True,
        "broker_order_id IS NOT NULL",
    ),
    (
        "ix_smallcase_execution_orders_execution_run_id_status",
        "smallcase_execution_orders",
        ["execution_run_id", "status"],
        False,
        None,
    ),
)


def _create_indexes() -> None:
    for name, table, columns, unique, where in INDEXES:
        predicate: dict[str, Any] = (
            {}
            if where is None
            else {"postgresql_where": sa.text(where), "sqlite_where": sa.text(where)}
        )
        op.create_index(op.f(name), table, columns, unique=unique, **predicate)


def _drop_indexes() -> None:
    for name, table, *_ in reversed(INDEXES):
        op.drop_index(op.f(name), table_name=table)


def upgrade() -> None:
    op.execute("UPDATE users SET email = lower(email) WHERE email <> lower(email)")
    tables: dict[str, list[tuple[str, str]]] = {}
    for table, name, expr in CHECKS:
        tables.setdefault(table, []).append((name, expr))
    for table, checks in tables.items():
        with op.batch_alter_table(table) as batch:
            for name, expr in checks:
                batch.create_check_constraint(op.f(name), expr)
            for t, uq_name, columns in UNIQUE_CONSTRAINTS:
                if t == table:
                    batch.create_unique_constraint(op.f(uq_name), columns)
    _create_indexes()


def downgrade() -> None:
    _drop_indexes()
    tables: dict[str, list[str]] = {}
    for table, name, _ in CHECKS:
        tables.setdefault(table, []).append(name)
    for table, names in tables.items():
        with op.batch_alter_table(table) as batch:
            for t, uq_name, _ in UNIQUE_CONSTRAINTS:
                if t == table:
                    batch.drop_constraint(op.f(uq_name), type_="unique")
            for name in names:
                batch.drop_constraint(op.f(name), type_="check")
