"""Repair a run that ended partially completed (or failed for money reasons): bounded, approved."""

from __future__ import annotations

import time

from prefect import flow
from prefect.states import Completed, State

from flows.kit.audit import AUDIT_HOOKS
from flows.kit.repair import repair_and_execute
from flows.kit.review import finish
from flows.kit.runners import SarasTaskRunner
from saras.domain.inputs import ApprovalParams, check_run_id, parse
from saras.domain.parameters import ExecutionParameters, settings_kwargs
from saras.errors import SarasError

PATH = "flows/repair.py:repair_run"


@flow(name="repair-run", task_runner=SarasTaskRunner(), **AUDIT_HOOKS)
def repair_run(
    run_id: str,
    require_approval: bool | None = None,
    wait_for_approval: bool = True,
    approval_timeout_seconds: int = 3600,
    approval_poll_seconds: int = 10,
    execution: ExecutionParameters | None = None,
) -> State:
    """Plan the legs of ``run_id``'s investment still off target as a ``repair`` run; execute it.

    At most ``SARAS_REPAIR_MAX_ATTEMPTS`` repair runs per original run. The plan pauses for an
    analyst's approval of its exact hash, as a rebalance does, unless ``require_approval`` is
    false or, when it is not given, the policy flag ``SARAS_REPAIR_AUTO_APPROVE`` is on.
    ``run_id`` may name the original run or a repair run of it awaiting approval.

    Args:
        run_id: The run to repair (or a repair run of it awaiting approval).
        require_approval: Pause for an analyst's approval; empty: SARAS_REPAIR_AUTO_APPROVE decides.
        wait_for_approval: Wait here for the decision; off: leave the plan awaiting approval.
        approval_timeout_seconds: Seconds to wait for the approval before the plan is rejected.
        approval_poll_seconds: Seconds between checks for the analyst's decision.
        execution: How patient the execution is (polling, deadline, timeouts); empty: the
            defaults.
    """
    began = time.monotonic()
    try:
        parse(
            ApprovalParams,
            approval_timeout_seconds=approval_timeout_seconds,
            approval_poll_seconds=approval_poll_seconds,
        )
        result = repair_and_execute(
            str(check_run_id(run_id)),
            require_approval=require_approval,
            wait_for_approval=wait_for_approval,
            approval_timeout_seconds=approval_timeout_seconds,
            approval_poll_seconds=approval_poll_seconds,
            execution=settings_kwargs(execution),
        )
    except SarasError as exc:
        return finish("flow.repair_run", began, None, [], message=str(exc), failed=True, path=PATH)
    state = finish(
        "flow.repair_run",
        began,
        result.plan.plan,
        result.results,
        message=(result.message or None) if not result.results else None,
        failed=result.failed,
        path=PATH,
    )
    if not state.is_completed():
        return state
    report = result.plan.plan.report() if result.plan.plan is not None else None
    data = {"plan": report, "repair": result.plan.summary(), "results": result.results}
    if not result.results and result.plan.repair_run_id:
        # planned, waiting for approval: done for now, and say so
        return Completed(name="Awaiting Approval", message=result.message, data=data)
    return Completed(name=state.name, message=state.message, data=data)
