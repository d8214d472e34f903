"""Repair runs: finish what an execution run left undone, within bounds.

A run that ended ``partially_completed``, or ``failed`` for money reasons (orders unfilled at the
deadline, expired, or refused for cash or buying power), can be repaired: a new run of type
``repair`` for the same investment, planned with the ``repair`` rules of the planner (no drift
band, no minimum weight change: only legs still off target get orders, within the investment's
own cash, sells before buys). A run that failed because its connection failed, or whose orders
were all refused for another reason, is not repaired: trading again would fail the same way.

Bounds and links, stored in the runs' ``execution_plan``: every repair run carries
``repair_of`` (the original run's id) and ``repair_attempt`` (1, 2, ...). At most
``SARAS_REPAIR_MAX_ATTEMPTS`` repair runs exist per original run, whatever they ended with. A
repair is planned only while the original (or its latest repair) is the investment's latest run
and the investment is active: a later rebalance, invest or exit replaces the need.

Approval: like a rebalance, a repair run waits for an analyst's approval of its exact plan
(``awaiting_approval``), unless the policy flag ``SARAS_REPAIR_AUTO_APPROVE`` is on, in which
case it is planned ``approved`` (``approval: auto``) and executed at once. Auto-approval is off by
default: a repair places new orders at new prices, and the original approval covered the old
ones.

Two planners of one original never race: planning takes a lock keyed on the original run (the
same advisory-lock mechanism as execution), re-reads the investment's runs under it, and the
database's one-unfinished-run-per-investment index is the last word.

All coupling to the planner (``saras.services.rebalance``) is in the section "planner adapter"
below, so that a change of the planner's interface is adapted in one place.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, select, update
from sqlalchemy.orm import Session

from models import (
    Asset,
    Smallcase,
    SmallcaseExecutionOrder,
    SmallcaseExecutionRun,
    UserSmallcaseInvestment,
)
from models.base import utcnow
from saras.domain.enums import (
    UNFINISHED_RUN_STATUSES,
    InvestmentStatus,
    OrderStatus,
    RunStatus,
    RunType,
)
from saras.errors import SarasError
from saras.services.execution import RunRefused, run_lock
from saras.settings import get_settings

#: namespace of the lock ids that serialise repair planning per original run
_REPAIR_LOCK_NAMESPACE = uuid.UUID("5a7a5e11-0000-4000-8000-00000000e9a1")
#: words in a broker's refusal that mean "not enough money" (Alpaca, Kite, paper)
_MONEY_WORDS = ("insufficient", "buying power", "funds", "margin", "cash")


class RepairRefused(SarasError):
    """The run cannot be repaired now; the message says why."""


@dataclass(frozen=True)
class RepairOrder:
    """One order of a repair run, as shown for approval."""

    symbol: str
    exchange: str
    side: str
    quantity: str
    est_price: str


@dataclass(frozen=True)
class RepairPlan:
    """What a repair planned (or found already planned) for one original run."""

    original_run_id: str
    smallcase: str
    connection_id: str
    repair_run_id: str | None = None
    attempt: int = 0
    status: str | None = None  # the repair run's status; None: nothing to repair
    plan_hash: str = ""  # the approval hash of the plan (over its one run)
    orders: tuple[RepairOrder, ...] = ()
    message: str = ""
    problems: tuple[str, ...] = ()

    @property
    def run_ids(self) -> list[str]:
        """Return the repair run's id as a list (empty when nothing was planned)."""
        return [self.repair_run_id] if self.repair_run_id else []

    def as_outcome(self) -> dict[str, Any]:
        """Return the plan in the shape the shared approve-execute tasks take."""
        return {
            "summary": {
                "smallcase": self.smallcase,
                "run_type": RunType.REPAIR.value,
                "repair_of": self.original_run_id,
                "attempt": self.attempt,
                "orders": len(self.orders),
                "plan_hash": self.plan_hash,
                "problems": list(self.problems),
                "message": self.message,
            },
            "run_ids": self.run_ids,
            "plan_hash": self.plan_hash,
            "runs_by_connection": (
                {self.connection_id: self.run_ids} if self.repair_run_id else {}
            ),
        }


@dataclass(frozen=True)
class RepairCandidate:
    """A run maintenance may repair: the original and the run that ended last in its chain."""

    original_run_id: uuid.UUID
    latest_run_id: uuid.UUID
    latest_status: str
    attempts: int


@dataclass
class _Chain:
    """An investment's runs as repair planning sees them."""

    original: SmallcaseExecutionRun
    repairs: list[SmallcaseExecutionRun] = field(default_factory=list)
    latest: SmallcaseExecutionRun | None = None  # the investment's latest run
    unfinished: SmallcaseExecutionRun | None = None


# --- planner adapter: the only place that calls saras.services.rebalance ----------------------


@dataclass(frozen=True)
class _Planned:
    """The planner's answer for one investment, opaque outside this adapter."""

    run_id: uuid.UUID | None
    skipped: dict[str, list[str]]
    problems: list[str]
    plan: Any
    writes: Any


def _plan_investment(engine: Engine, smallcase: Smallcase, investment_id: uuid.UUID) -> _Planned:
    """Plan one investment with the planner's ``repair`` rules (nothing written).

    Raises the planner's own errors (stale prices: ``StalePricesError``, a ``SarasError``).
    """
    from saras.services import rebalance

    plan, writes = rebalance.plan_smallcase(
        engine, smallcase, run_type=RunType.REPAIR, investment_ids=[investment_id]
    )
    run_id = plan.runs[0].run_id if plan.runs else None
    return _Planned(run_id, dict(plan.skipped), list(plan.problems), plan, writes)


def _write_planned(conn: Connection, planned: _Planned, status: RunStatus) -> None:
    """Write a planned repair run and its orders in the caller's transaction."""
    from saras.services import rebalance

    rebalance.write_plan(conn, planned.plan, planned.writes, status=status)


def stale_price_problem(engine: Engine, run_id: uuid.UUID, now: datetime) -> str | None:
    """Return why a run's prices are too old to trade on now, or None when they are fresh."""
    from saras.services import rebalance

    with Session(engine) as session:
        assets = list(
            session.scalars(
                select(Asset)
                .join(SmallcaseExecutionOrder, SmallcaseExecutionOrder.asset_id == Asset.id)
                .where(SmallcaseExecutionOrder.execution_run_id == run_id)
                .distinct()
            )
        )
        prices = rebalance.latest_prices(session.connection(), [a.id for a in assets])
    try:
        rebalance.check_prices(assets, prices, now, 1)
    except rebalance.StalePricesError as exc:
        return str(exc).replace("nothing was planned: ", "")
    return None


def plan_hash_of(engine: Engine, run_ids: Sequence[uuid.UUID]) -> str:
    """Return the approval hash of runs as their orders are now."""
    from saras.services import rebalance

    return rebalance.recompute_plan_hash(engine, list(run_ids))


# --- eligibility ------------------------------------------------------------------------------


def _repair_of(run: SmallcaseExecutionRun) -> uuid.UUID | None:
    value = (run.execution_plan or {}).get("repair_of")
    return uuid.UUID(str(value)) if value else None


def failure_kind(session: Session, run: SmallcaseExecutionRun) -> str | None:
    """Return why a finished run is repairable (``unfilled`` or ``money``), or None if it is not.

    ``partially_completed``: some of it filled: ``unfilled``. ``failed``: repairable only for
    money reasons: an order unfilled (cancelled at the deadline, expired) or refused for cash or
    buying power; not when the run stopped on a connection failure, nor when every order was
    refused for another reason (an unknown or untradable symbol would be refused again).
    """
    status = RunStatus(run.status)
    if status is RunStatus.PARTIALLY_COMPLETED:
        return "unfilled"
    if status is not RunStatus.FAILED:
        return None
    if (run.execution_plan or {}).get("outcome_reason"):
        return None  # the executor records a reason only when the connection failed
    orders = session.execute(
        select(SmallcaseExecutionOrder.status, SmallcaseExecutionOrder.order_metadata).where(
            SmallcaseExecutionOrder.execution_run_id == run.id
        )
    ).all()
    for order_status, metadata in orders:
        if order_status in (OrderStatus.CANCELLED.value, OrderStatus.EXPIRED.value):
            return "money"
        reason = str((metadata or {}).get("status_reason", "")).lower()
        if order_status == OrderStatus.REJECTED.value and any(w in reason for w in _MONEY_WORDS):
            return "money"
    return None


def _load_chain(session: Session, run_id: uuid.UUID) -> _Chain:
    run = session.get(SmallcaseExecutionRun, run_id)
    if run is None:
        raise RepairRefused(f"no execution run {run_id}")
    original_id = _repair_of(run) or run.id
    runs = list(
        session.scalars(
            select(SmallcaseExecutionRun)
            .where(SmallcaseExecutionRun.investment_id == run.investment_id)
            .order_by(SmallcaseExecutionRun.created_at, SmallcaseExecutionRun.id)
        )
    )
    original = next((r for r in runs if r.id == original_id), None)
    if original is None:
        raise RepairRefused(f"run {run_id} names an original run {original_id} that does not exist")
    unfinished_values = {s.value for s in UNFINISHED_RUN_STATUSES}
    return _Chain(
        original=original,
        repairs=[r for r in runs if _repair_of(r) == original.id],
        latest=runs[-1],
        unfinished=next((r for r in runs if r.status in unfinished_values), None),
    )


def _existing(session: Session, chain: _Chain, engine: Engine, sc: Smallcase) -> RepairPlan:
    """Describe a repair run of this original that is already planned and not finished."""
    run = chain.unfinished
    assert run is not None
    rows = session.execute(
        select(
            Asset.symbol,
            Asset.exchange,
            SmallcaseExecutionOrder.side,
            SmallcaseExecutionOrder.quantity,
            SmallcaseExecutionOrder.price,
        )
        .join(Asset, Asset.id == SmallcaseExecutionOrder.asset_id)
        .where(SmallcaseExecutionOrder.execution_run_id == run.id)
        .order_by(SmallcaseExecutionOrder.side.desc(), Asset.symbol)
    ).all()
    return RepairPlan(
        original_run_id=str(chain.original.id),
        smallcase=sc.name,
        connection_id=str(run.broker_connection_id),
        repair_run_id=str(run.id),
        attempt=int((run.execution_plan or {}).get("repair_attempt", len(chain.repairs))),
        status=run.status,
        plan_hash=plan_hash_of(engine, [run.id]),
        orders=tuple(
            RepairOrder(s, e, side, _text(q), "" if p is None else _text(p))
            for s, e, side, q, p in rows
        ),
        message=f"repair run {run.id} (attempt of run {chain.original.id}) is already {run.status}",
    )


def _text(value: Any) -> str:
    return f"{Decimal(str(value)).normalize():f}"


# --- planning ---------------------------------------------------------------------------------


def plan_repair(
    engine: Engine,
    run_id: uuid.UUID | str,
    *,
    require_approval: bool,
    max_attempts: int | None = None,
) -> RepairPlan:
    """Plan the repair of a run (or return the repair already waiting); raise RepairRefused.

    ``run_id`` is the original run or one of its repair runs. With ``require_approval`` the new
    run waits for approval; without it, it is planned approved (``approval: auto``).
    """
    run_id = uuid.UUID(str(run_id))
    limit = get_settings().repair_max_attempts if max_attempts is None else max_attempts
    with Session(engine) as session:
        first = _load_chain(session, run_id)
    lock_id = uuid.uuid5(_REPAIR_LOCK_NAMESPACE, str(first.original.id))
    try:
        with run_lock(engine, lock_id):
            return _plan_locked(engine, run_id, require_approval=require_approval, limit=limit)
    except RunRefused:
        raise RepairRefused(
            f"a repair of run {first.original.id} is being planned by another process"
        ) from None


def _plan_locked(
    engine: Engine, run_id: uuid.UUID, *, require_approval: bool, limit: int
) -> RepairPlan:
    with Session(engine, expire_on_commit=False) as session:
        chain = _load_chain(session, run_id)
        original = chain.original
        investment = session.get_one(UserSmallcaseInvestment, original.investment_id)
        sc = session.get_one(Smallcase, investment.smallcase_id)
        if chain.unfinished is not None:
            if _repair_of(chain.unfinished) == original.id:
                return _existing(session, chain, engine, sc)
            raise RepairRefused(
                f"run {original.id} is not repaired: its investment has an unfinished "
                f"{chain.unfinished.run_type} run {chain.unfinished.id} ({chain.unfinished.status})"
            )
        latest = chain.latest
        assert latest is not None
        if latest.id != original.id and _repair_of(latest) != original.id:
            raise RepairRefused(
                f"run {original.id} is not repaired: a later {latest.run_type} run {latest.id} "
                "replaced it"
            )
        if original.run_type == RunType.EXIT.value:
            raise RepairRefused(
                f"run {original.id} is an exit: run the exit again to sell what is left"
            )
        if investment.status != InvestmentStatus.ACTIVE.value:
            raise RepairRefused(
                f"run {original.id} is not repaired: its investment is {investment.status}"
            )
        kind = failure_kind(session, latest)
        if kind is None:
            why = (latest.execution_plan or {}).get("outcome_reason")
            raise RepairRefused(
                f"run {latest.id} ended {latest.status}{f' ({why})' if why else ''}: "
                "nothing a repair can finish (only unfilled orders and money refusals are)"
            )
        attempts = len(chain.repairs)
        if attempts >= limit:
            raise RepairRefused(
                f"run {original.id} has had {attempts} repair run(s), the most allowed "
                f"(SARAS_REPAIR_MAX_ATTEMPTS={limit})"
            )
        connection_id = str(investment.broker_connection_id)
    attempt = attempts + 1
    status = RunStatus.AWAITING_APPROVAL if require_approval else RunStatus.APPROVED
    planned = _plan_investment(engine, sc, investment.id)
    problems = planned.problems
    new_id = planned.run_id
    if new_id is None:
        reasons = ", ".join(sorted(planned.skipped)) or "no order needed"
        return RepairPlan(
            original_run_id=str(original.id),
            smallcase=sc.name,
            connection_id=connection_id,
            attempt=attempts,
            message=f"nothing to repair for run {original.id}: every leg is on target "
            f"or cannot be traded ({reasons})",
            problems=tuple(problems),
        )
    with engine.begin() as conn:
        _write_planned(conn, planned, status)
        body = dict(
            conn.execute(
                select(SmallcaseExecutionRun.execution_plan).where(
                    SmallcaseExecutionRun.id == new_id
                )
            ).scalar_one()
            or {}
        )
        body.update(
            repair_of=str(original.id),
            repair_attempt=attempt,
            repair_reason=kind,
            repair_after=str(latest.id),
        )
        if not require_approval:
            body.update(
                approval_policy="SARAS_REPAIR_AUTO_APPROVE", approved_at=utcnow().isoformat()
            )
        result = conn.execute(
            update(SmallcaseExecutionRun)
            .where(SmallcaseExecutionRun.id == new_id, SmallcaseExecutionRun.status == status.value)
            .values(execution_plan=body)
        )
        if result.rowcount != 1:
            raise RepairRefused(f"repair run {new_id} changed while it was being written")
    with Session(engine) as session:
        chain = _load_chain(session, new_id)
        plan = _existing(session, chain, engine, sc)
    return RepairPlan(
        original_run_id=plan.original_run_id,
        smallcase=plan.smallcase,
        connection_id=plan.connection_id,
        repair_run_id=plan.repair_run_id,
        attempt=attempt,
        status=status.value,
        plan_hash=plan.plan_hash,
        orders=plan.orders,
        message=f"repair {attempt} of {limit} for run {original.id}: run {new_id}, "
        f"{len(plan.orders)} order(s), {status.value}",
        problems=tuple(problems),
    )


# --- what maintenance repairs -----------------------------------------------------------------


def repair_candidates(
    engine: Engine, now: datetime | None = None, *, max_attempts: int | None = None
) -> list[RepairCandidate]:
    """Return the partially completed runs maintenance should repair now.

    The investment's latest run ended ``partially_completed`` within the repair window, it is
    an original run or a repair of one, the investment is active, and the original has had
    fewer repairs than allowed.
    """
    settings = get_settings()
    now = now or utcnow()
    limit = settings.repair_max_attempts if max_attempts is None else max_attempts
    since = now - timedelta(hours=settings.repair_window_hours)
    run = SmallcaseExecutionRun
    out: list[RepairCandidate] = []
    with Session(engine) as session:
        recent = session.scalars(
            select(run)
            .join(UserSmallcaseInvestment, UserSmallcaseInvestment.id == run.investment_id)
            .where(
                run.status == RunStatus.PARTIALLY_COMPLETED.value,
                run.run_type != RunType.EXIT.value,
                run.completed_at >= since,
                UserSmallcaseInvestment.status == InvestmentStatus.ACTIVE.value,
            )
            .order_by(run.completed_at, run.id)
        ).all()
        for candidate in recent:
            chain = _load_chain(session, candidate.id)
            if chain.latest is None or chain.latest.id != candidate.id:
                continue  # a later run replaced it
            if len(chain.repairs) >= limit:
                continue
            out.append(
                RepairCandidate(
                    chain.original.id, candidate.id, candidate.status, len(chain.repairs)
                )
            )
    return out


def exhausted_repairs(engine: Engine, now: datetime | None = None) -> list[RepairCandidate]:
    """Return recent partially completed runs whose repairs are used up (stuck work)."""
    settings = get_settings()
    now = now or utcnow()
    since = now - timedelta(hours=settings.repair_window_hours)
    run = SmallcaseExecutionRun
    out: list[RepairCandidate] = []
    with Session(engine) as session:
        recent = session.scalars(
            select(run).where(
                run.status == RunStatus.PARTIALLY_COMPLETED.value, run.completed_at >= since
            )
        ).all()
        for candidate in recent:
            chain = _load_chain(session, candidate.id)
            latest = chain.latest
            if (
                latest is not None
                and latest.id == candidate.id
                and chain.repairs
                and len(chain.repairs) >= settings.repair_max_attempts
            ):
                out.append(
                    RepairCandidate(
                        chain.original.id, candidate.id, candidate.status, len(chain.repairs)
                    )
                )
    return out


__all__ = [
    "RepairCandidate",
    "RepairOrder",
    "RepairPlan",
    "RepairRefused",
    "exhausted_repairs",
    "failure_kind",
    "plan_hash_of",
    "plan_repair",
    "repair_candidates",
    "stale_price_problem",
]
