"""Tasks of the repair flow (the sequence around them is ``flows.kit.repair``)."""

from __future__ import annotations

import uuid

from prefect import task
from prefect.cache_policies import NO_CACHE

from saras.db import get_engine
from saras.services import repair as service


@task(cache_policy=NO_CACHE, task_run_name="plan-repair-{run_id}")
def plan_repair(run_id: str, require_approval: bool) -> service.RepairPlan:
    """Plan (or find already planned) the repair run of one run."""
    return service.plan_repair(get_engine(), uuid.UUID(run_id), require_approval=require_approval)
