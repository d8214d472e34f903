"""Zerodha kit: expected costs of Kite trades, from a documented table kept in the code.

Equity delivery (CNC), per order leg of value ``V`` (turnover):

======================  =============================================  ==========================
charge                  rate                                           side
======================  =============================================  ==========================
brokerage               ₹0 (delivery is brokerage-free)                both
STT                     0.1% of V, rounded to the rupee                both
exchange transaction    NSE 0.00307% of V; BSE 0.00375% of V           both
SEBI turnover fee       ₹10 per crore (0.0001%) of V                   both
stamp duty              0.015% of V (₹1500 per crore)                  buy
GST                     18% of (brokerage + exchange + SEBI)           both
DP charge               ₹13.50 + 18% GST per scrip sold per day        sell
======================  =============================================  ==========================

Source: Zerodha's published charges, https://zerodha.com/charges (equity delivery column), as
published in 2025 (:data:`KITE_CHARGES_AS_OF`). Exchanges revise their transaction charges from
time to time: review this table yearly, and whenever a contract note disagrees. STT is rounded
per leg here (Zerodha rounds per contract note); every other charge to the paisa. The DP charge
is per scrip and day, so a plan counts it once per asset sold.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal

from saras.domain.costs import CostBreakdown, TradeLeg
from saras.domain.enums import OrderSide

_PAISA = Decimal("0.01")
_RUPEE = Decimal(1)
_ZERO = Decimal(0)

KITE_CHARGES_SOURCE = "https://zerodha.com/charges (equity delivery)"
KITE_CHARGES_AS_OF = date(2025, 1, 1)


@dataclass(frozen=True)
class KiteDeliveryCharges:
    """Zerodha's equity delivery (CNC) charges as rates of turnover (see the module table)."""

    brokerage_rate: Decimal = Decimal(0)
    stt_rate: Decimal = Decimal("0.001")
    exchange_rates: tuple[tuple[str, Decimal], ...] = (
        ("NSE", Decimal("0.0000307")),
        ("BSE", Decimal("0.0000375")),
    )
    sebi_rate: Decimal = Decimal("0.000001")  # ₹10 per crore
    stamp_rate_buy: Decimal = Decimal("0.00015")
    gst_rate: Decimal = Decimal("0.18")
    dp_charge_per_scrip: Decimal = Decimal("13.50")

    def exchange_rate(self, exchange: str) -> Decimal:
        """Return the transaction charge rate of an Indian exchange (ValueError when unknown)."""
        code = exchange.upper()
        for name, rate in self.exchange_rates:
            if name == code:
                return rate
        known = ", ".join(name for name, _ in self.exchange_rates)
        raise ValueError(f"no Kite transaction charge for exchange {exchange!r} (known: {known})")


KITE_DELIVERY = KiteDeliveryCharges()


def _money(value: Decimal, quantum: Decimal = _PAISA) -> Decimal:
    return value.quantize(quantum, rounding=ROUND_HALF_UP)


def kite_leg_cost(
    leg: TradeLeg, table: KiteDeliveryCharges = KITE_DELIVERY, *, dp_charge: bool = True
) -> CostBreakdown:
    """Return the expected charges of one Kite delivery leg (DP charge on a sell if asked)."""
    if leg.value < 0:
        raise ValueError(f"{leg.symbol}: a trade value cannot be negative ({leg.value})")
    value = leg.value
    brokerage = _money(value * table.brokerage_rate)
    exchange = _money(value * table.exchange_rate(leg.exchange))
    sebi = _money(value * table.sebi_rate)
    stamp = _money(value * table.stamp_rate_buy) if leg.side is OrderSide.BUY else _ZERO
    dp = _ZERO
    if leg.side is OrderSide.SELL and dp_charge and value > 0:
        dp = table.dp_charge_per_scrip
    gst = _money((brokerage + exchange + sebi + dp) * table.gst_rate)
    return CostBreakdown(
        brokerage=brokerage,
        stt=_money(value * table.stt_rate, _RUPEE),
        exchange_charges=exchange,
        sebi_fee=sebi,
        stamp_duty=stamp,
        gst=gst,
        dp_charges=dp,
    )


def delivery_costs(legs: Iterable[TradeLeg]) -> CostBreakdown:
    """Return the expected costs of one investment's Kite delivery orders (the kit's model).

    The DP charge is counted once per asset sold (it is per scrip and day).
    """
    total = CostBreakdown()
    sold: set[tuple[str, str]] = set()
    for leg in legs:
        key = (leg.symbol, leg.exchange.upper())
        first_sale = leg.side is OrderSide.SELL and key not in sold
        if first_sale:
            sold.add(key)
        total = total + kite_leg_cost(leg, dp_charge=first_sale)
    return total
