"""Expected trading costs from each broker kit's model: none on Alpaca, Kite's delivery charges
from the documented table, a paper account's configured fee; reached through capabilities."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from saras.brokers.paper.config import PaperSettings
from saras.brokers.paper.costs import fee_model
from saras.brokers.registry import broker_capabilities
from saras.brokers.zerodha.costs import delivery_costs, kite_leg_cost
from saras.domain.costs import CostBreakdown, TradeLeg
from saras.domain.enums import OrderSide

BUY = OrderSide.BUY
SELL = OrderSide.SELL


def test_alpaca_and_default_paper_cost_nothing_through_their_capabilities() -> None:
    legs = [
        TradeLeg("AAPL", "NASDAQ", BUY, Decimal("1000")),
        TradeLeg("X", "NYSE", SELL, Decimal(5)),
    ]
    assert broker_capabilities("alpaca").costs(legs) == CostBreakdown()
    assert broker_capabilities("paper").costs(legs).total == 0


def test_a_paper_account_costs_its_configured_fee_per_order() -> None:
    legs = [
        TradeLeg("AAPL", "NASDAQ", BUY, Decimal("1000")),  # 10 bps = 1.00
        TradeLeg("X", "NYSE", SELL, Decimal(5)),  # 0.005, raised to the 0.25 minimum
    ]
    metadata = {"paper_fee_bps": "10", "paper_min_fee": "0.25"}
    cost = broker_capabilities("paper", metadata=metadata).costs(legs)
    assert cost.brokerage == Decimal("1.25") and cost.total == Decimal("1.25")
    assert fee_model(PaperSettings(fee_bps=Decimal(10), min_fee=Decimal("0.25")))(legs) == cost
    # settings the paper book cannot read (refused when a connection is added): such a
    # connection does not open, so its capabilities cost nothing rather than fail planning
    unreadable = broker_capabilities("paper", metadata={"paper_fee_bps": "-1"})
    assert unreadable.costs(legs) == CostBreakdown() and unreadable.fractional


def test_kite_capabilities_carry_the_delivery_table() -> None:
    legs = [TradeLeg("INFY", "NSE", BUY, Decimal("100000"))]
    assert broker_capabilities("zerodha").costs(legs).total == Decimal("118.74")


def test_kite_buy_of_one_lakh_on_nse() -> None:
    cost = kite_leg_cost(TradeLeg("INFY", "NSE", BUY, Decimal("100000")))
    assert cost.brokerage == 0
    assert cost.stt == Decimal("100")  # 0.1%
    assert cost.exchange_charges == Decimal("3.07")  # 0.00307%
    assert cost.sebi_fee == Decimal("0.10")  # ₹10 per crore
    assert cost.stamp_duty == Decimal("15.00")  # 0.015%, buy side only
    assert cost.gst == Decimal("0.57")  # 18% of (0 + 3.07 + 0.10) = 0.5706
    assert cost.dp_charges == 0
    assert cost.total == Decimal("118.74")


def test_kite_sell_on_bse_pays_the_dp_charge_once_per_scrip() -> None:
    cost = kite_leg_cost(TradeLeg("TCS", "BSE", SELL, Decimal("50000")))
    assert cost.stt == Decimal("50") and cost.stamp_duty == 0
    assert cost.exchange_charges == Decimal("1.88")  # 0.00375% = 1.875
    assert cost.dp_charges == Decimal("13.50")
    assert cost.gst == Decimal("2.78")  # 18% of (1.88 + 0.05 + 13.50) = 2.7774
    legs = [
        TradeLeg("TCS", "BSE", SELL, Decimal("50000")),
        TradeLeg("TCS", "BSE", SELL, Decimal("50000")),
        TradeLeg("TCS", "NSE", SELL, Decimal("50000")),
    ]
    total = delivery_costs(legs)
    assert total.dp_charges == Decimal("27.00")  # TCS on BSE once, TCS on NSE once


def test_kite_refuses_an_unknown_exchange_and_a_negative_value() -> None:
    with pytest.raises(ValueError, match="NYSE"):
        kite_leg_cost(TradeLeg("AAPL", "NYSE", BUY, Decimal(1)))
    with pytest.raises(ValueError, match="negative"):
        kite_leg_cost(TradeLeg("INFY", "NSE", BUY, Decimal(-1)))


def test_breakdown_record_sums() -> None:
    record = kite_leg_cost(TradeLeg("INFY", "NSE", BUY, Decimal("100000"))).as_record()
    assert record["total"] == "118.74"
    assert set(record) == {
        "brokerage",
        "stt",
        "exchange_charges",
        "sebi_fee",
        "stamp_duty",
        "gst",
        "dp_charges",
        "total",
    }


@given(
    value=st.decimals(0, 10_000_000, places=2),
    side=st.sampled_from([BUY, SELL]),
    exchange=st.sampled_from(["NSE", "BSE"]),
)
def test_kite_costs_are_small_and_non_negative(
    value: Decimal, side: OrderSide, exchange: str
) -> None:
    cost = kite_leg_cost(TradeLeg("S", exchange, side, value))
    assert cost.total >= 0
    # about 0.12% of the value, plus the DP charge and rounding
    assert cost.total <= value * Decimal("0.0013") + Decimal("17") + Decimal("1")
