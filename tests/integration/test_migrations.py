"""The Alembic history: from the pre-fix schema to head, and back, with data present."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine, inspect, text

from saras import migrations
from saras.db import make_engine


@pytest.fixture(params=["postgresql", "sqlite"])
def fresh_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An empty database of each backend, dropped afterwards."""
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'fresh.sqlite3'}")
        yield engine
        engine.dispose()
        return
    server = request.getfixturevalue("pg_server")
    url = server.create_database("saras_mig")
    engine = make_engine(url)
    yield engine
    engine.dispose()
    server.drop_database(url)


def _t(table_name: str, /, **columns: sa.types.TypeEngine) -> sa.TableClause:
    """A lightweight typed table, so values bind as each backend stores them."""
    return sa.table(table_name, *(sa.column(c, t) for c, t in columns.items()))


UUID, TS, NUM, STR = sa.Uuid(), sa.DateTime(timezone=True), sa.Numeric(), sa.String()
USERS = _t("users", id=UUID, email=STR, created_at=TS, updated_at=TS)
CONNECTIONS = _t(
    "user_broker_connections",
    id=UUID,
    user_id=UUID,
    broker_type=STR,
    paper_trading=sa.Boolean(),
    status=STR,
    created_at=TS,
    updated_at=TS,
)
ASSETS = _t(
    "assets",
    id=UUID,
    symbol=STR,
    exchange=STR,
    currency=STR,
    asset_type=STR,
    created_at=TS,
    updated_at=TS,
)
PORTFOLIOS = _t(
    "portfolios",
    id=UUID,
    user_id=UUID,
    name=STR,
    total_value=NUM,
    cash_balance=NUM,
    currency=STR,
    created_at=TS,
    updated_at=TS,
)
HOLDINGS = _t(
    "portfolio_holdings", id=UUID, portfolio_id=UUID, asset_id=UUID, quantity=NUM, created_at=TS
)
PRICES = _t(
    "price_history",
    id=UUID,
    asset_id=UUID,
    open_price=NUM,
    high_price=NUM,
    low_price=NUM,
    close_price=NUM,
    volume=NUM,
    price_date=sa.Date(),
    created_at=TS,
)


def _insert_pre_fix_platform(engine: Engine) -> dict[str, uuid.UUID]:
    """Write rows the way the pre-fix platform did: no aliases, no holdings.updated_at."""
    ids = {k: uuid.uuid4() for k in ("u1", "u2", "a1", "a2", "c1", "c2", "c3", "c4", "p1", "h1")}
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(
            USERS.insert(),
            [
                {
                    "id": ids["u1"],
                    "email": "Mixed.Case@Example.com",
                    "created_at": t0,
                    "updated_at": t0,
                },
                {"id": ids["u2"], "email": "two@example.com", "created_at": t0, "updated_at": t0},
            ],
        )
        conn.execute(
            CONNECTIONS.insert(),
            [
                {
                    "id": ids[c],
                    "user_id": ids[u],
                    "broker_type": b,
                    "paper_trading": p,
                    "status": "active",
                    "created_at": t,
                    "updated_at": t,
                }
                for c, u, b, p, t in [
                    ("c1", "u1", "alpaca", True, t0),
                    ("c2", "u1", "alpaca", False, t0 + timedelta(days=1)),
                    ("c3", "u1", "zerodha", False, t0),
                    ("c4", "u2", "alpaca", True, t0),
                ]
            ],
        )
        conn.execute(
            ASSETS.insert(),
            [
                {
                    "id": ids[a],
                    "symbol": s,
                    "exchange": "NASDAQ",
                    "currency": "USD",
                    "asset_type": "equity",
                    "created_at": t0,
                    "updated_at": t0,
                }
                for a, s in [("a1", "AAPL"), ("a2", "MSFT")]
            ],
        )
        conn.execute(
            PORTFOLIOS.insert(),
            {
                "id": ids["p1"],
                "user_id": ids["u1"],
                "name": "main",
                "total_value": 100,
                "cash_balance": 100,
                "currency": "USD",
                "created_at": t0,
                "updated_at": t0,
            },
        )
        conn.execute(
            HOLDINGS.insert(),
            {
                "id": ids["h1"],
                "portfolio_id": ids["p1"],
                "asset_id": ids["a1"],
                "quantity": Decimal("1.5"),
                "created_at": t0,
            },
        )
        conn.execute(PRICES.insert(), _price(ids["a1"], t0, low=9, high=11))
    return ids


def _price(asset_id: uuid.UUID, day: datetime, *, low: int, high: int) -> dict[str, object]:
    return {
        "id": uuid.uuid4(),
        "asset_id": asset_id,
        "open_price": 10,
        "high_price": high,
        "low_price": low,
        "close_price": 10,
        "volume": 1000,
        "price_date": day.date(),
        "created_at": day,
    }


def _count(engine: Engine, table: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())


def test_pre_fix_database_upgrades_in_place_with_unique_aliases(fresh_engine: Engine) -> None:
    migrations.upgrade("0001_baseline", fresh_engine)
    columns = {c["name"] for c in inspect(fresh_engine).get_columns("user_broker_connections")}
    assert "alias" not in columns
    ids = _insert_pre_fix_platform(fresh_engine)

    migrations.upgrade("head", fresh_engine)

    with fresh_engine.connect() as conn:
        aliases = dict(conn.execute(text("SELECT id, alias FROM user_broker_connections")).all())
        holding = conn.execute(text("SELECT updated_at, created_at FROM portfolio_holdings")).one()
        email = conn.execute(sa.select(USERS.c.email).where(USERS.c.id == ids["u1"])).scalar_one()
    aliases = {uuid.UUID(str(k)): v for k, v in aliases.items()}
    ids = {k: uuid.UUID(str(v)) for k, v in ids.items()}
    assert aliases[ids["c1"]] == "alpaca_primary"  # the user's oldest alpaca connection
    assert aliases[ids["c2"]] == "alpaca_2"
    assert aliases[ids["c3"]] == "zerodha_primary"
    assert aliases[ids["c4"]] == "alpaca_primary"  # unique per user, not globally
    assert holding[0] == holding[1]  # backfilled from created_at
    assert email == "mixed.case@example.com"
    for table, n in [
        ("users", 2),
        ("user_broker_connections", 4),
        ("portfolio_holdings", 1),
        ("price_history", 1),
    ]:
        assert _count(fresh_engine, table) == n, table


def test_upgrade_downgrade_and_upgrade_again_with_data(fresh_engine: Engine) -> None:
    migrations.upgrade("0001_baseline", fresh_engine)
    _insert_pre_fix_platform(fresh_engine)
    migrations.upgrade("head", fresh_engine)

    migrations.downgrade("0001_baseline", fresh_engine)
    assert "alias" not in {
        c["name"] for c in inspect(fresh_engine).get_columns("user_broker_connections")
    }
    assert _count(fresh_engine, "user_broker_connections") == 4
    assert _count(fresh_engine, "portfolio_holdings") == 1

    migrations.upgrade("head", fresh_engine)
    assert migrations.current_revision(fresh_engine) == migrations.head_revisions()[0]
    assert _count(fresh_engine, "user_broker_connections") == 4

    migrations.downgrade("base", fresh_engine)
    assert not [t for t in inspect(fresh_engine).get_table_names() if t != "alembic_version"]
    migrations.upgrade("head", fresh_engine)
    assert len([t for t in inspect(fresh_engine).get_table_names() if t != "alembic_version"]) == 15


def test_integrity_revision_refuses_rows_that_break_a_rule(fresh_engine: Engine) -> None:
    migrations.upgrade("0001_baseline", fresh_engine)
    ids = _insert_pre_fix_platform(fresh_engine)
    migrations.upgrade("0003_holdings_updated_at", fresh_engine)
    with fresh_engine.begin() as conn:  # low above high
        conn.execute(
            PRICES.insert(), _price(ids["a2"], datetime(2025, 1, 2, tzinfo=UTC), low=11, high=9)
        )
    with pytest.raises(Exception, match=r"(?i)check|constraint"):
        migrations.upgrade("head", fresh_engine)
    # nothing was half-applied on PostgreSQL: still at the previous revision
    if fresh_engine.dialect.name == "postgresql":
        assert migrations.current_revision(fresh_engine) == "0003_holdings_updated_at"
        assert _count(fresh_engine, "price_history") == 2


def test_zerodha_paper_rows_become_live_and_come_back_on_downgrade(fresh_engine: Engine) -> None:
    migrations.upgrade("0004_integrity", fresh_engine)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    user_id, kite_id, alpaca_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    with fresh_engine.begin() as conn:
        conn.execute(
            USERS.insert(),
            [{"id": user_id, "email": "k@example.com", "created_at": t0, "updated_at": t0}],
        )
        conn.execute(
            _t(
                "user_broker_connections",
                **{c.name: c.type for c in CONNECTIONS.c},
                alias=STR,
            ).insert(),
            [
                {
                    "id": i,
                    "user_id": user_id,
                    "broker_type": b,
                    "alias": b,
                    "paper_trading": True,
                    "status": "active",
                    "created_at": t0,
                    "updated_at": t0,
                }
                for i, b in ((kite_id, "zerodha"), (alpaca_id, "alpaca"))
            ],
        )

    def paper() -> dict[str, bool]:
        with fresh_engine.connect() as conn:
            rows = conn.execute(
                text("SELECT broker_type, paper_trading FROM user_broker_connections")
            )
            return {b: bool(p) for b, p in rows}

    migrations.upgrade("0006", fresh_engine)
    assert paper() == {"zerodha": False, "alpaca": True}
    with pytest.raises(sa.exc.IntegrityError), fresh_engine.begin() as conn:
        conn.execute(text("UPDATE user_broker_connections SET paper_trading = true"))
    migrations.downgrade("0004_integrity", fresh_engine)
    assert paper() == {"zerodha": True, "alpaca": True}
    migrations.upgrade("head", fresh_engine)
    assert paper() == {"zerodha": False, "alpaca": True}
