"""Whole-share plans that spend the money: the issue's examples and removed constituents.

The distance to targets is the planner's: ``D = sum_j (a_j - w_j)**2 / w_j`` over the legs with a
target weight ``w_j`` (percent of the investable value), ``a_j`` the weight after the plan.
"""

from __future__ import annotations

from decimal import Decimal as D

from saras.domain.enums import OrderSide, RunType
from saras.domain.rebalance import (
    BrokerRules,
    Instrument,
    InvestmentPlan,
    InvestmentState,
    PlanningPolicy,
    PlanStatus,
    SkipReason,
    plan_investment,
)

BUY, SELL = OrderSide.BUY, OrderSide.SELL
WHOLE = BrokerRules.zerodha()
POLICY = PlanningPolicy()  # a 1% cash buffer, minimum trade 1: the platform's defaults


def _instruments(prices: dict[str, str]) -> dict[str, Instrument]:
    return {s: Instrument(s, D(p), 1, False) for s, p in prices.items()}


def _bought(plan: InvestmentPlan) -> dict[str, D]:
    assert all(o.side is BUY for o in plan.orders)
    return {o.symbol: o.quantity for o in plan.orders}


def _distance(
    quantities: dict[str, D], targets: dict[str, D], prices: dict[str, str], investable: D
) -> D:
    """Return D for an investment starting from nothing that buys ``quantities``."""
    total = D(0)
    for symbol, weight in targets.items():
        after = 100 * quantities.get(symbol, D(0)) * D(prices[symbol]) / investable
        total += (after - weight) ** 2 / weight
    return total


def _cost(quantities: dict[str, D], prices: dict[str, str]) -> D:
    return sum((q * D(prices[s]) for s, q in quantities.items()), D(0))


def test_a_dear_share_is_bought_by_trimming_the_cheap_ones() -> None:
    """Rs 2,400 in {A 40% at 1,000, B 30% at 10, C 30% at 10}: 1 A + 68 B + 68 C fits."""
    prices = {"A": "1000", "B": "10", "C": "10"}
    targets = {"A": D(40), "B": D(30), "C": D(30)}
    plan = plan_investment(
        RunType.INVEST,
        targets,
        InvestmentState("inv", D(2400)),
        _instruments(prices),
        WHOLE,
        POLICY,
        D(2400),
    )
    bought = _bought(plan)
    better = {"A": D(1), "B": D(68), "C": D(68)}  # the plan the issue shows
    assert _cost(better, prices) <= plan.cash_available
    assert bought["A"] == 1
    assert _cost(bought, prices) <= plan.cash_available
    assert plan.est_cash_after <= D(2400) - _cost(better, prices)
    assert _distance(bought, targets, prices, plan.investable_value) <= _distance(
        better, targets, prices, plan.investable_value
    )
    # the cash left beyond the buffer is less than the cheapest share: 1 A + 69 B + 68 C
    assert plan.est_cash_after - D(24) < D(10)
    assert bought == {"A": D(1), "B": D(69), "C": D(68)}


def test_a_dear_share_is_bought_when_one_share_fits_with_a_few_cheap_ones() -> None:
    """Rs 1,020 in {A 98% at 1,000, B 2% at 1}: 1 A and 9 B, not 20 B and no A."""
    prices = {"A": "1000", "B": "1"}
    targets = {"A": D(98), "B": D(2)}
    plan = plan_investment(
        RunType.INVEST,
        targets,
        InvestmentState("inv", D(1020)),
        _instruments(prices),
        WHOLE,
        POLICY,
        D(1020),
    )
    bought = _bought(plan)
    assert bought == {"A": D(1), "B": D(9)}
    assert _distance(bought, targets, prices, plan.investable_value) < _distance(
        {"B": D(20)}, targets, prices, plan.investable_value
    )
    assert plan.est_cash_after == D(11)  # the 10.20 buffer and 0.80 less than a share of B


def test_when_cash_is_short_a_dear_share_displaces_cheaper_ones() -> None:
    """Two legs, cash for one of A or two of B: the nearer plan (one A) wins."""
    prices = {"A": "90", "B": "60"}
    targets = {"A": D(50), "B": D(50)}
    bare = PlanningPolicy(D(0), D(0), D(0), D(0), D(0))
    plan = plan_investment(
        RunType.INVEST,
        targets,
        InvestmentState("inv", D(120)),
        _instruments(prices),
        WHOLE,
        bare,
        D(200),
    )
    assert _bought(plan) == {"A": D(1)}
    assert {s.symbol: s.reason for s in plan.skipped} == {"B": SkipReason.INSUFFICIENT_CASH}
    assert plan.cash_limited


def test_a_removed_constituent_is_sold_inside_the_drift_band() -> None:
    """A constituent no longer in the smallcase is sold even when every weight is in the band."""
    instruments = {
        "AAA": Instrument("AAA", D(10)),
        "BBB": Instrument("BBB", D(10)),
        "OLD": Instrument("OLD", D(10)),
    }
    # 49.75 / 49.75 / 0.5 against 50 / 50 / 0: drift 0.5 pp, inside the default 1 pp band
    state = InvestmentState("inv", D(0), {"AAA": D("99.5"), "BBB": D("99.5"), "OLD": D(1)})
    policy = PlanningPolicy(cash_buffer_pct=D(0))
    plan = plan_investment(
        RunType.REBALANCE,
        {"AAA": D(50), "BBB": D(50)},
        state,
        instruments,
        BrokerRules.alpaca(),
        policy,
    )
    assert plan.status is PlanStatus.CHANGED
    first = plan.orders[0]
    assert (first.symbol, first.side, first.quantity) == ("OLD", SELL, D(1))
    assert plan.est_weights_after["OLD"] == 0


def test_a_removed_constituent_on_a_whole_share_broker_is_sold_inside_the_band() -> None:
    instruments = _instruments({"AAA": "10", "OLD": "5"})
    state = InvestmentState("inv", D(0), {"AAA": D(199), "OLD": D(1)})
    plan = plan_investment(
        RunType.REBALANCE,
        {"AAA": D(100)},
        state,
        instruments,
        WHOLE,
        PlanningPolicy(cash_buffer_pct=D(0)),
    )
    assert [(o.symbol, o.side, o.quantity) for o in plan.orders] == [("OLD", SELL, D(1))]


def test_a_removed_constituent_held_below_one_lot_does_not_force_a_rebalance() -> None:
    """Less than a lot cannot be sold on a whole-share broker: the drift band still applies."""
    instruments = {
        "AAA": Instrument("AAA", D(10), 1, False),
        "OLD": Instrument("OLD", D(5), 10, False),
    }
    state = InvestmentState("inv", D(0), {"AAA": D(199), "OLD": D(1)})
    plan = plan_investment(
        RunType.REBALANCE,
        {"AAA": D(100)},
        state,
        instruments,
        WHOLE,
        PlanningPolicy(cash_buffer_pct=D(0)),
    )
    assert plan.status_reason is SkipReason.WITHIN_DRIFT_BAND
