"""Plan a rebalance for review: the plan and its per-investment report (published by the flow
through ``flows.kit.reports``)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from saras.db import get_engine
from saras.domain.policy import RebalancePolicy
from saras.services.plan_review import PlanReview, plan_for_review


@task(cache_policy=NO_CACHE)  # writes the runs
def plan_rebalance(
    smallcase: str,
    *,
    constituents: list[dict[str, Any]] | None = None,
    policy: RebalancePolicy | None = None,
    exclude_investments: Sequence[uuid.UUID] | None = None,
    dry_run: bool = False,
    require_approval: bool = True,
) -> PlanReview:
    """Plan a rebalance under the smallcase's policy with the run's overrides; report it."""
    return plan_for_review(
        get_engine(),
        smallcase,
        constituents=constituents,
        policy=policy,
        exclude_investments=exclude_investments,
        dry_run=dry_run,
        require_approval=require_approval,
    )
