"""Rebalance a smallcase for all its investors: compose, plan, review, approve, execute."""

from __future__ import annotations

import time
import uuid

from prefect import flow
from prefect.states import State

from flows.kit.audit import AUDIT_HOOKS
from flows.kit.reports import publish_execution_report, publish_plan_report
from flows.kit.review import approve_or_reject, execute_planned, finish, publish_plan
from flows.kit.runners import SarasTaskRunner
from flows.kit.smallcase_slot import smallcase_slot
from saras.domain.inputs import ApprovalParams, parse
from saras.domain.parameters import Composition, ExecutionParameters
from saras.domain.policy import RebalancePolicy
from saras.errors import SarasError
from tasks.plan_report import plan_rebalance
from tasks.rebalance import resolve_smallcase

PATH = "flows/rebalance.py:rebalance_smallcase"
EVENT = "flow.rebalance_smallcase"
FLOW_NAME = "rebalance-smallcase"


@flow(name=FLOW_NAME, task_runner=SarasTaskRunner(), **AUDIT_HOOKS)
def rebalance_smallcase(
    smallcase: str,
    constituents: Composition | None = None,
    require_approval: bool = True,
    dry_run: bool = False,
    approval_timeout_seconds: int = 3600,
    approval_poll_seconds: int = 10,
    policy: RebalancePolicy | None = None,
    execution: ExecutionParameters | None = None,
    exclude_investments: list[uuid.UUID] | None = None,
    requested_by: str | None = None,
) -> State:
    """Plan every active investment of a smallcase toward its (optionally new) weights.

    The new composition travels with the plan and becomes the smallcase's only when the plan
    is approved (the previous one is kept in the smallcase's metadata); a rejected, expired or
    superseded plan changes nothing. With ``require_approval`` the run pauses for an analyst to
    approve this exact plan (by hash) in the Prefect UI; a timeout rejects. Approved runs
    execute, connections in parallel. A second trigger while one is planning waits for it,
    then plans nothing for investments whose runs are approved or executing.

    Args:
        smallcase: Name or id of the smallcase.
        constituents: A new composition, applied only when the plan is approved; empty: keep
            the current one.
        require_approval: Pause for an analyst's approval of this exact plan.
        dry_run: Only report the plan; write nothing.
        approval_timeout_seconds: Seconds to wait for the approval before the plan is rejected.
        approval_poll_seconds: Seconds between checks for the analyst's decision.
        policy: Overrides of the smallcase's stored policy, for this run only (fields left
            empty keep the stored values).
        execution: How patient the execution is; empty: the defaults.
        exclude_investments: Investments (ids, as in the plan report) left out of this run.
        requested_by: E-mail of the analyst requesting the run (checked against the approver
            when SARAS_REQUIRE_DISTINCT_APPROVER is on); runs the triggers start name
            `evaluate-rebalances`, which any Saras user may approve.
    """
    began = time.monotonic()
    try:
        parse(
            ApprovalParams,
            approval_timeout_seconds=approval_timeout_seconds,
            approval_poll_seconds=approval_poll_seconds,
        )
        smallcase_id, name = resolve_smallcase(smallcase)
        with smallcase_slot(FLOW_NAME, smallcase_id, name):
            return _rebalance(
                began,
                smallcase_id,
                constituents=constituents,
                require_approval=require_approval,
                dry_run=dry_run,
                approval_timeout_seconds=approval_timeout_seconds,
                approval_poll_seconds=approval_poll_seconds,
                policy=policy,
                execution=execution,
                exclude_investments=exclude_investments,
                requested_by=requested_by,
            )
    except SarasError as exc:  # no such smallcase, or another rebalance of it holds the slot
        return finish(EVENT, began, None, [], message=str(exc), failed=True, path=PATH)


def _rebalance(
    began: float,
    smallcase: str,
    *,
    constituents: Composition | None,
    require_approval: bool,
    dry_run: bool,
    approval_timeout_seconds: int,
    approval_poll_seconds: int,
    policy: RebalancePolicy | None,
    execution: ExecutionParameters | None,
    exclude_investments: list[uuid.UUID] | None,
    requested_by: str | None,
) -> State:
    """Plan, publish, pause for the decision and execute (inside the smallcase's slot)."""
    try:
        review = plan_rebalance(
            smallcase,
            constituents=(
                None if constituents is None else [c.model_dump(mode="json") for c in constituents]
            ),
            policy=policy,
            exclude_investments=exclude_investments,
            dry_run=dry_run,
            require_approval=require_approval,
        )
    except SarasError as exc:
        return finish(EVENT, began, None, [], message=str(exc), failed=True, path=PATH)
    plan = review.plan
    markdown = publish_plan(plan, key="rebalance-plan")
    publish_plan_report(review.reports, key="rebalance-plan", complete=review.reported_all)
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
            requested_by=requested_by,
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
    results = execute_planned(plan, None if execution is None else execution.as_settings_kwargs())
    publish_execution_report(plan)
    return finish(EVENT, began, plan, results, path=PATH)
