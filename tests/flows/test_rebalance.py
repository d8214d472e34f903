"""Rebalancing, investing and exiting as whole flows under Prefect's harness (paper broker)."""

from __future__ import annotations

import threading
import uuid
from decimal import Decimal
from typing import Any

import pytest
from prefect.flow_runs import resume_flow_run
from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session

from flows.execution import execute_run as execute_run_flow
from flows.investments import exit_smallcase, invest_in_smallcase
from flows.rebalance import rebalance_smallcase
from models import (
    AuditLog,
    PortfolioHolding,
    Smallcase,
    SmallcaseConstituent,
    SmallcaseExecutionOrder,
    SmallcaseExecutionRun,
    TradingTransaction,
    UserBrokerConnection,
    UserSmallcaseInvestment,
)
from saras.brokers.paper import PaperBroker
from saras.services.brokers import open_broker
from tests.support.flows import when_paused

FAST = {"poll_interval": 0.01, "deadline_seconds": 10, "retry_backoff": 0.01}
NEW_US = [
    {"symbol": "AAPL", "exchange": "NASDAQ", "weight": "30", "rationale": "a"},
    {"symbol": "MSFT", "exchange": "NASDAQ", "weight": "30", "rationale": "b"},
    {"symbol": "NVDA", "exchange": "NASDAQ", "weight": "25", "rationale": "c"},
    {"symbol": "GOOGL", "exchange": "NASDAQ", "weight": "15", "rationale": "d"},
]


def _result(state: Any) -> dict[str, Any]:
    return state.result(raise_on_failure=False)


def _paper_book(engine: Engine, email: str) -> dict[str, Decimal]:
    from models import User

    with Session(engine) as session:
        connection = session.scalars(
            select(UserBrokerConnection).join(User).where(User.email == email)
        ).one()
        broker = open_broker(engine, connection)
        assert isinstance(broker, PaperBroker)
        return {p.symbol: p.quantity for p in broker.get_positions()}


def _ledger(engine: Engine, email: str) -> dict[str, Decimal]:
    from models import Asset, Portfolio, User

    with Session(engine) as session:
        rows = session.execute(
            select(Asset.symbol, PortfolioHolding.quantity)
            .join(Portfolio, Portfolio.id == PortfolioHolding.portfolio_id)
            .join(User, User.id == Portfolio.user_id)
            .join(Asset, Asset.id == PortfolioHolding.asset_id)
            .where(User.email == email, PortfolioHolding.quantity > 0)
        ).all()
    return {s: Decimal(str(q)).quantize(Decimal("0.000000001")) for s, q in rows}


def _assert_ledger_is_the_book(engine: Engine, email: str) -> None:
    book = {
        s: q.quantize(Decimal("0.000000001")) for s, q in _paper_book(engine, email).items() if q
    }
    assert _ledger(engine, email) == book
    with Session(engine) as session:
        sums = dict(
            session.execute(
                select(TradingTransaction.asset_id, func.sum(TradingTransaction.quantity)).group_by(
                    TradingTransaction.asset_id
                )
            ).all()
        )
        assert sums  # fills were recorded
        unsettled = session.scalar(
            select(func.count())
            .select_from(SmallcaseExecutionOrder)
            .where(SmallcaseExecutionOrder.status.in_(["unknown", "submitting"]))
        )
    assert unsettled == 0


def test_invest_rebalance_and_exit_on_paper(platform: Engine) -> None:
    state = invest_in_smallcase(
        "asha@example.com", "US Tech Leaders", "10000", execution=FAST, return_state=True
    )
    assert state.is_completed(), state.message
    state = invest_in_smallcase(
        "ravi@example.in", "India Bluechips", "500000", execution=FAST, return_state=True
    )
    assert state.is_completed(), state.message
    _assert_ledger_is_the_book(platform, "asha@example.com")
    _assert_ledger_is_the_book(platform, "ravi@example.in")
    ravi = _ledger(platform, "ravi@example.in")
    assert all(q == q.to_integral_value() for q in ravi.values())  # whole shares in India

    state = rebalance_smallcase(
        "US Tech Leaders",
        constituents=NEW_US,
        require_approval=False,
        execution=FAST,
        return_state=True,
    )
    data = _result(state)
    assert state.is_completed(), state.message
    assert data["plan"]["summary"]["investments_changed"] == 1
    assert "AMZN" not in _ledger(platform, "asha@example.com")  # dropped constituent sold
    _assert_ledger_is_the_book(platform, "asha@example.com")
    with Session(platform) as session:
        sc = session.scalars(select(Smallcase).where(Smallcase.name == "US Tech Leaders")).one()
        previous = sc.metadata_["compositions"][-1]["constituents"]
        assert {c["symbol"] for c in previous} == {"AAPL", "MSFT", "NVDA", "GOOGL", "AMZN"}
        audits = session.scalars(select(AuditLog.event_type)).all()
    assert "flow.rebalance_smallcase" in audits and "flow.invest_in_smallcase" in audits

    # a second invest is a top-up; then exit closes the investment and sells everything
    state = invest_in_smallcase(
        "asha@example.com", "US Tech Leaders", "1000", execution=FAST, return_state=True
    )
    assert _result(state)["plan"]["summary"]["run_type"] == "topup"
    state = exit_smallcase("asha@example.com", "US Tech Leaders", execution=FAST, return_state=True)
    assert state.is_completed(), state.message
    assert _ledger(platform, "asha@example.com") == {}
    with Session(platform) as session:
        inv = session.scalars(
            select(UserSmallcaseInvestment)
            .join(Smallcase)
            .where(Smallcase.name == "US Tech Leaders")
        ).one()
        assert inv.status == "closed" and inv.closed_at is not None


def test_dry_run_and_bad_input_change_nothing(platform: Engine) -> None:
    invest_in_smallcase("asha@example.com", "US Tech Leaders", "10000", execution=FAST)
    with Session(platform) as session:
        runs_before = session.scalar(select(func.count()).select_from(SmallcaseExecutionRun))
        weights_before = sorted(
            session.scalars(select(SmallcaseConstituent.weight_percentage)).all()
        )

    state = rebalance_smallcase(
        "US Tech Leaders", constituents=NEW_US, dry_run=True, return_state=True
    )
    data = _result(state)
    assert state.is_completed() and data["plan"]["summary"]["orders"] > 0

    bad = [
        {"symbol": "AAPL", "exchange": "NASDAQ", "weight": "60"},
        {"symbol": "MSFT", "exchange": "NASDAQ", "weight": "30"},
    ]
    state = rebalance_smallcase("US Tech Leaders", constituents=bad, return_state=True)
    assert state.is_failed() and "weights sum to 90" in state.message
    state = rebalance_smallcase(
        "US Tech Leaders",
        constituents=[{"symbol": "NOPE", "exchange": "NASDAQ", "weight": "100"}],
        return_state=True,
    )
    assert state.is_failed() and "unknown symbol 'NOPE'" in state.message
    state = rebalance_smallcase("No Such Smallcase", return_state=True)
    assert state.is_failed() and "no smallcase" in state.message

    with Session(platform) as session:
        assert (
            session.scalar(select(func.count()).select_from(SmallcaseExecutionRun)) == runs_before
        )
        assert (
            sorted(session.scalars(select(SmallcaseConstituent.weight_percentage)).all())
            == weights_before
        )


def test_stale_prices_stop_the_plan(platform: Engine) -> None:
    from datetime import timedelta

    from models import Asset, PriceHistory

    with platform.begin() as conn:
        aapl = conn.execute(select(Asset.id).where(Asset.symbol == "AAPL")).scalar_one()
        latest = conn.execute(select(func.max(PriceHistory.price_date))).scalar_one()
        conn.execute(
            PriceHistory.__table__.delete().where(
                PriceHistory.asset_id == aapl, PriceHistory.price_date > latest - timedelta(days=10)
            )
        )
    state = invest_in_smallcase(
        "asha@example.com", "US Tech Leaders", "10000", execution=FAST, return_state=True
    )
    assert state.is_failed() and "stale or missing prices" in state.message
    assert "AAPL (NASDAQ): latest close" in state.message


def _resume_when_paused(answer: dict[str, Any] | None) -> threading.Thread:
    """Answer the first paused flow run's form with ``answer`` (None: let it time out).

    Fields left out keep the form's initial data, as when an analyst just clicks approve. Only
    a run that pauses from now on is answered.
    """

    def answer_it(run_id: uuid.UUID) -> None:
        if answer is not None:
            resume_flow_run(run_id, run_input=answer)

    return when_paused(answer_it)


@pytest.mark.parametrize("decision", ["approve", "wrong_hash", "reject", "timeout"])
def test_approval_in_the_ui(platform: Engine, decision: str) -> None:
    invest_in_smallcase("asha@example.com", "US Tech Leaders", "10000", execution=FAST)
    answers: dict[str, dict[str, Any] | None] = {
        "approve": {"approve": True, "note": "looks right", "approver_email": "asha@example.com"},
        "wrong_hash": {"approve": True, "plan_hash": "0" * 64},
        "reject": {"approve": False, "note": "not today"},
        "timeout": None,
    }
    thread = _resume_when_paused(answers[decision])
    state = rebalance_smallcase(
        "US Tech Leaders",
        constituents=NEW_US,
        require_approval=True,
        approval_timeout_seconds=3 if decision == "timeout" else 60,
        approval_poll_seconds=1,
        execution=FAST,
        return_state=True,
    )
    thread.join(timeout=5)
    with Session(platform) as session:
        statuses = session.scalars(
            select(SmallcaseExecutionRun.status).where(
                SmallcaseExecutionRun.run_type == "rebalance"
            )
        ).all()
    if decision == "approve":
        assert state.is_completed(), state.message
        assert statuses == ["completed"]
        _assert_ledger_is_the_book(platform, "asha@example.com")
    else:
        assert state.is_failed()
        assert statuses == ["rejected"]
        expected = {
            "wrong_hash": "another plan",
            "reject": "rejected by the analyst",
            "timeout": "never resumed",  # the server fails a paused run that times out
        }[decision]
        assert expected in state.message


def test_execute_run_refuses_unapproved_and_altered_plans(platform: Engine) -> None:
    invest_in_smallcase("asha@example.com", "US Tech Leaders", "10000", execution=FAST)
    state = rebalance_smallcase(
        "US Tech Leaders",
        constituents=NEW_US,
        dry_run=False,
        require_approval=True,
        approval_timeout_seconds=1,
        approval_poll_seconds=1,
        return_state=True,
    )
    assert state.is_failed()  # nobody approved: rejected
    with Session(platform) as session:
        rejected = session.scalars(
            select(SmallcaseExecutionRun).where(SmallcaseExecutionRun.status == "rejected")
        ).one()
    state = execute_run_flow(str(rejected.id), return_state=True)
    assert state.is_failed() and "only approved runs are executed" in state.message

    # an approved run whose orders were altered afterwards is refused
    with platform.begin() as conn:
        conn.execute(
            update(SmallcaseExecutionRun)
            .where(SmallcaseExecutionRun.id == rejected.id)
            .values(
                status="approved",
                execution_plan={
                    **rejected.execution_plan,
                    "approved_hash": rejected.execution_plan["plan_hash"],
                },
            )
        )
        conn.execute(
            update(SmallcaseExecutionOrder)
            .where(SmallcaseExecutionOrder.execution_run_id == rejected.id)
            .values(quantity=SmallcaseExecutionOrder.quantity * 2, status="planned")
        )
    state = execute_run_flow(str(rejected.id), return_state=True)
    assert state.is_failed() and "do not match the approved plan" in state.message
    assert state.message.count("refusing") == 1


def test_two_triggers_of_one_run_one_is_refused(pg_flow_db: Engine) -> None:
    from saras.services.execution import RunRefused, execute_run, run_lock

    run_id = uuid.uuid4()
    with (
        run_lock(pg_flow_db, run_id),
        pytest.raises(RunRefused, match="being executed by another process"),
    ):
        execute_run(pg_flow_db, run_id)
