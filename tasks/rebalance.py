"""Tasks of the rebalance and investment flows: plan (and write), decide, execute."""

from __future__ import annotations

import uuid
from collections import defaultdict
from decimal import Decimal
from typing import Any

from prefect import task
from sqlalchemy.orm import Session

from saras.db import get_engine
from saras.domain.enums import RunStatus, RunType
from saras.domain.orders import RunEvent
from saras.domain.rebalance import PlanningPolicy
from saras.services import admin
from saras.services import rebalance as service


@task
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
) -> dict[str, Any]:
    """Plan every investment of a smallcase (or the given ones) and write the runs unless dry."""
    engine = get_engine()
    with Session(engine) as session, session.begin():
        sc = admin.get_smallcase(session, smallcase)
        override = None
        if constituents is not None:
            resolved = service.apply_constituents(session, sc, constituents, persist=False)
            override = {a.symbol: (a, row.weight) for a, row in resolved}
        plan, writes = service.plan_smallcase(
            engine,
            sc,
            run_type=RunType(run_type),
            policy=PlanningPolicy(**{k: Decimal(str(v)) for k, v in (policy or {}).items()}),
            investment_ids=[uuid.UUID(i) for i in investment_ids] if investment_ids else None,
            amounts={uuid.UUID(k): Decimal(v) for k, v in (amounts or {}).items()},
            targets_override=override,
            max_price_age_sessions=max_price_age_sessions,
        )
        if not dry_run:
            if constituents is not None:
                service.apply_constituents(session, sc, constituents, persist=True)
            status = RunStatus.AWAITING_APPROVAL if require_approval else RunStatus.APPROVED
            service.write_plan(session.connection(), plan, writes, status=status)
    by_connection: dict[str, list[str]] = defaultdict(list)
    for run in plan.runs:
        by_connection[str(run.investment.connection_id)].append(str(run.run_id))
    return {
        "summary": plan.summary(),
        "assets": plan.summary_rows(),
        "skipped": {k: v for k, v in plan.skipped.items()},
        "runs_by_connection": dict(by_connection),
        "run_ids": [str(r.run_id) for r in plan.runs],
        "plan_hash": plan.plan_hash,
    }


@task
def decide(run_ids: list[str], event: str, note: str | None = None) -> int:
    """Approve, reject or time out the planned runs."""
    return service.decide_runs(
        get_engine(), [uuid.UUID(r) for r in run_ids], RunEvent(event), note=note
    )


@task
def recompute_plan_hash(run_ids: list[str]) -> str:
    """Recompute the plan hash from the orders as they are now."""
    return service.recompute_plan_hash(get_engine(), [uuid.UUID(r) for r in run_ids])
