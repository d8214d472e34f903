"""Paper kit: what a paper connection can do, as data (services never branch on the broker)."""

from __future__ import annotations

from dataclasses import replace

from saras.brokers.base import BrokerCapabilities, ConnectionConfig, undeclared_capabilities
from saras.brokers.paper.config import PaperSettings
from saras.brokers.paper.costs import fee_model
from saras.domain.costs import no_costs


def capabilities(config: ConnectionConfig) -> BrokerCapabilities:
    """Return the paper broker's capabilities; sizing follows ``paper_fractional``.

    What its row says, as for any adapter that declares nothing (a row that does not say
    ``paper_trading`` may reach real money: the live-trading gate applies), with no
    credentials. Its costs are the fees its ``paper_*`` settings charge; settings the paper
    book cannot read (refused when a connection is added, see :func:`check_config`) cost
    nothing here: such a connection does not open, so planning skips its investments as
    ``connection_unusable``.
    """
    try:
        costs = fee_model(PaperSettings.from_metadata(config.metadata))
    except ValueError:
        costs = no_costs
    return replace(undeclared_capabilities(config), needs_credentials=False, costs=costs)


def check_config(config: ConnectionConfig) -> None:
    """Refuse ``paper_*`` settings the paper book cannot read (ValueError naming the key)."""
    PaperSettings.from_metadata(config.metadata)
