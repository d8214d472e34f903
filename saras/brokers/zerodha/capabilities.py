"""Zerodha kit: what a Kite connection can do, as data (services never branch on the broker)."""

from __future__ import annotations

from saras.brokers.base import BrokerCapabilities, ConnectionConfig
from saras.brokers.zerodha.costs import delivery_costs


def capabilities(config: ConnectionConfig) -> BrokerCapabilities:
    """Return Kite's capabilities: always real money (Kite has no paper environment)."""
    return BrokerCapabilities(
        real_money=True,
        fractional=False,
        quantity_decimals=0,
        orders_outside_hours=True,
        marks_connection_on_fatal=True,
        paper_environment=False,
        costs=delivery_costs,
    )
