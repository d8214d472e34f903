"""Expected costs of trades: the shape every broker kit's cost model returns.

A broker kit says what trading costs at its venue (``saras/brokers/<name>/costs.py``) and hands
the model out with its capabilities (``BrokerCapabilities.costs``): planning and the plan report
ask for it and never branch on the broker. A cost model takes one investment's order legs and
returns the expected charges, by kind, in the legs' currency.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from decimal import Decimal

from saras.domain.enums import OrderSide

_ZERO = Decimal(0)


@dataclass(frozen=True)
class CostBreakdown:
    """Expected costs of some trades, by charge, in the trades' currency."""

    brokerage: Decimal = _ZERO
    stt: Decimal = _ZERO
    exchange_charges: Decimal = _ZERO
    sebi_fee: Decimal = _ZERO
    stamp_duty: Decimal = _ZERO
    gst: Decimal = _ZERO
    dp_charges: Decimal = _ZERO

    @property
    def total(self) -> Decimal:
        """Return the sum of every charge."""
        return sum((getattr(self, f.name) for f in fields(self)), _ZERO)

    def __add__(self, other: CostBreakdown) -> CostBreakdown:
        return CostBreakdown(
            **{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)}
        )

    def as_record(self) -> dict[str, str]:
        """Return every charge and the total as strings (for artifacts and plans)."""
        out = {f.name: f"{getattr(self, f.name):f}" for f in fields(self)}
        out["total"] = f"{self.total:f}"
        return out


@dataclass(frozen=True)
class TradeLeg:
    """One order's side, exchange and estimated value, as costs need it."""

    symbol: str
    exchange: str
    side: OrderSide
    value: Decimal


#: one investment's order legs -> their expected charges (in the legs' currency)
CostModel = Callable[[Iterable[TradeLeg]], CostBreakdown]


def no_costs(legs: Iterable[TradeLeg]) -> CostBreakdown:
    """Return no charges: the cost model of a venue that charges nothing for these trades."""
    return CostBreakdown()
