"""Paper kit: what a paper connection can do, as data (services never branch on the broker)."""

from __future__ import annotations

from decimal import Decimal

from saras.brokers.base import BrokerCapabilities, ConnectionConfig, paper_fractional
from saras.brokers.paper.config import PaperSettings
from saras.brokers.paper.costs import fee_model


def capabilities(config: ConnectionConfig) -> BrokerCapabilities:
    """Return the paper broker's capabilities; sizing follows ``paper_fractional``.

    A row that does not say ``paper_trading`` is treated as able to reach real money (the
    live-trading gate applies), as for any adapter that cannot prove otherwise. Its costs are
    the fees its ``paper_*`` settings charge (a setting the paper book would refuse is refused
    here too, naming it).
    """
    return BrokerCapabilities(
        real_money=not config.paper_trading,
        fractional=paper_fractional(config),
        quantity_decimals=9,
        min_order_value=Decimal(0),
        remote=not config.paper_trading,
        needs_credentials=False,
        costs=fee_model(PaperSettings.from_metadata(config.metadata)),
    )
