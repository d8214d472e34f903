"""The after-execution report: slippage signs, legs summed per asset and side, drift left."""

from __future__ import annotations

from decimal import Decimal as D

from saras.domain.enums import OrderSide
from saras.domain.execution_report import (
    OrderOutcome,
    RunOutcome,
    drift_left,
    legs_of,
    run_rows,
    slippage_bps,
)
from saras.domain.triggers import AssetKey

AAPL = AssetKey("AAPL", "NASDAQ")
MSFT = AssetKey("MSFT", "NASDAQ")


def test_slippage_is_positive_when_it_cost() -> None:
    assert slippage_bps(OrderSide.BUY, D("100"), D("100.5")) == D("50")
    assert slippage_bps(OrderSide.SELL, D("100"), D("100.5")) == D("-50")
    assert slippage_bps(OrderSide.SELL, D("200"), D("199")) == D("50")
    assert slippage_bps(OrderSide.BUY, None, D("1")) is None
    assert slippage_bps(OrderSide.BUY, D("1"), D("1"), filled=D(0)) is None


def test_legs_sum_orders_and_weight_prices_by_quantity() -> None:
    legs = legs_of(
        [
            OrderOutcome(AAPL, OrderSide.BUY, D(3), D(100), D(3), D(101), D("0.10")),
            OrderOutcome(AAPL, OrderSide.BUY, D(1), D(104), D(0), None),
            OrderOutcome(MSFT, OrderSide.SELL, D(2), D(50), D(2), D("49.5"), D("0.05")),
        ]
    )
    sell, buy = legs  # sells first
    assert (sell.asset, sell.side, sell.slippage_bps) == (MSFT, OrderSide.SELL, D(100))
    assert buy.planned_quantity == 4 and buy.filled_quantity == 3
    assert buy.planned_price == D(101)  # (3 x 100 + 1 x 104) / 4
    assert buy.avg_fill_price == D(101) and buy.slippage_bps == D(0)
    run = RunOutcome("r", "i", "USD", "completed", legs, D("0.5"))
    assert run.cost == D("0.15") and run.filled_value == D(303) + D(99)
    assert run.slippage_bps == (D(100) * 99 / (303 + 99)).quantize(D("0.0001"))
    rows = run_rows([run])
    assert [r["symbol"] for r in rows] == ["MSFT", "AAPL"]
    assert rows[1]["planned_qty"] == "4" and rows[1]["filled_qty"] == "3"


def test_drift_left_counts_cash_and_missing_targets() -> None:
    targets = {AAPL: D(50), MSFT: D(50)}
    prices = {AAPL: D(10), MSFT: D(10)}
    assert drift_left({AAPL: D(5), MSFT: D(5)}, prices, D(0), targets) == 0
    # 50 + 40 + 10 cash: MSFT weighs 40 against 50
    assert drift_left({AAPL: D(5), MSFT: D(4)}, prices, D(10), targets) == D(10)
    assert drift_left({}, prices, D(0), targets) is None
