"""Unattended upkeep: resume interrupted runs, start or expire approved ones, purge, report.

Everything here is idempotent and safe when two maintenance runs overlap:

- an ``executing`` run is resumed only when nobody holds its execution lock (the executor's own
  lock, see ``services.execution.run_lock``: a PostgreSQL session advisory lock, released by the
  database when the process holding it dies); the resume itself goes through ``execute_run``,
  which takes that lock, so of two maintenance runs one resumes and the other is refused;
- an ``approved`` run is started (through ``execute_run``, same lock) when its market is open,
  its approval is younger than ``SARAS_APPROVAL_MAX_AGE_HOURS`` and its prices are still fresh;
  otherwise, once its approval is too old or (market open) its prices are stale, it is expired:
  ``approved -> cancelled`` by the run state table's ``expire`` event, written under the run's
  execution lock and ``WHERE status = 'approved'``, with the reason kept in its plan. A run
  approved less than ``SARAS_APPROVAL_START_GRACE_SECONDS`` ago is left to the flow approving it;
- purges delete only what has expired (sessions past ``expires_at``, paper fills of finished
  paper orders older than ``SARAS_PAPER_FILL_RETENTION_DAYS``);
- the stuck-work report only reads.

When an approval happened: ``execution_plan.approved_at`` when the planner stamped it, else the
run's ``updated_at`` (an approved run is not written again until it starts).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Engine, delete, select, update
from sqlalchemy.orm import Session

from models import (
    Asset,
    SmallcaseExecutionOrder,
    SmallcaseExecutionRun,
    UserBrokerConnection,
    UserSession,
    UserSmallcaseInvestment,
)
from models.base import utcnow
from saras.brokers.base import MarketClock
from saras.brokers.errors import BrokerError
from saras.domain.enums import ConnectionStatus, InvestmentStatus, OrderStatus, RunStatus, RunType
from saras.domain.orders import RunEvent
from saras.errors import SarasError
from saras.repositories import runs as runs_repo
from saras.services.brokers import open_broker
from saras.services.execution import ExecutionSettings, RunRefused, execute_run, run_lock
from saras.services.repair import exhausted_repairs, stale_price_problem
from saras.settings import get_settings


@dataclass(frozen=True)
class RunAction:
    """What maintenance did with one run."""

    run_id: str
    action: str  # resumed | started | expired | waiting | skipped | error
    status: str  # the run's status afterwards
    reason: str = ""


@dataclass(frozen=True)
class PurgeReport:
    """Rows deleted by a purge."""

    user_sessions: int
    paper_fills: int


@dataclass(frozen=True)
class StuckItem:
    """Work that needs a person: an old approval, an order in doubt, a broken connection."""

    kind: str
    ref: str
    detail: str
    since: str


# --- interrupted executions -------------------------------------------------------------------


def interrupted_runs(engine: Engine) -> list[uuid.UUID]:
    """Return the ``executing`` runs (whether their process is alive is the lock's answer)."""
    with engine.connect() as conn:
        return list(
            conn.execute(
                select(SmallcaseExecutionRun.id)
                .where(SmallcaseExecutionRun.status == RunStatus.EXECUTING.value)
                .order_by(SmallcaseExecutionRun.started_at, SmallcaseExecutionRun.id)
            ).scalars()
        )


def lock_is_free(engine: Engine, run_id: uuid.UUID) -> bool:
    """Tell whether no process holds the run's execution lock right now."""
    try:
        with run_lock(engine, run_id):
            return True
    except RunRefused:
        return False


def _run_status(engine: Engine, run_id: uuid.UUID) -> str:
    with engine.connect() as conn:
        status = conn.execute(
            select(SmallcaseExecutionRun.status).where(SmallcaseExecutionRun.id == run_id)
        ).scalar()
    return str(status)


def _execute(
    engine: Engine, run_id: uuid.UUID, action: str, settings: ExecutionSettings
) -> RunAction:
    """Execute a run through the executor; a refusal or broker failure is reported, not raised."""
    try:
        outcome = execute_run(engine, run_id, settings=settings)
    except (SarasError, BrokerError) as exc:
        return RunAction(str(run_id), "skipped", _run_status(engine, run_id), str(exc))
    return RunAction(str(run_id), action, outcome.status, outcome.reason or "")


def resume_run(engine: Engine, run_id: uuid.UUID, settings: ExecutionSettings) -> RunAction:
    """Resume an ``executing`` run whose process is gone; leave one whose lock is held."""
    if not lock_is_free(engine, run_id):
        return RunAction(
            str(run_id), "skipped", RunStatus.EXECUTING.value, "its executor is alive (lock held)"
        )
    return _execute(engine, run_id, "resumed", settings)


# --- approved runs ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ApprovedRun:
    """An approved run as maintenance judges it."""

    run_id: uuid.UUID
    connection_id: uuid.UUID
    approved_at: datetime


def _approved_at(plan: dict[str, Any] | None, updated_at: datetime) -> datetime:
    stamp = (plan or {}).get("approved_at")
    if stamp:
        parsed = datetime.fromisoformat(str(stamp))
        if parsed.tzinfo is not None:
            return parsed
    return updated_at


def approved_runs(engine: Engine) -> list[ApprovedRun]:
    """Return every ``approved`` run with its connection and approval time."""
    run = SmallcaseExecutionRun
    with engine.connect() as conn:
        rows = conn.execute(
            select(run.id, run.broker_connection_id, run.execution_plan, run.updated_at)
            .where(run.status == RunStatus.APPROVED.value)
            .order_by(run.updated_at, run.id)
        ).all()
    return [ApprovedRun(r[0], r[1], _approved_at(r[2], r[3])) for r in rows]


def market_clock(engine: Engine, connection_id: uuid.UUID) -> MarketClock | str:
    """Return the connection's market clock, or why it cannot be read."""
    with Session(engine, expire_on_commit=False) as session:
        connection = session.get(UserBrokerConnection, connection_id)
    if connection is None:
        return f"connection {connection_id} does not exist"
    if connection.status != ConnectionStatus.ACTIVE.value:
        return f"connection {connection.alias} is {connection.status}"
    try:
        return open_broker(engine, connection).get_clock()
    except (SarasError, BrokerError) as exc:
        return f"connection {connection.alias}: market clock unavailable: {exc}"


def expire_run(engine: Engine, run_id: uuid.UUID, reason: str, now: datetime) -> RunAction:
    """Expire an approved run that was never started (under its execution lock).

    The status changes through the runs repository (the state table, ``WHERE status =
    'approved'``), which also cancels the run's never-sent orders.
    """
    try:
        with run_lock(engine, run_id), engine.begin() as conn:
            plan, run_type, investment_id = conn.execute(
                select(
                    SmallcaseExecutionRun.execution_plan,
                    SmallcaseExecutionRun.run_type,
                    SmallcaseExecutionRun.investment_id,
                ).where(SmallcaseExecutionRun.id == run_id)
            ).one()
            body = dict(plan or {})
            body.update(expired_at=now.isoformat(), outcome_reason=f"expired: {reason}")
            new_status = runs_repo.move_runs(
                conn,
                {run_id: RunStatus.APPROVED},
                RunEvent.EXPIRE,
                values={"completed_at": now, "execution_plan": body},
            )
            if run_type == RunType.INVEST.value:
                # as when an invest run fills nothing: the investment failed, and the user may
                # invest again
                conn.execute(
                    update(UserSmallcaseInvestment)
                    .where(
                        UserSmallcaseInvestment.id == investment_id,
                        UserSmallcaseInvestment.status == InvestmentStatus.PENDING.value,
                    )
                    .values(status=InvestmentStatus.FAILED.value)
                )
    except (RunRefused, runs_repo.RunsChanged) as exc:
        return RunAction(str(run_id), "skipped", _run_status(engine, run_id), str(exc))
    assert new_status is not None
    return RunAction(str(run_id), "expired", new_status.value, reason)


def review_approved(
    engine: Engine, settings: ExecutionSettings, now: datetime | None = None
) -> list[RunAction]:
    """Start the approved runs whose market is open, expire the stale ones, leave the rest."""
    config = get_settings()
    now = now or utcnow()
    max_age = timedelta(hours=config.approval_max_age_hours)
    grace = timedelta(seconds=config.approval_start_grace_seconds)
    clocks: dict[uuid.UUID, MarketClock | str] = {}
    actions: list[RunAction] = []
    for run in approved_runs(engine):
        rid, age = str(run.run_id), now - run.approved_at
        waiting = RunStatus.APPROVED.value
        if age > max_age:
            reason = (
                f"approved {_hours(age)} ago, older than the {_hours(max_age)} an approval "
                "holds (SARAS_APPROVAL_MAX_AGE_HOURS)"
            )
            actions.append(expire_run(engine, run.run_id, reason, now))
            continue
        if age < grace:
            actions.append(RunAction(rid, "waiting", waiting, "just approved: left to its flow"))
            continue
        if run.connection_id not in clocks:
            clocks[run.connection_id] = market_clock(engine, run.connection_id)
        clock = clocks[run.connection_id]
        if isinstance(clock, str):
            actions.append(RunAction(rid, "waiting", waiting, clock))
            continue
        if not clock.is_open:
            opens = f" (next open {clock.next_open.isoformat()})" if clock.next_open else ""
            actions.append(RunAction(rid, "waiting", waiting, "market closed" + opens))
            continue
        stale = stale_price_problem(engine, run.run_id, now)
        if stale is not None:
            actions.append(expire_run(engine, run.run_id, f"prices are stale: {stale}", now))
            continue
        actions.append(_execute(engine, run.run_id, "started", settings))
    return actions


def _hours(delta: timedelta) -> str:
    return f"{delta.total_seconds() / 3600:.1f}h"


# --- purges -----------------------------------------------------------------------------------


def purge_expired(engine: Engine, now: datetime | None = None) -> PurgeReport:
    """Delete expired user sessions and old fills of finished paper orders."""
    from saras.brokers.paper import paper_fills, paper_orders

    now = now or utcnow()
    cutoff = now - timedelta(days=get_settings().paper_fill_retention_days)
    with engine.begin() as conn:
        sessions = conn.execute(delete(UserSession).where(UserSession.expires_at < now)).rowcount
        fills = 0
        if sa.inspect(conn).has_table(paper_fills.name):
            finished = select(paper_orders.c.broker_order_id).where(
                paper_orders.c.status.in_(["filled", "cancelled", "rejected", "expired"])
            )
            fills = conn.execute(
                delete(paper_fills).where(
                    paper_fills.c.filled_at < cutoff, paper_fills.c.broker_order_id.in_(finished)
                )
            ).rowcount
    return PurgeReport(int(sessions or 0), int(fills or 0))


# --- stuck work -------------------------------------------------------------------------------


def stuck_work(engine: Engine, now: datetime | None = None) -> list[StuckItem]:
    """List what needs a person: old approvals waiting, orders in doubt, broken connections."""
    config = get_settings()
    now = now or utcnow()
    old = now - timedelta(hours=config.stuck_approval_hours)
    run = SmallcaseExecutionRun
    order = SmallcaseExecutionOrder
    items: list[StuckItem] = []
    with engine.connect() as conn:
        for rid, run_type, updated in conn.execute(
            select(run.id, run.run_type, run.updated_at)
            .where(run.status == RunStatus.AWAITING_APPROVAL.value, run.updated_at < old)
            .order_by(run.updated_at)
        ):
            items.append(
                StuckItem(
                    "approval_waiting",
                    str(rid),
                    f"{run_type} run awaiting approval for {_hours(now - updated)}",
                    updated.isoformat(),
                )
            )
        unknown: dict[uuid.UUID, list[str]] = defaultdict(list)
        since: dict[uuid.UUID, datetime] = {}
        for rid, symbol, exchange, updated in conn.execute(
            select(order.execution_run_id, Asset.symbol, Asset.exchange, order.updated_at)
            .join(Asset, Asset.id == order.asset_id)
            .where(order.status == OrderStatus.UNKNOWN.value)
            .order_by(order.execution_run_id, Asset.symbol)
        ):
            unknown[rid].append(f"{symbol} ({exchange})")
            since[rid] = min(since.get(rid, updated), updated)
        for rid, legs in unknown.items():
            items.append(
                StuckItem(
                    "orders_unknown",
                    str(rid),
                    f"{len(legs)} order(s) in doubt, looked up on resume: {', '.join(legs)}",
                    since[rid].isoformat(),
                )
            )
        for cid, alias, broker_type, status, metadata, updated in conn.execute(
            select(
                UserBrokerConnection.id,
                UserBrokerConnection.alias,
                UserBrokerConnection.broker_type,
                UserBrokerConnection.status,
                UserBrokerConnection.connection_metadata,
                UserBrokerConnection.updated_at,
            )
            .where(
                UserBrokerConnection.status.in_(
                    [ConnectionStatus.EXPIRED.value, ConnectionStatus.ERROR.value]
                )
            )
            .order_by(UserBrokerConnection.alias)
        ):
            why = str((metadata or {}).get("status_reason") or "")[:200]
            items.append(
                StuckItem(
                    f"connection_{status}",
                    str(cid),
                    f"{broker_type} connection {alias} is {status}" + (f": {why}" if why else ""),
                    str((metadata or {}).get("status_changed_at") or updated.isoformat()),
                )
            )
    for candidate in exhausted_repairs(engine, now):
        items.append(
            StuckItem(
                "repairs_exhausted",
                str(candidate.original_run_id),
                f"still partially completed after {candidate.attempts} repair run(s); "
                f"latest {candidate.latest_run_id}",
                "",
            )
        )
    return items


__all__ = [
    "ApprovedRun",
    "PurgeReport",
    "RunAction",
    "StuckItem",
    "approved_runs",
    "expire_run",
    "interrupted_runs",
    "lock_is_free",
    "market_clock",
    "purge_expired",
    "resume_run",
    "review_approved",
    "stuck_work",
]
