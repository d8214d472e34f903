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

Two planners of one original (or a repair and a rebalance of the same investment) never race:
the repair is planned in one transaction that first takes the planner's lock on the investment
(``repositories.runs.lock_planning``), then checks again, under it, that the run may still be
repaired, plans, writes the run through the run state table and stamps its ``repair_of`` and
``repair_attempt``: a repair run never exists without them. The slow broker check of the
connection happens before, outside the lock, as for any plan.

All coupling to the planner (``saras.services.rebalance``) is in the section "planner adapter"
below, so that a change of the planner's interface is adapted in one place. Approval and
execution take the repair as the planner's typed :class:`~saras.domain.plan.Plan`.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
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
from saras.domain.plan import AssetRef, AssetTotal, Plan, PlannedRun
from saras.domain.plan_hash import combined_plan_hash
from saras.errors import SarasError
from saras.repositories import runs as runs_repo
from saras.settings import get_settings

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
    """What a repair planned (or found already planned) for one original run.

    ``plan`` is the repair run as the planner's typed plan (its one run), which approval and
    execution take; None when nothing was planned.
    """

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
    plan: Plan | None = None

    @property
    def run_ids(self) -> list[str]:
        """Return the repair run's id as a list (empty when nothing was planned)."""
        return [self.repair_run_id] if self.repair_run_id else []

    def summary(self) -> dict[str, Any]:
        """Return the repair's headline (JSON values): what it repairs, which attempt, why."""
        return {
            "smallcase": self.smallcase,
            "run_type": RunType.REPAIR.value,
            "repair_of": self.original_run_id,
            "repair_run_id": self.repair_run_id,
            "attempt": self.attempt,
            "status": self.status,
            "orders": len(self.orders),
            "plan_hash": self.plan_hash,
            "problems": list(self.problems),
            "message": self.message,
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


@dataclass(frozen=True)
class _Eligible:
    """A run that may be repaired now, read as plain values."""

    original_id: uuid.UUID
    latest_id: uuid.UUID
    investment_id: uuid.UUID
    smallcase_id: uuid.UUID
    smallcase: str
    connection_id: uuid.UUID
    attempts: int
    kind: str


# --- planner adapter: the only place that calls saras.services.rebalance ----------------------


def _unusable_connections(
    engine: Engine, smallcase_id: uuid.UUID, investment_id: uuid.UUID
) -> dict[uuid.UUID, str]:
    """Ask the investment's broker whether its connection works (slow: call outside the lock)."""
    from saras.services import rebalance

    with engine.connect() as conn:
        investments = rebalance.load_investments(conn, smallcase_id, [investment_id])
    return rebalance.check_connections(engine, investments)


def _plan_and_write(
    conn: Connection,
    eligible: _Eligible,
    *,
    unusable: Mapping[uuid.UUID, str],
    auto_approve: bool,
) -> Plan:
    """Plan the investment with the planner's ``repair`` rules and write its run, if any.

    Runs in the caller's planning transaction, after ``lock_planning``. Raises the planner's
    own errors (stale prices: ``StalePricesError``, a ``SarasError``).
    """
    from saras.services import rebalance

    draft = rebalance.plan_smallcase(
        conn,
        eligible.smallcase_id,
        eligible.smallcase,
        run_type=RunType.REPAIR,
        investment_ids=[eligible.investment_id],
        unusable=unusable,
    )
    if draft.supersedes:
        # the eligibility check under the lock found no unfinished run: a repair never replaces
        # another plan (raising rolls the transaction back: nothing is written)
        raise RepairRefused(
            f"run {eligible.original_id} is not repaired: its investment has waiting runs "
            f"{', '.join(sorted(str(r) for r in draft.supersedes))}"
        )
    rebalance.write_plan(conn, draft, auto_approve=auto_approve)
    return draft.plan


def _plan_of_run(conn: Connection, run: SmallcaseExecutionRun, smallcase: Smallcase) -> Plan:
    """Return a repair run already written as the planner's typed plan (for approval)."""
    from saras.services import rebalance

    body = run.execution_plan or {}
    investment = conn.execute(
        select(UserSmallcaseInvestment.user_id).where(
            UserSmallcaseInvestment.id == run.investment_id
        )
    ).scalar_one()
    rows = conn.execute(
        select(
            Asset.symbol,
            Asset.exchange,
            SmallcaseExecutionOrder.side,
            SmallcaseExecutionOrder.quantity,
            SmallcaseExecutionOrder.price,
        )
        .join(Asset, Asset.id == SmallcaseExecutionOrder.asset_id)
        .where(SmallcaseExecutionOrder.execution_run_id == run.id)
    ).all()
    value: dict[str, Decimal] = defaultdict(Decimal)
    per_asset: dict[tuple[AssetRef, str], list[Decimal]] = {}
    for symbol, exchange, side, quantity, price in rows:
        qty = Decimal(str(quantity))
        est = qty * Decimal(str(price)) if price is not None else Decimal(0)
        value[side] += est
        total = per_asset.setdefault((AssetRef(symbol, exchange), side), [Decimal(0)] * 3)
        total[0] += qty
        total[1] += est
        total[2] += 1
    # the hash the run was planned with: approval compares the orders as they are now with it
    run_hash = body.get("plan_hash") or rebalance.current_run_hashes(conn, [run.id])[run.id]
    planned = PlannedRun(
        run_id=run.id,
        investment_id=run.investment_id,
        connection_id=run.broker_connection_id,
        user_id=uuid.UUID(str(investment)),
        order_count=len(rows),
        est_buy=value["buy"],
        est_sell=value["sell"],
        plan_hash=str(run_hash),
    )
    return Plan(
        smallcase_id=smallcase.id,
        smallcase_name=smallcase.name,
        run_type=RunType.REPAIR,
        currency=rebalance.smallcase_currency(conn, smallcase.id),
        runs=(planned,),
        totals=tuple(
            AssetTotal(ref, side, int(v[2]), v[0], v[1]) for (ref, side), v in per_asset.items()
        ),
        skipped={},
        order_count=len(rows),
        plan_hash=combined_plan_hash([planned.plan_hash]),
    )


def stale_price_problem(engine: Engine, run_id: uuid.UUID, now: datetime) -> str | None:
    """Return why a run's prices are too old to trade on now, or None when they are fresh."""
    from saras.services import rebalance

    with engine.connect() as conn:
        asset_ids = conn.execute(
            select(SmallcaseExecutionOrder.asset_id)
            .where(SmallcaseExecutionOrder.execution_run_id == run_id)
            .distinct()
        ).scalars()
        assets = rebalance.load_assets(conn, [uuid.UUID(str(a)) for a in asset_ids])
        prices = rebalance.latest_prices(conn, assets)
    try:
        rebalance.check_prices(list(assets.values()), prices, now, 1)
    except rebalance.StalePricesError as exc:
        return str(exc).replace("stale or missing prices, nothing was planned: ", "")
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


def _existing(session: Session, chain: _Chain, sc: Smallcase) -> RepairPlan:
    """Describe a repair run of this original that is already planned and not finished."""
    run = chain.unfinished
    assert run is not None
    conn = session.connection()
    rows = conn.execute(
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
    plan = _plan_of_run(conn, run, sc)
    return RepairPlan(
        original_run_id=str(chain.original.id),
        smallcase=sc.name,
        connection_id=str(run.broker_connection_id),
        repair_run_id=str(run.id),
        attempt=int((run.execution_plan or {}).get("repair_attempt", len(chain.repairs))),
        status=run.status,
        plan_hash=plan.plan_hash,
        orders=tuple(
            RepairOrder(s, e, side, _text(q), "" if p is None else _text(p))
            for s, e, side, q, p in rows
        ),
        message=f"repair run {run.id} (attempt of run {chain.original.id}) is already {run.status}",
        plan=plan,
    )


def _text(value: Any) -> str:
    return f"{Decimal(str(value)).normalize():f}"


def _eligible(session: Session, run_id: uuid.UUID, limit: int) -> _Eligible | RepairPlan:
    """Return what repairing the run takes, or the repair already waiting; raise RepairRefused."""
    chain = _load_chain(session, run_id)
    original = chain.original
    investment = session.get_one(UserSmallcaseInvestment, original.investment_id)
    sc = session.get_one(Smallcase, investment.smallcase_id)
    if chain.unfinished is not None:
        if _repair_of(chain.unfinished) == original.id:
            return _existing(session, chain, sc)
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
    return _Eligible(
        original_id=original.id,
        latest_id=latest.id,
        investment_id=investment.id,
        smallcase_id=sc.id,
        smallcase=sc.name,
        connection_id=investment.broker_connection_id,
        attempts=attempts,
        kind=kind,
    )


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
    # first without any lock: refuse early, and know whose connection to check
    with Session(engine) as session:
        first = _eligible(session, run_id, limit)
    if isinstance(first, RepairPlan):
        return first
    unusable = _unusable_connections(engine, first.smallcase_id, first.investment_id)
    with engine.begin() as conn:
        runs_repo.lock_planning(conn, first.smallcase_id, [first.investment_id])
        # under the lock: another planner (a repair, a rebalance) may have come first
        with Session(bind=conn) as session:
            eligible = _eligible(session, run_id, limit)
            if isinstance(eligible, RepairPlan):
                return eligible
        plan = _write_repair(conn, eligible, unusable, require_approval=require_approval)
    if not plan.runs:
        reasons = ", ".join(sorted(plan.skipped)) or "no order needed"
        return RepairPlan(
            original_run_id=str(eligible.original_id),
            smallcase=eligible.smallcase,
            connection_id=str(eligible.connection_id),
            attempt=eligible.attempts,
            message=f"nothing to repair for run {eligible.original_id}: every leg is on target "
            f"or cannot be traded ({reasons})",
            problems=plan.problems,
        )
    with Session(engine) as session:
        chain = _load_chain(session, plan.runs[0].run_id)
        sc = session.get_one(Smallcase, eligible.smallcase_id)
        written = _existing(session, chain, sc)
    attempt = eligible.attempts + 1
    return RepairPlan(
        original_run_id=written.original_run_id,
        smallcase=written.smallcase,
        connection_id=written.connection_id,
        repair_run_id=written.repair_run_id,
        attempt=attempt,
        status=written.status,
        plan_hash=plan.plan_hash,
        orders=written.orders,
        message=f"repair {attempt} of {limit} for run {eligible.original_id}: run "
        f"{written.repair_run_id}, {len(written.orders)} order(s), {written.status}",
        problems=plan.problems,
        plan=plan,
    )


def _write_repair(
    conn: Connection,
    eligible: _Eligible,
    unusable: Mapping[uuid.UUID, str],
    *,
    require_approval: bool,
) -> Plan:
    """Plan and write the repair run with its links, in the planning transaction.

    Returns the plan (without runs when nothing needed repairing: nothing is written then).
    """
    plan = _plan_and_write(conn, eligible, unusable=unusable, auto_approve=not require_approval)
    if not plan.runs:
        return plan
    new_id = plan.runs[0].run_id
    status = runs_repo.born_status(auto_approve=not require_approval)
    body = dict(
        conn.execute(
            select(SmallcaseExecutionRun.execution_plan).where(SmallcaseExecutionRun.id == new_id)
        ).scalar_one()
        or {}
    )
    body.update(
        repair_of=str(eligible.original_id),
        repair_attempt=eligible.attempts + 1,
        repair_reason=eligible.kind,
        repair_after=str(eligible.latest_id),
    )
    if not require_approval:
        body.update(approval_policy="SARAS_REPAIR_AUTO_APPROVE", approved_at=utcnow().isoformat())
    result = conn.execute(
        update(SmallcaseExecutionRun)
        .where(SmallcaseExecutionRun.id == new_id, SmallcaseExecutionRun.status == status.value)
        .values(execution_plan=body)
    )
    if result.rowcount != 1:
        raise RepairRefused(f"repair run {new_id} changed while it was being written")
    return plan


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
