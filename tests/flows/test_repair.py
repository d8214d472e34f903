"""The repair flow under Prefect's harness: bounded, approved like a rebalance, money only."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest
from prefect.flow_runs import resume_flow_run
from sqlalchemy import Engine, update

from flows.maintenance import maintain
from flows.repair import repair_run
from models import SmallcaseExecutionRun
from saras.services import rebalance
from saras.services import repair as repair_service
from tests.flows.test_maintenance import (
    ASHA,
    FAST,
    SHORT,
    US,
    assert_ledger_is_the_book,
    only_run,
    order_statuses,
    partially_completed_invest,
    plan_of,
    platform,
    runs,
    set_env,
    set_paper,
)
from tests.support.flows import when_paused

__all__ = ["platform"]  # the fixture, shared with the maintenance tests


def approve_when_paused(answer: dict[str, Any]) -> threading.Thread:
    """Answer the form of the next flow run to pause as the analyst does in the UI."""
    return when_paused(lambda run_id: resume_flow_run(run_id, run_input=answer))


def test_an_approved_repair_finishes_what_the_run_left_unfilled(platform: Engine) -> None:
    original = partially_completed_invest(platform)
    unfilled = {o for o in order_statuses(platform, original.id)}
    assert unfilled == {"cancelled"}  # half of every order filled, the rest cancelled
    set_paper(platform, ASHA, fill_mode="immediate")  # the account fills in full again

    thread = approve_when_paused({"approve": True, "note": "finish it", "approver_email": ASHA})
    state = repair_run(
        str(original.id),
        require_approval=True,
        approval_timeout_seconds=60,
        approval_poll_seconds=1,
        execution=FAST,
        return_state=True,
    )
    thread.join(timeout=5)
    assert state.is_completed(), state.message
    repair = only_run(platform, run_type="repair")
    assert repair.status == "completed"
    plan = plan_of(repair)
    assert plan["repair_of"] == str(original.id) and plan["repair_attempt"] == 1
    assert plan["approved_hash"] == plan["plan_hash"] and plan["approval_note"] == "finish it"
    assert set(order_statuses(platform, repair.id)) == {"filled"}
    assert_ledger_is_the_book(platform, ASHA)

    # the job is done: nothing is left to repair, and asking again changes nothing
    state = repair_run(str(original.id), require_approval=False, return_state=True)
    assert state.is_failed() and "ended completed: nothing a repair can finish" in str(
        state.message
    )
    assert len(runs(platform, run_type="repair")) == 1


def test_repairs_are_bounded_per_original_run(
    platform: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_env(monkeypatch, repair_max_attempts="1")
    original = partially_completed_invest(platform)  # the account keeps filling half
    state = repair_run(str(original.id), require_approval=False, execution=SHORT, return_state=True)
    assert only_run(platform, run_type="repair").status == "partially_completed"
    assert plan_of(only_run(platform, run_type="repair"))["approval"] == "auto"

    for run_id in (original.id, only_run(platform, run_type="repair").id):
        state = repair_run(str(run_id), require_approval=False, return_state=True)
        assert state.is_failed()
        assert "has had 1 repair run(s), the most allowed" in str(state.message)
    assert len(runs(platform, run_type="repair")) == 1


def test_a_failed_run_is_repaired_for_money_not_for_its_connection(platform: Engine) -> None:
    original = partially_completed_invest(platform)
    with platform.begin() as conn:  # as the executor leaves a run whose broker refused the keys
        conn.execute(
            update(SmallcaseExecutionRun)
            .where(SmallcaseExecutionRun.id == original.id)
            .values(
                status="failed",
                execution_plan={
                    **plan_of(original),
                    "outcome_reason": "the paper connection 'paper_1' failed: unauthorized",
                },
            )
        )
    state = repair_run(str(original.id), require_approval=False, return_state=True)
    assert state.is_failed() and "nothing a repair can finish" in str(state.message)
    assert "unauthorized" in str(state.message)
    assert runs(platform, run_type="repair") == []

    # failed for money instead (its orders were cancelled unfilled at the deadline): repaired
    with platform.begin() as conn:
        conn.execute(
            update(SmallcaseExecutionRun)
            .where(SmallcaseExecutionRun.id == original.id)
            .values(execution_plan=plan_of(original))
        )
    set_paper(platform, ASHA, fill_mode="immediate")
    state = repair_run(str(original.id), require_approval=False, execution=FAST, return_state=True)
    assert state.is_completed(), state.message
    assert only_run(platform, run_type="repair").status == "completed"
    assert_ledger_is_the_book(platform, ASHA)


def test_the_repair_flow_shows_the_repair_maintenance_left_waiting(
    platform: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_env(monkeypatch, repair_auto_approve="false")
    original = partially_completed_invest(platform)
    maintain(execution=SHORT)
    waiting = only_run(platform, run_type="repair")
    assert waiting.status == "awaiting_approval"
    set_paper(platform, ASHA, fill_mode="immediate")

    thread = approve_when_paused({"approve": True, "approver_email": ASHA})
    state = repair_run(
        str(original.id), approval_timeout_seconds=60, approval_poll_seconds=1, return_state=True
    )
    thread.join(timeout=5)
    assert state.is_completed(), state.message
    repaired = only_run(platform, run_type="repair")  # the same run, approved and executed
    assert repaired.id == waiting.id and repaired.status == "completed"
    assert_ledger_is_the_book(platform, ASHA)


def test_a_plan_made_while_the_repair_waited_for_the_planning_lock_is_not_replaced(
    platform: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = partially_completed_invest(platform)
    check_connection = repair_service._unusable_connections

    def a_rebalance_plans_first(
        engine: Engine, smallcase_id: uuid.UUID, investment_id: uuid.UUID
    ) -> dict[uuid.UUID, str]:
        # between the repair's first look and its planning lock, an analyst plans a rebalance
        plan = rebalance.plan_and_write(
            engine,
            US,
            policy=rebalance.parse_policy({"drift_band_pct": "0", "min_weight_change_pct": "0"}),
            require_approval=True,
        )
        assert plan.runs, plan.skipped
        return check_connection(engine, smallcase_id, investment_id)

    monkeypatch.setattr(repair_service, "_unusable_connections", a_rebalance_plans_first)
    with pytest.raises(repair_service.RepairRefused, match="unfinished rebalance run"):
        repair_service.plan_repair(platform, original.id, require_approval=False)
    assert only_run(platform, run_type="rebalance").status == "awaiting_approval"
    assert runs(platform, run_type="repair") == []
