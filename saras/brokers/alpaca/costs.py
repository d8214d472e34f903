"""Alpaca kit: expected costs of Alpaca trades.

No commission on US-listed equities, so no expected cost. Alpaca passes the SEC fee and FINRA
TAF through on sells (fractions of a cent per $100): below the precision a plan review needs,
not modelled.
"""

from __future__ import annotations

from saras.domain.costs import CostModel, no_costs

expected_costs: CostModel = no_costs
