"""Property tests of the rebalance math, checked exactly in Decimal, independently of the planner.

Each property re-derives what it checks from the inputs (value, buffer, cash available,
sellable quantities) with its own Decimal arithmetic rather than trusting the plan's figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal as D
from decimal import localcontext

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
    plan_batch,
    plan_investment,
)

ALPACA = BrokerRules.of(broker_capabilities("alpaca"))  # the Alpaca kit's sizing rules

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
BUY, SELL = OrderSide.BUY, OrderSide.SELL


@dataclass(frozen=True)
class Scenario:
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

    def decimals(self) -> int:
        return self.rules.unit_decimals

    def fractional(self, symbol: str) -> bool:
        return self.rules.fractional and self.instruments[symbol].fractionable

    def sellable(self, symbol: str) -> D:
        held = self.state.positions.get(symbol, D(0))
        return max(held + min(self.state.open_orders.get(symbol, D(0)), D(0)), D(0))

    def effective(self, symbol: str) -> D:
        return self.state.positions.get(symbol, D(0)) + self.state.open_orders.get(symbol, D(0))

    def symbols(self) -> list[str]:
        held = {s for s, q in self.state.positions.items() if q}
        held |= {s for s, q in self.state.open_orders.items() if q}
        return sorted(set(self.targets) | held)

    def money(self) -> tuple[D, D, D]:
        """Return (base cash, buffer, investable value W), exactly."""
        pol = self.policy
        holdings = sum(
            (
                self.effective(s) * p
                for s in self.symbols()
                if (p := self.instruments[s].price) is not None
            ),
            D(0),
        )
        if self.run_type in (RunType.INVEST, RunType.TOPUP):
            assert self.amount is not None
            buffer = pol.cash_buffer_pct / 100 * self.amount
            return min(self.amount, self.state.cash), buffer, holdings + self.amount - buffer
        value = self.state.cash + holdings
        buffer = pol.cash_buffer_pct / 100 * value if value > 0 else D(0)
        return self.state.cash, buffer, value - buffer


def _decimal(units: int, decimals: int) -> D:
    return D(units).scaleb(-decimals)


@st.composite
def scenarios(
    draw: st.DrawFn,
    run_types: tuple[RunType, ...] = tuple(RunType),
    bare: bool = False,
) -> Scenario:
    """Draw a smallcase, broker, policy and investment state.

    ``bare`` draws the conditions of the closeness bound: every price known, no minimums, no
    open buys, and an invest starts from nothing.
    """
    run_type = draw(st.sampled_from(run_types))
    broker = draw(st.sampled_from(["alpaca", "zerodha", "paper_frac4", "paper_whole"]))
    rules = {
        "alpaca": ALPACA,
        "zerodha": BrokerRules.whole_shares(),
        "paper_frac4": BrokerRules(True, 4, D("0.5")),
        "paper_whole": BrokerRules(False, 0),
    }[broker]
    if bare:
        rules = BrokerRules(rules.fractional, rules.quantity_decimals, D(0))
    d = rules.unit_decimals
    m = draw(st.integers(1, 6))
    extra = draw(st.integers(0, 2))
    symbols = [f"S{j}" for j in range(m)]
    others = [f"X{j}" for j in range(extra)]
    raw = draw(st.lists(st.integers(1, 50), min_size=m, max_size=m))
    cents = [r * 10_000 // sum(raw) for r in raw]
    cents[0] += 10_000 - sum(cents)
    targets = {s: D(c).scaleb(-2) for s, c in zip(symbols, cents, strict=True)}
    instruments = {}
    for s in symbols + others:
        price_cents = draw(st.integers(1, 500_000))
        missing = not bare and draw(st.integers(0, 9)) == 0
        lot = draw(st.sampled_from([1, 1, 1, 2, 5, 10]))
        instruments[s] = Instrument(
            s, None if missing else D(price_cents).scaleb(-2), lot, draw(st.booleans())
        )
    positions: dict[str, D] = {}
    open_orders: dict[str, D] = {}
    start_empty = bare and run_type is RunType.INVEST
    if not start_empty:
        for s in symbols + others:
            if draw(st.booleans()):
                units = draw(st.integers(0, 300 * 10**d))
                positions[s] = _decimal(units, d)
            if draw(st.integers(0, 4)) == 0:
                held_units = int(positions.get(s, D(0)).scaleb(d))
                low = -held_units
                high = 0 if bare else 50 * 10**d
                open_orders[s] = _decimal(draw(st.integers(low, high)), d)
    cash = D(draw(st.integers(-5_000, 5_000_000))).scaleb(-2)
    amount = None
    if run_type in (RunType.INVEST, RunType.TOPUP):
        amount = D(draw(st.integers(1, 5_000_000))).scaleb(-2)
        if draw(st.booleans()):
            cash = max(cash, amount)
    policy = PlanningPolicy(
        cash_buffer_pct=D(draw(st.integers(0, 50))).scaleb(-1),
        min_trade_value=D(0) if bare else D(draw(st.integers(0, 5000))).scaleb(-2),
        drift_band_pct=D(draw(st.integers(0, 50))).scaleb(-1),
        min_weight_change_pct=D(0) if bare else D(draw(st.integers(0, 30))).scaleb(-1),
        fee_bps_estimate=D(draw(st.integers(0, 50))),
    )
    return Scenario(
        run_type,
        targets,
        InvestmentState("inv", cash, positions, open_orders),
        instruments,
        rules,
        policy,
        amount,
    )


def _values(sc: Scenario, plan: InvestmentPlan) -> tuple[D, D]:
    """Return (sells, buys) of a plan at the instruments' prices (unpriced sells count 0)."""
    sells = buys = D(0)
    for o in plan.orders:
        price = sc.instruments[o.symbol].price
        if price is None:
            assert o.side is SELL  # only an exit sells without a price, and never buys one
            continue
        if o.side is SELL:
            sells += o.quantity * price
        else:
            buys += o.quantity * price
    return sells, buys


@SETTINGS
@given(scenarios())
def test_hard_invariants(sc: Scenario) -> None:
    plan = sc.plan()
    with localcontext() as ctx:
        ctx.prec = 80
        fee = sc.policy.fee_bps_estimate / 10_000
        sells, buys = _values(sc, plan)
        by_symbol = {o.symbol: o for o in plan.orders}
        assert len(by_symbol) == len(plan.orders)  # one order per symbol at most
        # sells before buys, each block by symbol
        sides = [o.side for o in plan.orders]
        assert sides == sorted(sides, key=lambda s: s is BUY)
        for side in (SELL, BUY):
            names = [o.symbol for o in plan.orders if o.side is side]
            assert names == sorted(names)
        for o in plan.orders:
            assert o.quantity > 0
            # never sell more than held (and not already being sold)
            if o.side is SELL:
                assert o.quantity <= sc.sellable(o.symbol)
            price = sc.instruments[o.symbol].price
            assert o.est_price == price
            assert o.est_value == (None if price is None else o.quantity * price)
        if sc.run_type is RunType.EXIT:
            # exit leaves nothing: every sellable quantity is sold, nothing is bought
            assert all(o.side is SELL for o in plan.orders)
            for s in sc.symbols():
                expected = sc.sellable(s)
                assert (by_symbol[s].quantity if s in by_symbol else D(0)) == expected
            return
        base, buffer, _ = sc.money()
        # never spend more than the cash available
        if buys > 0:
            assert buys * (1 + fee) <= base - buffer + sells * (1 - fee)
        if sc.run_type in (RunType.INVEST, RunType.TOPUP):
            assert sells == 0
            assert all(o.side is BUY for o in plan.orders)
        min_buy = max(sc.policy.min_trade_value, sc.rules.min_order_value)
        for o in plan.orders:
            inst = sc.instruments[o.symbol]
            assert o.est_value is not None
            # never an order below the minimums (full sale of a removed constituent excepted)
            if o.side is BUY:
                assert o.est_value >= min_buy
            elif sc.targets.get(o.symbol, D(0)) > 0:
                assert o.est_value >= sc.policy.min_trade_value
            # whole shares in lots; fractional to at most d decimals, fractionable only
            if sc.fractional(o.symbol):
                assert (o.quantity.scaleb(sc.decimals()) % 1) == 0
            else:
                assert o.quantity % 1 == 0
                assert o.quantity % inst.lot_size == 0
        # the estimated cash after, from the orders
        assert plan.est_cash_after == sc.state.cash + sells - buys - (sells + buys) * fee


@SETTINGS
@given(scenarios())
def test_same_inputs_same_plan(sc: Scenario) -> None:
    first = sc.plan()
    assert sc.plan() == first
    assert sc.plan().to_json() == first.to_json()

    # planning the same investment inside a batch of others gives the same plan
    def other(name: str) -> InvestmentState:
        return InvestmentState(name, D("12345.67"), {s: D(3) for s in sc.targets})

    states = [other("before"), sc.state, other("after")]
    batch = plan_batch(
        sc.run_type,
        sc.targets,
        sc.instruments,
        sc.rules,
        sc.policy,
        states,
        None if sc.amount is None else [sc.amount] * 3,
    )
    assert batch.investment_plan(1) == first


@SETTINGS
@given(scenarios(run_types=(RunType.INVEST, RunType.REBALANCE, RunType.REPAIR), bare=True))
def test_closeness_to_targets(sc: Scenario) -> None:
    """The stated bound: within one step of each target when not cash limited."""
    plan = sc.plan()
    assume(plan.status_reason is not SkipReason.NO_VALUE)
    _, _, investable = sc.money()
    assert investable > 0
    signed = {o.symbol: (o.quantity if o.side is BUY else -o.quantity) for o in plan.orders}
    with localcontext() as ctx:
        ctx.prec = 80
        if plan.status_reason is SkipReason.WITHIN_DRIFT_BAND:
            for s in sc.symbols():
                price = sc.instruments[s].price
                assert price is not None
                weight = 100 * sc.effective(s) * price / investable
                assert abs(weight - sc.targets.get(s, D(0))) <= sc.policy.drift_band_pct + D("1e-9")
            return
        assume(not plan.cash_limited)
        base, buffer, _ = sc.money()
        sells, buys = _values(sc, plan)
        fee = sc.policy.fee_bps_estimate / 10_000
        cash_left = base - buffer + sells * (1 - fee) - buys * (1 + fee)
        for s in sc.symbols():
            inst = sc.instruments[s]
            assert inst.price is not None
            after = (sc.effective(s) + signed.get(s, D(0))) * inst.price
            weight = 100 * after / investable
            if sc.fractional(s):
                step_value = inst.price.scaleb(-sc.decimals())
            else:
                step_value = inst.price * inst.lot_size
            allowed = 100 * step_value / investable + D("2e-4")
            deviation = abs(weight - sc.targets.get(s, D(0)))
            assert deviation <= allowed, (s, deviation, allowed, plan.skipped)
            # whole shares round to the nearest lot whenever the cash allows it
            short = sc.targets.get(s, D(0)) * investable / 100 - after
            if not sc.fractional(s) and short > step_value / 2 + investable * D("1e-9"):
                assert cash_left < step_value * (1 + fee) + D("1e-9"), (s, short, cash_left)
        assert plan.status in (PlanStatus.CHANGED, PlanStatus.SKIPPED)


@SETTINGS
@given(scenarios(run_types=(RunType.REBALANCE,)))
def test_drift_band(sc: Scenario) -> None:
    plan = sc.plan()
    _, _, investable = sc.money()
    assume(investable > 0)
    with localcontext() as ctx:
        ctx.prec = 80
        drift = D(0)
        for s in sc.symbols():
            price = sc.instruments[s].price
            weight = sc.targets.get(s, D(0))
            if price is None or (weight == 0 and sc.effective(s) == 0):
                continue
            drift = max(drift, abs(100 * sc.effective(s) * price / investable - weight))
    # a held constituent no longer in the smallcase, priced and sellable (at least a step),
    # is sold whatever the band says
    removed = False
    for s in sc.symbols():
        inst = sc.instruments[s]
        step = D(1).scaleb(-sc.decimals()) if sc.fractional(s) else D(inst.lot_size)
        if s not in sc.targets and inst.price is not None and sc.sellable(s) >= step:
            removed = True
    band = sc.policy.drift_band_pct
    if removed:
        assert plan.status_reason is not SkipReason.WITHIN_DRIFT_BAND
    elif drift < band - D("1e-9"):
        assert plan.status_reason is SkipReason.WITHIN_DRIFT_BAND
        assert plan.orders == ()
    elif drift > band + D("1e-9"):
        assert plan.status_reason is not SkipReason.WITHIN_DRIFT_BAND


@SETTINGS
@given(scenarios(run_types=(RunType.EXIT,)))
def test_exit_leaves_nothing(sc: Scenario) -> None:
    plan = sc.plan()
    sold = {o.symbol: o.quantity for o in plan.orders}
    for s in sc.symbols():
        held = sc.state.positions.get(s, D(0))
        open_sells = -min(sc.state.open_orders.get(s, D(0)), D(0))
        remaining = held - sold.get(s, D(0)) - min(open_sells, held)
        assert remaining == 0
    assert (plan.status is PlanStatus.CHANGED) == bool(plan.orders)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.sampled_from([ALPACA, BrokerRules.whole_shares()]))
def test_batch_invariants_on_random_portfolios(seed: int, rules: BrokerRules) -> None:
    """A batch of random investments verifies exactly, every one of them."""
    rng = np.random.default_rng(seed)
    m = int(rng.integers(1, 8))
    targets_raw = rng.integers(1, 30, size=m)
    cents = targets_raw * 10_000 // targets_raw.sum()
    cents[0] += 10_000 - cents.sum()
    symbols = [f"S{j}" for j in range(m)]
    targets = {s: D(int(c)).scaleb(-2) for s, c in zip(symbols, cents, strict=True)}
    instruments = {
        s: Instrument(
            s,
            D(int(rng.integers(1, 300_000))).scaleb(-2),
            int(rng.choice([1, 1, 5])),
            bool(rng.integers(0, 2)),
        )
        for s in symbols
    }
    d = rules.unit_decimals
    states = []
    for i in range(30):
        positions = {
            s: D(int(rng.integers(0, 200 * 10**d))).scaleb(-d)
            for s in symbols
            if rng.integers(0, 3)
        }
        states.append(
            InvestmentState(f"i{i}", D(int(rng.integers(0, 10**7))).scaleb(-2), positions)
        )
    policy = PlanningPolicy(fee_bps_estimate=D(int(rng.integers(0, 30))))
    for run_type in RunType:
        amounts = D(5000) if run_type in (RunType.INVEST, RunType.TOPUP) else None
        batch = plan_batch(run_type, targets, instruments, rules, policy, states, amounts)
        for plan in batch.iter_plans():  # each materialisation re-verifies exactly
            assert plan.run_type is run_type
