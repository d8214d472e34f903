"""The scheduled trigger evaluation: a smallcase is planned only when it is due."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.deployments.runner import RunnerDeployment
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from flows.evaluate_rebalances import evaluate_rebalances
from flows.investments import invest_in_smallcase
from flows.rebalance import rebalance_smallcase
from models import AuditLog
from saras.marketdata import calendars
from saras.services import policy as policy_service

FAST = {"poll_interval": 0.01, "deadline_seconds": 10, "retry_backoff": 0.01}
US = "US Tech Leaders"


@pytest.fixture(scope="module")
def rebalance_deployment() -> uuid.UUID:
    """A real ``rebalance`` deployment on the harness server (nothing runs its flow runs)."""
    deployment = rebalance_smallcase.to_deployment(name="rebalance")
    assert isinstance(deployment, RunnerDeployment)
    deployment_id = deployment.apply()
    assert isinstance(deployment_id, uuid.UUID)
    return deployment_id


def _rows(state: Any) -> dict[str, dict[str, str]]:
    return {row["smallcase"]: row for row in state.result(raise_on_failure=False)}


def _after_close(day: Any) -> datetime:
    return datetime.combine(day, time(21, 30), tzinfo=UTC)  # after 16:00 New York


def test_monthly_trigger_with_relative_band_is_planned_only_when_due(
    platform: Engine, rebalance_deployment: uuid.UUID
) -> None:
    state = invest_in_smallcase("asha@example.com", US, "10000", execution=FAST, return_state=True)
    assert state.is_completed(), state.message
    # the review falls on the day of the month of the last completed NYSE session
    today = datetime.now(UTC).date()
    recent = calendars.sessions("NYSE", today - timedelta(days=20), today - timedelta(days=1))
    review, before = recent[-1], recent[-2]
    with Session(platform) as session, session.begin():
        policy_service.set_policy(
            session,
            US,
            {
                "calendar_trigger": "monthly",
                "calendar_day": review.day,
                "drift_band_pct": None,
                "relative_drift_band_pct": "50",
            },
        )

    # the session before the review: within the relative band, not a review day
    state = evaluate_rebalances(smallcases=[US], as_of=_after_close(before), return_state=True)
    assert state.is_completed(), state.message
    row = _rows(state)[US]
    assert row["due"] == "no" and row["rebalance_run"] == "-", row["reasons"]
    assert "within the drift band" in row["reasons"]
    assert (state.message or "").startswith("0 of 1 smallcases due")

    # the review session: due, one rebalance run started on the deployment
    state = evaluate_rebalances(smallcases=[US], as_of=_after_close(review), return_state=True)
    assert state.is_completed(), state.message
    row = _rows(state)[US]
    assert row["due"] == "yes" and f"monthly review on {review}" in row["reasons"]
    run_id = uuid.UUID(row["rebalance_run"])
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(run_id)
    assert flow_run.deployment_id == rebalance_deployment
    assert flow_run.parameters == {"smallcase": US, "requested_by": "evaluate-rebalances"}
    assert flow_run.state is not None and flow_run.state.is_scheduled()

    # evaluating the same day again starts nothing new
    state = evaluate_rebalances(smallcases=[US], as_of=_after_close(review), return_state=True)
    assert _rows(state)[US]["rebalance_run"] == str(run_id)

    # report only: due, nothing started
    state = evaluate_rebalances(
        smallcases=[US], as_of=_after_close(review), start_runs=False, return_state=True
    )
    assert _rows(state)[US]["due"] == "yes" and _rows(state)[US]["rebalance_run"] == "-"

    with Session(platform) as session:
        audits = session.scalars(
            select(AuditLog).where(AuditLog.event_type == "flow.evaluate_rebalances")
        ).all()
    assert len(audits) == 4 and all(a.success for a in audits)


def test_every_active_smallcase_is_reported_and_a_missing_deployment_fails(
    platform: Engine,
) -> None:
    state = invest_in_smallcase("asha@example.com", US, "10000", execution=FAST, return_state=True)
    assert state.is_completed(), state.message
    # a relative band of 0.0001%: every invested smallcase has drifted beyond it
    with Session(platform) as session, session.begin():
        policy_service.set_policy(session, US, {"relative_drift_band_pct": "0.0001"})
    state = evaluate_rebalances(rebalance_deployment="no-such-flow/nothing", return_state=True)
    assert state.is_failed()
    rows = _rows(state)
    assert set(rows) == {US, "India Bluechips"}
    assert rows[US]["due"] == "yes" and "beyond the drift band" in rows[US]["reasons"]
    assert rows[US]["rebalance_run"].startswith("not started: no deployment")
    assert rows["India Bluechips"]["due"] == "no"
    # each market's schedule evaluates its own smallcases
    state = evaluate_rebalances(exchanges=["NSE", "BSE"], start_runs=False, return_state=True)
    assert set(_rows(state)) == {"India Bluechips"}
    state = evaluate_rebalances(exchanges=["LSE"], return_state=True)
    assert state.is_failed() and "LSE" in (state.message or "")


def test_an_unknown_smallcase_fails_naming_it(platform: Engine) -> None:
    state = evaluate_rebalances(smallcases=["Nope"], return_state=True)
    assert state.is_failed() and "Nope" in (state.message or "")
