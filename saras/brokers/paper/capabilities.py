"""Paper kit: what a paper connection can do, as data (services never branch on the broker)."""

from __future__ import annotations

from decimal import Decimal

from saras.brokers.base import BrokerCapabilities, ConnectionConfig, paper_fractional
from saras.brokers.paper.config import PaperSettings
from saras.brokers.paper.costs import fee_model
from saras.domain.costs import no_costs


def capabilities(config: ConnectionConfig) -> BrokerCapabilities:
    """Return the paper broker's capabilities; sizing follows ``paper_fractional``.

    A row that does not say ``paper_trading`` is treated as able to reach real money (the
    live-trading gate applies), as for any adapter that cannot prove otherwise. Its costs are
    the fees its ``paper_*`` settings charge; settings the paper book cannot read (refused when
    a connection is added, see :func:`check_config`) cost nothing here: such a connection does
    not open, so planning skips its investments as ``connection_unusable``.
    """
    try:
        costs = fee_model(PaperSettings.from_metadata(config.metadata))
    except ValueError:
        costs = no_costs
    return BrokerCapabilities(
        real_money=not config.paper_trading,
        fractional=paper_fractional(config),
        quantity_decimals=9,
        min_order_value=Decimal(0),
        remote=not config.paper_trading,
        needs_credentials=False,
        costs=costs,
    )


def check_config(config: ConnectionConfig) -> None:
    """Refuse ``paper_*`` settings the paper book cannot read (ValueError naming the key)."""
    PaperSettings.from_metadata(config.metadata)
