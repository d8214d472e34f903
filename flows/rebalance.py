"""Rebalance a smallcase for all its investors: compose, plan, review, approve, execute."""

from __future__ import annotations

import time
from typing import Any

from prefect import flow
from prefect.states import State

from saras.errors import SarasError
from tasks.orchestration import approve_or_reject, execute_planned, finish, publish_plan
from tasks.rebalance import plan_runs
from tasks.runners import SarasTaskRunner

PATH = "flows/rebalance.py:rebalance_smallcase"


@flow(name="rebalance-smallcase", task_runner=SarasTaskRunner())
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

    ``constituents`` (a list of {symbol, weight, rationale}) replaces the composition first,
    keeping the previous one in the smallcase's metadata. ``dry_run`` only reports. With
    ``require_approval`` the run pauses for an analyst to approve this exact plan (by hash) in
    the Prefect UI; a timeout rejects. Approved runs execute, connections in parallel.
    """
    began = time.monotonic()
    try:
        outcome = plan_runs(
            smallcase,
            run_type="rebalance",
            constituents=constituents,
            policy=policy,
            dry_run=dry_run,
            require_approval=require_approval,
        )
    except SarasError as exc:
        return finish(
            "flow.rebalance_smallcase", began, None, [], message=str(exc), failed=True, path=PATH
        )
    markdown = publish_plan(outcome, key="rebalance-plan")
    if dry_run:
        return finish(
            "flow.rebalance_smallcase",
            began,
            outcome,
            [],
            message="dry run: nothing written",
            path=PATH,
        )
    if not outcome["run_ids"]:
        return finish(
            "flow.rebalance_smallcase", began, outcome, [], message="nothing to trade", path=PATH
        )
    if require_approval:
        approved, why = approve_or_reject(
            outcome,
            markdown,
            timeout_seconds=approval_timeout_seconds,
            poll_seconds=approval_poll_seconds,
        )
        if not approved:
            return finish(
                "flow.rebalance_smallcase", began, outcome, [], message=why, failed=True, path=PATH
            )
    results = execute_planned(outcome, execution)
    return finish("flow.rebalance_smallcase", began, outcome, results, path=PATH)
