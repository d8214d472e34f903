"""After execution: how far the fills were from the plan, and the drift left. Pure functions.

Per run (one investment) and per asset and side:

- *planned* quantity and price (the price the plan valued the order at) against *filled*
  quantity and average fill price;
- *slippage* in basis points against the planned price, signed so that a positive number is a
  cost: ``(fill - planned) / planned x 10,000`` for a buy, ``(planned - fill) / planned x
  10,000`` for a sell (None when nothing filled or no price was planned);
- *cost*: the fees the broker reported for the fills.

Per run: the planned and filled values, the fees, the slippage weighted by filled value, and the
*drift left*: ``max |weight - target|`` in percentage points over the targets and the holdings,
weights measured against holdings value plus free cash (None when the investment has no value).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

from saras.domain.enums import OrderSide
from saras.domain.triggers import AssetKey

_ZERO = Decimal(0)
_HUNDRED = Decimal(100)
_BPS = Decimal(10_000)
_CENT = Decimal("0.01")
_QUANT4 = Decimal("0.0001")


@dataclass(frozen=True)
class OrderOutcome:
    """One order of a run: as planned, and as filled."""

    asset: AssetKey
    side: OrderSide
    planned_quantity: Decimal
    planned_price: Decimal | None
    filled_quantity: Decimal
    avg_fill_price: Decimal | None
    fees: Decimal = _ZERO


@dataclass(frozen=True)
class LegOutcome:
    """A run's orders of one asset and side, summed."""

    asset: AssetKey
    side: OrderSide
    planned_quantity: Decimal
    filled_quantity: Decimal
    planned_price: Decimal | None
    avg_fill_price: Decimal | None
    cost: Decimal

    @property
    def planned_value(self) -> Decimal:
        """Return planned quantity times planned price (0 without a price)."""
        return self.planned_quantity * (self.planned_price or _ZERO)

    @property
    def filled_value(self) -> Decimal:
        """Return filled quantity times the average fill price."""
        return self.filled_quantity * (self.avg_fill_price or _ZERO)

    @property
    def slippage_bps(self) -> Decimal | None:
        """Return the slippage against the planned price in bps (positive: a cost)."""
        return slippage_bps(
            self.side, self.planned_price, self.avg_fill_price, self.filled_quantity
        )


@dataclass(frozen=True)
class RunOutcome:
    """One run's report: its legs and the drift its investment is left with."""

    run_id: str
    investment_id: str
    currency: str
    status: str
    legs: tuple[LegOutcome, ...]
    drift_left_pct: Decimal | None

    @property
    def planned_value(self) -> Decimal:
        """Return the planned value of the run's orders."""
        return sum((leg.planned_value for leg in self.legs), _ZERO)

    @property
    def filled_value(self) -> Decimal:
        """Return the filled value of the run's orders."""
        return sum((leg.filled_value for leg in self.legs), _ZERO)

    @property
    def cost(self) -> Decimal:
        """Return the fees of the run's fills."""
        return sum((leg.cost for leg in self.legs), _ZERO)

    @property
    def slippage_bps(self) -> Decimal | None:
        """Return the legs' slippage weighted by filled value (None when nothing filled)."""
        weighted = [
            (leg.slippage_bps, leg.filled_value)
            for leg in self.legs
            if leg.slippage_bps is not None
        ]
        total = sum((v for _, v in weighted), _ZERO)
        if not weighted or total <= 0:
            return None
        return _q(sum((s * v for s, v in weighted), _ZERO) / total, _QUANT4)


def _q(value: Decimal, quantum: Decimal) -> Decimal:
    return value.quantize(quantum, rounding=ROUND_HALF_EVEN)


def slippage_bps(
    side: OrderSide, planned: Decimal | None, fill: Decimal | None, filled: Decimal = Decimal(1)
) -> Decimal | None:
    """Return the fill's slippage against the planned price in bps, positive when it cost."""
    if planned is None or fill is None or planned <= 0 or filled <= 0:
        return None
    move = (fill - planned) if side is OrderSide.BUY else (planned - fill)
    return _q(move / planned * _BPS, _QUANT4)


def legs_of(outcomes: Iterable[OrderOutcome]) -> tuple[LegOutcome, ...]:
    """Sum a run's orders per asset and side; prices are quantity-weighted averages."""
    groups: dict[tuple[AssetKey, OrderSide], list[OrderOutcome]] = {}
    for o in outcomes:
        groups.setdefault((o.asset, o.side), []).append(o)
    legs = []
    for (asset, side), orders in sorted(
        groups.items(), key=lambda g: (g[0][1] != OrderSide.SELL, g[0][0])
    ):
        planned_q = sum((o.planned_quantity for o in orders), _ZERO)
        filled_q = sum((o.filled_quantity for o in orders), _ZERO)
        priced = [o for o in orders if o.planned_price is not None]
        priced_q = sum((o.planned_quantity for o in priced), _ZERO)
        planned_price = (
            sum((o.planned_quantity * (o.planned_price or _ZERO) for o in priced), _ZERO) / priced_q
            if priced_q > 0
            else None
        )
        filled = [o for o in orders if o.avg_fill_price is not None and o.filled_quantity > 0]
        avg = (
            sum((o.filled_quantity * (o.avg_fill_price or _ZERO) for o in filled), _ZERO) / filled_q
            if filled and filled_q > 0
            else None
        )
        legs.append(
            LegOutcome(
                asset,
                side,
                planned_q,
                filled_q,
                None if planned_price is None else _q(planned_price, Decimal("0.000001")),
                None if avg is None else _q(avg, Decimal("0.000001")),
                sum((o.fees for o in orders), _ZERO),
            )
        )
    return tuple(legs)


def drift_left(
    holdings: Mapping[AssetKey, Decimal],
    prices: Mapping[AssetKey, Decimal],
    cash: Decimal,
    targets: Mapping[AssetKey, Decimal],
) -> Decimal | None:
    """Return ``max |weight - target|`` in points after execution (None: nothing to weigh)."""
    values = {a: q * prices[a] for a, q in holdings.items() if q and a in prices}
    total = sum(values.values(), _ZERO) + max(cash, _ZERO)
    if total <= 0:
        return None
    assets = set(values) | set(targets)
    gaps = (abs(values.get(a, _ZERO) / total * _HUNDRED - targets.get(a, _ZERO)) for a in assets)
    return _q(max(gaps, default=_ZERO), _QUANT4)


def run_rows(reports: Sequence[RunOutcome]) -> list[dict[str, str]]:
    """Return one row per run, asset and side (the report's table)."""

    def text(value: Decimal | None) -> str:
        return "" if value is None else f"{value.normalize():f}"

    rows = []
    for r in reports:
        for leg in r.legs:
            rows.append(
                {
                    "symbol": leg.asset.symbol,
                    "exchange": leg.asset.exchange,
                    "side": leg.side.value,
                    "planned_qty": text(leg.planned_quantity),
                    "filled_qty": text(leg.filled_quantity),
                    "planned_price": text(leg.planned_price),
                    "avg_fill_price": text(leg.avg_fill_price),
                    "slippage_bps": text(leg.slippage_bps),
                    "cost": f"{_q(leg.cost, _CENT):f} {r.currency}",
                    "drift_left_pct": text(r.drift_left_pct),
                    "investment": r.investment_id,
                    "run": r.run_id,
                }
            )
    return rows
