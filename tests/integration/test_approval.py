"""Who decided: the approver must be a Saras user, and not the requester under maker-checker."""

from __future__ import annotations

import pytest
from prefect.input import RunInput
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from models import AuditLog
from saras.services.approval import (
    TRIGGER_REQUESTER,
    ApprovalRefused,
    check_approver,
    record_decision,
)
from saras.settings import Settings
from tasks.approval import PlanDecision
from tests import factories


def test_approver_must_be_a_user(db: Session) -> None:
    analyst = factories.user(db, "analyst@example.com")
    conn = db.connection()
    approver = check_approver(conn, " Analyst@Example.com ")
    assert approver.user_id == analyst.id and approver.email == "analyst@example.com"
    with pytest.raises(ApprovalRefused, match=r"'stranger@example\.com' is not a Saras user"):
        check_approver(conn, "stranger@example.com")
    with pytest.raises(ApprovalRefused, match="approver_email: the approver's e-mail is required"):
        check_approver(conn, "  ")


def test_maker_checker(db: Session) -> None:
    maker = factories.user(db, "maker@example.com")
    factories.user(db, "checker@example.com")
    conn = db.connection()
    # off: the requester may approve their own run
    assert check_approver(conn, "maker@example.com", requested_by="maker@example.com")
    with pytest.raises(ApprovalRefused, match=r"maker@example\.com requested this run"):
        check_approver(
            conn, "maker@example.com", requested_by="MAKER@example.com", require_distinct=True
        )
    with pytest.raises(ApprovalRefused, match="requested this run"):
        check_approver(conn, "maker@example.com", requested_by=str(maker.id), require_distinct=True)
    with pytest.raises(ApprovalRefused, match="names no requester"):
        check_approver(conn, "checker@example.com", require_distinct=True)
    approver = check_approver(
        conn, "checker@example.com", requested_by="maker@example.com", require_distinct=True
    )
    assert approver.email == "checker@example.com"
    # a run a schedule started names the trigger: any Saras user may approve it
    assert check_approver(
        conn, "maker@example.com", requested_by=TRIGGER_REQUESTER, require_distinct=True
    )


def test_decision_is_audited_with_the_approver(db: Session) -> None:
    analyst = factories.user(db, "analyst@example.com")
    conn = db.connection()
    approver = check_approver(conn, "analyst@example.com")
    row_id = record_decision(conn, approved=True, approver=approver, flow_run_id=None)
    record_decision(conn, approved=False, approver=None, flow_run_id=None, reason="timed out")
    rows = {r.id: r for r in db.scalars(select(AuditLog))}
    assert rows[row_id].user_id == analyst.id and rows[row_id].event_type == "plan.approved"
    rejected = next(r for r in rows.values() if r.event_type == "plan.rejected")
    assert rejected.user_id is None and rejected.error_message == "timed out"


def test_setting_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().require_distinct_approver is False
    monkeypatch.setenv("SARAS_REQUIRE_DISTINCT_APPROVER", "true")
    assert Settings().require_distinct_approver is True


def test_decision_form_is_a_typed_run_input() -> None:
    assert issubclass(PlanDecision, RunInput)
    schema = PlanDecision.model_json_schema()
    for name in ("approve", "plan_hash", "approver_email", "note"):
        assert schema["properties"][name]["description"]
    prefilled = PlanDecision.with_initial_data(plan_hash="abc")
    assert prefilled.model_fields["plan_hash"].default == "abc"
    decision = PlanDecision(approve=True, plan_hash="abc", approver_email=" A@B.com ")
    assert decision.approver_email == "a@b.com"
    with pytest.raises(ValidationError, match="approver_email"):
        PlanDecision(approver_email="not an email")
