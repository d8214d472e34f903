"""Example-based tests of the rebalance math: each run type, each skip reason, the batch API."""

from __future__ import annotations

import json
from decimal import Decimal as D

import numpy as np
import pytest

from saras.brokers.registry import broker_capabilities
from saras.domain.enums import OrderSide, RunType
from saras.domain.rebalance import (
    SKIP_REASONS,
    BatchState,
    BrokerRules,
    Instrument,
    InvalidState,
    InvalidTargets,
    InvestmentPlan,
    InvestmentState,
    PlanningPolicy,
    PlanStatus,
    SkipReason,
    UnknownInstrument,
    plan_batch,
    plan_investment,
    units_to_decimal,
    units_to_text,
    validate_targets,
    verify_batch,
)
from saras.domain.synthetic import benchmark_plan_batch, synthetic_smallcase

ALPACA = BrokerRules.of(broker_capabilities("alpaca"))  # the Alpaca kit's sizing rules

BUY, SELL = OrderSide.BUY, OrderSide.SELL
#: No buffer, no minimums, no band, no fees: the bare math.
BARE = PlanningPolicy(
    cash_buffer_pct=D(0),
    min_trade_value=D(0),
    drift_band_pct=D(0),
    min_weight_change_pct=D(0),
    fee_bps_estimate=D(0),
)
FRACTIONAL = BrokerRules(fractional=True)
WHOLE = BrokerRules.whole_shares()


def instruments(
    *specs: tuple[str, str | None] | tuple[str, str | None, int, bool],
) -> dict[str, Instrument]:
    out = {}
    for spec in specs:
        symbol, price = spec[0], spec[1]
        lot, frac = (spec[2], spec[3]) if len(spec) == 4 else (1, True)
        out[symbol] = Instrument(symbol, None if price is None else D(price), lot, frac)
    return out


def state(
    cash: str,
    positions: dict | None = None,
    open_orders: dict | None = None,
    investment_id: str = "inv-1",
) -> InvestmentState:
    return InvestmentState(
        investment_id,
        D(cash),
        {k: D(v) for k, v in (positions or {}).items()},
        {k: D(v) for k, v in (open_orders or {}).items()},
    )


def orders(plan: InvestmentPlan) -> list[tuple[str, OrderSide, D]]:
    return [(o.symbol, o.side, o.quantity) for o in plan.orders]


def reasons(plan: InvestmentPlan) -> dict[str, SkipReason]:
    return {s.symbol: s.reason for s in plan.skipped}


# ---- invest -------------------------------------------------------------------------------


def test_invest_fractional_hits_an_exact_fit() -> None:
    insts = instruments(("AAA", "100"), ("BBB", "50"))
    plan = plan_investment(
        RunType.INVEST,
        {"AAA": D(50), "BBB": D(50)},
        state("1000"),
        insts,
        FRACTIONAL,
        BARE,
        amount=D(1000),
    )
    assert orders(plan) == [("AAA", BUY, D(5)), ("BBB", BUY, D(10))]
    assert plan.est_cash_after == 0
    assert plan.est_weights_after == {"AAA": D(50), "BBB": D(50)}
    assert plan.status is PlanStatus.CHANGED and not plan.cash_limited
    assert [o.est_value for o in plan.orders] == [D(500), D(500)]


def test_invest_keeps_the_cash_buffer() -> None:
    insts = instruments(("AAA", "100"))
    policy = PlanningPolicy(cash_buffer_pct=D(2), min_trade_value=D(0))
    plan = plan_investment(
        RunType.INVEST, {"AAA": D(100)}, state("1000"), insts, FRACTIONAL, policy, amount=D(1000)
    )
    assert orders(plan) == [("AAA", BUY, D("9.8"))]
    assert plan.est_cash_after == D(20)
    assert plan.investable_value == D(980)


def test_whole_shares_round_to_nearest_and_trade_cheap_shares_for_dear_ones() -> None:
    insts = instruments(("AAA", "300"), ("BBB", "70"))
    targets = {"AAA": D(50), "BBB": D(50)}
    # 550 each: nearest 2 AAA + 8 BBB costs 1160; dropping BBB's 8th share (the least useful)
    # fits: 2 AAA + 7 BBB
    plan = plan_investment(RunType.INVEST, targets, state("1100"), insts, WHOLE, BARE, D(1100))
    assert orders(plan) == [("AAA", BUY, D(2)), ("BBB", BUY, D(7))]
    assert plan.est_cash_after == D(10)
    # 500 each: 1 AAA + 7 BBB (weights 30/49, 21% idle) is farther than 2 AAA + 5 BBB (60/35,
    # 5% idle): two BBB shares make room for the second AAA
    plan = plan_investment(RunType.INVEST, targets, state("1000"), insts, WHOLE, BARE, D(1000))
    assert orders(plan) == [("AAA", BUY, D(2)), ("BBB", BUY, D(5))]
    assert plan.est_cash_after == D(50)
    assert plan.cash_limited  # BBB ends two shares short for lack of cash


def test_whole_share_ties_go_to_the_first_symbol() -> None:
    insts = instruments(("AAA", "60"), ("BBB", "60"))
    targets = {"AAA": D(50), "BBB": D(50)}
    # 150 each: floor 2 lots each (120), short 30 = half a lot: no round up (not closer)
    plan = plan_investment(RunType.INVEST, targets, state("300"), insts, WHOLE, BARE, D(300))
    assert orders(plan) == [("AAA", BUY, D(2)), ("BBB", BUY, D(2))]
    # 170 each: short 50 each, 100 left: only one extra share fits, AAA first
    plan = plan_investment(RunType.INVEST, targets, state("340"), insts, WHOLE, BARE, D(340))
    assert orders(plan) == [("AAA", BUY, D(3)), ("BBB", BUY, D(2))]


def test_lots_are_respected() -> None:
    insts = instruments(("AAA", "10", 5, False))
    plan = plan_investment(
        RunType.INVEST, {"AAA": D(100)}, state("1020"), insts, WHOLE, BARE, D(1020)
    )
    assert orders(plan) == [("AAA", BUY, D(100))]  # 102 shares wanted; 20 lots of 5
    plan = plan_investment(
        RunType.INVEST, {"AAA": D(100)}, state("1030"), insts, WHOLE, BARE, D(1030)
    )
    assert orders(plan) == [("AAA", BUY, D(100))]  # 103: closer to 100 than 105, and cheaper
    plan = plan_investment(
        RunType.INVEST, {"AAA": D(100)}, state("1060"), insts, WHOLE, BARE, D(1060)
    )
    assert orders(plan) == [("AAA", BUY, D(105))]  # 106: 105 is closer and fits


def test_non_fractionable_assets_get_whole_shares_on_a_fractional_broker() -> None:
    insts = instruments(("AAA", "100", 1, True), ("BBB", "30", 1, False))
    plan = plan_investment(
        RunType.INVEST,
        {"AAA": D(50), "BBB": D(50)},
        state("1000"),
        insts,
        ALPACA,
        BARE,
        D(1000),
    )
    # BBB's nearest whole number (16.67 -> 17) is bought and the fractional AAA gives way:
    # weights 49/51 rather than 50/48 with 2% idle
    assert orders(plan) == [("AAA", BUY, D("4.9")), ("BBB", BUY, D(17))]


def test_fractional_quantities_are_truncated_to_the_broker_decimals() -> None:
    insts = instruments(("AAA", "3"))
    rules = BrokerRules(fractional=True, quantity_decimals=4)
    plan = plan_investment(RunType.INVEST, {"AAA": D(100)}, state("10"), insts, rules, BARE, D(10))
    assert orders(plan) == [("AAA", BUY, D("3.3333"))]  # 3.33333... truncated, never rounded up


def test_invest_spends_the_amount_not_all_the_cash() -> None:
    insts = instruments(("AAA", "10"))
    plan = plan_investment(
        RunType.INVEST, {"AAA": D(100)}, state("5000"), insts, FRACTIONAL, BARE, D(100)
    )
    assert orders(plan) == [("AAA", BUY, D(10))]
    assert plan.est_cash_after == D(4900)


def test_invest_with_less_cash_than_the_amount_is_cash_limited() -> None:
    insts = instruments(("AAA", "10"), ("BBB", "10"))
    plan = plan_investment(
        RunType.INVEST, {"AAA": D(50), "BBB": D(50)}, state("100"), insts, FRACTIONAL, BARE, D(1000)
    )
    assert orders(plan) == [("AAA", BUY, D(5)), ("BBB", BUY, D(5))]
    assert plan.cash_limited
    assert plan.est_cash_after == 0


def test_open_orders_count_toward_the_target() -> None:
    insts = instruments(("AAA", "10"), ("BBB", "10"))
    # an open buy of 50 AAA (500) is already on its way: the 1000 tops up to 750 each
    st = state("1000", open_orders={"AAA": "50"})
    plan = plan_investment(
        RunType.INVEST, {"AAA": D(50), "BBB": D(50)}, st, insts, FRACTIONAL, BARE, D(1000)
    )
    assert orders(plan) == [("AAA", BUY, D(25)), ("BBB", BUY, D(75))]


def test_topup_buys_only_and_leaves_overweights() -> None:
    insts = instruments(("AAA", "10"), ("BBB", "10"))
    st = state("1000", {"AAA": "80", "BBB": "20"})  # 800 / 200 against 50 / 50
    plan = plan_investment(
        RunType.TOPUP, {"AAA": D(50), "BBB": D(50)}, st, insts, FRACTIONAL, BARE, D(200)
    )
    assert orders(plan) == [("BBB", BUY, D(20))]  # all 200 to the underweight leg
    assert plan.est_cash_after == D(800)
    assert plan.cash_limited  # 600 was wanted for BBB


# ---- skip reasons ---------------------------------------------------------------------------


def test_no_price_keeps_that_leg_s_money_as_cash() -> None:
    insts = instruments(("AAA", "100"), ("BBB", None))
    plan = plan_investment(
        RunType.INVEST,
        {"AAA": D(50), "BBB": D(50)},
        state("1000"),
        insts,
        FRACTIONAL,
        BARE,
        D(1000),
    )
    assert orders(plan) == [("AAA", BUY, D(5))]
    assert reasons(plan) == {"BBB": SkipReason.NO_PRICE}
    assert plan.est_cash_after == D(500)
    assert "BBB" in plan.skipped[0].detail


def test_below_broker_minimum() -> None:
    insts = instruments(("AAA", "7"), ("BBB", "7"))
    plan = plan_investment(
        RunType.INVEST,
        {"AAA": D(99), "BBB": D(1)},
        state("50"),
        insts,
        ALPACA,
        BARE,
        D(50),
    )
    assert [o.symbol for o in plan.orders] == ["AAA"]
    assert reasons(plan) == {"BBB": SkipReason.BELOW_BROKER_MINIMUM}
    assert plan.orders[0].est_value is not None and plan.orders[0].est_value >= 1


def test_below_min_trade_value_skips_every_leg() -> None:
    insts = instruments(("AAA", "100"), ("BBB", "100"))
    st = state("0", {"AAA": "6", "BBB": "4"})  # 60/40 against 55/45: trades of 50
    policy = PlanningPolicy(
        D(0), min_trade_value=D(60), drift_band_pct=D(0), min_weight_change_pct=D(0)
    )
    plan = plan_investment(
        RunType.REBALANCE, {"AAA": D(55), "BBB": D(45)}, st, insts, FRACTIONAL, policy
    )
    assert plan.orders == ()
    assert reasons(plan) == {
        "AAA": SkipReason.BELOW_MIN_TRADE_VALUE,
        "BBB": SkipReason.BELOW_MIN_TRADE_VALUE,
    }
    assert plan.status is PlanStatus.SKIPPED
    assert plan.status_reason is SkipReason.BELOW_MIN_TRADE_VALUE
    policy = PlanningPolicy(
        D(0), min_trade_value=D(50), drift_band_pct=D(0), min_weight_change_pct=D(0)
    )
    plan = plan_investment(
        RunType.REBALANCE, {"AAA": D(55), "BBB": D(45)}, st, insts, FRACTIONAL, policy
    )
    assert orders(plan) == [("AAA", SELL, D("0.5")), ("BBB", BUY, D("0.5"))]  # exactly 50: kept


def test_below_min_weight_change() -> None:
    insts = instruments(("AAA", "1"), ("BBB", "1"), ("CCC", "1"))
    st = state("0", {"AAA": "550", "BBB": "295", "CCC": "155"})
    policy = PlanningPolicy(D(0), D(0), drift_band_pct=D(0), min_weight_change_pct=D(1))
    targets = {"AAA": D(50), "BBB": D(30), "CCC": D(20)}
    plan = plan_investment(RunType.REBALANCE, targets, st, insts, WHOLE, policy)
    assert orders(plan) == [("AAA", SELL, D(50)), ("CCC", BUY, D(45))]
    assert reasons(plan) == {"BBB": SkipReason.BELOW_MIN_WEIGHT_CHANGE}
    assert "0.5000 pp" in plan.skipped[0].detail


@pytest.mark.parametrize("exempt", [True, False])
def test_a_fresh_buy_is_exempt_from_the_minimum_weight_change(exempt: bool) -> None:
    """A new 0.5% constituent is bought on a rebalance (exempt_fresh_buys, the default); a held
    leg 0.5 pp short is not; without the exemption both are noise."""
    insts = instruments(("AAA", "1"), ("BBB", "1"), ("NEW", "1"))
    st = state("0", {"AAA": "600", "BBB": "400"})
    targets = {"AAA": D("50"), "BBB": D("49.5"), "NEW": D("0.5")}
    policy = PlanningPolicy(
        D(0), D(0), drift_band_pct=D(0), min_weight_change_pct=D(1), exempt_fresh_buys=exempt
    )
    plan = plan_investment(RunType.REBALANCE, targets, st, insts, WHOLE, policy)
    if exempt:
        assert orders(plan) == [("AAA", SELL, D(100)), ("BBB", BUY, D(95)), ("NEW", BUY, D(5))]
        assert reasons(plan) == {}
    else:
        assert orders(plan) == [("AAA", SELL, D(100)), ("BBB", BUY, D(95))]
        assert reasons(plan) == {"NEW": SkipReason.BELOW_MIN_WEIGHT_CHANGE}
    assert PlanningPolicy().exempt_fresh_buys is True


def test_a_held_leg_is_not_a_fresh_buy() -> None:
    """The exemption is for legs held not at all: a held leg short by less than the minimum
    weight change stays noise."""
    insts = instruments(("AAA", "1"), ("BBB", "1"))
    st = state("0", {"AAA": "505", "BBB": "495"})
    policy = PlanningPolicy(D(0), D(0), drift_band_pct=D(0), min_weight_change_pct=D(1))
    plan = plan_investment(
        RunType.REBALANCE, {"AAA": D(50), "BBB": D(50)}, st, insts, WHOLE, policy
    )
    assert orders(plan) == []
    assert set(reasons(plan).values()) == {SkipReason.BELOW_MIN_WEIGHT_CHANGE}


def test_not_fractionable_too_small() -> None:
    insts = instruments(("AAA", "5000"), ("BBB", "10"))
    plan = plan_investment(
        RunType.INVEST, {"AAA": D(50), "BBB": D(50)}, state("1000"), insts, WHOLE, BARE, D(1000)
    )
    assert orders(plan) == [("BBB", BUY, D(50))]
    assert reasons(plan) == {"AAA": SkipReason.NOT_FRACTIONABLE_TOO_SMALL}


def test_insufficient_cash_for_a_whole_investment() -> None:
    insts = instruments(("AAA", "10"), ("BBB", "10"))
    plan = plan_investment(
        RunType.INVEST, {"AAA": D(50), "BBB": D(50)}, state("0"), insts, FRACTIONAL, BARE, D(1000)
    )
    assert plan.orders == ()
    assert plan.status_reason is SkipReason.INSUFFICIENT_CASH
    assert set(reasons(plan).values()) == {SkipReason.INSUFFICIENT_CASH}
    assert plan.cash_limited


def test_insufficient_cash_for_one_whole_share_leg() -> None:
    insts = instruments(("AAA", "90"), ("BBB", "60"))
    # 100 wanted each, 120 of cash: one AAA (short 10 and 100) is nearer the targets than two
    # BBB (short 100 and 20 the other way); BBB's share no longer fits
    plan = plan_investment(
        RunType.INVEST, {"AAA": D(50), "BBB": D(50)}, state("120"), insts, WHOLE, BARE, D(200)
    )
    assert orders(plan) == [("AAA", BUY, D(1))]
    assert plan.est_cash_after == D(30)
    assert reasons(plan) == {"BBB": SkipReason.INSUFFICIENT_CASH}


def test_open_order_pending() -> None:
    insts = instruments(("AAA", "10"), ("OLD", "10"))
    st = state("1000", open_orders={"OLD": "10"})  # OLD left the smallcase; its buy is open
    plan = plan_investment(RunType.REBALANCE, {"AAA": D(100)}, st, insts, FRACTIONAL, BARE)
    assert reasons(plan) == {"OLD": SkipReason.OPEN_ORDER_PENDING}
    assert all(o.symbol != "OLD" for o in plan.orders)


# ---- rebalance, repair, exit -----------------------------------------------------------------


def _drifted() -> tuple[dict, InvestmentState]:
    insts = instruments(("AAA", "10"), ("BBB", "10"))
    return insts, state("0", {"AAA": "52", "BBB": "48"})  # 52/48 against 50/50: drift 2 pp


def test_rebalance_within_the_drift_band_is_left_alone() -> None:
    insts, st = _drifted()
    policy = PlanningPolicy(D(0), D(0), drift_band_pct=D(2), min_weight_change_pct=D(0))
    plan = plan_investment(
        RunType.REBALANCE, {"AAA": D(50), "BBB": D(50)}, st, insts, FRACTIONAL, policy
    )
    assert plan.status is PlanStatus.SKIPPED
    assert plan.status_reason is SkipReason.WITHIN_DRIFT_BAND
    assert plan.orders == () and plan.skipped == ()
    assert plan.drift_pct == D(2)


def test_rebalance_outside_the_drift_band_trades() -> None:
    insts, st = _drifted()
    policy = PlanningPolicy(D(0), D(0), drift_band_pct=D("1.5"), min_weight_change_pct=D(0))
    plan = plan_investment(
        RunType.REBALANCE, {"AAA": D(50), "BBB": D(50)}, st, insts, FRACTIONAL, policy
    )
    assert orders(plan) == [("AAA", SELL, D(2)), ("BBB", BUY, D(2))]
    assert plan.est_weights_after == {"AAA": D(50), "BBB": D(50)}


def test_repair_has_no_drift_band_and_no_minimum_weight_change() -> None:
    insts, st = _drifted()
    policy = PlanningPolicy(D(0), D(0), drift_band_pct=D(5), min_weight_change_pct=D(5))
    targets = {"AAA": D(50), "BBB": D(50)}
    assert plan_investment(RunType.REBALANCE, targets, st, insts, FRACTIONAL, policy).orders == ()
    plan = plan_investment(RunType.REPAIR, targets, st, insts, FRACTIONAL, policy)
    assert orders(plan) == [("AAA", SELL, D(2)), ("BBB", BUY, D(2))]


def test_rebalance_sells_removed_constituents_entirely() -> None:
    insts = instruments(("AAA", "100"), ("OLD", "1"))
    st = state("0", {"AAA": "10", "OLD": "0.5"})  # OLD is worth 0.50: below every minimum
    policy = PlanningPolicy(
        D(0), min_trade_value=D(1), drift_band_pct=D(0), min_weight_change_pct=D(1)
    )
    plan = plan_investment(RunType.REBALANCE, {"AAA": D(100)}, st, insts, FRACTIONAL, policy)
    assert orders(plan) == [("OLD", SELL, D("0.5"))]


def test_sells_come_first_and_fund_the_buys() -> None:
    insts = instruments(("AAA", "10"), ("BBB", "10"), ("CCC", "10"), ("DDD", "10"))
    st = state("0", {"AAA": "40", "BBB": "10", "CCC": "40", "DDD": "10"})
    targets = {s: D(25) for s in insts}
    plan = plan_investment(RunType.REBALANCE, targets, st, insts, WHOLE, BARE)
    assert orders(plan) == [
        ("AAA", SELL, D(15)),
        ("CCC", SELL, D(15)),
        ("BBB", BUY, D(15)),
        ("DDD", BUY, D(15)),
    ]
    assert plan.cash_available == D(300)
    assert plan.est_cash_after == 0


def test_fees_shrink_the_buys() -> None:
    insts = instruments(("AAA", "10"), ("BBB", "10"))
    st = state("0", {"AAA": "60", "BBB": "40"})
    policy = PlanningPolicy(D(0), D(0), D(0), D(0), fee_bps_estimate=D(100))
    plan = plan_investment(
        RunType.REBALANCE, {"AAA": D(50), "BBB": D(50)}, st, insts, FRACTIONAL, policy
    )
    (sell, buy) = plan.orders
    assert sell.est_value is not None and buy.est_value is not None
    assert buy.est_value * D("1.01") <= sell.est_value * D("0.99")
    assert plan.est_cash_after >= 0


def test_exit_sells_everything_sellable_regardless_of_rules() -> None:
    insts = instruments(("AAA", "100"), ("BBB", None), ("CCC", "1"))
    st = state("5", {"AAA": "3.25", "BBB": "7", "CCC": "0.2"}, {"AAA": "-1"})
    policy = PlanningPolicy(min_trade_value=D(100))
    plan = plan_investment(RunType.EXIT, {}, st, insts, FRACTIONAL, policy)
    assert orders(plan) == [("AAA", SELL, D("2.25")), ("BBB", SELL, D(7)), ("CCC", SELL, D("0.2"))]
    assert plan.orders[1].est_value is None  # no price: sold anyway, value unknown
    assert plan.est_cash_after == D(5) + D("225") + D("0.2")


def test_exit_with_nothing_held() -> None:
    insts = instruments(("AAA", "100"))
    plan = plan_investment(RunType.EXIT, {"AAA": D(100)}, state("5"), insts, WHOLE, BARE)
    assert plan.orders == ()
    assert plan.status_reason is SkipReason.NOTHING_HELD


def test_on_target_and_no_value() -> None:
    insts = instruments(("AAA", "10"))
    plan = plan_investment(
        RunType.REPAIR, {"AAA": D(100)}, state("0", {"AAA": "10"}), insts, FRACTIONAL, BARE
    )
    assert plan.status_reason is SkipReason.ON_TARGET
    # whole shares: 10 held against a target of 10.3 shares is as near as whole shares get
    insts2 = instruments(("AAA", "10"), ("BBB", "10"))
    plan = plan_investment(
        RunType.REPAIR,
        {"AAA": D(50), "BBB": D(50)},
        state("6", {"AAA": "10", "BBB": "10"}),
        insts2,
        WHOLE,
        BARE,
    )
    assert plan.orders == () and plan.skipped == ()
    assert plan.status_reason is SkipReason.ON_TARGET
    plan = plan_investment(
        RunType.REBALANCE, {"AAA": D(100)}, state("-100", {"AAA": "10"}), insts, FRACTIONAL, BARE
    )
    assert plan.status_reason is SkipReason.NO_VALUE and plan.orders == ()


# ---- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("targets", "culprit"),
    [
        ({}, "no target"),
        ({"AAA": D(50), "BBB": D(49)}, "sum to 99"),
        ({"AAA": D(0), "BBB": D(100)}, "AAA"),
        ({"AAA": D(-5), "BBB": D(105)}, "AAA"),
        ({"AAA": D(101)}, "AAA"),
        ({"AAA": 100.0}, "AAA"),
        ({"": D(100)}, "invalid symbol"),
        ({"AAA": D("NaN")}, "AAA"),
    ],
)
def test_validate_targets_names_the_culprit(targets: dict, culprit: str) -> None:
    with pytest.raises(InvalidTargets, match=culprit):
        validate_targets(targets)


def test_validate_targets_tolerance() -> None:
    validate_targets({"AAA": D("33.33"), "BBB": D("33.33"), "CCC": D("33.33")})
    with pytest.raises(InvalidTargets):
        validate_targets(
            {"AAA": D("33.33"), "BBB": D("33.33"), "CCC": D("33.33")}, tolerance=D("0.001")
        )


def test_unknown_symbols_are_named() -> None:
    insts = instruments(("AAA", "10"))
    with pytest.raises(UnknownInstrument, match="ZZZ"):
        plan_investment(
            RunType.INVEST, {"ZZZ": D(100)}, state("10"), insts, FRACTIONAL, BARE, D(10)
        )
    with pytest.raises(UnknownInstrument, match="inv-9 holds YYY"):
        plan_investment(
            RunType.REBALANCE,
            {"AAA": D(100)},
            state("10", {"YYY": "1"}, investment_id="inv-9"),
            insts,
            FRACTIONAL,
            BARE,
        )


def test_bad_states_and_amounts() -> None:
    insts = instruments(("AAA", "10"))
    t = {"AAA": D(100)}
    with pytest.raises(InvalidState, match="needs an amount"):
        plan_investment(RunType.INVEST, t, state("10"), insts, FRACTIONAL, BARE)
    with pytest.raises(InvalidState, match="takes no amount"):
        plan_investment(RunType.REBALANCE, t, state("10"), insts, FRACTIONAL, BARE, D(5))
    with pytest.raises(InvalidState, match="> 0"):
        plan_investment(RunType.TOPUP, t, state("10"), insts, FRACTIONAL, BARE, D(0))
    with pytest.raises(InvalidState, match="negative"):
        plan_investment(RunType.EXIT, t, state("10", {"AAA": "-1"}), insts, FRACTIONAL, BARE)


def test_policy_rules_and_instrument_validation() -> None:
    with pytest.raises(ValueError, match="cash_buffer_pct"):
        PlanningPolicy(cash_buffer_pct=D(100))
    with pytest.raises(ValueError, match="min_trade_value"):
        PlanningPolicy(min_trade_value=D(-1))
    with pytest.raises(ValueError, match="quantity_decimals"):
        BrokerRules(fractional=True, quantity_decimals=12)
    with pytest.raises(ValueError, match="price"):
        Instrument("AAA", D(0))
    with pytest.raises(ValueError, match="lot_size"):
        Instrument("AAA", D(1), lot_size=0)
    assert BrokerRules(True, 9, D(1)) == ALPACA  # read from the Alpaca kit's capabilities
    assert BrokerRules.of(broker_capabilities("zerodha")) == BrokerRules.whole_shares()
    assert BrokerRules.of(broker_capabilities("paper")).fractional
    assert not BrokerRules.of(
        broker_capabilities("paper", metadata={"paper_fractional": "no"})
    ).fractional


# ---- json, hash, batch ------------------------------------------------------------------------


def test_to_json_is_plain_and_stable_under_target_order() -> None:
    insts = instruments(("AAA", "190.12"), ("BBB", "410.5"), ("CCC", None))
    targets = {"AAA": D(40), "BBB": D(30), "CCC": D(30)}
    plan = plan_investment(
        RunType.INVEST,
        targets,
        state("10000"),
        insts,
        ALPACA,
        PlanningPolicy(),
        D(10000),
    )
    doc = plan.to_json()
    text = json.dumps(doc)
    assert json.loads(text) == doc  # plain JSON: a round trip keeps it
    again = plan_investment(
        RunType.INVEST,
        dict(reversed(targets.items())),
        state("10000"),
        insts,
        ALPACA,
        PlanningPolicy(),
        D(10000),
    )
    assert json.dumps(again.to_json(), sort_keys=True) == json.dumps(doc, sort_keys=True)
    for order in plan.orders:
        assert order.est_price is not None
        assert order.est_value == order.quantity * order.est_price
    assert doc["skipped"][0]["reason"] == "no_price"


def test_units_text_and_decimal() -> None:
    units = np.array([0, 1, 1_500_000_000, 123_000_000_001, -2_000_000_000], dtype=np.int64)
    assert units_to_text(units, 9).tolist() == ["0", "0.000000001", "1.5", "123.000000001", "-2"]
    assert units_to_text(units, 0).tolist() == [
        "0",
        "1",
        "1500000000",
        "123000000001",
        "-2000000000",
    ]
    assert units_to_decimal(1_500_000_000, 9) == D("1.5")
    assert str(units_to_decimal(20_000_000_000, 9)) == "20"


def test_batch_columns_match_the_per_investment_plans() -> None:
    insts = instruments(("AAA", "10"), ("BBB", "25"), ("CCC", "7.5"), ("OLD", "3"))
    targets = {"AAA": D(40), "BBB": D(35), "CCC": D(25)}
    states = [
        state("100", {"AAA": "30", "BBB": "2", "OLD": "5"}, investment_id="i0"),
        state("0", {"AAA": "10", "BBB": "4", "CCC": "13.3"}, investment_id="i1"),
        state("1000", investment_id="i2"),
        state("50", {"AAA": "8", "BBB": "3", "CCC": "10"}, investment_id="i3"),
    ]
    policy = PlanningPolicy(cash_buffer_pct=D(1), drift_band_pct=D(3))
    batch = plan_batch(RunType.REBALANCE, targets, insts, FRACTIONAL, policy, states)
    assert batch.symbols == ("AAA", "BBB", "CCC", "OLD")
    assert (np.diff(batch.order_investment) >= 0).all()
    texts = batch.order_quantity_text()
    sides = batch.order_side()
    for i, st in enumerate(states):
        single = plan_investment(RunType.REBALANCE, targets, st, insts, FRACTIONAL, policy)
        from_batch = batch.investment_plan(i)
        assert from_batch == single
        rows = np.flatnonzero(batch.order_investment == i)
        assert [(batch.symbols[batch.order_leg[k]], sides[k], texts[k]) for k in rows] == [
            (o.symbol, o.side.value, str(o.quantity)) for o in single.orders
        ]
        for k, o in zip(rows, single.orders, strict=True):
            assert o.est_value is not None
            assert batch.order_est_value[k] == pytest.approx(float(o.est_value))
        skip_rows = np.flatnonzero(batch.skip_investment == i)
        assert [
            (batch.symbols[batch.skip_leg[k]], SKIP_REASONS[batch.skip_reason[k]])
            for k in skip_rows
        ] == [(s.symbol, s.reason) for s in single.skipped]
        assert bool(batch.changed[i]) == (single.status is PlanStatus.CHANGED)
    assert batch.index_of("i2") == 2
    assert batch.investment_plan(2).orders  # fresh cash: buys everything


def test_batch_state_from_states_and_columnar_input_agree() -> None:
    insts = instruments(("AAA", "10"), ("BBB", "25"))
    states = [
        state("10", {"AAA": "1.123456789"}, {"BBB": "-0.5"}, investment_id="a"),
        state("20", {"BBB": "2"}, investment_id="b"),
    ]
    bs = BatchState.from_states(states, FRACTIONAL)
    assert bs.symbols == ("AAA", "BBB")
    assert bs.held_units.tolist() == [[1_123_456_789, 0], [0, 2_000_000_000]]
    assert bs.open_units.tolist() == [[0, -500_000_000], [0, 0]]
    targets = {"AAA": D(50), "BBB": D(50)}
    a = plan_batch(RunType.REPAIR, targets, insts, FRACTIONAL, BARE, states)
    b = plan_batch(RunType.REPAIR, targets, insts, FRACTIONAL, BARE, bs)
    assert list(a.iter_plans()) == list(b.iter_plans())
    with pytest.raises(InvalidState, match="units"):
        plan_batch(RunType.REPAIR, targets, insts, WHOLE, BARE, bs)
    with pytest.raises(InvalidState, match="negative"):
        BatchState(("x",), ("AAA",), (D(0),), np.array([[-1]]), np.array([[0]]), 0)


@pytest.mark.parametrize("rules", [ALPACA, BrokerRules.whole_shares()])
@pytest.mark.parametrize("run_type", list(RunType))
def test_synthetic_batches_verify_exactly(rules: BrokerRules, run_type: RunType) -> None:
    seconds, batch = benchmark_plan_batch(300, 12, rules, run_type)
    verify_batch(batch)  # every investment re-checked in exact Decimal
    assert batch.order_count > 0
    assert seconds < 5


def test_synthetic_smallcase_is_deterministic() -> None:
    a = synthetic_smallcase(50, 5, seed=3)
    b = synthetic_smallcase(50, 5, seed=3)
    assert a.targets == b.targets
    assert sum(a.targets.values()) == 100
    assert np.array_equal(a.batch.held_units, b.batch.held_units)


# ---- exactness at the float boundary -----------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "shares"), [("3", 10), ("2.999999999999", 9), ("2.9999999999", 9)]
)
def test_never_overspends_by_a_hair(amount: str, shares: int) -> None:
    # 0.3 has no exact float: a plain float comparison would buy the 10th share at 2.999999999999
    insts = instruments(("AAA", "0.3", 1, False))
    plan = plan_investment(
        RunType.INVEST, {"AAA": D(100)}, state(amount), insts, WHOLE, BARE, D(amount)
    )
    assert orders(plan) == [("AAA", BUY, D(shares))]
    assert plan.est_cash_after >= 0


@pytest.mark.parametrize(
    ("minimum", "bought"),
    [
        ("0.3", True),
        ("0.2999999999999", True),
        ("0.3000000000001", False),
        ("0.30000000000000001", False),  # the same float as 0.3: only Decimal tells them apart
    ],
)
def test_minimums_are_exact_at_the_boundary(minimum: str, bought: bool) -> None:
    # 0.35 wanted (above every minimum), one whole share of 0.3 is what rounding gives
    insts = instruments(("AAA", "0.3", 1, False))
    policy = PlanningPolicy(
        D(0), min_trade_value=D(minimum), drift_band_pct=D(0), min_weight_change_pct=D(0)
    )
    plan = plan_investment(
        RunType.INVEST, {"AAA": D(100)}, state("1"), insts, WHOLE, policy, D("0.35")
    )
    assert bool(plan.orders) is bought
    if not bought:
        assert reasons(plan) == {"AAA": SkipReason.BELOW_MIN_TRADE_VALUE}


def test_mixed_reasons_make_all_legs_skipped() -> None:
    insts = instruments(("AAA", None), ("BBB", "7"))
    plan = plan_investment(
        RunType.INVEST,
        {"AAA": D(99), "BBB": D(1)},
        state("50"),
        insts,
        ALPACA,
        BARE,
        D(50),
    )
    assert reasons(plan) == {"AAA": SkipReason.NO_PRICE, "BBB": SkipReason.BELOW_BROKER_MINIMUM}
    assert plan.status_reason is SkipReason.ALL_LEGS_SKIPPED
    assert plan.to_json()["status"] == "skipped"
