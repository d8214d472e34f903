"""A zerodha connection is live: CHECK that no zerodha row says ``paper_trading``.

Revision ID: 0006
Revises: 0004_integrity
Create Date: 2026-11-30

Why: Kite has no paper environment, so a zerodha connection stored with
``paper_trading = true`` sent real orders while the live-trading gate
(``SARAS_LIVE_TRADING``) skipped it as "paper". The application now refuses such a connection;
this revision makes the database refuse it too (constraint
``ck_user_broker_connections_zerodha_is_live``), on PostgreSQL and SQLite alike.

Existing rows: every zerodha connection that says paper is set to ``paper_trading = false``
(what it always was: it reached real Kite), and its ``connection_metadata`` gets
``"paper_trading_before_0006": true`` so the change can be seen and undone. After the upgrade
such a connection trades only with ``SARAS_LIVE_TRADING=true``, which is the point.
Risks: a deployment that relied on a "paper" zerodha connection to trade without the live
flag stops trading through it until the flag is set (deliberately).
Downgrade drops the constraint and restores ``paper_trading = true`` on the rows the upgrade
changed (found by the metadata marker, which it removes).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0004_integrity"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "user_broker_connections"
CHECK = "ck_user_broker_connections_zerodha_is_live"
RULE = "broker_type <> 'zerodha' OR NOT paper_trading"
MARKER = "paper_trading_before_0006"
_PAPER_ZERODHA = "broker_type = 'zerodha' AND paper_trading"


def upgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute(
            f"UPDATE {TABLE} SET paper_trading = false, connection_metadata = "
            f"COALESCE(connection_metadata, '{{}}'::jsonb) || '{{\"{MARKER}\": true}}'::jsonb "
            f"WHERE {_PAPER_ZERODHA}"
        )
    else:
        op.execute(
            f"UPDATE {TABLE} SET paper_trading = 0, connection_metadata = "
            f"json_set(COALESCE(connection_metadata, '{{}}'), '$.{MARKER}', json('true')) "
            f"WHERE {_PAPER_ZERODHA}"
        )
    with op.batch_alter_table(TABLE) as batch:
        batch.create_check_constraint(op.f(CHECK), RULE)


def downgrade() -> None:
    with op.batch_alter_table(TABLE) as batch:
        batch.drop_constraint(op.f(CHECK), type_="check")
    if op.get_context().dialect.name == "postgresql":
        op.execute(
            f"UPDATE {TABLE} SET paper_trading = true, "
            f"connection_metadata = connection_metadata - '{MARKER}' "
            f"WHERE connection_metadata ? '{MARKER}'"
        )
    else:
        op.execute(
            f"UPDATE {TABLE} SET paper_trading = 1, "
            f"connection_metadata = json_remove(connection_metadata, '$.{MARKER}') "
            f"WHERE json_extract(connection_metadata, '$.{MARKER}') IS NOT NULL"
        )
