"""Fills at the broker's own prices, and buys sized on what the sells freed, on Alpaca (issue 8).

Alpaca's order entity is cumulative (``filled_qty``, ``filled_avg_price``); each execution's own
price is in the account's FILL activities. A ledger priced from the average drifts from the
broker's cash; one priced per execution does not.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest

from saras.domain.enums import OrderSide, OrderStatus, RunType
from tests.fakes.fake_alpaca import FillRule
from tests.support.execution import Clock, Platform, assert_invariants


@pytest.fixture(autouse=True)
def _clear_clock_hooks(clock: Clock) -> Iterator[None]:
    yield
    clock.hooks.clear()


def test_two_executions_at_different_prices_are_recorded_at_their_own_prices(
    alpaca: Platform,
) -> None:
    p = alpaca
    # half fills at once, the rest waits for the hook below
    p.fake.set_fill_rule("AAPL", FillRule(partial_ratio=Decimal("0.5"), polls_before_complete=None))
    run_id = p.plan()

    def fill_the_rest(clock: Clock) -> None:
        for order in p.fake.orders:
            if order["symbol"] == "AAPL" and order["status"] == "partially_filled":
                p.fake.fill_order(order["id"], price="187.2537")

    p.clock.hooks.append(fill_the_rest)
    outcome = p.execute(run_id)
    assert outcome.status == "completed", outcome

    aapl = [t for t in p.transactions() if t[0] == "AAPL"]
    assert sorted(price for _, _, _, price, _ in aapl) == [Decimal("187.25"), Decimal("187.2537")]
    (order,) = [o for o in p.orders(run_id) if o.symbol == "AAPL"]
    assert len(order.fill.fill_ids) == 2
    # the ledger's cash equals the sum of each execution at its own price
    broker_spent = p.start_broker_cash - p.broker_cash()
    ledger_spent = p.start_cash - p.cash()
    assert abs(broker_spent - ledger_spent) <= Decimal("0.0001") * len(p.transactions())
    assert_invariants(p)


def test_buys_are_cut_to_what_the_sells_freed_in_fractions(alpaca: Platform) -> None:
    p = alpaca
    p.execute(p.plan())
    p.set_weights({"AAPL": "20", "GOOGL": "15", "MSFT": "20", "NVDA": "45"})
    run_id = p.plan(RunType.REBALANCE)
    sides = {(o.side, o.symbol) for o in p.orders(run_id)}
    assert (OrderSide.BUY, "NVDA") in sides and (OrderSide.SELL, "AAPL") in sides
    assert (OrderSide.SELL, "MSFT") in sides
    p.fake.set_fill_rule("AAPL", FillRule(polls_before_fill=10**9))  # this sell never fills
    outcome = p.execute(run_id)
    orders = {(o.side, o.symbol): o for o in p.orders(run_id)}
    assert orders[(OrderSide.SELL, "AAPL")].status is OrderStatus.CANCELLED
    assert orders[(OrderSide.SELL, "MSFT")].status is OrderStatus.FILLED
    buy = orders[(OrderSide.BUY, "NVDA")]
    assert buy.status is OrderStatus.FILLED
    assert 0 < buy.send_quantity < buy.quantity  # cut to the cash there is
    assert buy.send_quantity != buy.send_quantity.to_integral_value()  # in fractions
    assert "re-sized" in (buy.fill.status_reason or "")
    freed = orders[(OrderSide.SELL, "MSFT")].fill.net_proceeds
    planned_sells = sum(
        o.quantity * (o.price or 0) for o in orders.values() if o.side is OrderSide.SELL
    )
    own = max(buy.quantity * (buy.price or 0) - planned_sells, Decimal(0))
    assert buy.fill.notional <= freed + own
    (posted,) = [
        r.body for r in p.fake.order_posts() if r.body.get("client_order_id") == p.key(buy)
    ]
    assert Decimal(str(posted["qty"])) == buy.send_quantity  # alpaca-py sends a float
    assert outcome.status == "partially_completed"
    assert_invariants(p)
