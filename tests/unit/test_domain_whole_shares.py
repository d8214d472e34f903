"""Whole-share plans that spend the money: the issue's examples and removed constituents.

The distance to targets is the planner's: ``D = sum_j (a_j - w_j)**2 / w_j`` over the legs with a
target weight ``w_j`` (percent of the investable value), ``a_j`` the weight after the plan.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, localcontext
from decimal import Decimal as D

import numpy as np
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from saras.brokers.registry import broker_capabilities
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

ALPACA = BrokerRules.of(broker_capabilities("alpaca"))  # the Alpaca kit's sizing rules

BUY, SELL = OrderSide.BUY, OrderSide.SELL
WHOLE = BrokerRules.whole_shares()
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
        ALPACA,
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


# ---- the bound, against a brute-force search ------------------------------------------------

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
BARE = PlanningPolicy(D(0), D(0), D(0), D(0), D(0))


@dataclass(frozen=True)
class Small:
    """A small planning problem: 2-5 legs, each wanting at most about a dozen steps."""

    run_type: RunType
    targets: dict[str, D]
    state: InvestmentState
    instruments: dict[str, Instrument]
    rules: BrokerRules
    policy: PlanningPolicy
    amount: D | None

    def plan(self) -> InvestmentPlan:
        return plan_investment(
            self.run_type,
            self.targets,
            self.state,
            self.instruments,
            self.rules,
            self.policy,
            self.amount,
        )

    def step(self, symbol: str) -> D:
        """Return the shares in one step of a leg: a unit, or a lot of whole shares."""
        inst = self.instruments[symbol]
        if self.rules.fractional and inst.fractionable:
            return D(1).scaleb(-self.rules.unit_decimals)
        return D(inst.lot_size)


@st.composite
def small_cases(draw: st.DrawFn) -> Small:
    run_type = draw(st.sampled_from([RunType.INVEST, RunType.TOPUP, RunType.REBALANCE]))
    decimals = draw(st.sampled_from([0, 0, 1, 2]))  # whole shares, or coarse fractional units
    rules = BrokerRules(decimals > 0, max(decimals, 1) if decimals else 0)
    if not decimals:
        rules = BrokerRules(False, 0)
    m = draw(st.integers(2, 5))
    symbols = [f"S{j}" for j in range(m)]
    raw = draw(st.lists(st.integers(1, 50), min_size=m, max_size=m))
    cents = [r * 10_000 // sum(raw) for r in raw]
    cents[0] += 10_000 - sum(cents)
    targets = {s: D(c).scaleb(-2) for s, c in zip(symbols, cents, strict=True)}
    size = D(draw(st.integers(200, 10_000)))  # about the money, in rupees
    instruments = {}
    positions: dict[str, D] = {}
    for s in symbols:
        fractionable = decimals > 0 and draw(st.booleans())
        lot = 1 if fractionable else draw(st.sampled_from([1, 1, 2, 5]))
        shares = D(1).scaleb(-decimals) if fractionable else D(lot)
        wanted_steps = D(draw(st.integers(1, 110))) / 10  # steps the target is worth
        price = (targets[s] * size / 100 / wanted_steps / shares).quantize(D("0.01"))
        price = max(price, D("0.01"))
        instruments[s] = Instrument(s, price, lot, fractionable)
        if run_type is not RunType.INVEST and draw(st.booleans()):
            positions[s] = draw(st.integers(0, int(wanted_steps) + 3)) * shares
    cash = D(draw(st.integers(0, int(size) * 100))).scaleb(-2)
    amount = None
    if run_type in (RunType.INVEST, RunType.TOPUP):
        amount = D(draw(st.integers(1, int(size) * 100))).scaleb(-2)
        cash = max(cash, amount) if draw(st.booleans()) else cash
    policy = PlanningPolicy(
        cash_buffer_pct=D(draw(st.integers(0, 30))).scaleb(-1),
        min_trade_value=D(0),
        drift_band_pct=D(0),
        min_weight_change_pct=D(0),
        fee_bps_estimate=D(draw(st.integers(0, 50))),
    )
    state = InvestmentState("inv", cash, positions)
    return Small(run_type, targets, state, instruments, rules, policy, amount)


@dataclass(frozen=True)
class Search:
    """The buy legs of a plan and every whole number of steps they could buy, searched."""

    symbols: list[str]
    short: np.ndarray  # value each buy leg is short of its target, after the plan's sells
    target: np.ndarray  # target value of each buy leg
    value: np.ndarray  # value of one step
    step_cost: list[D]  # cost of one step, fees included
    scaled_cost: np.ndarray  # step cost x 10**(2 + decimals) x 10_000: exact integers
    scale: D
    nearest: list[int]  # the whole number of steps nearest each leg's shortfall
    planned: list[int]  # the steps the plan buys
    cash: D  # cash available for buys

    def distance(self, steps: np.ndarray) -> np.ndarray:
        rest = self.short[None, :] - steps * self.value[None, :]
        return np.asarray((rest**2 / self.target[None, :]).sum(1))

    def fits(self, steps: list[int], budget: D) -> bool:
        limit = int((budget * self.scale).to_integral_value(rounding=ROUND_FLOOR))
        return sum(k * int(c) for k, c in zip(steps, self.scaled_cost, strict=True)) <= limit

    def best(self, budget: D) -> float:
        """Return the least distance of any steps costing at most ``budget``, by brute force."""
        grid = np.indices([k + 1 for k in self.nearest]).reshape(len(self.nearest), -1).T
        limit = int((budget * self.scale).to_integral_value(rounding=ROUND_FLOOR))
        fits = grid @ self.scaled_cost <= limit  # int64: exact
        if not fits.any():  # not even nothing fits: nothing is what a plan buys
            return float(self.distance(np.zeros((1, len(self.nearest))))[0])
        return float(self.distance(grid[fits]).min())


def _search(sc: Small, plan: InvestmentPlan) -> Search:
    with localcontext() as ctx:
        ctx.prec = 60
        fee = sc.policy.fee_bps_estimate
        investable = plan.investable_value
        sold = {o.symbol: o.quantity for o in plan.orders if o.side is SELL}
        bought = {o.symbol: o.quantity for o in plan.orders if o.side is BUY}
        exact = D(10) ** (2 + sc.rules.unit_decimals)  # a step's value is a whole multiple
        symbols, short, target, value, costs, scaled, nearest, planned = ([] for _ in range(8))
        for s, w in sorted(sc.targets.items()):
            price = sc.instruments[s].price
            assert price is not None
            held = sc.state.positions.get(s, D(0)) - sold.get(s, D(0))
            t = w * investable / 100
            gap = t - held * price
            if gap <= investable * D("1e-9"):
                assert s not in bought  # at or above target: never bought
                continue
            step_value = price * sc.step(s)
            symbols.append(s)
            short.append(float(gap))
            target.append(float(t))
            value.append(float(step_value))
            costs.append(step_value * (1 + fee / 10_000))
            scaled.append(int(step_value * exact) * int(10_000 + fee))
            k = int((gap / step_value + D("0.5")).to_integral_value(ROUND_CEILING)) - 1
            nearest.append(max(k, 0))
            units = bought.get(s, D(0)) / sc.step(s)
            assert units == units.to_integral_value()
            planned.append(int(units))
        return Search(
            symbols,
            np.array(short),
            np.array(target),
            np.array(value),
            costs,
            np.array(scaled, dtype=np.int64),
            exact * 10_000,
            nearest,
            planned,
            plan.cash_available,
        )


@SETTINGS
@given(small_cases())
def test_whole_steps_spend_the_cash_within_the_stated_bound(sc: Small) -> None:
    """The docstring's bound, against a brute-force search of every plan on the buy legs."""
    plan = sc.plan()
    assume(plan.status_reason not in (SkipReason.NO_VALUE, SkipReason.WITHIN_DRIFT_BAND))
    search = _search(sc, plan)
    if not search.symbols:
        return
    mine = float(search.distance(np.array([search.planned]))[0])
    tol = 1e-9 * (1 + float(search.target.sum()))
    with localcontext() as ctx:
        ctx.prec = 60
        spent = sum((k * c for k, c in zip(search.planned, search.step_cost, strict=True)), D(0))
        left = search.cash - spent
        if any(search.planned):
            assert search.fits(search.planned, search.cash) and left >= 0
        # (1) no farther from the targets than the best plan with one dearest step less cash
        dearest = max(search.step_cost)
        best = search.best(search.cash - dearest)
        assert mine <= best + tol, (mine, best, plan.orders)
        # (2) no leg that one more step would bring nearer its target is left affordable
        for k, short, value, cost in zip(
            search.planned, search.short, search.value, search.step_cost, strict=True
        ):
            if short - k * value > value / 2 * (1 + 1e-12):
                assert left < cost, (left, cost, plan.orders)
        # (3) when the cash pays for the nearest whole steps of every leg, they are the plan
        if search.fits(search.nearest, search.cash):
            assert search.planned == search.nearest
        assert mine <= search.best(search.cash) + tol or mine <= best + tol
