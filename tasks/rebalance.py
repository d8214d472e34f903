"""Tasks of the rebalance and investment flows: plan (and write), decide."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from sqlalchemy.orm import Session

from saras.db import get_engine
from saras.domain.enums import RunType
from saras.domain.orders import RunEvent
from saras.domain.plan import Plan
from saras.services import admin
from saras.services import rebalance as service


@task(cache_policy=NO_CACHE)
def plan_runs(
    smallcase: str,
    *,
    run_type: str = RunType.REBALANCE.value,
    constituents: list[dict[str, Any]] | None = None,
    investment_ids: list[str] | None = None,
    amounts: dict[str, str] | None = None,
    policy: dict[str, str] | None = None,
    dry_run: bool = False,
    require_approval: bool = True,
    max_price_age_sessions: int = 1,
) -> Plan:
    """Plan every investment of a smallcase (or the given ones) and write the runs unless dry."""
    return service.plan_and_write(
        get_engine(),
        smallcase,
        run_type=RunType(run_type),
        constituents=constituents,
        investment_ids=[uuid.UUID(i) for i in investment_ids] if investment_ids else None,
        amounts={uuid.UUID(k): Decimal(v) for k, v in (amounts or {}).items()},
        policy=None if policy is None else service.parse_policy(policy),
        dry_run=dry_run,
        require_approval=require_approval,
        max_price_age_sessions=max_price_age_sessions,
    )


@task(cache_policy=NO_CACHE)
def decide(plan: Plan, event: str, note: str | None = None) -> int:
    """Approve, reject or time out a plan (approval applies its new composition)."""
    return service.decide_plan(get_engine(), plan, RunEvent(event), note=note)


@task(cache_policy=NO_CACHE)
def recompute_plan_hash(plan: Plan) -> str:
    """Recompute the plan hash from the orders as they are now."""
    return service.recompute_plan_hash(get_engine(), plan.run_ids)


@task(cache_policy=NO_CACHE)
def resolve_smallcase(smallcase: str) -> tuple[str, str]:
    """Return the smallcase's (id, name), by name or id (NotFoundError if none)."""
    with Session(get_engine()) as session:
        row = admin.get_smallcase(session, smallcase)
        return str(row.id), row.name
