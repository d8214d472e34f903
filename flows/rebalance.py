"""Rebalance a smallcase for all its investors: compose, plan, review, approve, execute."""

from __future__ import annotations

import time
from typing import Any

from prefect import flow
from prefect.states import State

from saras.errors import SarasError
from tasks.common import AUDIT_HOOKS
from tasks.orchestration import approve_or_reject, execute_planned, finish, publish_plan
from tasks.rebalance import plan_runs
from tasks.runners import SarasTaskRunner

PATH = "flows/rebalance.py:rebalance_smallcase"
EVENT = "flow.rebalance_smallcase"


@flow(name="rebalance-smallcase", task_runner=SarasTaskRunner(), **AUDIT_HOOKS)
def rebalance_smallcase(
    smallcase: str,
    constituents: list[dict[str, Any]] | None = None,
    require_approval: bool = True,
    dry_run: bool = False,
    approval_timeout_seconds: int = 3600,
    approval_poll_seconds: int = 10,
    policy: dict[str, str] | None = None,
    execution: dict[str, Any] | None = None,
) -> State:
    """Plan every active investment of ``smallcase`` toward its (optionally new) weights.

    ``constituents`` (a list of {symbol, weight, rationale, exchange}) is a new composition: it
    travels with the plan and becomes the smallcase's only when the plan is approved (the
    previous one is kept in the smallcase's metadata); a rejected, expired or superseded plan
    changes nothing. ``dry_run`` only reports. With ``require_approval`` the run pauses for an
    analyst to approve this exact plan (by hash) in the Prefect UI; a timeout rejects. Approved
    runs execute, connections in parallel. A second trigger while one is planning waits for it,
    then plans nothing for investments whose runs are approved or executing.
    """
    began = time.monotonic()
    try:
        plan = plan_runs(
            smallcase,
            run_type="rebalance",
            constituents=constituents,
            policy=policy,
            dry_run=dry_run,
            require_approval=require_approval,
        )
    except SarasError as exc:
        return finish(EVENT, began, None, [], message=str(exc), failed=True, path=PATH)
    markdown = publish_plan(plan, key="rebalance-plan")
    if dry_run:
        return finish(
            EVENT, began, plan, [], message="dry run: nothing written", preview=True, path=PATH
        )
    if not plan.runs and (plan.composition is None or not require_approval):
        message = "nothing to trade" + (
            "; the new composition is the smallcase's" if plan.composition is not None else ""
        )
        return finish(EVENT, began, plan, [], message=message, path=PATH)
    if require_approval:
        approved, why = approve_or_reject(
            plan,
            markdown,
            timeout_seconds=approval_timeout_seconds,
            poll_seconds=approval_poll_seconds,
        )
        if not approved:
            return finish(EVENT, began, plan, [], message=why, failed=True, path=PATH)
        if not plan.runs:
            return finish(
                EVENT,
                began,
                plan,
                [],
                message="nothing to trade; the new composition is the smallcase's",
                path=PATH,
            )
    results = execute_planned(plan, execution)
    return finish(EVENT, began, plan, results, path=PATH)
