"""The rebalance flow as the analyst drives it: policy, report, exclusions, approver."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
)
from prefect.flow_runs import resume_flow_run
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from flows.investments import invest_in_smallcase
from flows.rebalance import rebalance_smallcase
from models import (
    Asset,
    AuditLog,
    ExecutionRunReport,
    ExecutionRunReportLeg,
    SmallcaseExecutionRun,
    User,
    UserSmallcaseInvestment,
)
from saras.secrets import get_secret_box
from saras.services import policy as policy_service
from saras.services import prices
from saras.services.demo import seed_demo
from tests.flows.conftest import when_paused

FAST = {"poll_interval": 0.01, "deadline_seconds": 10, "retry_backoff": 0.01}
US = "US Tech Leaders"
NEW_US = [
    {"symbol": "AAPL", "exchange": "NASDAQ", "weight": "30"},
    {"symbol": "MSFT", "exchange": "NASDAQ", "weight": "30"},
    {"symbol": "NVDA", "exchange": "NASDAQ", "weight": "25"},
    {"symbol": "GOOGL", "exchange": "NASDAQ", "weight": "15"},
]


@pytest.fixture
def platform(pg_flow_db: Engine) -> Engine:
    get_secret_box(generate=True)
    with Session(pg_flow_db) as session, session.begin():
        seed_demo(session)
    now = datetime.now(UTC)
    with Session(pg_flow_db) as session:
        items, _ = prices.plan_ingestion(session, now=now, source="simulated")
    prices.ingest_batch(pg_flow_db, items, now=now)
    state = invest_in_smallcase("asha@example.com", US, "10000", execution=FAST, return_state=True)
    assert state.is_completed(), state.message
    return pg_flow_db


def _artifacts(flow_run_id: uuid.UUID) -> dict[str, Any]:
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {a.key: a.data for a in found if a.key}


def _investment(engine: Engine) -> str:
    with Session(engine) as session:
        return str(session.scalars(select(UserSmallcaseInvestment.id)).one())


def test_the_plan_records_the_policy_it_used_and_is_reported(platform: Engine) -> None:
    with Session(platform) as session, session.begin():
        policy_service.set_policy(session, US, {"cooldown_days": 3, "fee_bps_estimate": "2"})
    state = rebalance_smallcase(
        US, constituents=NEW_US, dry_run=True, policy={"fee_bps_estimate": "5"}, return_state=True
    )
    assert state.is_completed(), state.message
    summary = state.result()["plan"]["summary"]
    assert summary["policy"]["cooldown_days"] == 3  # stored
    assert summary["policy"]["fee_bps_estimate"] == "5"  # the run's override
    assert summary["policy"]["min_trade_value"] == {"INR": "500", "USD": "1"}
    artifacts = _artifacts(state.state_details.flow_run_id)
    assert {"rebalance-plan-investments", "rebalance-plan-legs", "rebalance-plan-csv"} <= set(
        artifacts
    )
    investments = artifacts["rebalance-plan-investments"]
    assert _investment(platform) in investments and "asha@example.com" in investments
    assert "AMZN" in artifacts["rebalance-plan-legs"]  # the dropped constituent is sold
    assert "fee_bps_estimate=5" in artifacts["rebalance-plan-summary"]


def test_excluded_investments_are_left_out_and_unknown_ones_named(platform: Engine) -> None:
    investment = _investment(platform)
    state = rebalance_smallcase(
        US, constituents=NEW_US, dry_run=True, exclude_investments=[investment], return_state=True
    )
    assert state.is_completed(), state.message
    assert state.result()["plan"]["summary"]["investments_changed"] == 0
    stranger = str(uuid.uuid4())
    state = rebalance_smallcase(US, dry_run=True, exclude_investments=[stranger], return_state=True)
    assert state.is_failed() and f"exclude_investments: {stranger}" in (state.message or "")
    state = rebalance_smallcase(US, dry_run=True, exclude_investments=["x"], return_state=True)
    assert state.is_failed() and "exclude_investments" in (state.message or "")


@pytest.mark.parametrize("approver", ["asha@example.com", "stranger@example.com"])
def test_the_approver_is_a_saras_user_and_is_audited(platform: Engine, approver: str) -> None:
    when_paused(
        lambda run_id: resume_flow_run(
            run_id, run_input={"approve": True, "approver_email": approver}
        )
    )
    state = rebalance_smallcase(
        US,
        constituents=NEW_US,
        approval_timeout_seconds=60,
        approval_poll_seconds=1,
        execution=FAST,
        return_state=True,
    )
    with Session(platform) as session:
        statuses = session.scalars(
            select(SmallcaseExecutionRun.status).where(
                SmallcaseExecutionRun.run_type == "rebalance"
            )
        ).all()
        audits = session.execute(
            select(AuditLog.event_type, User.email, AuditLog.error_message)
            .outerjoin(User, User.id == AuditLog.user_id)
            .where(AuditLog.event_type.like("plan.%"))
        ).all()
    if approver == "asha@example.com":
        assert state.is_completed(), state.message
        assert statuses == ["completed"]
        assert [(a.event_type, a.email) for a in audits] == [("plan.approved", approver)]
        _assert_execution_report(platform, state.state_details.flow_run_id)
    else:
        assert state.is_failed()
        assert "'stranger@example.com' is not a Saras user" in (state.message or "")
        assert statuses == ["rejected"]
        assert [(a.event_type, a.email) for a in audits] == [("plan.rejected", None)]
        assert "not a Saras user" in (audits[0].error_message or "")


def _assert_execution_report(engine: Engine, flow_run_id: uuid.UUID) -> None:
    """The report is stored per run and per asset, and shown as artifacts."""
    with Session(engine) as session:
        report = session.scalars(select(ExecutionRunReport)).one()
        legs = session.execute(
            select(Asset.symbol, ExecutionRunReportLeg)
            .join(Asset, Asset.id == ExecutionRunReportLeg.asset_id)
            .where(ExecutionRunReportLeg.report_id == report.id)
        ).all()
    assert report.run_status == "completed" and report.currency == "USD"
    assert report.filled_value > 0 and report.drift_left_pct is not None
    by_symbol = {symbol: leg for symbol, leg in legs}
    assert by_symbol["AMZN"].side == "sell"  # the dropped constituent
    for leg in by_symbol.values():
        assert leg.filled_quantity == leg.planned_quantity  # the paper broker fills in full
        assert leg.planned_price is not None and leg.avg_fill_price is not None
        assert leg.slippage_bps is not None
    artifacts = _artifacts(flow_run_id)
    assert "AMZN" in artifacts["rebalance-execution"]
    assert "execution_run_reports" in artifacts["rebalance-execution-summary"]
