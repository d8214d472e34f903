"""Who decided: an approver must be a Saras user, and (maker-checker) not the requester.

The approval form names the approver by e-mail; :func:`check_approver` resolves it to a user
or refuses with a reason the flow records. With ``SARAS_REQUIRE_DISTINCT_APPROVER=true`` the
approver must differ from the user who requested the run; a run that names no requester cannot
then be approved (there would be no maker to check against).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import Connection, select

from models import User
from saras.errors import InvalidInputError
from saras.repositories.audit import write_audit


class ApprovalRefused(InvalidInputError):
    """An approval that cannot be accepted; the message says why."""


@dataclass(frozen=True)
class Approver:
    """The Saras user who decided."""

    user_id: uuid.UUID
    email: str


def find_user_id(conn: Connection, email: str) -> uuid.UUID | None:
    """Return the id of the user with this e-mail (case-insensitive), or None."""
    value = conn.execute(select(User.id).where(User.email == email.strip().lower())).scalar()
    return None if value is None else uuid.UUID(str(value))


#: the requester a rebalance started by ``evaluate_rebalances`` names: no Saras user, so under
#: maker-checker any user may approve it
TRIGGER_REQUESTER = "evaluate-rebalances"


def check_approver(
    conn: Connection,
    email: str,
    *,
    requested_by: str | None = None,
    require_distinct: bool = False,
) -> Approver:
    """Return the approver, or raise ApprovalRefused naming the e-mail and the rule broken."""
    address = (email or "").strip().lower()
    if not address:
        raise ApprovalRefused("approver_email: the approver's e-mail is required")
    user_id = find_user_id(conn, address)
    if user_id is None:
        raise ApprovalRefused(f"approver_email: {address!r} is not a Saras user")
    if require_distinct:
        if not requested_by:
            raise ApprovalRefused(
                "maker-checker: the run names no requester, so no approver can be checked "
                "against it (SARAS_REQUIRE_DISTINCT_APPROVER is on)"
            )
        maker = requested_by.strip().lower()
        if maker == address or maker == str(user_id):
            raise ApprovalRefused(
                f"maker-checker: {address} requested this run and cannot also approve it"
            )
    return Approver(user_id, address)


def record_decision(
    conn: Connection,
    *,
    approved: bool,
    approver: Approver | None,
    flow_run_id: str | None,
    reason: str | None = None,
    path: str | None = None,
) -> uuid.UUID:
    """Write the decision to ``audit_logs`` with the approver as its user."""
    return write_audit(
        conn,
        event_type="plan.approved" if approved else "plan.rejected",
        success=approved,
        request_id=flow_run_id,
        user_id=approver.user_id if approver else None,
        error_message=None if approved else reason,
        path=path,
    )
