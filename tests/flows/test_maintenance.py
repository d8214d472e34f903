"""The maintenance flow under Prefect's harness, on the demo platform with the paper broker.

Each situation is produced the way production produces it: an execution process SIGKILLed in the
middle of a run, an invest that met a closed market, a paper account that fills only half of
each order. Time passing is the one thing set by hand (an approval's ``updated_at`` moved back).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from sqlalchemy import Engine, delete, func, select, update
from sqlalchemy.orm import Session

from flows.investments import invest_in_smallcase
from flows.maintenance import STUCK_KEY, maintain
from models import (
    Asset,
    Portfolio,
    PortfolioHolding,
    PriceHistory,
    SmallcaseExecutionOrder,
    SmallcaseExecutionRun,
    User,
    UserBrokerConnection,
    UserSession,
    UserSmallcaseInvestment,
)
from saras.brokers.paper import PaperBroker, ensure_paper_schema, paper_fills, paper_orders
from saras.services.brokers import mark_connection, open_broker
from saras.services.execution import ExecutionSettings, run_lock
from saras.services.maintenance import RunAction, lock_is_free, review_approved
from saras.settings import get_settings

REPO = Path(__file__).resolve().parents[2]
FAST = {"poll_interval": 0.01, "deadline_seconds": 10, "retry_backoff": 0.01}
#: a short deadline: what a half-filling paper account leaves unfilled is cancelled quickly
SHORT = {"poll_interval": 0.01, "deadline_seconds": 0.5, "retry_backoff": 0.01}
ASHA = "asha@example.com"
US = "US Tech Leaders"

KILLER = """
import os, signal, sys, uuid
from saras.db import get_engine
from saras.services.execution import ExecutionSettings, execute_run

def hook(name):
    if name == sys.argv[2]:
        print("killed at", name, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

execute_run(
    get_engine(),
    uuid.UUID(sys.argv[1]),
    settings=ExecutionSettings(poll_interval=0.01, deadline_seconds=5, retry_backoff=0.01),
    checkpoint=hook,
)
print("not killed", flush=True)
"""


# --- the platform and helpers (shared with test_repair.py) ------------------------------------


@pytest.fixture
def platform(platform: Engine, monkeypatch: pytest.MonkeyPatch) -> Engine:
    """The demo platform (tests/flows/conftest.py); maintenance starts runs without grace."""
    monkeypatch.setenv("SARAS_APPROVAL_START_GRACE_SECONDS", "0")
    get_settings.cache_clear()
    return platform


def set_env(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    """Set SARAS_* settings for the flows (read lazily)."""
    for key, value in values.items():
        monkeypatch.setenv(f"SARAS_{key.upper()}", value)
    get_settings.cache_clear()


def connection_of(engine: Engine, email: str) -> UserBrokerConnection:
    with Session(engine, expire_on_commit=False) as session:
        return session.scalars(
            select(UserBrokerConnection).join(User).where(User.email == email)
        ).one()


def set_paper(engine: Engine, email: str, **settings: str) -> None:
    """Change a paper account's behaviour (``paper_*`` connection metadata)."""
    connection = connection_of(engine, email)
    metadata = dict(connection.connection_metadata or {})
    metadata.update({f"paper_{k}": v for k, v in settings.items()})
    with engine.begin() as conn:
        conn.execute(
            update(UserBrokerConnection)
            .where(UserBrokerConnection.id == connection.id)
            .values(connection_metadata=metadata)
        )


def runs(engine: Engine, **where: Any) -> list[SmallcaseExecutionRun]:
    with Session(engine, expire_on_commit=False) as session:
        query = select(SmallcaseExecutionRun).order_by(SmallcaseExecutionRun.created_at)
        for key, value in where.items():
            query = query.where(getattr(SmallcaseExecutionRun, key) == value)
        return list(session.scalars(query))


def only_run(engine: Engine, **where: Any) -> SmallcaseExecutionRun:
    (run,) = runs(engine, **where)
    return run


def order_statuses(engine: Engine, run_id: uuid.UUID) -> list[str]:
    with engine.connect() as conn:
        return sorted(
            conn.execute(
                select(SmallcaseExecutionOrder.status).where(
                    SmallcaseExecutionOrder.execution_run_id == run_id
                )
            ).scalars()
        )


def approved_invest(
    engine: Engine, email: str = ASHA, smallcase: str = US, amount: str = "10000"
) -> SmallcaseExecutionRun:
    """Invest while the paper market is closed: the run stays approved, nothing is sent."""
    set_paper(engine, email, market_open="never")
    state = invest_in_smallcase(email, smallcase, amount, execution=FAST, return_state=True)
    assert "market is closed" in str(result(state)["results"])
    return only_run(engine, run_type="invest", broker_connection_id=connection_of(engine, email).id)


def partially_completed_invest(engine: Engine) -> SmallcaseExecutionRun:
    """Invest through a paper account that fills half of each order and never the rest."""
    set_paper(engine, ASHA, fill_mode="partial", fill_delay_polls="0", partial_fill_ratio="0.5")
    invest_in_smallcase(ASHA, US, "10000", execution=SHORT)
    run = only_run(engine, run_type="invest")
    assert run.status == "partially_completed"
    return run


def plan_of(run: SmallcaseExecutionRun) -> dict[str, Any]:
    """Return a run's execution plan (every run has one)."""
    assert run.execution_plan is not None
    return run.execution_plan


def ledger(engine: Engine, email: str) -> dict[str, Decimal]:
    with Session(engine) as session:
        rows = session.execute(
            select(Asset.symbol, PortfolioHolding.quantity)
            .join(Portfolio, Portfolio.id == PortfolioHolding.portfolio_id)
            .join(User, User.id == Portfolio.user_id)
            .join(Asset, Asset.id == PortfolioHolding.asset_id)
            .where(User.email == email, PortfolioHolding.quantity > 0)
        ).all()
    return {s: Decimal(str(q)).quantize(Decimal("1e-9")) for s, q in rows}


def assert_ledger_is_the_book(engine: Engine, email: str) -> None:
    """Our holdings equal the paper broker's, and every order was placed at most once."""
    broker = open_broker(engine, connection_of(engine, email))
    assert isinstance(broker, PaperBroker)
    book = {p.symbol: p.quantity.quantize(Decimal("1e-9")) for p in broker.get_positions()}
    assert ledger(engine, email) == {s: q for s, q in book.items() if q}
    with engine.connect() as conn:
        ours = conn.execute(
            select(func.count())
            .select_from(SmallcaseExecutionOrder)
            .where(SmallcaseExecutionOrder.broker_order_id.is_not(None))
        ).scalar_one()
        theirs = conn.execute(select(func.count()).select_from(paper_orders)).scalar_one()
        in_doubt = conn.execute(
            select(func.count())
            .select_from(SmallcaseExecutionOrder)
            .where(SmallcaseExecutionOrder.status.in_(["unknown", "submitting"]))
        ).scalar_one()
    assert theirs == ours and in_doubt == 0


def result(state: Any) -> dict[str, Any]:
    return cast(dict[str, Any], state.result(raise_on_failure=False))


def actions(state: Any) -> dict[str, dict[str, str]]:
    return {a["run_id"]: a for a in result(state)["actions"]}


def artifact_rows(state: Any, key: str) -> list[dict[str, Any]]:
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])
            )
        )
    (artifact,) = [a for a in artifacts if a.key == key]
    data = artifact.data
    return cast(list[dict[str, Any]], json.loads(data) if isinstance(data, str) else data)


def age_approval(engine: Engine, run_id: uuid.UUID, hours: float) -> None:
    """Let time pass: the run was approved ``hours`` ago."""
    with engine.begin() as conn:
        conn.execute(
            update(SmallcaseExecutionRun)
            .where(SmallcaseExecutionRun.id == run_id)
            .values(updated_at=datetime.now(UTC) - timedelta(hours=hours))
        )


# --- interrupted executions -------------------------------------------------------------------


def kill_execution(run_id: uuid.UUID, checkpoint: str) -> None:
    """Execute the run in a child process that SIGKILLs itself at ``checkpoint``."""
    child = subprocess.run(
        [sys.executable, "-c", KILLER, str(run_id), checkpoint],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == -9, child.stdout + child.stderr
    assert f"killed at {checkpoint}" in child.stdout


def wait_for_lock_release(engine: Engine, run_id: uuid.UUID) -> None:
    """PostgreSQL frees a dead session's advisory lock once it notices the session is gone."""
    deadline = time.monotonic() + 15
    while not lock_is_free(engine, run_id):
        assert time.monotonic() < deadline, "the dead executor's lock was never released"
        time.sleep(0.05)


def test_a_killed_execution_is_resumed_by_maintenance_once(platform: Engine) -> None:
    run = approved_invest(platform)
    set_paper(platform, ASHA, market_open="always")
    # the paper broker has filled the first order; the dead process never recorded it
    kill_execution(run.id, "broker_answered")
    assert only_run(platform, run_type="invest").status == "executing"
    assert "submitting" in order_statuses(platform, run.id)
    wait_for_lock_release(platform, run.id)

    # while another executor holds the run's lock, maintenance leaves it alone
    with run_lock(platform, run.id):
        state = maintain(execution=FAST, return_state=True)
    assert actions(state)[str(run.id)]["action"] == "skipped"
    assert "lock held" in actions(state)[str(run.id)]["reason"]
    assert only_run(platform, run_type="invest").status == "executing"

    state = maintain(execution=FAST, return_state=True)
    assert state.is_completed(), state.message
    assert actions(state)[str(run.id)] == {
        "run_id": str(run.id),
        "action": "resumed",
        "status": "completed",
        "reason": "",
    }
    assert set(order_statuses(platform, run.id)) == {"filled"}
    assert_ledger_is_the_book(platform, ASHA)

    again = maintain(execution=FAST, return_state=True)  # nothing left to resume
    assert str(run.id) not in actions(again)
    assert_ledger_is_the_book(platform, ASHA)


# --- approved runs ----------------------------------------------------------------------------


def test_an_approved_run_waits_for_a_closed_market_then_expires_when_its_approval_is_old(
    platform: Engine,
) -> None:
    run = approved_invest(platform)

    state = maintain(execution=FAST, return_state=True)
    assert actions(state)[str(run.id)]["action"] == "waiting"
    assert "market closed" in actions(state)[str(run.id)]["reason"]
    assert only_run(platform, run_type="invest").status == "approved"

    age_approval(platform, run.id, hours=30)
    set_paper(platform, ASHA, market_open="always")  # the market opens, too late
    state = maintain(execution=FAST, return_state=True)
    action = actions(state)[str(run.id)]
    assert action["action"] == "expired" and action["status"] == "cancelled"
    expired = only_run(platform, run_type="invest")
    assert expired.status == "cancelled" and expired.completed_at is not None
    reason = plan_of(expired)["outcome_reason"]
    assert reason.startswith("expired: approved 30.0h ago, older than the 24.0h"), reason
    assert set(order_statuses(platform, run.id)) == {"cancelled"}
    ensure_paper_schema(platform)  # (absent when nothing ever reached the paper broker)
    with platform.connect() as conn:  # nothing ever reached the broker
        assert conn.execute(select(func.count()).select_from(paper_orders)).scalar_one() == 0

    with Session(platform) as session:  # the investment failed: the user may invest again
        assert session.get_one(UserSmallcaseInvestment, run.investment_id).status == "failed"

    state = maintain(execution=FAST, return_state=True)  # twice: nothing more happens
    assert str(run.id) not in actions(state)


def test_two_maintenance_runs_at_once_expire_a_run_once(platform: Engine) -> None:
    run = approved_invest(platform)
    age_approval(platform, run.id, hours=30)
    barrier = threading.Barrier(2)
    seen: list[list[RunAction]] = []

    def review() -> None:
        barrier.wait()
        seen.append(
            review_approved(
                platform,
                ExecutionSettings(poll_interval=0.01, deadline_seconds=10, retry_backoff=0.01),
            )
        )

    threads = [threading.Thread(target=review) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    done = [a for found in seen for a in found if a.run_id == str(run.id)]
    assert sorted(a.action for a in done if a.action != "skipped") == ["expired"], done
    assert only_run(platform, run_type="invest").status == "cancelled"


def test_an_approved_run_starts_when_its_market_opens_unless_its_prices_are_stale(
    platform: Engine,
) -> None:
    stale = approved_invest(platform)
    fresh = approved_invest(platform, "ravi@example.in", "India Bluechips", "500000")
    set_paper(platform, ASHA, market_open="always")
    set_paper(platform, "ravi@example.in", market_open="always")
    with platform.begin() as conn:  # AAPL's recent closes are missing
        aapl = conn.execute(select(Asset.id).where(Asset.symbol == "AAPL")).scalar_one()
        latest = conn.execute(select(func.max(PriceHistory.price_date))).scalar_one()
        conn.execute(
            delete(PriceHistory).where(
                PriceHistory.asset_id == aapl, PriceHistory.price_date > latest - timedelta(days=10)
            )
        )

    state = maintain(execution=FAST, return_state=True)
    action = actions(state)[str(stale.id)]
    assert action["action"] == "expired", action
    assert "prices are stale" in action["reason"] and "AAPL (NASDAQ)" in action["reason"]
    assert actions(state)[str(fresh.id)]["action"] == "started"
    statuses = {r.id: r.status for r in runs(platform, run_type="invest")}
    assert statuses == {stale.id: "cancelled", fresh.id: "completed"}
    assert_ledger_is_the_book(platform, "ravi@example.in")


# --- repairs ----------------------------------------------------------------------------------


def test_a_partially_completed_run_gets_bounded_repairs(
    platform: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_env(monkeypatch, repair_auto_approve="true", repair_max_attempts="2")
    original = partially_completed_invest(platform)

    for attempt in (1, 2):
        state = maintain(execution=SHORT, return_state=True)
        assert state.is_completed(), state.message
        (repair,) = result(state)["repairs"]
        assert repair["run_id"] == str(original.id), repair
        assert repair["status"] == "partially_completed"  # the account still fills half
        made = runs(platform, run_type="repair")
        assert len(made) == attempt
        plan = plan_of(made[-1])
        assert plan["repair_of"] == str(original.id) and plan["repair_attempt"] == attempt
        assert plan["approval"] == "auto"
    assert_ledger_is_the_book(platform, ASHA)

    state = maintain(execution=SHORT, return_state=True)  # bounded: no third repair
    assert result(state)["repairs"] == []
    assert len(runs(platform, run_type="repair")) == 2
    stuck = artifact_rows(state, STUCK_KEY)
    assert {"kind": "repairs_exhausted", "ref": str(original.id)}.items() <= {
        **next(r for r in stuck if r["kind"] == "repairs_exhausted")
    }.items()


def test_a_repair_that_needs_approval_is_planned_and_left_waiting(
    platform: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_env(monkeypatch, repair_auto_approve="false")
    original = partially_completed_invest(platform)
    state = maintain(execution=SHORT, return_state=True)
    (repair,) = result(state)["repairs"]
    assert repair["status"] == "awaiting_approval"
    assert f"start the repair flow for run {original.id}" in repair["detail"]
    waiting = only_run(platform, run_type="repair")
    assert waiting.status == "awaiting_approval"

    state = maintain(execution=SHORT, return_state=True)  # twice: still one repair run
    assert result(state)["repairs"] == []
    assert only_run(platform, run_type="repair").id == waiting.id


# --- purges and the stuck-work report ---------------------------------------------------------


def test_purges_delete_only_what_expired(platform: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch, paper_fill_retention_days="30")
    invest_in_smallcase(ASHA, US, "10000", execution=FAST)
    now = datetime.now(UTC)
    with Session(platform) as session, session.begin():
        user = session.scalars(select(User).where(User.email == ASHA)).one()
        for token, expires in (
            ("old", now - timedelta(hours=1)),
            ("live", now + timedelta(days=1)),
        ):
            session.add(UserSession(user_id=user.id, session_token=token, expires_at=expires))
    with platform.begin() as conn:
        fills = conn.execute(select(paper_fills.c.fill_id).order_by(paper_fills.c.fill_id)).all()
        assert len(fills) >= 2
        old = [f[0] for f in fills[:2]]
        conn.execute(
            update(paper_fills)
            .where(paper_fills.c.fill_id.in_(old))
            .values(filled_at=now - timedelta(days=31))
        )

    state = maintain(return_state=True)
    assert result(state)["purged"] == {"user_sessions": 1, "paper_fills": 2}
    with platform.connect() as conn:
        assert conn.execute(select(UserSession.session_token)).scalars().all() == ["live"]
        left = conn.execute(select(paper_fills.c.fill_id)).scalars().all()
    assert len(left) == len(fills) - 2 and not set(old) & set(left)
    assert_ledger_is_the_book(platform, ASHA)  # the book itself is untouched

    state = maintain(return_state=True)
    assert result(state)["purged"] == {"user_sessions": 0, "paper_fills": 0}


def test_the_stuck_work_artifact(platform: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch, repair_auto_approve="false", stuck_approval_hours="4")
    original = partially_completed_invest(platform)
    maintain(execution=SHORT)  # plans a repair waiting for approval
    waiting = only_run(platform, run_type="repair")
    age_approval(platform, waiting.id, hours=5)
    with platform.begin() as conn:  # an order left in doubt by a lost broker answer
        conn.execute(
            update(SmallcaseExecutionOrder)
            .where(SmallcaseExecutionOrder.execution_run_id == original.id)
            .values(status="unknown")
        )
    ravi = connection_of(platform, "ravi@example.in")
    mark_connection(platform, ravi.id, "expired", "Kite token expired at 06:00 IST")

    state = maintain(execution=SHORT, return_state=True)
    rows = {(r["kind"], r["ref"]): r for r in artifact_rows(state, STUCK_KEY)}
    assert ("approval_waiting", str(waiting.id)) in rows
    assert (
        "repair run awaiting approval for 5.0h"
        in rows["approval_waiting", str(waiting.id)]["detail"]
    )
    unknown = rows["orders_unknown", str(original.id)]["detail"]
    assert "in doubt" in unknown and "AAPL (NASDAQ)" in unknown
    expired = rows["connection_expired", str(ravi.id)]["detail"]
    assert ravi.alias in expired and "Kite token expired" in expired
    assert len(result(state)["stuck"]) == len(rows)
