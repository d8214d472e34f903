"""Alpaca kit: what an Alpaca connection can do, as data (services never branch on the broker)."""

from __future__ import annotations

from saras.brokers.alpaca.config import MAX_DECIMALS, MIN_BUY_VALUE, reaches_real_money
from saras.brokers.alpaca.costs import expected_costs
from saras.brokers.base import BrokerCapabilities, ConnectionConfig


def capabilities(config: ConnectionConfig) -> BrokerCapabilities:
    """Return Alpaca's capabilities; live whenever the endpoint is not Alpaca's paper one."""
    return BrokerCapabilities(
        real_money=reaches_real_money(config),
        fractional=True,
        quantity_decimals=MAX_DECIMALS,
        min_order_value=MIN_BUY_VALUE,
        costs=expected_costs,
    )
