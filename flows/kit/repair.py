"""The plan-approve-execute sequence of a repair, shared by the repair and maintenance flows.

``repair_and_execute`` is a plain function that calls tasks, so it runs inside whichever flow
calls it (the repair flow, or the maintenance flow for each run it repairs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.kit.review import approve_or_reject, execute_planned
from saras.domain.enums import RunStatus
from saras.services import repair as service
from saras.settings import get_settings
from tasks.repair import plan_repair


@dataclass(frozen=True)
class RepairResult:
    """How one repair went: the plan, the execution results, and whether it failed."""

    plan: service.RepairPlan
    results: list[dict[str, Any]] = field(default_factory=list)
    message: str = ""
    failed: bool = False


def publish_repair(plan: service.RepairPlan, *, key: str = "repair-plan") -> str:
    """Show a repair plan as artifacts; return its markdown summary."""
    lines = [
        f"### Repair of run {plan.original_run_id} ({plan.smallcase})",
        "",
        f"- {plan.message}",
        f"- plan hash: `{plan.plan_hash}`" if plan.plan_hash else "- nothing planned",
    ]
    if plan.plan is not None and plan.plan.currency:
        summary = plan.plan.summary()
        lines.append(
            f"- estimated buys {summary['est_buy_value']} {plan.plan.currency}, "
            f"sells {summary['est_sell_value']} {plan.plan.currency}"
        )
    lines.extend(f"- problem: {p}" for p in plan.problems)
    markdown = "\n".join(lines)
    create_table_artifact(
        [
            {
                "symbol": o.symbol,
                "exchange": o.exchange,
                "side": o.side,
                "quantity": o.quantity,
                "est_price": o.est_price,
            }
            for o in plan.orders
        ]
        or [{"symbol": "-", "exchange": "-", "side": "-", "quantity": "0", "est_price": ""}],
        key=key,
        description=markdown,
    )
    create_markdown_artifact(markdown, key=f"{key}-summary")
    return markdown


def repair_and_execute(
    run_id: str,
    *,
    require_approval: bool | None,
    wait_for_approval: bool,
    approval_timeout_seconds: int,
    approval_poll_seconds: int,
    execution: dict[str, Any] | None,
) -> RepairResult:
    """Plan a run's repair, get it approved (or auto-approve it by policy) and execute it.

    ``require_approval`` None follows the policy flag ``SARAS_REPAIR_AUTO_APPROVE``. Without
    ``wait_for_approval`` a repair needing approval is left ``awaiting_approval`` (the repair
    flow started for the same run later shows it for approval). Raises RepairRefused.
    """
    if require_approval is None:
        require_approval = not get_settings().repair_auto_approve
    plan = plan_repair(run_id, require_approval)
    markdown = publish_repair(plan)
    if plan.plan is None or not plan.plan.runs:
        return RepairResult(plan, message=plan.message)
    if plan.status == RunStatus.AWAITING_APPROVAL.value:
        if not wait_for_approval:
            return RepairResult(
                plan,
                message=f"{plan.message}: start the repair flow for run {plan.original_run_id} "
                "to review and approve it",
            )
        approved, why = approve_or_reject(
            plan.plan,
            markdown,
            timeout_seconds=approval_timeout_seconds,
            poll_seconds=approval_poll_seconds,
        )
        if not approved:
            return RepairResult(plan, message=why, failed=True)
    elif plan.status not in (RunStatus.APPROVED.value, RunStatus.EXECUTING.value):
        return RepairResult(plan, message=plan.message)
    return RepairResult(plan, execute_planned(plan.plan, execution), plan.message)
