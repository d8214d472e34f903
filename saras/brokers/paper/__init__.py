"""The paper kit: a simulated broker on Saras' own database (``paper_*`` tables)."""

from saras.brokers.paper.config import METADATA_KEYS, PAPER_TABLE_PREFIX
from saras.brokers.paper.execution import (
    PaperActionResult,
    PaperBroker,
    PaperCorporateAction,
    PaperFillMode,
    PaperMarketHours,
    PaperSettings,
    ensure_paper_schema,
    paper_accounts,
    paper_corporate_actions,
    paper_fills,
    paper_metadata,
    paper_orders,
    paper_positions,
)

__all__ = [
    "METADATA_KEYS",
    "PAPER_TABLE_PREFIX",
    "PaperActionResult",
    "PaperBroker",
    "PaperCorporateAction",
    "PaperFillMode",
    "PaperMarketHours",
    "PaperSettings",
    "ensure_paper_schema",
    "paper_accounts",
    "paper_corporate_actions",
    "paper_fills",
    "paper_metadata",
    "paper_orders",
    "paper_positions",
]
