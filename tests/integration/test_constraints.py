"""Each database rule rejects a row that breaks it, on PostgreSQL and on SQLite."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from models import (
    PortfolioHolding,
    PriceHistory,
    SmallcaseConstituent,
    SmallcaseExecutionOrder,
    SmallcaseExecutionRun,
    TradingTransaction,
    User,
    UserBrokerConnection,
    UserSession,
    UserSmallcaseInvestment,
    UserSmallcasePositionHistory,
)
from saras.errors import InvalidInputError
from tests import factories as f

NOW = datetime(2026, 1, 5, tzinfo=UTC)


def _platform(db: Session) -> dict[str, Any]:
    u = f.user(db)
    a = f.asset(db)
    c = f.connection(db, u)
    p = f.portfolio(db, u)
    sc = f.smallcase(db, {a: "100"})
    inv = f.investment(db, u, sc, p, c)
    run = SmallcaseExecutionRun(
        investment_id=inv.id, broker_connection_id=c.id, run_type="rebalance", status="completed"
    )
    db.add(run)
    db.flush()
    return {
        "user": u,
        "asset": a,
        "conn": c,
        "portfolio": p,
        "smallcase": sc,
        "inv": inv,
        "run": run,
    }


def _order(x: dict[str, Any], **kw: Any) -> SmallcaseExecutionOrder:
    values: dict[str, Any] = {
        "execution_run_id": x["run"].id,
        "asset_id": x["asset"].id,
        "side": "buy",
        "quantity": Decimal(1),
    }
    values.update(kw)
    return SmallcaseExecutionOrder(**values)


def _price(x: dict[str, Any], **kw: Any) -> PriceHistory:
    values: dict[str, Any] = {
        "asset_id": x["asset"].id,
        "open_price": Decimal(10),
        "high_price": Decimal(11),
        "low_price": Decimal(9),
        "close_price": Decimal(10),
        "volume": Decimal(100),
        "price_date": date(2026, 1, 5),
    }
    values.update(kw)
    return PriceHistory(**values)


def _dupe_email(db: Session, x: dict[str, Any]) -> list[Any]:
    return [User(email=x["user"].email)]


BAD_ROWS: dict[str, Callable[[Session, dict[str, Any]], list[Any]]] = {
    "email not lower-case": lambda db, x: [User(email="Someone@Example.com")],
    "email taken": _dupe_email,
    "alias taken for the user": lambda db, x: [
        UserBrokerConnection(user_id=x["user"].id, broker_type="alpaca", alias=x["conn"].alias)
    ],
    "connection status outside its set": lambda db, x: [
        UserBrokerConnection(
            user_id=x["user"].id, broker_type="alpaca", alias="a_9", status="sleeping"
        )
    ],
    "asset symbol taken on the exchange": lambda db, x: [
        type(x["asset"])(symbol=x["asset"].symbol, exchange=x["asset"].exchange, currency="USD")
    ],
    "constituent twice": lambda db, x: [
        SmallcaseConstituent(
            smallcase_id=x["smallcase"].id, asset_id=x["asset"].id, weight_percentage=Decimal(1)
        )
    ],
    "weight zero": lambda db, x: [
        SmallcaseConstituent(
            smallcase_id=f.smallcase(db, {}).id,
            asset_id=x["asset"].id,
            weight_percentage=Decimal(0),
        )
    ],
    "weight above 100": lambda db, x: [
        SmallcaseConstituent(
            smallcase_id=f.smallcase(db, {}).id,
            asset_id=x["asset"].id,
            weight_percentage=Decimal("100.01"),
        )
    ],
    "price twice a day": lambda db, x: [_price(x), _price(x)],
    "low above high": lambda db, x: [_price(x, low_price=Decimal(12))],
    "negative price": lambda db, x: [_price(x, open_price=Decimal(-1))],
    "negative volume": lambda db, x: [_price(x, volume=Decimal(-1))],
    "holding twice": lambda db, x: [
        PortfolioHolding(
            portfolio_id=x["portfolio"].id, asset_id=x["asset"].id, quantity=Decimal(1)
        )
        for _ in range(2)
    ],
    "session token twice": lambda db, x: [
        UserSession(user_id=x["user"].id, session_token="tok", expires_at=NOW) for _ in range(2)
    ],
    "order side outside its set": lambda db, x: [_order(x, side="short")],
    "order status outside its set": lambda db, x: [_order(x, status="lost")],
    "order type outside its set": lambda db, x: [_order(x, order_type="stop")],
    "order quantity zero": lambda db, x: [_order(x, quantity=Decimal(0))],
    "order quantity negative": lambda db, x: [_order(x, quantity=Decimal("-1"))],
    "broker order id twice in a run": lambda db, x: [
        _order(x, broker_order_id="B1"),
        _order(x, broker_order_id="B1"),
    ],
    "run type outside its set": lambda db, x: [
        SmallcaseExecutionRun(
            investment_id=x["inv"].id,
            broker_connection_id=x["conn"].id,
            run_type="gamble",
            status="completed",
        )
    ],
    "two unfinished runs for one investment": lambda db, x: [
        SmallcaseExecutionRun(
            investment_id=x["inv"].id,
            broker_connection_id=x["conn"].id,
            run_type="rebalance",
            status=s,
        )
        for s in ("planned", "executing")
    ],
    "investment status outside its set": lambda db, x: [
        UserSmallcaseInvestment(
            user_id=x["user"].id,
            smallcase_id=f.smallcase(db, {}).id,
            portfolio_id=x["portfolio"].id,
            broker_connection_id=x["conn"].id,
            investment_amount=Decimal(1),
            status="dormant",
        )
    ],
    "execution mode outside its set": lambda db, x: [
        UserSmallcaseInvestment(
            user_id=x["user"].id,
            smallcase_id=f.smallcase(db, {}).id,
            portfolio_id=x["portfolio"].id,
            broker_connection_id=x["conn"].id,
            investment_amount=Decimal(1),
            execution_mode="yolo",
        )
    ],
    "second open investment in a smallcase": lambda db, x: [
        UserSmallcaseInvestment(
            user_id=x["user"].id,
            smallcase_id=x["smallcase"].id,
            portfolio_id=x["portfolio"].id,
            broker_connection_id=x["conn"].id,
            investment_amount=Decimal(1),
            status="pending",
        )
    ],
    "transaction type outside its set": lambda db, x: [
        TradingTransaction(
            portfolio_id=x["portfolio"].id,
            transaction_type="gift",
            quantity=Decimal(1),
            transaction_date=NOW,
        )
    ],
    "broker transaction id twice": lambda db, x: [
        TradingTransaction(
            portfolio_id=x["portfolio"].id,
            asset_id=x["asset"].id,
            transaction_type="buy",
            quantity=Decimal(1),
            price=Decimal(1),
            broker_transaction_id="T1",
            transaction_date=NOW,
        )
        for _ in range(2)
    ],
    "snapshot twice a day": lambda db, x: [
        UserSmallcasePositionHistory(
            investment_id=x["inv"].id,
            asset_id=x["asset"].id,
            quantity=Decimal(1),
            snapshot_date=NOW,
        )
        for _ in range(2)
    ],
    "price of an unknown asset": lambda db, x: [_price(x, asset_id=uuid.uuid4())],
}


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_database_rejects(db: Session, case: str) -> None:
    x = _platform(db)
    rows = BAD_ROWS[case](db, x)
    with pytest.raises(IntegrityError):
        db.add_all(rows)
        db.flush()


def test_a_good_platform_is_accepted(db: Session) -> None:
    x = _platform(db)
    db.add_all(
        [_price(x), _order(x, broker_order_id="B1"), _order(x, broker_order_id="B2"), _order(x)]
    )
    # a finished run does not block a new one
    db.add(
        SmallcaseExecutionRun(
            investment_id=x["inv"].id,
            broker_connection_id=x["conn"].id,
            run_type="rebalance",
            status="planned",
        )
    )
    db.flush()


def test_deleting_a_smallcase_takes_its_constituents(db: Session) -> None:
    a = f.asset(db)
    sc = f.smallcase(db, {a: "100"})
    db.delete(sc)
    db.flush()
    assert (
        db.scalars(select(SmallcaseConstituent).where(SmallcaseConstituent.asset_id == a.id)).all()
        == []
    )


def test_financial_records_block_deleting_their_asset(db: Session) -> None:
    x = _platform(db)
    db.add(_price(x))
    db.flush()
    with pytest.raises(IntegrityError):
        db.delete(x["asset"])
        db.flush()


def test_updated_at_moves_on_every_update(db: Session) -> None:
    u = f.user(db)
    before = u.updated_at
    time.sleep(0.01)
    u.first_name = "Changed"
    db.flush()
    assert u.updated_at > before
    time.sleep(0.01)
    db.execute(update(User).where(User.id == u.id).values(last_name="Bulk"))
    db.expire_all()
    assert db.get(User, u.id).updated_at > before  # type: ignore[union-attr]


def test_timestamps_are_aware_and_naive_ones_are_refused(db: Session) -> None:
    u = f.user(db)
    db.expire_all()
    fresh = db.get(User, u.id)
    assert fresh is not None and fresh.created_at.tzinfo is not None
    with pytest.raises(Exception, match="naive datetime"):
        db.add(UserSession(user_id=u.id, session_token="t-naive", expires_at=datetime(2026, 1, 1)))
        db.flush()


def test_fractional_quantities_keep_nine_decimals(db: Session) -> None:
    x = _platform(db)
    order = _order(x, quantity=Decimal("0.123456789"))
    db.add(order)
    db.flush()
    db.expire_all()
    stored = db.get(SmallcaseExecutionOrder, order.id)
    assert stored is not None and stored.quantity == Decimal("0.123456789")


# --- the same limits on both databases (issue 10) ----------------------------------------------

#: rows PostgreSQL refuses by its column types; the embedded SQLite must refuse them too
TOO_BIG: dict[str, tuple[Callable[[Session, dict[str, Any]], list[Any]], str]] = {
    "symbol longer than its column": (
        lambda db, x: [type(x["asset"])(symbol="X" * 51, exchange="NSE", currency="INR")],
        "assets.symbol 'XXXXXXXX",
    ),
    "currency longer than its column": (
        lambda db, x: [type(x["asset"])(symbol="NEWSYM", exchange="NSE", currency="DOLLARS")],
        "assets.currency 'DOLLARS': longer than 3 characters",
    ),
    "portfolio name longer than its column": (
        lambda db, x: [type(x["portfolio"])(user_id=x["user"].id, name="n" * 201, currency="USD")],
        "portfolios.name",
    ),
    "cash beyond numeric(20, 4)": (
        lambda db, x: [
            type(x["portfolio"])(
                user_id=x["user"].id, name="rich", currency="USD", cash_balance=Decimal("1e30")
            )
        ],
        "portfolios.cash_balance '1E+30': out of range (must be below 10^16)",
    ),
    "price beyond numeric(20, 6)": (
        lambda db, x: [_price(x, high_price=Decimal("1e15"))],
        "price_history.high_price",
    ),
}


@pytest.mark.parametrize("case", sorted(TOO_BIG))
def test_both_databases_refuse_what_the_columns_cannot_hold(db: Session, case: str) -> None:
    x = _platform(db)
    build, message = TOO_BIG[case]
    rows = build(db, x)
    with pytest.raises(InvalidInputError) as caught:
        db.add_all(rows)
        db.flush()
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_extra_decimals_are_rounded_on_both_databases_as_postgresql_does(db: Session) -> None:
    x = _platform(db)
    x["portfolio"].cash_balance = Decimal("10.123456789")
    db.flush()
    db.expire_all()
    assert db.get(type(x["portfolio"]), x["portfolio"].id).cash_balance == Decimal("10.1235")


def test_an_update_beyond_the_column_is_refused_too(db: Session) -> None:
    x = _platform(db)
    x["user"].first_name = "f" * 101
    with pytest.raises(InvalidInputError, match=r"users.first_name 'f+\.\.\.': longer than 100"):
        db.flush()


def test_a_zerodha_connection_cannot_say_paper(db: Session) -> None:
    x = _platform(db)
    with pytest.raises(IntegrityError, match="zerodha_is_live"):
        db.add(
            UserBrokerConnection(
                user_id=x["user"].id, broker_type="zerodha", alias="kite_9", paper_trading=True
            )
        )
        db.flush()


def test_a_zerodha_connection_is_live_unless_told_otherwise(db: Session) -> None:
    x = _platform(db)
    kite = UserBrokerConnection(user_id=x["user"].id, broker_type="zerodha", alias="kite_8")
    alpaca = UserBrokerConnection(user_id=x["user"].id, broker_type="alpaca", alias="alp_8")
    db.add_all([kite, alpaca])
    db.flush()
    assert (kite.paper_trading, alpaca.paper_trading) == (False, True)
