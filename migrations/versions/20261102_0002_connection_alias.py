"""Add user_broker_connections.alias, unique per user, backfilled for existing rows.

Revision ID: 0002_connection_alias
Revises: 0001_baseline
Create Date: 2026-11-02

Why: connections had no alias, so a user with two Alpaca accounts could not say which one a
smallcase should use, and the seed's broker selection code could not pick one. Each existing
connection gets `<broker_type>_primary` (its user's oldest of that broker), then
`<broker_type>_2`, `<broker_type>_3`, ... in order of creation, before the column becomes
NOT NULL and unique per user.
Risks: none for data (every row is kept and gets a distinct alias). Downgrade drops the
column and with it any alias a user chose.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_connection_alias"
down_revision: str | None = "0001_baseline"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _backfill_aliases() -> None:
    bind = op.get_bind()
    connections = sa.table(
        "user_broker_connections",
        sa.column("id", sa.Uuid()),
        sa.column("user_id", sa.Uuid()),
        sa.column("broker_type", sa.String()),
        sa.column("alias", sa.String()),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    rows = bind.execute(
        sa.select(connections.c.id, connections.c.user_id, connections.c.broker_type).order_by(
            connections.c.user_id,
            connections.c.broker_type,
            connections.c.created_at,
            connections.c.id,
        )
    ).all()
    seen: dict[tuple[object, str], int] = {}
    for row in rows:
        broker = (row.broker_type or "broker").strip().lower() or "broker"
        n = seen.get((row.user_id, broker), 0) + 1
        seen[(row.user_id, broker)] = n
        alias = f"{broker}_primary" if n == 1 else f"{broker}_{n}"
        bind.execute(connections.update().where(connections.c.id == row.id).values(alias=alias))


def upgrade() -> None:
    with op.batch_alter_table("user_broker_connections") as batch:
        batch.add_column(sa.Column("alias", sa.String(length=100), nullable=True))
    _backfill_aliases()
    with op.batch_alter_table("user_broker_connections") as batch:
        batch.alter_column("alias", existing_type=sa.String(length=100), nullable=False)
        batch.create_unique_constraint(
            op.f("uq_user_broker_connections_user_id_alias"), ["user_id", "alias"]
        )


def downgrade() -> None:
    with op.batch_alter_table("user_broker_connections") as batch:
        batch.drop_constraint(op.f("uq_user_broker_connections_user_id_alias"), type_="unique")
        batch.drop_column("alias")
