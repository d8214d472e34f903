"""Paper kit: what paper trades cost, the same fee the paper book charges when they fill.

A paper account charges ``fee_bps`` of each order's gross value, at least ``min_fee`` per order
(``paper_fee_bps`` / ``paper_min_fee`` in the connection's metadata; both 0 by default, so by
default paper trading costs nothing). The plan report shows it as brokerage.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import ROUND_HALF_UP, Decimal

from saras.brokers.paper.config import _BPS, _MONEY_Q, PaperSettings
from saras.domain.costs import CostBreakdown, CostModel, TradeLeg


def order_fee(settings: PaperSettings, gross: Decimal) -> Decimal:
    """Return an order's total fee on its cumulative gross (bps, at least the minimum)."""
    fee = max(settings.min_fee, gross * settings.fee_bps / _BPS)
    return fee.quantize(_MONEY_Q, rounding=ROUND_HALF_UP)


def fee_model(settings: PaperSettings) -> CostModel:
    """Return the cost model of a paper account with these settings."""

    def expected_costs(legs: Iterable[TradeLeg]) -> CostBreakdown:
        fees = sum((order_fee(settings, leg.value) for leg in legs if leg.value > 0), Decimal(0))
        return CostBreakdown(brokerage=fees)

    return expected_costs
