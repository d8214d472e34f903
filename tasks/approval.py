"""The approval form of a plan and the check of who decided (maker-checker).

``PlanDecision`` is the ``RunInput`` a paused rebalance waits for: the Prefect UI renders its
fields, with their descriptions, as the approval form (the plan hash pre-filled with
``PlanDecision.with_initial_data(plan_hash=...)``). ``validate_decision`` checks the approver
is a Saras user (and, with ``SARAS_REQUIRE_DISTINCT_APPROVER``, not the requester);
``record_decision`` writes the decision to ``audit_logs`` with that user.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.input import RunInput
from pydantic import Field, field_validator

from saras.db import get_engine
from saras.services import approval as service
from saras.settings import get_settings
from tasks.common import current_flow_run_id


class PlanDecision(RunInput):
    """The analyst's decision on a plan, shown as a form in the Prefect UI."""

    approve: bool = Field(
        default=False, description="Tick to execute exactly this plan; leave unticked to reject."
    )
    plan_hash: str = Field(
        default="",
        description="The hash of the plan you reviewed (pre-filled); a changed plan is refused.",
    )
    approver_email: str = Field(
        default="",
        max_length=320,
        description="Your e-mail as a Saras user: the decision is recorded under it.",
    )
    note: str = Field(default="", max_length=2000, description="Why (kept in the audit trail).")

    @field_validator("approver_email")
    @classmethod
    def _email(cls, value: str) -> str:
        address = value.strip().lower()
        if address and ("@" not in address or any(ch.isspace() for ch in address)):
            raise ValueError(f"{value!r} is not an e-mail address")
        return address


@task(cache_policy=NO_CACHE)
def validate_decision(decision: PlanDecision, requested_by: str | None = None) -> str:
    """Return the approver's user id, or raise ApprovalRefused naming the rule broken."""
    with get_engine().connect() as conn:
        approver = service.check_approver(
            conn,
            decision.approver_email,
            requested_by=requested_by,
            require_distinct=get_settings().require_distinct_approver,
        )
    return str(approver.user_id)


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def record_decision(
    approved: bool, approver_email: str | None, reason: str | None = None, path: str | None = None
) -> None:
    """Write the decision to audit_logs with the approver (when known) as its user."""
    with get_engine().begin() as conn:
        approver = None
        if approver_email:
            user_id = service.find_user_id(conn, approver_email)
            if user_id is not None:
                approver = service.Approver(user_id, approver_email.strip().lower())
        service.record_decision(
            conn,
            approved=approved,
            approver=approver,
            flow_run_id=current_flow_run_id(),
            reason=reason,
            path=path,
        )
