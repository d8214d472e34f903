"""The rebalance math: from target weights and current holdings to the orders that close the gap.

One implementation, vectorised over investments x legs (:func:`plan_batch`);
:func:`plan_investment` is the same code with one row, materialised as Decimal dataclasses.

Vocabulary
----------
*Legs* are the symbols of one plan: the target symbols plus every symbol an investment holds or
has open orders in (a held symbol without a target has target weight 0 and is sold).
*Units*: quantities are exact integers of ``10**-d`` shares, ``d = rules.quantity_decimals`` on a
fractional broker and ``0`` otherwise. A *step* is the smallest tradable quantity of a leg: one
unit for a fractional leg (fractional broker and fractionable asset), one lot
(``lot_size`` shares) for a whole-share leg.
*Effective position* = held + open orders (signed: open buys add, open sells subtract).
*Sellable* = held - open sells (what is held and not already being sold).

The money of one investment
---------------------------
- ``rebalance`` / ``repair``: value ``V = cash + sum(effective x price)`` over priced legs;
  buffer ``B = cash_buffer_pct% of V``; investable ``W = V - B``; base cash ``= cash``.
- ``invest`` / ``topup``: ``A = amount``; ``B = cash_buffer_pct% of A``;
  ``W = holdings value + A - B``; base cash ``= min(A, cash)`` (never spend beyond the amount,
  nor beyond the cash there is).
- Target value of leg j: ``t_j = w_j% of W``; desired trade ``delta_j = t_j - effective value``.
- Cash available for buys: ``base - B + sell proceeds x (1 - fee)``; buys cost
  ``value x (1 + fee)``, ``fee = fee_bps_estimate / 10_000``. Buys never exceed it (exactly).
- Weights (current, after, drift) are ``100 x value / W``: after a full rebalance the holdings
  are worth ``W`` and the buffer is left as cash.

Run types
---------
- ``invest`` / ``topup``: buy-only: buys ``max(delta, 0)``; overweight legs are left alone.
- ``rebalance``: skipped as a whole (``within_drift_band``) when
  ``max_j |current weight - w_j| <= drift_band_pct`` and it holds no removed constituent (a
  held symbol without a target, priced, at least one step sellable: that is sold whatever the
  band says); otherwise sells the overweights and buys the underweights, skipping legs whose
  weight change is below ``min_weight_change_pct`` (except, with ``exempt_fresh_buys``, buys of a
  leg the investment holds nothing of).
- ``repair``: the same as ``rebalance`` but with no drift band and no minimum weight change: it
  retries exactly what an earlier run left unfilled, however small (minimum trade value and the
  broker minimum still apply).
- ``exit``: sells everything sellable in every leg (all of it, regardless of minimums, lots or
  prices: an exit leaves nothing but what open orders hold). Open buys are not touched: the
  executor cancels them.

Leg rules (first match wins, each a :class:`SkipReason`): ``no_price``;
``below_min_weight_change`` (rebalance); ``below_min_trade_value``; ``below_broker_minimum``
(buys); after rounding: ``not_fractionable_too_small`` (a leg holding nothing whose buy rounds
to zero: it cannot get even one share or lot), ``open_order_pending`` (a sell with nothing
sellable), ``insufficient_cash``. A leg already within half a step of its target (its trade
rounds to zero) is on target and gets no record. Selling a held symbol that is no
longer a target (weight 0) sells all of it and is exempt from the minimum weight change and the
minimum trade value. Sells are planned first; buys are sized on the cash they free.

Rounding
--------
- Sells: fractional legs truncated (never rounded up) to ``d`` decimals; whole-share legs to
  the nearest lot (never more than sellable).
- Buys: see *Spending the cash*: every leg buys the whole number of steps nearest its
  target when the cash pays for all of them, and otherwise the steps that bring the investment
  closest to its targets within the cash.

Spending the cash
-----------------
The distance of an investment to its targets is Pearson's chi-squared distance of the weights,
``D = sum_j (a_j - w_j)**2 / w_j`` over the legs with a target (``a_j`` the weight after the
plan, ``w_j`` the target, both in percent of ``W``): relative misses count, so a 2% leg left
empty costs as much as a 50% leg 10 pp short, and when cash is short, scaling every buy in
proportion is what minimises it. Buys (after the sells, which are fixed first) are chosen in
three moves, vectorised over investments:

1. **Water level.** At a level ``lam >= 0`` each buy leg takes the whole number of steps
   nearest ``short_j - lam x target_j`` (value short of its target after the sells, target
   value; ties round down), which are exactly its steps that improve ``D`` by more than
   ``2 lam / (1 + fee)`` per unit of money. Such a choice is the closest to the targets of all
   the choices that cost no more (a Lagrangian argument). The lowest level whose steps fit the
   cash is found by bisection, from a bracket given by the unrounded problem, until the steps
   between the bracket's ends cost at most one step of the dearest buy leg.
2. **The cash left** is spent again at a second level on the legs it can still pay a step of,
   then in one greedy pass (best improvement per unit of money first) on every step that still
   brings a leg nearer its target and fits. A leg that stopped short could not pay for its
   next step then, and the cash only shrinks afterwards.
3. **Exchanges.** When a dear step (a lot of a costly share) that would bring its leg nearer
   is left unaffordable, the plan with one more step of that leg and the other legs spent
   around it (moves 1-2 on the rest of the cash) replaces the plan when it is nearer the
   targets; two rounds, on the leg with the best improvement per unit of money.

So on the issue's examples: Rs 2,400 in {A 40% at 1,000, B 30% at 10, C 30% at 10} buys
1 A + 69 B + 68 C (Rs 6 idle beyond the buffer, not 71 B + 71 C and Rs 956), and Rs 1,020 in
{A 98% at 1,000, B 2% at 1} buys 1 A + 9 B (not 20 B).

**The bound** (tested against a brute-force search of every plan on 2-5 legs, whole and
fractional, lots > 1). Let ``C`` be the cash available for buys, ``c_max`` the cost (fees
included) of one step of the dearest buy leg, and ``D*(B)`` the least distance of any choice
of whole steps on the buy legs whose cost is at most ``B`` (the sells as planned). Then

- ``D(plan) <= D*(C - c_max)``: the plan is at least as close to the targets as the best plan
  that had one dearest step less cash; and ``D(plan) = D*(C)`` (the optimum) whenever the
  nearest whole steps of every leg fit the cash, which the plan then buys;
- the cash left idle is less than one step of every leg that one more step would bring
  nearer its target (short of it by more than half a step).

Proof of the first: the water-level choice ``x`` is optimal for its own cost, which exceeds
``C - c_max`` because the steps between the bracket's ends cost at most ``c_max`` and do not
fit; ``D*`` shrinks as the cash grows; moves 2-3 only ever lower ``D``. The bound is exact for
steps worth more than a thousand float margins (about 1e-9 of the money: whole shares, lots,
coarse fractional units); finer units (fractional shares to 9 decimals) are continuous for
every practical purpose: they take the unrounded level truncated to a unit, then the units
that still fit, and near the float margin a few units are given back to keep every plan
certain. The minimum trade value and broker minimum apply afterwards: a buy below them is
dropped and its cash left idle.

Bounds (tested)
---------------
Hard invariants, exact in Decimal for every plan: buys cost at most the cash available; no sell
exceeds sellable; every buy is at least ``max(min_trade_value, min_order_value)`` and every sell
at least ``min_trade_value`` (except exits and full sales of removed constituents); whole-share
quantities are multiples of the lot; fractional quantities have at most ``d`` decimals and only
on fractionable assets; exit sells everything sellable; orders are sells then buys, by symbol.

Closeness to targets: when a plan is not ``cash_limited`` (no buy was cut for cash by more than
one step), the investment was not skipped as a whole, and no open buy blocks a sell, every
priced leg ends within ``100 x step value / W`` percentage points of its target, plus ``1e-4``
pp, where the step value is one lot's value for a whole-share leg and ``price x 10**-d`` for a
fractional leg (and the bound of *Spending the cash* holds); legs skipped by a rule are
within that rule's threshold (plus one step): the minimum weight change in pp, or
``100 x (minimum value + step value) / W``. A rebalance skipped
for drift has every leg within ``drift_band_pct`` of its target. Invest and top-up do not sell,
so an already overweight leg stays overweight.

Numerics
--------
Quantities are exact int64 units. Values are float64 inside the vectorised path; every decision
that guards a hard invariant is either certain despite float error (a margin of at least
``1e-12`` of the money involved, ~50x the worst float error for 20 legs) or, within that
margin, re-checked exactly in Decimal and repaired. The Decimal plan materialised per
investment is re-verified exactly.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import (
    ROUND_CEILING,
    ROUND_FLOOR,
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    localcontext,
)
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt

from saras.domain.enums import OrderSide, RunType
from saras.domain.plan_hash import decimal_to_str

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

_ZERO = Decimal(0)
_HUNDRED = Decimal(100)
#: Exact enough for any product of units and prices, and their sums.
_CTX = Context(prec=60, rounding=ROUND_HALF_EVEN)
_BPS = Decimal(10_000)
_WEIGHT_QUANTUM = Decimal("0.000001")
_U = 2.0**-53  # unit roundoff of float64
_MAX_UNITS = 2.0**62  # keep float -> int64 conversions far from overflow
_CHUNK_ROWS = 8192  # investments per vectorised block (cache-friendly, bounded memory)
_REBALANCE_LIKE = (RunType.REBALANCE, RunType.REPAIR)
_INVEST_LIKE = (RunType.INVEST, RunType.TOPUP)


class InvalidTargets(ValueError):
    """Target weights that cannot be planned; the message names the culprit."""


class UnknownInstrument(ValueError):
    """A target or held symbol with no instrument (price, lot size, fractionability)."""


class InvalidState(ValueError):
    """An investment state that cannot be planned (negative holdings, bad amounts)."""


class PlanInvariantError(RuntimeError):
    """A plan broke a hard invariant: a bug, never an input problem."""


class SkipReason(StrEnum):
    """Why a leg (or a whole investment) got no order. Stable codes: index in SKIP_REASONS."""

    NO_PRICE = "no_price"
    WITHIN_DRIFT_BAND = "within_drift_band"
    BELOW_MIN_WEIGHT_CHANGE = "below_min_weight_change"
    BELOW_MIN_TRADE_VALUE = "below_min_trade_value"
    BELOW_BROKER_MINIMUM = "below_broker_minimum"
    NOT_FRACTIONABLE_TOO_SMALL = "not_fractionable_too_small"
    OPEN_ORDER_PENDING = "open_order_pending"
    INSUFFICIENT_CASH = "insufficient_cash"
    # investment-level only
    NOTHING_HELD = "nothing_held"  # exit with nothing to sell
    NO_VALUE = "no_value"  # rebalance of an investment worth nothing (or less)
    ON_TARGET = "on_target"  # no leg wants a trade
    ALL_LEGS_SKIPPED = "all_legs_skipped"  # legs wanted trades, skipped for mixed reasons


#: ``SKIP_REASONS[code]`` decodes the int8 reason codes of :class:`BatchPlan`.
SKIP_REASONS: tuple[SkipReason, ...] = tuple(SkipReason)
_CODE: dict[SkipReason, int] = {reason: code for code, reason in enumerate(SKIP_REASONS)}
_NONE = -1


class PlanStatus(StrEnum):
    """Whether an investment's plan has orders."""

    CHANGED = "changed"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class BrokerRules:
    """What a broker accepts: fractional quantities (and how fine), and a minimum buy value."""

    fractional: bool
    quantity_decimals: int = 9
    min_order_value: Decimal = Decimal(0)

    def __post_init__(self) -> None:
        if not 0 <= self.quantity_decimals <= 9:
            raise ValueError(f"quantity_decimals must be 0..9, got {self.quantity_decimals}")
        if not isinstance(self.min_order_value, Decimal) or self.min_order_value < 0:
            raise ValueError(f"min_order_value must be a Decimal >= 0: {self.min_order_value!r}")

    @property
    def unit_decimals(self) -> int:
        """Return the decimals of a quantity unit (0 on a whole-share broker)."""
        return self.quantity_decimals if self.fractional else 0

    @classmethod
    def alpaca(cls) -> BrokerRules:
        """Return Alpaca's rules: fractional to 9 decimals, buys of at least $1."""
        return cls(fractional=True, quantity_decimals=9, min_order_value=Decimal(1))

    @classmethod
    def zerodha(cls) -> BrokerRules:
        """Return Zerodha's rules: whole shares (in lots), no minimum value."""
        return cls(fractional=False, quantity_decimals=0, min_order_value=Decimal(0))

    @classmethod
    def paper(
        cls,
        fractional: bool = True,
        quantity_decimals: int = 9,
        min_order_value: Decimal = Decimal(0),
    ) -> BrokerRules:
        """Return rules for the paper broker, which accepts whatever it is configured to."""
        return cls(fractional, quantity_decimals, min_order_value)


@dataclass(frozen=True)
class PlanningPolicy:
    """Risk and cost knobs of planning; defaults suit both USD and INR smallcases.

    - ``cash_buffer_pct`` (1): percent of the value (of the amount, for invest/top-up) kept as
      cash, so market orders still fit when prices move between planning and execution.
    - ``min_trade_value`` (1): no order worth less than this, in the investment's currency.
    - ``drift_band_pct`` (1): a rebalance leaves an investment alone when no weight is further
      than this many percentage points from its target.
    - ``min_weight_change_pct`` (1): a rebalance skips legs whose weight would change by less
      than this (like smallcase does).
    - ``fee_bps_estimate`` (0): fees and slippage, in basis points of traded value, deducted from
      sell proceeds and added to buy costs when sizing buys.
    - ``exempt_fresh_buys`` (True): a buy of a leg the investment does not hold yet (nothing
      held, nothing on order) is exempt from ``min_weight_change_pct``: a new constituent is
      bought however small its weight (the minimum trade value and broker minimum still apply).
    """

    cash_buffer_pct: Decimal = Decimal(1)
    min_trade_value: Decimal = Decimal(1)
    drift_band_pct: Decimal = Decimal(1)
    min_weight_change_pct: Decimal = Decimal(1)
    fee_bps_estimate: Decimal = Decimal(0)
    exempt_fresh_buys: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.exempt_fresh_buys, bool):
            raise ValueError(f"policy exempt_fresh_buys must be a bool: {self.exempt_fresh_buys!r}")
        for name in (
            "cash_buffer_pct",
            "min_trade_value",
            "drift_band_pct",
            "min_weight_change_pct",
            "fee_bps_estimate",
        ):
            value = getattr(self, name)
            if not isinstance(value, Decimal) or not value.is_finite() or value < 0:
                raise ValueError(f"policy {name} must be a finite Decimal >= 0, got {value!r}")
        if self.cash_buffer_pct >= _HUNDRED:
            raise ValueError(f"policy cash_buffer_pct must be below 100: {self.cash_buffer_pct}")
        if self.fee_bps_estimate >= _BPS:
            raise ValueError(
                f"policy fee_bps_estimate must be below 10000: {self.fee_bps_estimate}"
            )


@dataclass(frozen=True)
class Instrument:
    """A tradable symbol as planning needs it: price (None if missing), lot, fractionability."""

    symbol: str
    price: Decimal | None
    lot_size: int = 1
    fractionable: bool = True

    def __post_init__(self) -> None:
        if not self.symbol:
            raise ValueError("instrument symbol must not be empty")
        if self.price is not None and (
            not isinstance(self.price, Decimal) or not self.price.is_finite() or self.price <= 0
        ):
            raise ValueError(f"instrument {self.symbol}: price must be a Decimal > 0 or None")
        if not isinstance(self.lot_size, int) or self.lot_size < 1:
            raise ValueError(f"instrument {self.symbol}: lot_size must be an int >= 1")


@dataclass(frozen=True)
class InvestmentState:
    """What one investment holds: free cash (net of open buys), positions, open orders (signed)."""

    investment_id: str
    cash: Decimal
    positions: Mapping[str, Decimal] = field(default_factory=dict)
    open_orders: Mapping[str, Decimal] = field(default_factory=dict)  # + buy, - sell


@dataclass(frozen=True)
class PlannedOrder:
    """One order of a plan; est_price and est_value are None only for an exit without a price."""

    symbol: str
    side: OrderSide
    quantity: Decimal
    est_price: Decimal | None
    est_value: Decimal | None


@dataclass(frozen=True)
class SkippedLeg:
    """A leg that wanted a trade and got none, with the reason and a human-readable detail."""

    symbol: str
    reason: SkipReason
    detail: str


@dataclass(frozen=True)
class InvestmentPlan:
    """The plan of one investment: orders, skipped legs, money before and after (estimates)."""

    investment_id: str
    run_type: RunType
    status: PlanStatus
    status_reason: SkipReason | None
    orders: tuple[PlannedOrder, ...]
    skipped: tuple[SkippedLeg, ...]
    cash_before: Decimal
    cash_available: Decimal  # for buys: base - buffer + sell proceeds net of fees
    est_cash_after: Decimal  # cash_before + sells - buys - fees (unpriced exit sells left out)
    investable_value: Decimal  # W: the value weights are measured against
    cash_limited: bool  # a buy fell short of its target by more than one step for lack of cash
    drift_pct: Decimal  # max |current weight - target| before the plan
    target_weights: Mapping[str, Decimal]
    est_weights_after: Mapping[str, Decimal]

    def to_json(self) -> dict[str, Any]:
        """Return the plan as JSON-able values (Decimals as canonical strings)."""

        def opt(value: Decimal | None) -> str | None:
            return None if value is None else decimal_to_str(value)

        return {
            "investment_id": self.investment_id,
            "run_type": self.run_type.value,
            "status": self.status.value,
            "status_reason": None if self.status_reason is None else self.status_reason.value,
            "orders": [
                {
                    "symbol": o.symbol,
                    "side": o.side.value,
                    "quantity": decimal_to_str(o.quantity),
                    "est_price": opt(o.est_price),
                    "est_value": opt(o.est_value),
                }
                for o in self.orders
            ],
            "skipped": [
                {"symbol": s.symbol, "reason": s.reason.value, "detail": s.detail}
                for s in self.skipped
            ],
            "cash_before": decimal_to_str(self.cash_before),
            "cash_available": decimal_to_str(self.cash_available),
            "est_cash_after": decimal_to_str(self.est_cash_after),
            "investable_value": decimal_to_str(self.investable_value),
            "cash_limited": self.cash_limited,
            "drift_pct": decimal_to_str(self.drift_pct),
            "target_weights": {k: decimal_to_str(v) for k, v in self.target_weights.items()},
            "est_weights_after": {k: decimal_to_str(v) for k, v in self.est_weights_after.items()},
        }


def _to_units(quantity: Decimal | int, decimals: int) -> int:
    """Return ``quantity`` in integer units of 10**-decimals, rounded down."""
    if isinstance(quantity, int) and not isinstance(quantity, bool):
        return int(quantity * 10**decimals)
    if not isinstance(quantity, Decimal) or not quantity.is_finite():
        raise InvalidState(f"quantities must be finite Decimals, got {quantity!r}")
    return int(quantity.scaleb(decimals).to_integral_value(rounding=ROUND_FLOOR))


def units_to_decimal(units: int, decimals: int) -> Decimal:
    """Return an integer number of 10**-decimals units as a Decimal without trailing zeros."""
    units = int(units)
    if decimals == 0:
        return Decimal(units)
    scale = 10**decimals
    if units % scale == 0:
        return Decimal(units // scale)
    return Decimal(units).scaleb(-decimals).normalize()


def units_to_text(units: npt.ArrayLike, decimals: int) -> npt.NDArray[np.str_]:
    """Return integer units as canonical decimal strings, vectorised (for COPY)."""
    arr = np.asarray(units, dtype=np.int64)
    if decimals == 0:
        return arr.astype(str)
    neg = arr < 0
    mag = np.abs(arr)
    whole, frac = np.divmod(mag, 10**decimals)
    frac_text = np.char.rstrip(np.char.zfill(frac.astype(str), decimals), "0")
    text = np.where(
        frac_text == "",
        whole.astype(str),
        np.char.add(np.char.add(whole.astype(str), "."), frac_text),
    )
    return np.where(neg, np.char.add("-", text), text)


@dataclass(frozen=True, eq=False)
class BatchState:
    """Many investments' states in columns: the input a repository can build without objects.

    ``held_units`` and ``open_units`` are int64 arrays of shape (investments, symbols) in units of
    ``10**-unit_decimals`` shares (a repository can compute them exactly in SQL, e.g.
    ``floor(quantity * 1e9)::bigint``); ``unit_decimals`` must be the rules' ``unit_decimals``.
    """

    investment_ids: tuple[str, ...]
    symbols: tuple[str, ...]
    cash: tuple[Decimal, ...]
    held_units: IntArray
    open_units: IntArray
    unit_decimals: int

    def __post_init__(self) -> None:
        n, k = len(self.investment_ids), len(self.symbols)
        for name in ("held_units", "open_units"):
            arr = getattr(self, name)
            if arr.shape != (n, k) or arr.dtype != np.int64:
                raise InvalidState(f"{name} must be int64 of shape {(n, k)}, got {arr.shape}")
        if len(self.cash) != n:
            raise InvalidState("cash must have one entry per investment")
        if len(set(self.symbols)) != k:
            raise InvalidState("symbols must be unique")
        if len(set(self.investment_ids)) != n:
            raise InvalidState("investment ids must be unique within a batch")
        negative = np.argwhere(self.held_units < 0)
        if negative.size:
            i, j = negative[0]
            raise InvalidState(
                f"investment {self.investment_ids[i]} holds a negative quantity of "
                f"{self.symbols[j]} (short positions are not planned)"
            )
        for i, cash in enumerate(self.cash):
            if not isinstance(cash, Decimal) or not cash.is_finite():
                raise InvalidState(f"investment {self.investment_ids[i]}: cash must be a Decimal")

    @classmethod
    def from_states(cls, states: Sequence[InvestmentState], rules: BrokerRules) -> BatchState:
        """Return the columnar form of ``states`` (quantities floored to the rules' units)."""
        d = rules.unit_decimals
        symbols = sorted(
            {s for st in states for s, q in st.positions.items() if q}
            | {s for st in states for s, q in st.open_orders.items() if q}
        )
        col = {s: j for j, s in enumerate(symbols)}
        held = np.zeros((len(states), len(symbols)), dtype=np.int64)
        opn = np.zeros((len(states), len(symbols)), dtype=np.int64)
        for i, st in enumerate(states):
            for s, q in st.positions.items():
                if q:
                    if q < 0:
                        raise InvalidState(
                            f"investment {st.investment_id} holds a negative quantity of {s}"
                        )
                    held[i, col[s]] = _to_units(q, d)
            for s, q in st.open_orders.items():
                if q:
                    opn[i, col[s]] = _to_units(q, d)
        return cls(
            investment_ids=tuple(st.investment_id for st in states),
            symbols=tuple(symbols),
            cash=tuple(st.cash for st in states),
            held_units=held,
            open_units=opn,
            unit_decimals=d,
        )


def validate_targets(targets: Mapping[str, Decimal], tolerance: Decimal = Decimal("0.01")) -> None:
    """Raise InvalidTargets unless every weight is in (0, 100] and they sum to 100 +- tolerance."""
    if not targets:
        raise InvalidTargets("no target weights given")
    total = Decimal(0)
    for symbol, weight in targets.items():
        if not symbol or not isinstance(symbol, str):
            raise InvalidTargets(f"invalid symbol {symbol!r} in target weights")
        if isinstance(weight, bool) or not isinstance(weight, Decimal | int):
            raise InvalidTargets(f"weight of {symbol} must be a Decimal, got {weight!r}")
        weight = Decimal(weight)
        if not weight.is_finite() or not Decimal(0) < weight <= _HUNDRED:
            raise InvalidTargets(f"weight of {symbol} is {weight}, outside (0, 100]")
        total += weight
    if abs(total - _HUNDRED) > tolerance:
        raise InvalidTargets(
            f"target weights sum to {total}, not 100 (tolerance {tolerance}): "
            + ", ".join(f"{s}={w}" for s, w in sorted(targets.items()))
        )


# --------------------------------------------------------------------------------------------
# The vectorised planner
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _Inputs:
    """Everything a batch was planned from, in both exact (Decimal) and float form."""

    run_type: RunType
    rules: BrokerRules
    policy: PlanningPolicy
    legs: tuple[str, ...]
    targets: dict[str, Decimal]
    instruments: dict[str, Instrument]
    ids: tuple[str, ...]
    cash: tuple[Decimal, ...]
    amounts: tuple[Decimal, ...] | None
    held: IntArray  # (n, m) units
    opn: IntArray  # (n, m) signed units
    decimals: int
    # per leg
    w_dec: tuple[Decimal, ...]
    price_dec: tuple[Decimal | None, ...]
    unit_price_dec: tuple[Decimal | None, ...]  # price of one unit (10**-decimals shares)
    w: FloatArray
    has_price: BoolArray
    unit_price: FloatArray  # price per unit (0 when missing)
    step: IntArray  # units per step
    step_value: FloatArray
    is_frac: BoolArray
    lot_size: IntArray


@dataclass(frozen=True, eq=False)
class BatchPlan:
    """The plans of many investments in columns (numpy), ready for a COPY.

    Orders are sorted by investment, sells before buys, then by symbol: ``order_investment``
    indexes ``investment_ids``, ``order_leg`` indexes ``symbols``, ``order_units`` is the
    quantity in units of ``10**-unit_decimals`` (``units_to_text`` formats them exactly;
    ``quantity = units / 10**unit_decimals`` in SQL is exact too), ``order_est_value`` a float
    estimate (NaN for an exit without a price). Skipped legs likewise, with int8 reason codes
    (``SKIP_REASONS[code]``). Per investment: ``changed``, ``status_reason`` (-1 when changed),
    ``cash_limited`` and ``drift_pct``. :meth:`investment_plan` gives one investment's exact
    Decimal plan (and the jsonb via ``to_json``).
    """

    run_type: RunType
    investment_ids: tuple[str, ...]
    symbols: tuple[str, ...]
    unit_decimals: int
    order_investment: IntArray
    order_leg: IntArray
    order_is_buy: BoolArray
    order_units: IntArray
    order_est_value: FloatArray
    skip_investment: IntArray
    skip_leg: IntArray
    skip_reason: npt.NDArray[np.int8]
    skip_value: FloatArray
    changed: BoolArray
    status_reason: npt.NDArray[np.int8]
    cash_limited: BoolArray
    drift_pct: FloatArray
    _inputs: _Inputs = field(repr=False)
    _signed_units: IntArray = field(repr=False)  # (n, m)
    _skip_matrix: npt.NDArray[np.int8] = field(repr=False)  # (n, m)
    _skip_values: FloatArray = field(repr=False)  # (n, m)

    @property
    def order_count(self) -> int:
        """Return the number of orders in the batch."""
        return int(self.order_units.size)

    def order_side(self) -> npt.NDArray[np.str_]:
        """Return the side of every order as 'buy' / 'sell' strings."""
        return np.where(self.order_is_buy, OrderSide.BUY.value, OrderSide.SELL.value)

    def order_quantity_text(self) -> npt.NDArray[np.str_]:
        """Return every order quantity as an exact decimal string."""
        return units_to_text(self.order_units, self.unit_decimals)

    def index_of(self, investment_id: str) -> int:
        """Return the row of ``investment_id``."""
        try:
            return self.investment_ids.index(investment_id)
        except ValueError:
            raise KeyError(f"investment {investment_id} is not in this batch") from None

    def investment_plan(self, index: int) -> InvestmentPlan:
        """Return investment ``index``'s plan in exact Decimal, verified against the invariants."""
        return _materialise(self, index)

    def iter_plans(self) -> Iterator[InvestmentPlan]:
        """Yield every investment's Decimal plan, in input order."""
        for i in range(len(self.investment_ids)):
            yield self.investment_plan(i)


def _finite_decimal(value: object, what: str) -> Decimal:
    if not isinstance(value, Decimal) or not value.is_finite():
        raise InvalidState(f"{what} must be a finite Decimal, got {value!r}")
    return value


def _prepare(
    run_type: RunType,
    targets: Mapping[str, Decimal],
    instruments: Mapping[str, Instrument],
    rules: BrokerRules,
    policy: PlanningPolicy,
    batch: BatchState,
    amounts: Decimal | Sequence[Decimal] | None,
) -> _Inputs:
    if run_type is not RunType.EXIT or targets:
        validate_targets(targets)
    for symbol, inst in instruments.items():
        if inst.symbol != symbol:
            raise UnknownInstrument(f"instrument keyed {symbol} is for {inst.symbol}")
    if batch.unit_decimals != rules.unit_decimals:
        raise InvalidState(
            f"batch quantities are in 1e-{batch.unit_decimals} units, "
            f"the broker rules need 1e-{rules.unit_decimals}"
        )
    n = len(batch.investment_ids)
    amounts_t: tuple[Decimal, ...] | None = None
    if run_type in _INVEST_LIKE:
        if amounts is None:
            raise InvalidState(f"a {run_type.value} run needs an amount")
        if isinstance(amounts, Decimal):
            amounts_t = (amounts,) * n
        else:
            amounts_t = tuple(amounts)
            if len(amounts_t) != n:
                raise InvalidState("amounts must have one entry per investment")
        for i, a in enumerate(amounts_t):
            if _finite_decimal(a, "amount") <= 0:
                raise InvalidState(f"investment {batch.investment_ids[i]}: amount must be > 0")
    elif amounts is not None:
        raise InvalidState(f"a {run_type.value} run takes no amount")

    for symbol in targets:
        if symbol not in instruments:
            raise UnknownInstrument(f"target symbol {symbol} has no instrument (unknown symbol)")
    held_cols = np.flatnonzero((batch.held_units != 0).any(0) | (batch.open_units != 0).any(0))
    for j in held_cols:
        symbol = batch.symbols[j]
        if symbol not in instruments:
            rows = np.flatnonzero((batch.held_units[:, j] != 0) | (batch.open_units[:, j] != 0))
            raise UnknownInstrument(
                f"investment {batch.investment_ids[rows[0]]} holds {symbol}, "
                "which has no instrument (unknown symbol)"
            )
    legs = tuple(sorted(set(targets) | {batch.symbols[j] for j in held_cols}))
    m = len(legs)
    held = np.zeros((n, m), dtype=np.int64)
    opn = np.zeros((n, m), dtype=np.int64)
    leg_col = {s: j for j, s in enumerate(legs)}
    for j_in, symbol in enumerate(batch.symbols):
        if symbol in leg_col:
            held[:, leg_col[symbol]] = batch.held_units[:, j_in]
            opn[:, leg_col[symbol]] = batch.open_units[:, j_in]

    d = rules.unit_decimals
    scale = 10**d
    insts = [instruments[s] for s in legs]
    w_dec = tuple(Decimal(targets.get(s, 0)) for s in legs)
    price_dec = tuple(inst.price for inst in insts)
    is_frac = np.array([rules.fractional and inst.fractionable for inst in insts], dtype=bool)
    lot = np.array([inst.lot_size for inst in insts], dtype=np.int64)
    step = np.where(is_frac, 1, lot * scale).astype(np.int64)
    has_price = np.array([p is not None for p in price_dec], dtype=bool)
    unit_price = np.array([float(p) / scale if p is not None else 0.0 for p in price_dec])
    return _Inputs(
        run_type=run_type,
        rules=rules,
        policy=policy,
        legs=legs,
        targets={s: Decimal(w) for s, w in targets.items()},
        instruments={s: instruments[s] for s in legs},
        ids=batch.investment_ids,
        cash=batch.cash,
        amounts=amounts_t,
        held=held,
        opn=opn,
        decimals=d,
        w_dec=w_dec,
        price_dec=price_dec,
        unit_price_dec=tuple(None if p is None else p.scaleb(-d, context=_CTX) for p in price_dec),
        w=np.array([float(x) for x in w_dec]),
        has_price=has_price,
        unit_price=unit_price,
        step=step,
        step_value=step * unit_price,
        is_frac=is_frac,
        lot_size=lot,
    )


def _floor_units(x: FloatArray) -> IntArray:
    """Return floor(x) as int64, with x clipped to [0, 2**62] (never negative, never overflows);
    NaN and infinities give 0."""
    y = np.floor(x)
    np.clip(y, 0.0, _MAX_UNITS, out=y)  # NaN stays NaN, +inf becomes 2**62
    bad = ~(np.abs(x) < np.inf)  # NaN or an infinity
    if bad.any():
        y[bad] = 0.0
    return y.astype(np.int64)


def _by_leg(is_frac: BoolArray, fractional: Any, whole: Any) -> Any:
    """Return ``fractional()`` on fractional legs and ``whole()`` on the others (columns),
    computing only the side that some leg needs."""
    if is_frac.all():
        return fractional()
    if not is_frac.any():
        return whole()
    return np.where(is_frac, fractional(), whole())


class _Exact:
    """Exact (Decimal) money of one investment, for boundary checks, repair and verification.

    All arithmetic runs in ``_CTX`` (60 digits): products of units and prices and their sums
    stay exact for any realistic quantity.
    """

    def __init__(self, inp: _Inputs, i: int) -> None:
        self.inp = inp
        self.i = i
        pol = inp.policy
        with localcontext(_CTX):
            self.fee = pol.fee_bps_estimate / _BPS
            cash = inp.cash[i]
            holdings = self.total(inp.held[i] + inp.opn[i])
            if inp.run_type in _INVEST_LIKE:
                assert inp.amounts is not None
                amount = inp.amounts[i]
                self.buffer = pol.cash_buffer_pct / _HUNDRED * amount
                self.base = min(amount, cash)
                self.investable = holdings + amount - self.buffer
            else:
                value = cash + holdings
                self.buffer = pol.cash_buffer_pct / _HUNDRED * value if value > 0 else _ZERO
                self.base = cash
                self.investable = value - self.buffer

    def leg_value(self, j: int, units: int) -> Decimal:
        """Return the exact value of ``units`` of leg j (0 when unpriced)."""
        unit_price = self.inp.unit_price_dec[j]
        if unit_price is None or not units:
            return _ZERO
        return _CTX.multiply(Decimal(int(units)), unit_price)

    def total(self, units_row: IntArray) -> Decimal:
        """Return the exact value of a row of (non-negative) units."""
        total = _ZERO
        for j, u in enumerate(units_row.tolist()):
            if u:
                total = _CTX.add(total, self.leg_value(j, u))
        return total

    def money(self, q_row: IntArray) -> tuple[Decimal, Decimal, Decimal, Decimal]:
        """Return (sells, buys, cash available for buys, cost of buys) for signed units q_row."""
        sells = _ZERO
        buys = _ZERO
        for j, u in enumerate(q_row.tolist()):
            if u < 0:
                sells = _CTX.add(sells, self.leg_value(j, -u))
            elif u > 0:
                buys = _CTX.add(buys, self.leg_value(j, u))
        with localcontext(_CTX):
            avail = self.base - self.buffer + sells * (1 - self.fee)
            cost = buys * (1 + self.fee)
        return sells, buys, avail, cost


# --------------------------------------------------------------------------------------------
# Spending the cash on steps (whole shares, lots, fractional units): see "Spending the cash"
# --------------------------------------------------------------------------------------------

_BISECT_MAX = 64  # halvings of the level bracket: float64 has no more to give
_EXCHANGE_ROUNDS = 2  # rounds of "one more step of a dear leg, the others re-spent"
_COARSE_STEP = 1e-4  # a step worth this share of the targets is a candidate for an exchange


def _nearest_steps(short_steps: FloatArray) -> FloatArray:
    """Return the whole number of steps nearest ``short_steps`` (ties down), at least 0."""
    return np.maximum(np.ceil(short_steps + 0.5) - 1.0, 0.0)


def _unrounded_levels(
    money: FloatArray, per_level: FloatArray, budgets: tuple[FloatArray, ...]
) -> tuple[FloatArray, ...]:
    """Return, per budget, the level at which ``sum_j max(money_j - level x per_level_j, 0)``
    equals the budget (0 when the budget covers everything).

    Most rows have every leg above water at that level, and the level is then one division
    (``(sum money - budget) / sum per_level``); only the other rows sort their breakpoints."""
    r = money.shape[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        bp = np.where(per_level > 0, money / per_level, -np.inf)
    top = np.maximum(bp.max(1), 0.0) if money.shape[1] else np.zeros(r)
    live = per_level > 0
    a_all = np.where(live, money, 0.0).sum(1)
    b_all = per_level.sum(1)
    low = np.where(live, bp, np.inf).min(1) if money.shape[1] else np.zeros(r)
    out = []
    for budget in budgets:
        with np.errstate(divide="ignore", invalid="ignore"):
            lam = (a_all - budget) / b_all
        # every leg with a level above water: the closed form holds (a leg without a level
        # and with money is always counted: it has no breakpoint)
        direct = (b_all > 0) & (lam <= low)
        level = np.where(direct, lam, 0.0)
        rest = np.flatnonzero(~direct & (b_all > 0))
        if rest.size:
            level[rest] = _sorted_levels(money[rest], per_level[rest], bp[rest], budget[rest])
        out.append(np.clip(level, 0.0, top))
    return tuple(out)


def _sorted_levels(
    money: FloatArray, per_level: FloatArray, bp: FloatArray, budget: FloatArray
) -> FloatArray:
    """Return the level of :func:`_unrounded_levels` by sorting the breakpoints of each row."""
    r = money.shape[0]
    order = np.argsort(-bp, axis=1)
    bp_s = np.take_along_axis(bp, order, 1)
    a_cum = np.cumsum(np.take_along_axis(money, order, 1), 1)
    b_cum = np.cumsum(np.take_along_axis(per_level, order, 1), 1)
    nxt = np.maximum(np.concatenate([bp_s[:, 1:], np.full((r, 1), -np.inf)], 1), 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        lam = (a_cum - budget[:, None]) / b_cum
    ok = (b_cum > 0) & (lam >= nxt)
    first = np.argmax(ok, axis=1)
    level: FloatArray = np.where(ok.any(1), lam[np.arange(r), first], 0.0)
    return level


def _lagrange(
    short: FloatArray,
    target: FloatArray,
    value: FloatArray,
    cost: FloatArray,
    cap: FloatArray,
    elig: BoolArray,
    fine: FloatArray,
) -> FloatArray:
    """Return the steps bought at the lowest water level whose cost fits ``cap``, per row.

    At level ``lam >= 0`` leg j buys the whole number of steps nearest ``short_j - lam x
    target_j`` (ties down): exactly the steps whose improvement of the distance, per unit of
    money, exceeds ``2 lam / (1 + fee)``. Such a choice is the closest to the targets of all the
    choices costing no more (a Lagrangian argument), so only the level is searched, by bisection,
    until the steps between the bracket's ends cost at most one step of the dearest eligible leg.
    """
    r, m = short.shape
    steps = np.zeros((r, m))
    if not r or not m:
        return steps
    with np.errstate(divide="ignore", invalid="ignore"):
        s_steps = np.where(elig, short / value[None, :], 0.0)
        t_steps = np.where(elig, target / value[None, :], 0.0)
    k0 = np.where(elig, _nearest_steps(s_steps), 0.0)
    fits0 = (k0 * cost[None, :]).sum(1) <= cap
    steps[fits0] = k0[fits0]
    # rows that cannot pay for even nothing (negative cash) buy nothing; the rest search
    need = ~fits0 & (cap >= 0) & elig.any(1)
    # rows whose legs all step in fine units (fractional shares) are continuous for all
    # practical purposes: the unrounded level, truncated to whole units, then topped up
    fine_only = need & ~(elig & (cost[None, :] > fine[:, None])).any(1)
    if fine_only.any():
        fr = np.flatnonzero(fine_only)
        (level,) = _unrounded_levels(
            s_steps[fr] * cost[None, :], t_steps[fr] * cost[None, :], (cap[fr],)
        )
        k_f = np.maximum(np.floor(s_steps[fr] - level[:, None] * t_steps[fr]), 0.0)
        ok = (k_f * cost[None, :]).sum(1) <= cap[fr]
        steps[fr[ok]] = k_f[ok]
        need[fr[ok]] = False
    need = np.flatnonzero(need)
    if not need.size:
        return steps
    s_w, t_w, c_w = s_steps[need], t_steps[need], cap[need]
    e_w = elig[need]
    with np.errstate(divide="ignore", invalid="ignore"):
        top = np.where(t_w > 0, (s_w - 0.5) / t_w, 0.0)
    lo = np.zeros(need.size)
    hi = np.maximum(top.max(1), 0.0) * (1 + 1e-9) + 1e-300  # every leg at zero steps
    k_lo = k0[need]
    k_hi = np.zeros_like(k_lo)
    c_max = np.where(e_w, cost[None, :], 0.0).max(1) * (1 + 1e-12)
    # narrow the bracket with the unrounded problem: rounding moves a leg by at most half a
    # step, so the level lies where the unrounded cost is the cash plus or minus half a step
    # of every leg (both ends are checked, the bracket stays valid whatever float does)
    half = np.where(e_w, cost[None, :], 0.0).sum(1) / 2
    guess_lo, guess_hi = _unrounded_levels(
        s_w * cost[None, :], t_w * cost[None, :], (c_w + half, c_w - half)
    )
    for guess, is_lo in ((guess_lo * (1 - 1e-9), True), (guess_hi * (1 + 1e-9) + 1e-300, False)):
        inside = (guess > lo) & (guess < hi)
        k_g = _nearest_steps(s_w - guess[:, None] * t_w)
        fits = inside & ((k_g * cost[None, :]).sum(1) <= c_w)
        take = inside & ~fits if is_lo else fits
        lo = np.where(take, guess, lo) if is_lo else lo
        hi = hi if is_lo else np.where(take, guess, hi)
        if is_lo:
            k_lo[take] = k_g[take]
        else:
            k_hi[take] = k_g[take]
    work = np.arange(need.size)
    for _ in range(_BISECT_MAX):
        gap = ((k_lo[work] - k_hi[work]) * cost[None, :]).sum(1)
        mid = 0.5 * (lo[work] + hi[work])
        moving = (gap > c_max[work]) & (mid > lo[work]) & (mid < hi[work])
        work = work[moving]
        if not work.size:
            break
        mid = mid[moving]
        k_mid = _nearest_steps(s_w[work] - mid[:, None] * t_w[work])
        fits = (k_mid * cost[None, :]).sum(1) <= c_w[work]
        up, down = work[fits], work[~fits]
        hi[up], k_hi[up] = mid[fits], k_mid[fits]
        lo[down], k_lo[down] = mid[~fits], k_mid[~fits]
    steps[need] = k_hi
    return steps


def _fill(
    steps: FloatArray,
    short: FloatArray,
    target: FloatArray,
    value: FloatArray,
    cost: FloatArray,
    left: FloatArray,
    elig: BoolArray,
) -> FloatArray:
    """Add, leg by leg (best improvement per money first), the steps that bring a leg nearer
    its target, as far as ``left`` pays; return the cash left. One pass suffices: a leg that
    stopped short could not pay for its next step, and the cash only shrinks afterwards."""
    r, m = steps.shape
    rest = short - steps * value[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        want = np.where(elig, _nearest_steps(rest / value[None, :]), 0.0)
        level = np.where(want > 0, (rest - value[None, :] / 2) / target, -np.inf)
    todo = want > 0
    # only rows whose cash pays a step of some leg still wanting one take part
    cheapest = np.where(todo, cost[None, :], np.inf).min(1) if m else np.full(r, np.inf)
    rows = np.flatnonzero(left >= cheapest)
    if not rows.size:
        return left
    todo, want, cheapest = todo[rows], want[rows], cheapest[rows]
    sub = steps[rows]
    spare = left[rows]
    order = np.argsort(-level[rows], axis=1, kind="stable")
    at = np.arange(rows.size)
    for rank in range(m):
        j = order[:, rank]
        open_ = todo[at, j]
        if not open_.any() or not (spare >= cheapest).any():
            break  # the cash left pays no step any row still wants
        afford = np.floor(np.maximum(spare, 0.0) / cost[j])
        add = np.where(open_, np.minimum(want[at, j], afford), 0.0)
        sub[at, j] += add
        spare = spare - add * cost[j]
    steps[rows] = sub
    left = left.copy()
    left[rows] = spare
    return left


def _spend(
    short: FloatArray,
    target: FloatArray,
    value: FloatArray,
    cost: FloatArray,
    cap: FloatArray,
    elig: BoolArray,
    fine: FloatArray,
) -> tuple[FloatArray, FloatArray]:
    """Return (steps, cash left): the water level, then the cash left on the legs it still
    pays for (a second level), then one greedy pass."""
    steps = _lagrange(short, target, value, cost, cap, elig, fine)
    left = cap - (steps * cost[None, :]).sum(1)
    rest = short - steps * value[None, :]
    # a second level only where the cash left could pay a step of every leg still wanting
    # one (a dear step was refused): the greedy pass below would give it all to one leg
    again = elig & (rest > value[None, :] / 2) & (cost[None, :] <= left[:, None])
    again_cost = np.where(again, cost[None, :], 0.0).sum(1)
    # legs that step in fine units (fractional shares) only ever leave a few units of cash:
    # the greedy pass spends those as well as a level would
    coarse = (again & (cost[None, :] > fine[:, None])).any(1)
    rows = np.flatnonzero(coarse & (again.sum(1) > 1) & (left >= again_cost))
    if rows.size:
        more = _lagrange(rest[rows], target[rows], value, cost, left[rows], again[rows], fine[rows])
        steps[rows] += more
        left[rows] -= (more * cost[None, :]).sum(1)
    left = _fill(steps, short, target, value, cost, left, elig)
    return steps, left


def _distance(
    steps: FloatArray, short: FloatArray, target: FloatArray, value: FloatArray, elig: BoolArray
) -> FloatArray:
    """Return each row's distance to its targets over the eligible legs (see the docstring)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(elig, (short - steps * value[None, :]) ** 2 / target, 0.0)
    total: FloatArray = terms.sum(1)
    return total


def _allocate(
    short: FloatArray,
    target: FloatArray,
    value: FloatArray,
    cost: FloatArray,
    avail: FloatArray,
    margin: FloatArray,
    elig: BoolArray,
) -> FloatArray:
    """Return the steps to buy per leg (see the module docstring, *Spending the cash*).

    ``short`` is 0 off ``elig``; ``margin`` bounds the float error of a row's money. The search
    is optimistic by the margin (the caller's exact check trims what does not fit). Rows whose
    buy legs all step in fine units (worth at most a thousand margins: fractional shares, the
    common case on a fractional broker) take the lean path of :func:`_allocate_fine`.
    """
    cap = avail + margin
    fine = 1e3 * margin
    lean = ~(elig & (cost[None, :] > fine[:, None])).any(1)
    if lean.all():
        return _allocate_fine(short, target, value, cost, cap, elig, margin)
    if not lean.any():
        return _allocate_coarse(short, target, value, cost, cap, elig, fine)
    steps = np.zeros(short.shape)
    rows = np.flatnonzero(lean)
    steps[rows] = _allocate_fine(
        short[rows], target[rows], value, cost, cap[rows], elig[rows], margin[rows]
    )
    rows = np.flatnonzero(~lean)
    steps[rows] = _allocate_coarse(
        short[rows], target[rows], value, cost, cap[rows], elig[rows], fine[rows]
    )
    return steps


def _allocate_fine(
    short: FloatArray,
    target: FloatArray,
    value: FloatArray,
    cost: FloatArray,
    cap: FloatArray,
    elig: BoolArray,
    margin: FloatArray,
) -> FloatArray:
    """Return the steps of rows whose buy legs all step in fine units.

    The nearest units when they fit ``cap``; otherwise the unrounded water level truncated to
    whole units, then the units that still fit the cash less a few float margins (so the
    caller's exact check has nothing to trim), dearest leg first: the cash left is less than
    one unit of every leg still short of its target, plus those margins. Which leg gets the last few
    units is immaterial here, so no second level and no exchange is tried. The level is one
    division when every leg stays above water (the usual case); the other rows, and rows whose
    truncated units do not fit (float), take :func:`_lagrange`.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        s_units = short / value[None, :]
    steps = _nearest_steps(s_units)
    over = steps @ cost > cap
    if not over.any() or not short.shape[1]:
        return steps
    with np.errstate(divide="ignore", invalid="ignore"):
        t_units = np.where(elig, target / value[None, :], 0.0)
        per_level = t_units @ cost
        level = np.maximum((s_units @ cost - cap) / per_level, 0.0)
    level = np.where(over & (per_level > 0) & (cap >= 0), level, np.nan)
    above = s_units - level[:, None] * t_units  # NaN on the rows that keep their steps
    ok = over & (above.min(1) >= 0)  # every leg above water: the closed form holds
    steps = np.where(ok[:, None], np.floor(above), steps)
    ok &= steps @ cost <= cap
    steps[over & ~ok] = 0.0
    slow = np.flatnonzero(over & ~ok & (cap >= 0))
    if slow.size:
        steps[slow] = _lagrange(
            short[slow], target[slow], value, cost, cap[slow], elig[slow], 1e3 * margin[slow]
        )
    # the units that still fit the cash less a few margins: certain, nothing to trim (a row
    # the level spends to within those margins is an exact fit, or is checked exactly)
    left = np.where(over, cap - 5 * margin, cap) - steps @ cost
    for j in sorted(np.flatnonzero(elig.any(0)).tolist(), key=lambda j: (-cost[j], j)):
        want = _nearest_steps(s_units[:, j] - steps[:, j])
        add = np.minimum(want, np.floor(np.maximum(left, 0.0) / cost[j]))
        steps[:, j] += add
        left -= add * cost[j]
    return steps


def _allocate_coarse(
    short: FloatArray,
    target: FloatArray,
    value: FloatArray,
    cost: FloatArray,
    cap: FloatArray,
    elig: BoolArray,
    fine: FloatArray,
) -> FloatArray:
    """Return the steps to buy per leg: spend the cash, then try exchanges (see docstring)."""
    steps, left = _spend(short, target, value, cost, cap, elig, fine)
    total = np.where(elig, target, 0.0).sum(1)
    coarse = value[None, :] >= _COARSE_STEP * total[:, None]
    # rows with a dear leg still wanting a step it cannot pay for: one more step of it, the
    # other legs re-spent around it, kept when nearer the targets (a few rounds at most)
    open_rows = np.flatnonzero((coarse & elig).any(1))
    for _ in range(_EXCHANGE_ROUNDS):
        if not open_rows.size:
            break
        s_o, t_o, k_o, e_o = short[open_rows], target[open_rows], steps[open_rows], elig[open_rows]
        rest = s_o - k_o * value[None, :]
        with np.errstate(divide="ignore", invalid="ignore"):
            level = np.where(e_o, (rest - value[None, :] / 2) / t_o, -np.inf)
        cand = e_o & coarse[open_rows] & (rest > value[None, :] / 2)
        cand &= cost[None, :] > left[open_rows, None]
        has = cand.any(1)
        open_rows, s_o, t_o, k_o, e_o = (
            open_rows[has],
            s_o[has],
            t_o[has],
            k_o[has],
            e_o[has],
        )
        j = np.argmax(np.where(cand[has], level[has], -np.inf), axis=1)
        n = open_rows.size
        fixed = k_o[np.arange(n), j] + 1
        cap2 = cap[open_rows] - fixed * cost[j]
        ok = cap2 >= 0
        open_rows, s_o, t_o, k_o, e_o = open_rows[ok], s_o[ok], t_o[ok], k_o[ok], e_o[ok]
        j, fixed, cap2 = j[ok], fixed[ok], cap2[ok]
        n = open_rows.size
        if not n:
            break
        e_2 = e_o.copy()
        e_2[np.arange(n), j] = False
        alt, alt_left = _spend(s_o, t_o, value, cost, cap2, e_2, fine[open_rows])
        alt[np.arange(n), j] = fixed
        before = _distance(k_o, s_o, t_o, value, e_o)
        after = _distance(alt, s_o, t_o, value, e_o)
        better = after < before * (1 - 1e-12)
        open_rows, alt, alt_left = open_rows[better], alt[better], alt_left[better]
        steps[open_rows] = alt
        left[open_rows] = alt_left
    return steps


class _Planner:
    """The vectorised planning of one block of investments."""

    def __init__(self, inp: _Inputs) -> None:
        self.inp = inp
        pol = inp.policy
        self.b = float(pol.cash_buffer_pct) / 100.0
        self.f = float(pol.fee_bps_estimate) / 10_000.0
        self.mtv = float(pol.min_trade_value)
        self.mov = float(inp.rules.min_order_value)
        self.mwc = float(pol.min_weight_change_pct)
        self.band = float(pol.drift_band_pct)
        m = len(inp.legs)
        # worst float error of a sum of ~2m products is ~(2m + 8) * 4u of the magnitudes
        self.rel_sum = max(1e-12, (2 * m + 16) * 8 * _U)
        self.rel_one = 1e-12

    # ---- exact confirmations near a float boundary -----------------------------------------

    def _below(
        self, check: BoolArray, units: IntArray, values: FloatArray, threshold: Decimal
    ) -> BoolArray:
        """Return where ``check`` holds and the units' value is below ``threshold`` (exact near
        the boundary): a mask, so that only the few doubtful entries are looked at one by one."""
        if threshold <= 0:
            return np.zeros(check.shape, dtype=bool)
        thr = float(threshold)
        below = check & (values < thr * (1 + self.rel_one))
        unsure = below & (values > thr * (1 - self.rel_one))
        if unsure.any():
            unit_price = self.inp.unit_price_dec
            for i, j in zip(*np.nonzero(unsure), strict=True):
                p = unit_price[int(j)]
                assert p is not None
                below[i, j] = _CTX.multiply(Decimal(int(units[i, j])), p) < threshold
        return below

    # ---- one block -------------------------------------------------------------------------

    def plan(
        self, lo: int, hi: int
    ) -> tuple[
        IntArray, npt.NDArray[np.int8], FloatArray, npt.NDArray[np.int8], BoolArray, FloatArray
    ]:
        """Plan rows [lo, hi): signed units, skip codes and values, status, flags, drift."""
        inp = self.inp
        held = inp.held[lo:hi]
        opn = inp.opn[lo:hi]
        r, m = held.shape
        eff = held + opn
        sellable = np.maximum(held + np.minimum(opn, 0), 0)
        skip = np.full((r, m), _NONE, dtype=np.int8)
        skip_val = np.zeros((r, m))
        status = np.full(r, _NONE, dtype=np.int8)
        cash_limited = np.zeros(r, dtype=bool)
        drift = np.zeros(r)
        if inp.run_type is RunType.EXIT:
            q = -sellable
            status[~(q != 0).any(1)] = _CODE[SkipReason.NOTHING_HELD]
            return q, skip, skip_val, status, cash_limited, drift
        up = inp.unit_price
        has_price = inp.has_price
        cash = np.array([float(c) for c in inp.cash[lo:hi]])
        eff_val = eff * up  # unpriced legs count 0
        holdings = eff_val.sum(1)
        rebalance_like = inp.run_type in _REBALANCE_LIKE
        if rebalance_like:
            value = cash + holdings
            alive = value > 0
            buffer = np.where(alive, self.b * value, 0.0)
            base = cash
            investable = value - buffer
        else:
            assert inp.amounts is not None
            amount = np.array([float(a) for a in inp.amounts[lo:hi]])
            buffer = self.b * amount
            base = np.minimum(amount, cash)
            investable = holdings + amount - buffer
            alive = investable > 0
        w_safe = np.where(alive, investable, 1.0)
        delta = inp.w[None, :] * w_safe[:, None] / 100.0 - eff_val
        delta[:, ~has_price] = 0.0
        delta[~alive] = 0.0
        if not rebalance_like:
            delta = np.maximum(delta, 0.0)
        relevant = has_price[None, :] & ((inp.w > 0)[None, :] | (eff != 0))
        dev = np.where(relevant, np.abs(100.0 * eff_val / w_safe[:, None] - inp.w[None, :]), 0.0)
        drift = np.where(alive, dev.max(1) if m else 0.0, 0.0)
        skipped_row = ~alive
        if rebalance_like:
            status[~alive] = _CODE[SkipReason.NO_VALUE]
        if inp.run_type is RunType.REBALANCE:
            # a held constituent no longer in the smallcase is sold whatever the band says
            sellable_steps = _by_leg(inp.is_frac, lambda: sellable, lambda: sellable // inp.step)
            removed = (has_price & (inp.w == 0))[None, :] & (sellable_steps > 0)
            within = alive & (drift <= self.band) & ~removed.any(1)
            status[within] = _CODE[SkipReason.WITHIN_DRIFT_BAND]
            skipped_row = skipped_row | within
            delta[within] = 0.0
        live = ~skipped_row[:, None]

        # unpriced legs that matter
        no_price = (
            live & ~has_price[None, :] & ((inp.w > 0)[None, :] | ((eff != 0) & rebalance_like))
        )
        skip[no_price] = _CODE[SkipReason.NO_PRICE]

        noise = 1e-9 * np.abs(w_safe)
        wants = live & has_price[None, :] & (np.abs(delta) > noise[:, None])
        liquidate = wants & (inp.w == 0)[None, :] & (delta < 0) if rebalance_like else None
        abs_delta = np.abs(delta)
        free = wants.copy()
        rule_free = free & ~liquidate if liquidate is not None else free
        if inp.run_type is RunType.REBALANCE and self.mwc > 0:
            change = 100.0 * abs_delta / w_safe[:, None]
            hit = rule_free & (change < self.mwc)
            if inp.policy.exempt_fresh_buys:  # a leg not held yet is bought however small
                hit &= ~((eff == 0) & (delta > 0))
            skip[hit] = _CODE[SkipReason.BELOW_MIN_WEIGHT_CHANGE]
            skip_val[hit] = change[hit]
            free &= ~hit
            rule_free = rule_free & ~hit
        if self.mtv > 0:
            hit = rule_free & (abs_delta < self.mtv)
            skip[hit] = _CODE[SkipReason.BELOW_MIN_TRADE_VALUE]
            skip_val[hit] = abs_delta[hit]
            free &= ~hit
        if self.mov > 0:
            hit = free & (delta > 0) & (delta < self.mov)
            skip[hit] = _CODE[SkipReason.BELOW_BROKER_MINIMUM]
            skip_val[hit] = delta[hit]
            free &= ~hit
        active = free
        q = np.zeros((r, m), dtype=np.int64)
        step = inp.step
        is_frac = inp.is_frac
        safe_up = np.where(has_price, up, 1.0)

        # ---- sells ----
        proceeds = np.zeros(r)
        if rebalance_like:
            s_act = active & (delta < 0)
            x = np.where(s_act, -delta / safe_up, 0.0)
            q_s = _by_leg(
                is_frac, lambda: _floor_units(x), lambda: _floor_units(x / step + 0.5) * step
            )
            cap = _by_leg(is_frac, lambda: sellable, lambda: (sellable // step) * step)
            if liquidate is not None:
                q_s = np.where(liquidate, cap, q_s)
            q_s = np.where(s_act, np.minimum(q_s, cap), 0)
            # a sell that rounds to nothing is as near the target as whole steps get: no record,
            # unless there is nothing to sell because open orders hold it all
            nothing = s_act & (q_s == 0) & (sellable == 0)
            skip[nothing] = _CODE[SkipReason.OPEN_ORDER_PENDING]
            skip_val[nothing] = abs_delta[nothing]
            sv = q_s * up
            if self.mtv > 0:
                check = (q_s > 0) if liquidate is None else (q_s > 0) & ~liquidate
                bad = self._below(check, q_s, sv, inp.policy.min_trade_value)
                if bad.any():
                    skip[bad] = _CODE[SkipReason.BELOW_MIN_TRADE_VALUE]
                    skip_val[bad] = sv[bad]
                    q_s[bad] = 0
                    sv[bad] = 0.0
            q -= q_s
            proceeds = sv.sum(1)

        # ---- buys ----
        f = self.f
        avail = base - buffer + proceeds * (1 - f)
        b_act = active & (delta > 0)
        desire = np.where(b_act, delta, 0.0)
        demand = desire.sum(1) * (1 + f)
        magnitude = np.abs(base) + np.abs(buffer) + 2 * proceeds + demand + np.abs(avail)
        margin = self.rel_sum * magnitude
        value = np.where(has_price, inp.step_value, 1.0)  # unpriced legs never buy
        target = inp.w[None, :] * w_safe[:, None] / 100.0
        target = np.where(target > 0, target, desire)
        step_cost = value * (1 + f)
        steps = _allocate(desire, target, value, step_cost, avail, margin, b_act)
        q_b = steps.astype(np.int64) * step[None, :]

        # ---- budget: certain in float, exact near the boundary ----
        cost = (q_b * up).sum(1) * (1 + f)
        slack = avail - cost
        doubt = (q_b > 0).any(1) & (slack <= margin)
        # A leg stepping in fine units (within a thousand float margins: fractional shares)
        # absorbs the cash to its last unit, so its rows often end within the margin by
        # chance. Such a row gives back a few units, certainly enough, rather than being
        # checked in Decimal; a row whose float slack is nearly nil may be an exact fit (round
        # amounts and prices) and is checked exactly.
        fine = (q_b > 0) & (step_cost[None, :] <= 1e3 * margin[:, None])
        trim = doubt & fine.any(1) & (np.abs(slack) > 1e-2 * margin)
        if trim.any():
            tr = np.flatnonzero(trim)
            j = np.argmax(np.where(fine[tr], q_b[tr] * up[None, :], -np.inf), axis=1)
            units = np.ceil(3 * margin[tr] / step_cost[j]).astype(np.int64)
            q_b[tr, j] = np.maximum(q_b[tr, j] - units, 0)
            cost[tr] = (q_b[tr] * up[None, :]).sum(1) * (1 + f)
            slack[tr] = avail[tr] - cost[tr]
            doubt[tr] = (q_b[tr] > 0).any(1) & (slack[tr] <= margin[tr])
        for k in np.flatnonzero(doubt):
            self._repair_budget(lo + int(k), q[k], q_b[k], desire[k])

        # ---- minimums of buys (exact near the boundary) ----
        bv_final = q_b * up
        cut = b_act & (desire - bv_final > inp.step_value[None, :] + 1e-6 * w_safe[:, None])
        for threshold, reason in (
            (inp.policy.min_trade_value, SkipReason.BELOW_MIN_TRADE_VALUE),
            (inp.rules.min_order_value, SkipReason.BELOW_BROKER_MINIMUM),
        ):
            if threshold <= 0:
                continue
            bad = self._below(q_b > 0, q_b, bv_final, threshold)
            if not bad.any():
                continue
            skip[bad & cut] = _CODE[SkipReason.INSUFFICIENT_CASH]
            skip[bad & ~cut] = _CODE[reason]
            skip_val[bad] = desire[bad]
            q_b[bad] = 0
            bv_final[bad] = 0.0
        zero = b_act & (q_b == 0) & (skip == _NONE)
        too_small = zero & np.where(is_frac[None, :], ~cut, desire <= inp.step_value[None, :] / 2)
        # a buy that rounds to nothing is recorded only when the leg holds nothing at all (it
        # cannot get even one share or lot); otherwise the leg is as near as whole steps get
        skip[too_small & (eff <= 0)] = _CODE[SkipReason.NOT_FRACTIONABLE_TOO_SMALL]
        skip[zero & ~too_small] = _CODE[SkipReason.INSUFFICIENT_CASH]
        skip_val[zero] = desire[zero]
        q += q_b
        cash_limited = (cut & ((q_b > 0) | (skip == _CODE[SkipReason.INSUFFICIENT_CASH]))).any(1)

        # ---- status of rows without orders ----
        no_orders = ~(q != 0).any(1) & (status == _NONE)
        if no_orders.any():
            codes = np.where(skip >= 0, skip, np.int8(127))
            lo_code = codes.min(1)
            hi_code = np.where(skip >= 0, skip, np.int8(-1)).max(1)
            row_reason = np.where(
                lo_code == 127,
                _CODE[SkipReason.ON_TARGET],
                np.where(lo_code == hi_code, lo_code, _CODE[SkipReason.ALL_LEGS_SKIPPED]),
            ).astype(np.int8)
            status[no_orders] = row_reason[no_orders]
        return q, skip, skip_val, status, cash_limited, drift

    def _repair_budget(self, i: int, q_row: IntArray, q_b: IntArray, desire: FloatArray) -> None:
        """Check row i's buys exactly and trim them until they fit the cash available."""
        inp = self.inp
        exact = _Exact(inp, i)
        while True:
            signed = q_row + q_b
            _, _, avail, cost = exact.money(signed)
            if cost <= avail or not (q_b > 0).any():
                return
            # trim the buy most above its desire (greedy extras first), then the largest
            excess = np.where(q_b > 0, q_b * inp.unit_price - desire, -np.inf)
            value = np.where(q_b > 0, q_b * inp.unit_price, -np.inf)
            j = int(np.lexsort((-value, -excess))[0])
            unit_price = inp.unit_price_dec[j]
            assert unit_price is not None
            with localcontext(_CTX):
                per_unit = unit_price * (1 + exact.fee)
                need = int(((cost - avail) / per_unit).to_integral_value(rounding=ROUND_CEILING))
            step = int(inp.step[j])
            need = max(1, -(-need // step)) * step
            q_b[j] = max(0, int(q_b[j]) - need)


def plan_batch(
    run_type: RunType | str,
    targets: Mapping[str, Decimal],
    instruments: Mapping[str, Instrument],
    rules: BrokerRules,
    policy: PlanningPolicy,
    states: Sequence[InvestmentState] | BatchState,
    amounts: Decimal | Sequence[Decimal] | None = None,
) -> BatchPlan:
    """Plan many investments of one smallcase at once (vectorised); see the module docstring."""
    run_type = RunType(run_type)
    batch = states if isinstance(states, BatchState) else BatchState.from_states(states, rules)
    inp = _prepare(run_type, targets, instruments, rules, policy, batch, amounts)
    n, m = inp.held.shape
    signed = np.zeros((n, m), dtype=np.int64)
    skip = np.full((n, m), _NONE, dtype=np.int8)
    skip_val = np.zeros((n, m))
    status = np.full(n, _NONE, dtype=np.int8)
    cash_limited = np.zeros(n, dtype=bool)
    drift = np.zeros(n)
    planner = _Planner(inp)
    for lo in range(0, n, _CHUNK_ROWS):
        hi = min(n, lo + _CHUNK_ROWS)
        q, s, sv, st, cl, dr = planner.plan(lo, hi)
        signed[lo:hi], skip[lo:hi], skip_val[lo:hi] = q, s, sv
        status[lo:hi], cash_limited[lo:hi], drift[lo:hi] = st, cl, dr

    # orders by investment, sells before buys, then by leg: the C order of (n, side, m)
    by_side = np.empty((n, 2, m), dtype=np.int64)
    np.negative(signed, out=by_side[:, 0, :])
    by_side[:, 1, :] = signed
    mask = by_side > 0
    o_inv, o_side, o_leg = (a.astype(np.int64, copy=False) for a in np.nonzero(mask))
    o_buy = o_side.astype(bool)
    o_units = by_side[mask]
    del by_side, mask
    o_value = np.where(inp.has_price[o_leg], o_units * inp.unit_price[o_leg], np.nan)
    s_r, s_c = np.nonzero(skip >= 0)
    return BatchPlan(
        run_type=run_type,
        investment_ids=inp.ids,
        symbols=inp.legs,
        unit_decimals=inp.decimals,
        order_investment=o_inv,
        order_leg=o_leg,
        order_is_buy=o_buy,
        order_units=o_units,
        order_est_value=o_value,
        skip_investment=s_r.astype(np.int64, copy=False),
        skip_leg=s_c.astype(np.int64, copy=False),
        skip_reason=skip[s_r, s_c],
        skip_value=skip_val[s_r, s_c],
        changed=status == _NONE,
        status_reason=status,
        cash_limited=cash_limited,
        drift_pct=drift,
        _inputs=inp,
        _signed_units=signed,
        _skip_matrix=skip,
        _skip_values=skip_val,
    )


def plan_investment(
    run_type: RunType | str,
    targets: Mapping[str, Decimal],
    state: InvestmentState,
    instruments: Mapping[str, Instrument],
    rules: BrokerRules,
    policy: PlanningPolicy,
    amount: Decimal | None = None,
) -> InvestmentPlan:
    """Plan one investment: the orders that move it to its targets, and the legs skipped."""
    batch = plan_batch(run_type, targets, instruments, rules, policy, [state], amount)
    return batch.investment_plan(0)


# --------------------------------------------------------------------------------------------
# Materialisation (exact Decimal) and verification
# --------------------------------------------------------------------------------------------


def _fmt(value: float) -> str:
    return f"{value:,.2f}"


def _detail(inp: _Inputs, j: int, reason: SkipReason, value: float) -> str:
    symbol = inp.legs[j]
    pol, rules = inp.policy, inp.rules
    match reason:
        case SkipReason.NO_PRICE:
            return f"no price for {symbol}"
        case SkipReason.BELOW_MIN_WEIGHT_CHANGE:
            return (
                f"weight change of {value:.4f} pp is below the minimum "
                f"{decimal_to_str(pol.min_weight_change_pct)} pp"
            )
        case SkipReason.BELOW_MIN_TRADE_VALUE:
            return (
                f"trade value {_fmt(value)} is below the minimum trade value "
                f"{decimal_to_str(pol.min_trade_value)}"
            )
        case SkipReason.BELOW_BROKER_MINIMUM:
            return (
                f"order value {_fmt(value)} is below the broker minimum "
                f"{decimal_to_str(rules.min_order_value)}"
            )
        case SkipReason.NOT_FRACTIONABLE_TOO_SMALL:
            price = inp.price_dec[j]
            unit = f"1e-{inp.decimals} share" if inp.is_frac[j] else f"a lot of {inp.lot_size[j]}"
            return (
                f"wanted a trade of {_fmt(value)}, less than the smallest tradable quantity "
                f"({unit} at {price})"
            )
        case SkipReason.OPEN_ORDER_PENDING:
            return f"wanted to sell {_fmt(value)}, but all of it is already in open sell orders"
        case SkipReason.INSUFFICIENT_CASH:
            return f"wanted to buy {_fmt(value)}; not enough cash after the other legs"
        case _:
            return reason.value


def _materialise(plan: BatchPlan, i: int) -> InvestmentPlan:
    inp = plan._inputs
    exact = _Exact(inp, i)
    q_row = plan._signed_units[i]
    d = inp.decimals
    is_exit = inp.run_type is RunType.EXIT
    eff = inp.held[i] + inp.opn[i]
    q_list = q_row.tolist()
    eff_list = eff.tolist()
    orders: list[PlannedOrder] = []
    sells = buys = _ZERO
    values: dict[int, Decimal] = {}
    for side, js in (
        (OrderSide.SELL, [j for j, u in enumerate(q_list) if u < 0]),
        (OrderSide.BUY, [j for j, u in enumerate(q_list) if u > 0]),
    ):
        for j in js:
            units = abs(q_list[j])
            price = inp.price_dec[j]
            value = None if price is None else exact.leg_value(j, units)
            if value is not None:
                values[j] = value
                if side is OrderSide.SELL:
                    sells = _CTX.add(sells, value)
                else:
                    buys = _CTX.add(buys, value)
            orders.append(PlannedOrder(inp.legs[j], side, units_to_decimal(units, d), price, value))
    skip_row = plan._skip_matrix[i]
    skipped = tuple(
        SkippedLeg(
            inp.legs[j],
            SKIP_REASONS[int(skip_row[j])],
            _detail(inp, int(j), SKIP_REASONS[int(skip_row[j])], float(plan._skip_values[i, j])),
        )
        for j in np.flatnonzero(skip_row >= 0)
    )
    relevant = [
        j for j in range(len(inp.legs)) if inp.w_dec[j] > 0 or eff_list[j] != 0 or q_list[j] != 0
    ]
    with localcontext(_CTX):
        fee = exact.fee
        if is_exit:
            avail = inp.cash[i] + sells * (1 - fee)
            cost = _ZERO
            investable = _ZERO
        else:
            avail = exact.base - exact.buffer + sells * (1 - fee)
            cost = buys * (1 + fee)
            investable = exact.investable
        cash_after = inp.cash[i] + sells - buys - (sells + buys) * fee
        drift = _ZERO
        weights_after: dict[str, Decimal] = {}
        for j in relevant:
            if inp.price_dec[j] is None:
                continue
            if investable > 0:
                now = _HUNDRED * exact.leg_value(j, eff_list[j]) / investable
                drift = max(drift, abs(now - inp.w_dec[j]))
                w_after = _HUNDRED * exact.leg_value(j, eff_list[j] + q_list[j]) / investable
            else:
                w_after = _ZERO
            weights_after[inp.legs[j]] = w_after.quantize(_WEIGHT_QUANTUM)
        drift = drift.quantize(_WEIGHT_QUANTUM)
    _verify(inp, i, q_list, values, buys, cost, avail)
    code = int(plan.status_reason[i])
    return InvestmentPlan(
        investment_id=inp.ids[i],
        run_type=inp.run_type,
        status=PlanStatus.CHANGED if code == _NONE else PlanStatus.SKIPPED,
        status_reason=None if code == _NONE else SKIP_REASONS[code],
        orders=tuple(orders),
        skipped=skipped,
        cash_before=inp.cash[i],
        cash_available=avail,
        est_cash_after=cash_after,
        investable_value=investable,
        cash_limited=bool(plan.cash_limited[i]),
        drift_pct=drift,
        target_weights={inp.legs[j]: inp.w_dec[j] for j in relevant},
        est_weights_after=weights_after,
    )


def _verify(
    inp: _Inputs,
    i: int,
    q_list: list[int],
    values: Mapping[int, Decimal],
    buys: Decimal,
    cost: Decimal,
    avail: Decimal,
) -> None:
    """Raise PlanInvariantError if investment i's orders break a hard invariant (exactly)."""
    who = f"investment {inp.ids[i]}"
    held, opn = inp.held[i].tolist(), inp.opn[i].tolist()
    steps = inp.step.tolist()
    is_exit = inp.run_type is RunType.EXIT
    min_buy = max(inp.policy.min_trade_value, inp.rules.min_order_value)
    if buys > 0 and cost > avail:
        raise PlanInvariantError(f"{who}: buys cost {cost}, only {avail} available")
    for j, u in enumerate(q_list):
        sellable = max(held[j] + min(opn[j], 0), 0)
        symbol = inp.legs[j]
        if -u > sellable:
            raise PlanInvariantError(f"{who}: sells more {symbol} than it holds")
        if is_exit:
            if u != -sellable:
                raise PlanInvariantError(f"{who}: exit does not sell all of {symbol}")
            continue
        if not u:
            continue
        if u % steps[j]:
            raise PlanInvariantError(f"{who}: {symbol} quantity is not a whole number of steps")
        value = values.get(j, _ZERO)
        if u > 0:
            if inp.run_type not in _INVEST_LIKE and inp.run_type not in _REBALANCE_LIKE:
                raise PlanInvariantError(f"{who}: {inp.run_type.value} buys {symbol}")
            if value < min_buy:
                raise PlanInvariantError(f"{who}: buy of {symbol} worth {value} below minimum")
        else:
            if inp.run_type in _INVEST_LIKE:
                raise PlanInvariantError(f"{who}: {inp.run_type.value} sells {symbol}")
            liquidation = inp.w_dec[j] == 0 and -u == sellable - sellable % steps[j]
            if not liquidation and value < inp.policy.min_trade_value:
                raise PlanInvariantError(f"{who}: sell of {symbol} worth {value} below minimum")


def verify_batch(plan: BatchPlan) -> None:
    """Check every investment of a batch exactly (slow: for tests and audits)."""
    for i in range(len(plan.investment_ids)):
        plan.investment_plan(i)
