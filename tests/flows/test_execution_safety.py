"""Money safety on the execution side, through the flows, with the fake brokers (issue 8).

Each test drives ``flows/execution.py:execute_run`` (or the investment flow) against a fake
broker speaking the real wire format, and fails on the code before the fix:

- buys are sized on what the sells really freed: a buy whose sells were cancelled unfilled is
  skipped with the reason, never sent (item 5);
- a connection that can reach real money needs SARAS_LIVE_TRADING, and a refused run leaves
  nothing behind: the investment can be tried again (item 7);
- a Kite order that shows in the book only after the old 3 s of lookups is not placed twice
  (item 8);
- fills are recorded at the broker's own per-fill prices: ledger cash equals broker cash
  exactly (item 9).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from flows.execution import execute_run as execute_run_flow
from flows.investments import invest_in_smallcase
from models import (
    SmallcaseExecutionRun,
    TradingTransaction,
    UserBrokerConnection,
)
from saras.brokers.base import ConnectionConfig
from saras.brokers.ids import client_order_id, kite_tag
from saras.brokers.registry import capabilities
from saras.brokers.zerodha import ZerodhaBroker, nse_market_clock
from saras.domain.enums import OrderSide, OrderStatus, RunStatus, RunType
from saras.secrets import generate_key
from saras.settings import get_settings
from tests.fakes.fake_alpaca import PROXY_ENVIRONMENT
from tests.fakes.fake_kite import FakeKite, FillPolicy
from tests.support.execution import Clock, Platform, build_platform, kite_market_time

# fast polling; a short request timeout and a lookup horizon longer than it
EXECUTION: dict[str, Any] = {
    "poll_interval": 0.05,
    "deadline_seconds": 2.0,
    "retry_backoff": 0.01,
    "request_timeout": 0.5,
    "lookup_horizon": 1.5,
}


@pytest.fixture
def flow_env() -> dict[str, str | None]:
    """A secret key in the environment; live trading off until a test turns it on."""
    return {"SARAS_SECRET_KEYS": generate_key(), "SARAS_LIVE_TRADING": None}


@pytest.fixture
def db(monkeypatch: pytest.MonkeyPatch, pg_flow_db: Engine) -> Engine:
    """A committed PostgreSQL database with a secret key; no proxy for the local fakes."""
    for name in PROXY_ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    return pg_flow_db


def live_trading(monkeypatch: pytest.MonkeyPatch, on: bool) -> None:
    if on:
        monkeypatch.setenv("SARAS_LIVE_TRADING", "true")
    else:
        monkeypatch.delenv("SARAS_LIVE_TRADING", raising=False)
    get_settings.cache_clear()


@pytest.fixture
def kite(db: Engine, monkeypatch: pytest.MonkeyPatch) -> Iterator[Platform]:
    """One investor in an Indian smallcase through a fake Kite account (live by nature)."""
    live_trading(monkeypatch, True)
    # the adapter's wall clock inside NSE hours, so that orders are regular, not AMO
    open_clock = nse_market_clock(kite_market_time())
    monkeypatch.setattr(ZerodhaBroker, "get_clock", lambda self: open_clock)
    with FakeKite(cash="1000000") as fake:
        yield build_platform(db, "kite", fake, Clock())


def run_flow(run_id: uuid.UUID, **overrides: Any) -> Any:
    return execute_run_flow(str(run_id), {**EXECUTION, **overrides}, return_state=True)


def run_row(engine: Engine, run_id: uuid.UUID) -> SmallcaseExecutionRun:
    with Session(engine, expire_on_commit=False) as session:
        return session.get_one(SmallcaseExecutionRun, run_id)


# --- item 5: buys are sized on what the sells freed ---------------------------------------------


def test_a_buy_whose_sells_were_cancelled_unfilled_is_not_sent(kite: Platform) -> None:
    p = kite
    p.execute(p.plan())  # invest: four whole-share buys
    assert p.investment_status() == "active"
    # move weight from HDFCBANK and INFY to TCS: two sells fund one buy
    p.set_weights({"HDFCBANK": "15", "INFY": "20", "ITC": "15", "TCS": "50"})
    run_id = p.plan(RunType.REBALANCE)
    orders = {(o.side, o.symbol): o for o in p.orders(run_id)}
    assert set(orders) == {
        (OrderSide.SELL, "HDFCBANK"),
        (OrderSide.SELL, "INFY"),
        (OrderSide.BUY, "TCS"),
    }
    for symbol in ("HDFCBANK", "INFY"):  # the sells rest unfilled, then are cancelled
        p.fake.set_fill_policy(FillPolicy(mode="manual"), symbol)
    cash_before = p.cash()

    state = run_flow(run_id, deadline_seconds=1.0)

    buy = orders[(OrderSide.BUY, "TCS")]
    assert p.fake.placement_requests(kite_tag(client_order_id(buy.id))) == [], "buy was sent"
    after = {(o.side, o.symbol): o for o in p.orders(run_id)}
    assert after[(OrderSide.SELL, "HDFCBANK")].status is OrderStatus.CANCELLED
    assert after[(OrderSide.SELL, "INFY")].status is OrderStatus.CANCELLED
    skipped = after[(OrderSide.BUY, "TCS")]
    assert skipped.status is OrderStatus.CANCELLED
    assert "not enough cash" in (skipped.fill.status_reason or "")
    assert "INR" in (skipped.fill.status_reason or "")
    assert p.run_status(run_id) is RunStatus.FAILED
    assert p.cash() == cash_before
    assert "not enough cash" in (state.message or "") or state.is_completed()


# --- item 7: live trading needs SARAS_LIVE_TRADING; a refusal leaves nothing behind -------------


def test_alpaca_paper_row_pointing_at_the_live_endpoint_is_live() -> None:
    def caps(paper: bool, base_url: str | None) -> bool:
        metadata: dict[str, object] = {} if base_url is None else {"base_url": base_url}
        config = ConnectionConfig("c1", "alpaca", paper, metadata)
        return capabilities(config).real_money

    assert caps(True, "https://api.alpaca.markets") is True
    assert caps(True, "https://API.alpaca.markets./v2") is True
    assert caps(True, "https://paper-api.alpaca.markets") is False
    assert caps(True, None) is False
    assert caps(True, "http://127.0.0.1:8080") is False
    assert caps(False, "http://127.0.0.1:8080") is True
    assert capabilities(ConnectionConfig("c2", "zerodha", True, {})).real_money is True
    assert capabilities(ConnectionConfig("c3", "paper", True, {})).real_money is False


def test_a_refused_live_investment_ends_its_run_and_can_be_retried(
    kite: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = kite
    live_trading(monkeypatch, False)
    with Session(p.engine) as session:
        user = session.get_one(UserBrokerConnection, p.connection_id)
        alias = user.alias
    smallcase = _smallcase_name(p)
    # a second investor: the platform's own investment is already pending
    email = p.email
    _close_platform_investment(p)

    state = invest_in_smallcase(
        email, smallcase, "50000", broker_alias=alias, execution=EXECUTION, return_state=True
    )
    assert p.fake.placement_requests() == [], "an order reached Kite"
    with p.engine.connect() as conn:
        runs = conn.execute(
            select(SmallcaseExecutionRun.status, SmallcaseExecutionRun.execution_plan).where(
                SmallcaseExecutionRun.broker_connection_id == p.connection_id
            )
        ).all()
    assert [r.status for r in runs] == [RunStatus.CANCELLED.value]
    assert "SARAS_LIVE_TRADING" in runs[0].execution_plan["outcome_reason"]

    # nothing is stuck: with live trading on, the same user invests again
    live_trading(monkeypatch, True)
    state = invest_in_smallcase(
        email, smallcase, "50000", broker_alias=alias, execution=EXECUTION, return_state=True
    )
    assert state.is_completed() and state.name == "Completed", state.message
    assert len(p.book()) == 4


def test_a_refused_live_exit_returns_the_investment_and_can_be_retried(
    kite: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exit refused by the live-trading gate sends nothing and leaves the investment
    ``active``: the user may exit again once live trading is allowed."""
    from flows.investments import exit_smallcase

    p = kite
    p.execute(p.plan())  # invested: four whole-share buys at Kite
    assert p.investment_status() == "active"
    placed = len(p.fake.placement_requests())
    live_trading(monkeypatch, False)

    state = exit_smallcase(p.email, _smallcase_name(p), execution=EXECUTION, return_state=True)

    # the analyst sees why in the run's state, not only in its results
    assert "SARAS_LIVE_TRADING is off" in (state.message or ""), state.message
    assert len(p.fake.placement_requests()) == placed, "a sell reached Kite"
    with p.engine.connect() as conn:
        exits = conn.execute(
            select(SmallcaseExecutionRun.status, SmallcaseExecutionRun.execution_plan).where(
                SmallcaseExecutionRun.investment_id == p.investment_id,
                SmallcaseExecutionRun.run_type == RunType.EXIT.value,
            )
        ).all()
    assert [r.status for r in exits] == [RunStatus.CANCELLED.value]
    assert "SARAS_LIVE_TRADING" in exits[0].execution_plan["outcome_reason"]
    assert p.investment_status() == "active"

    live_trading(monkeypatch, True)
    state = exit_smallcase(p.email, _smallcase_name(p), execution=EXECUTION, return_state=True)
    assert state.is_completed() and state.name == "Completed", state.message
    assert p.investment_status() != "active"
    assert all(q == 0 for q in p.broker_positions().values())


def _smallcase_name(p: Platform) -> str:
    from models import Smallcase

    with Session(p.engine) as session:
        return session.get_one(Smallcase, p.smallcase_id).name


def _close_platform_investment(p: Platform) -> None:
    from models import UserSmallcaseInvestment

    with p.engine.begin() as conn:
        conn.execute(
            update(UserSmallcaseInvestment)
            .where(UserSmallcaseInvestment.id == p.investment_id)
            .values(status="failed")
        )


# --- item 8: a late Kite order is not placed twice ----------------------------------------------


def test_a_kite_order_landing_after_the_old_lookups_is_not_placed_twice(kite: Platform) -> None:
    """Kite takes 6 s to process the first placement; the client gave up after 1 s.

    The adapter's own lookups (0, 1, 2 s apart) do not see it; the order must stay in doubt
    and be looked up until the horizon (10 s here) instead of being sent again.
    """
    p = kite
    run_id = p.plan()
    p.fake.inject("latency", delay=6.0, times=1)
    began = time.monotonic()
    state = run_flow(run_id, deadline_seconds=25.0, request_timeout=1.0, lookup_horizon=10.0)
    assert state.is_completed() and state.name == "Completed", state.message
    assert time.monotonic() - began >= 6.0
    for order in p.orders(run_id):
        tag = kite_tag(client_order_id(order.id))
        assert len(p.fake.orders_with_tag(tag)) == 1, f"{order.symbol} is at Kite twice"
        assert order.status is OrderStatus.FILLED


def test_an_order_in_doubt_stays_unknown_and_the_run_waits(kite: Platform) -> None:
    """Before the horizon has passed, an order Kite does not show is never sent again."""
    p = kite
    run_id = p.plan()
    p.fake.inject("drop_before_accept", times=1)
    state = run_flow(run_id, deadline_seconds=0.3, lookup_horizon=30.0)
    statuses = [o.status for o in p.orders(run_id)]
    assert OrderStatus.UNKNOWN in statuses
    assert p.run_status(run_id) is RunStatus.EXECUTING
    assert "executing" in (state.message or "")
    first = next(o for o in p.orders(run_id) if o.status is OrderStatus.UNKNOWN)
    assert len(p.fake.placement_requests(kite_tag(client_order_id(first.id)))) == 1


def _connection_metadata(p: Platform, **values: object) -> None:
    with p.engine.begin() as conn:
        conn.execute(
            update(UserBrokerConnection)
            .where(UserBrokerConnection.id == p.connection_id)
            .values(connection_metadata={**p.fake.connection_metadata(), **values})
        )


#: patience from the connection alone: no request_timeout or lookup_horizon in the parameter
NO_OVERRIDES: dict[str, Any] = {
    "poll_interval": 0.05,
    "deadline_seconds": 5.0,
    "retry_backoff": 0.01,
}


def test_the_connections_own_lookup_horizon_is_used(kite: Platform) -> None:
    """``connection_metadata.lookup_horizon`` (1 s) decides when silence means absent: the
    dropped placement is sent again after it and the run completes within its 5 s deadline
    (with the 30 s default the order would still be in doubt)."""
    p = kite
    _connection_metadata(p, request_timeout=0.5, lookup_horizon=1.0)
    run_id = p.plan()
    p.fake.inject("drop_before_accept", times=1)
    state = execute_run_flow(str(run_id), NO_OVERRIDES, return_state=True)
    assert state.is_completed() and state.name == "Completed", state.message
    for order in p.orders(run_id):
        assert len(p.fake.orders_with_tag(kite_tag(client_order_id(order.id)))) == 1


def test_the_connections_own_request_timeout_is_checked_against_the_horizon(
    kite: Platform,
) -> None:
    """``connection_metadata.request_timeout`` (40 s) is the client's: a 30 s horizon is not
    longer than it, so the run is refused before anything is sent."""
    p = kite
    _connection_metadata(p, request_timeout=40, lookup_horizon=30)
    run_id = p.plan()
    state = execute_run_flow(str(run_id), NO_OVERRIDES, return_state=True)
    assert not (state.is_completed() and state.name == "Completed")
    assert "request timeout" in (state.message or "") and "40" in (state.message or "")
    assert p.fake.placement_requests() == []
    assert p.run_status(run_id) is RunStatus.APPROVED


def test_the_runs_own_lookup_horizon_reaches_the_adapter_too(kite: Platform) -> None:
    """``execution.lookup_horizon`` (1 s) is the executor's and the Kite adapter's: a dropped
    placement is sent again after it and the run completes within its 5 s deadline (were the
    adapter left at its 30 s default, it would refuse the resend until then)."""
    p = kite
    run_id = p.plan()
    p.fake.inject("drop_before_accept", times=1)
    state = run_flow(run_id, deadline_seconds=5.0, request_timeout=0.5, lookup_horizon=1.0)
    assert state.is_completed() and state.name == "Completed", state.message
    for order in p.orders(run_id):
        assert len(p.fake.orders_with_tag(kite_tag(client_order_id(order.id)))) == 1


def test_a_long_request_timeout_alone_lengthens_the_default_horizon(kite: Platform) -> None:
    """``request_timeout`` 40 s and no horizon: the horizon is twice it (80 s), as the Kite
    adapter's own default, so the run executes instead of being refused."""
    p = kite
    _connection_metadata(p, request_timeout=40)
    run_id = p.plan()
    state = execute_run_flow(str(run_id), NO_OVERRIDES, return_state=True)
    assert state.is_completed() and state.name == "Completed", state.message
    assert p.run_status(run_id) is RunStatus.COMPLETED


# --- item 9: fills at the broker's own prices ---------------------------------------------------


def test_partial_fills_are_recorded_at_their_own_prices(kite: Platform) -> None:
    p = kite
    run_id = p.plan()
    p.fake.set_price("INFY", "1502.55")
    p.fake.set_fill_policy(FillPolicy(mode="partial", fraction=Decimal("0.5")), "INFY")
    infy = next(o for o in p.orders(run_id) if o.symbol == "INFY")
    tag = kite_tag(client_order_id(infy.id))

    def fill_the_rest() -> None:
        for _ in range(100):
            found = p.fake.orders_with_tag(tag)
            if found:
                p.fake.fill(found[-1]["order_id"], price="1502.65")
                return
            time.sleep(0.05)

    filler = threading.Thread(target=fill_the_rest)
    filler.start()
    state = run_flow(run_id, deadline_seconds=5.0)
    filler.join()
    assert state.is_completed() and state.name == "Completed", state.message

    with p.engine.connect() as conn:
        prices = sorted(
            Decimal(str(price))
            for price in conn.execute(
                select(TradingTransaction.price).where(
                    TradingTransaction.asset_id == infy.asset_id,
                    TradingTransaction.portfolio_id == p.portfolio_id,
                )
            ).scalars()
        )
    assert prices == [Decimal("1502.55"), Decimal("1502.65")]
    ledger_change = p.cash() - p.start_cash
    broker_change = p.broker_cash() - p.start_broker_cash
    assert ledger_change == broker_change, f"ledger {ledger_change}, broker {broker_change}"
