"""The review-approve-execute sequence shared by the rebalance and investment flows.

Plain functions that call tasks, so they run inside whichever flow calls them (flow files
cannot import each other reliably: Prefect loads each by path).
"""

from __future__ import annotations

import time
from typing import Any

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.states import Completed, Failed, State

from saras.db import concurrent_writes
from saras.domain.orders import RunEvent
from saras.domain.plan import Plan
from saras.errors import SarasError
from saras.repositories.runs import RunsChanged
from tasks.approval import PlanDecision, record_decision, validate_decision
from tasks.common import record_audit
from tasks.execution import execute_connection_runs
from tasks.prices import revalue_portfolios
from tasks.rebalance import decide, recompute_plan_hash

#: at most this many execution tasks per flow run: task runs never scale with investments
MAX_EXECUTION_TASKS = 32


class FlowFailed(SarasError):
    """A flow ended failed for a reason it knows (a rejection, bad input): the reason is the text.

    A failed flow's state carries this as its data, so Prefect turns it into the run's
    exception (a dict cannot be), and shows the reason as the state message.
    """


def publish_plan(plan: Plan, *, key: str) -> str:
    """Show the plan as artifacts; return its markdown summary."""
    summary = plan.summary()
    currency = f" {plan.currency}" if plan.currency else ""
    lines = [
        f"### Plan for {summary['smallcase']} ({summary['run_type']})",
        "",
        f"- investments changed: **{summary['investments_changed']}**, "
        f"skipped: **{summary['investments_skipped']}**",
        f"- orders: **{summary['orders']}**; estimated buys {summary['est_buy_value']}{currency}, "
        f"sells {summary['est_sell_value']}{currency}",
        f"- plan hash: `{summary['plan_hash']}`",
    ]
    for reason, count in summary["skipped_by_reason"].items():
        lines.append(f"- skipped because `{reason}`: {count}")
    if plan.policy is not None:
        used = ", ".join(f"{k}={v}" for k, v in plan.policy.items() if v not in (None, {}))
        lines.append(f"- policy used: {used}")
    if plan.composition is not None:
        weights = ", ".join(f"{c.asset} {c.weight.normalize():f}%" for c in plan.composition)
        lines.append(f"- new composition (applied only on approval): {weights}")
    markdown = "\n".join(lines)
    create_table_artifact(
        plan.summary_rows() or [{"symbol": "-", "exchange": "-", "side": "-", "orders": 0}],
        key=key,
        description=markdown,
    )
    create_markdown_artifact(markdown, key=f"{key}-summary")
    return markdown


def approve_or_reject(
    plan: Plan,
    markdown: str,
    *,
    timeout_seconds: int,
    poll_seconds: int,
    requested_by: str | None = None,
) -> tuple[bool, str]:
    """Pause for the analyst's decision; execution only follows an approval of this exact plan.

    The form (:class:`tasks.approval.PlanDecision`) asks for the approver's e-mail, which must
    be a Saras user (and, under maker-checker, not ``requested_by``); every decision, a
    timeout too, is written to ``audit_logs`` with the approver as its user. A plan that a
    newer one superseded (or that was decided elsewhere) ends in a rejection naming the
    reason: the state table refuses to move its runs.
    """
    try:
        decision = pause_flow_run(
            wait_for_input=PlanDecision.with_initial_data(
                description=markdown
                + "\n\nApprove to execute exactly this plan: tick *approve*, give your e-mail "
                "as a Saras user, and submit.",
                plan_hash=plan.plan_hash,
            ),
            timeout=timeout_seconds,
            poll_interval=poll_seconds,
        )
    except FlowPauseTimeout:
        record_decision(False, None, "approval timed out")
        return _refuse(plan, RunEvent.TIMEOUT, "approval timed out", "approval timed out")
    email = decision.approver_email or None
    if not decision.approve:
        note = decision.note or "rejected by the analyst"
        record_decision(False, email, note)
        return _refuse(plan, RunEvent.REJECT, note, "plan rejected by the analyst")
    if decision.plan_hash != plan.plan_hash:
        record_decision(False, email, "approved hash does not match the plan")
        return _refuse(
            plan,
            RunEvent.REJECT,
            "approved hash does not match the plan",
            "the approval named another plan: rejected",
        )
    try:
        validate_decision(decision, requested_by)
    except SarasError as exc:
        record_decision(False, email, f"approval refused: {exc}")
        return _refuse(
            plan, RunEvent.REJECT, f"approval refused: {exc}", f"approval refused: {exc}"
        )
    if recompute_plan_hash(plan) != plan.plan_hash:
        record_decision(False, email, "orders changed after planning")
        return _refuse(
            plan,
            RunEvent.REJECT,
            "orders changed after planning",
            "the orders changed after planning: rejected",
        )
    try:  # the note is the analyst's; who approved is in audit_logs
        decide(plan, RunEvent.APPROVE.value, note=decision.note or None)
    except SarasError as exc:
        record_decision(False, email, f"plan not approved: {exc}")
        return False, f"plan not approved: {exc}"
    record_decision(True, email, decision.note or None)
    return True, f"approved by {email}"


def _refuse(plan: Plan, event: RunEvent, note: str, reason: str) -> tuple[bool, str]:
    try:
        decide(plan, event.value, note=note)
    except RunsChanged as exc:
        return False, f"{reason}; {exc}"
    return False, reason


def execute_planned(plan: Plan, execution: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Execute the approved runs: connections in parallel, each connection's runs in turn."""
    groups: list[dict[str, list[str]]] = [{} for _ in range(MAX_EXECUTION_TASKS)]
    for i, (connection, runs) in enumerate(sorted(plan.runs_by_connection().items())):
        groups[i % MAX_EXECUTION_TASKS][connection] = runs
    groups = [g for g in groups if g]
    futures = []
    for i, group in enumerate(groups):
        label = f"{i + 1}-of-{len(groups)}"
        futures.append(execute_connection_runs.submit(group, label, execution))
        if not concurrent_writes():
            futures[-1].wait()
    results: list[dict[str, Any]] = []
    for future in futures:
        results.extend(future.result())
    revalue_portfolios()
    return results


#: how many distinct reasons a flow's final message names (the rest are in the results artifact)
SHOWN_REASONS = 3


def _not_done_message(results: list[dict[str, Any]], not_done: list[str]) -> str:
    """Say how many runs did not complete, and why (e.g. the live-trading gate's refusal)."""
    message = f"{len(not_done)} of {len(results)} runs did not complete: " + ", ".join(
        sorted(set(not_done))
    )
    reasons = sorted(
        {str(r["reason"]) for r in results if r["status"] != "completed" and r.get("reason")}
    )
    if reasons:
        message += " (" + "; ".join(reasons[:SHOWN_REASONS])
        more = len(reasons) - SHOWN_REASONS
        message += f"; {more} more reasons in the execution-results artifact)" if more > 0 else ")"
    return message


def finish(
    event_type: str,
    began: float,
    plan: Plan | None,
    results: list[dict[str, Any]],
    *,
    message: str | None = None,
    failed: bool = False,
    preview: bool = False,
    user_id: str | None = None,
    path: str,
) -> State:
    """Publish the execution results, write the audit row and return the flow's final state.

    A failed state carries its reason as its message and no data. A ``preview`` (dry run)
    with skipped investments ends ``Partially Completed`` with the plan as its data: nothing
    was meant to trade, so nothing failed.
    """
    logger = get_run_logger()
    if results:
        create_table_artifact(
            [
                {
                    "run_id": r["run_id"],
                    "status": r["status"],
                    "orders": ", ".join(f"{k}={v}" for k, v in sorted(r["orders"].items())),
                    "reason": r.get("reason") or "",
                }
                for r in results
            ],
            key="execution-results",
            description="Execution runs and their orders",
        )
    statuses = [r["status"] for r in results]
    not_done = [s for s in statuses if s != "completed"]
    if message is None and not_done:
        message = _not_done_message(results, not_done)
    problems = list(plan.problems) if plan is not None else []
    if problems:
        # investments skipped because their broker connection is unusable are not a success
        message = "; ".join([*problems, *([message] if message else [])])
        not_done = not_done or ["connection_unusable"]
        failed = failed or (not results and not preview)
    data = {"plan": plan.report() if plan is not None else None, "results": results}
    success = not failed and not not_done
    record_audit(
        event_type,
        success=success,
        duration_ms=(time.monotonic() - began) * 1000,
        error_message=None if success else message,
        user_id=user_id,
        path=path,
    )
    logger.info(message or "done")
    if failed:
        # the reason is the state's message (Prefect shows it, and turns it into the run's
        # exception); the plan itself is in the plan artifacts
        create_markdown_artifact(
            f"### {event_type} failed\n\n{message or 'failed'}", key="flow-outcome"
        )
        return Failed(message=message, data=FlowFailed(message or "failed"))
    if not_done:
        return Completed(name="Partially Completed", message=message, data=data)
    return Completed(message=message or f"{len(statuses)} runs completed", data=data)
