"""Add portfolio_holdings.updated_at, backfilled from created_at.

Revision ID: 0003_holdings_updated_at
Revises: 0002_connection_alias
Create Date: 2026-11-03

Why: every other mutable table has `updated_at`, and the code that revalues holdings wrote to
a column that did not exist. Existing rows take their `created_at` (the best we know of when
they last changed); new and updated rows are stamped by the application and the default.
Risks: none for data. Downgrade drops the column.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_holdings_updated_at"
down_revision: str | None = "0002_connection_alias"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("portfolio_holdings") as batch:
        batch.add_column(sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE portfolio_holdings SET updated_at = created_at")
    with op.batch_alter_table("portfolio_holdings") as batch:
        batch.alter_column(
            "updated_at",
            existing_type=sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.func.now(),
        )


def downgrade() -> None:
    with op.batch_alter_table("portfolio_holdings") as batch:
        batch.drop_column("updated_at")
