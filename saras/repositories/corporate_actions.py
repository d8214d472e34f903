"""Corporate actions, position adjustments, reconciliation differences, and the planning gates.

An investment's ledger position in an asset is the sum of its fills (``order_metadata``) plus
its ``position_adjustments`` (splits, bonus issues, accepted reconciliation differences); its
cash is its investment amount minus what its fills spent plus the adjustments' ``cash_delta``
(dividends, cash in lieu, accepted cash differences). Everything here runs in the caller's
transaction.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import Connection, Table, and_, func, select, update
from uuid_utils.compat import uuid7

from models import (
    Asset,
    CorporateAction,
    PositionAdjustment,
    Reconciliation,
    ReconciliationDifference,
    SmallcaseExecutionOrder,
    SmallcaseExecutionRun,
    UserSmallcaseInvestment,
)
from models.base import utcnow
from saras.domain.enums import (
    CorporateActionStatus,
    CorporateActionType,
    DifferenceKind,
    DifferenceStatus,
    OrderSide,
)

QUANTITY_Q = Decimal("1e-9")
MONEY_Q = Decimal("1e-4")
#: quantity differences at or below this are rounding, not differences
QUANTITY_TOLERANCE = Decimal("0.000001")
#: cash differences at or below this (in the account's currency) are rounding
CASH_TOLERANCE = Decimal("0.01")

CORPORATE_ACTION_PENDING = "corporate_action_pending"
RECONCILIATION_DIFFERENCE = "reconciliation_difference"


def _table(value: Any) -> Table:
    return cast(Table, value)


def _dec(value: Any) -> Decimal:
    if value is None:
        return Decimal(0)
    return value if isinstance(value, Decimal) else Decimal(str(value))


# --- corporate actions ------------------------------------------------------------------------


@dataclass(frozen=True)
class ReportedAction:
    """A corporate action as a source reported it, for one of our assets."""

    symbol: str
    exchange: str
    action_type: CorporateActionType
    ex_date: date
    source: str
    ratio: Decimal | None = None  # shares after per share before (splits, bonus issues)
    cash_amount: Decimal | None = None  # per share (dividends)
    currency: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.action_type is CorporateActionType.DIVIDEND:
            if self.cash_amount is None or self.cash_amount < 0:
                raise ValueError(f"{self.symbol} dividend on {self.ex_date}: needs an amount")
        elif self.ratio is None or self.ratio <= 0:
            raise ValueError(
                f"{self.symbol} {self.action_type.value} on {self.ex_date}: "
                f"needs a positive ratio, got {self.ratio}"
            )


@dataclass(frozen=True)
class ActionRow:
    """A stored corporate action with its asset."""

    id: uuid.UUID
    asset_id: uuid.UUID
    symbol: str
    exchange: str
    currency: str
    action_type: CorporateActionType
    ex_date: date
    ratio: Decimal | None
    cash_amount: Decimal | None
    status: CorporateActionStatus
    source: str


def record_actions(
    conn: Connection, assets: Mapping[tuple[str, str], uuid.UUID], actions: Iterable[ReportedAction]
) -> int:
    """Store reported actions of known assets; one per asset, type and ex-date. Return new ones.

    An action already stored (from this source or another) is left as it is: the first report
    wins, and an action already applied is never applied again.
    """
    table = _table(CorporateAction.__table__)
    wanted: dict[tuple[uuid.UUID, str, date], ReportedAction] = {}
    for action in actions:
        asset_id = assets.get((action.symbol, action.exchange))
        if asset_id is None:
            continue
        wanted.setdefault((asset_id, action.action_type.value, action.ex_date), action)
    if not wanted:
        return 0
    existing = {
        (r.asset_id, r.action_type, r.ex_date)
        for r in conn.execute(
            select(table.c.asset_id, table.c.action_type, table.c.ex_date).where(
                table.c.asset_id.in_({k[0] for k in wanted})
            )
        )
    }
    now = utcnow()
    rows = [
        {
            "id": uuid7(),
            "asset_id": asset_id,
            "action_type": kind,
            "ex_date": ex_date,
            "ratio": a.ratio,
            "cash_amount": a.cash_amount,
            "currency": a.currency,
            "source": a.source,
            "status": CorporateActionStatus.DETECTED.value,
            "details": dict(a.details) or None,
            "created_at": now,
            "updated_at": now,
        }
        for (asset_id, kind, ex_date), a in sorted(wanted.items(), key=lambda kv: str(kv[0]))
        if (asset_id, kind, ex_date) not in existing
    ]
    if rows:
        conn.execute(table.insert(), rows)
    return len(rows)


def _action_query() -> Any:
    table = _table(CorporateAction.__table__)
    assets = _table(Asset.__table__)
    return select(
        table.c.id,
        table.c.asset_id,
        assets.c.symbol,
        assets.c.exchange,
        assets.c.currency,
        table.c.action_type,
        table.c.ex_date,
        table.c.ratio,
        table.c.cash_amount,
        table.c.status,
        table.c.source,
    ).join(assets, assets.c.id == table.c.asset_id)


def _action_row(r: Any) -> ActionRow:
    return ActionRow(
        id=r.id,
        asset_id=r.asset_id,
        symbol=r.symbol,
        exchange=r.exchange,
        currency=r.currency,
        action_type=CorporateActionType(r.action_type),
        ex_date=r.ex_date,
        ratio=None if r.ratio is None else _dec(r.ratio),
        cash_amount=None if r.cash_amount is None else _dec(r.cash_amount),
        status=CorporateActionStatus(r.status),
        source=r.source,
    )


def list_actions(
    conn: Connection,
    *,
    status: CorporateActionStatus | None = None,
    due_by: date | None = None,
    asset_ids: Iterable[uuid.UUID] | None = None,
) -> list[ActionRow]:
    """Return stored actions, oldest ex-date first (optionally by status, due date, assets)."""
    table = _table(CorporateAction.__table__)
    query = _action_query()
    if status is not None:
        query = query.where(table.c.status == status.value)
    if due_by is not None:
        query = query.where(table.c.ex_date <= due_by)
    if asset_ids is not None:
        query = query.where(table.c.asset_id.in_(list(asset_ids)))
    query = query.order_by(table.c.ex_date, table.c.action_type, table.c.id)
    return [_action_row(r) for r in conn.execute(query)]


def mark_applied(conn: Connection, action_id: uuid.UUID, now: datetime) -> None:
    """Mark a detected action applied; raise when another writer changed it first."""
    table = _table(CorporateAction.__table__)
    done = conn.execute(
        update(table)
        .where(table.c.id == action_id, table.c.status == CorporateActionStatus.DETECTED.value)
        .values(status=CorporateActionStatus.APPLIED.value, applied_at=now, updated_at=now)
    )
    if done.rowcount != 1:
        raise RuntimeError(f"corporate action {action_id} was not 'detected' any more")


def mark_dismissed(conn: Connection, action_id: uuid.UUID, now: datetime) -> None:
    """Mark a detected action dismissed (not an action, e.g. a wrong inference); else raise."""
    table = _table(CorporateAction.__table__)
    done = conn.execute(
        update(table)
        .where(table.c.id == action_id, table.c.status == CorporateActionStatus.DETECTED.value)
        .values(status=CorporateActionStatus.DISMISSED.value, updated_at=now)
    )
    if done.rowcount != 1:
        raise RuntimeError(f"corporate action {action_id} was not 'detected' any more")


# --- adjustments ------------------------------------------------------------------------------


@dataclass(frozen=True)
class LedgerAdjustments:
    """What the adjustments add to fills: quantity per (investment, asset), cash per investment."""

    quantities: dict[tuple[uuid.UUID, uuid.UUID], Decimal]
    cash: dict[uuid.UUID, Decimal]


def investment_adjustments(
    conn: Connection, investment_ids: Sequence[uuid.UUID] | None = None
) -> LedgerAdjustments:
    """Return the adjustments of the given investments (all when None), summed."""
    table = _table(PositionAdjustment.__table__)
    query = select(
        table.c.investment_id,
        table.c.asset_id,
        func.sum(table.c.quantity_delta),
        func.sum(table.c.cash_delta),
    ).group_by(table.c.investment_id, table.c.asset_id)
    wanted: set[uuid.UUID] | None = None
    if investment_ids is not None:
        if not investment_ids:
            return LedgerAdjustments({}, {})
        if len(investment_ids) <= 1000:
            query = query.where(table.c.investment_id.in_(list(investment_ids)))
        else:  # a large rebalance: the adjustments are few, filter them here
            wanted = set(investment_ids)
    quantities: dict[tuple[uuid.UUID, uuid.UUID], Decimal] = {}
    cash: dict[uuid.UUID, Decimal] = defaultdict(Decimal)
    for investment_id, asset_id, quantity, money in conn.execute(query):
        if wanted is not None and investment_id not in wanted:
            continue
        if asset_id is not None and _dec(quantity):
            quantities[(investment_id, asset_id)] = _dec(quantity).quantize(QUANTITY_Q)
        cash[investment_id] += _dec(money)
    return LedgerAdjustments(quantities, {k: v.quantize(MONEY_Q) for k, v in cash.items() if v})


def adjust_planning_state(
    conn: Connection,
    investment_ids: Sequence[uuid.UUID],
    positions: dict[tuple[uuid.UUID, uuid.UUID], Decimal],
    spent: dict[uuid.UUID, Decimal],
) -> tuple[dict[tuple[uuid.UUID, uuid.UUID], Decimal], dict[uuid.UUID, Decimal]]:
    """Add adjustments to the planner's fill-based state (positions by asset id, cash spent).

    A split adds its shares to the position; a dividend or cash in lieu lowers what the
    investment has spent (it is cash the investment holds).
    """
    found = investment_adjustments(conn, investment_ids)
    if not found.quantities and not found.cash:
        return positions, spent
    positions = dict(positions)
    for key, delta in found.quantities.items():
        positions[key] = positions.get(key, Decimal(0)) + delta
    spent = dict(spent)
    for investment_id, money in found.cash.items():
        spent[investment_id] = spent.get(investment_id, Decimal(0)) - money
    return positions, spent


def adjustment_exists(
    conn: Connection,
    *,
    investment_id: uuid.UUID,
    kind: str,
    corporate_action_id: uuid.UUID | None = None,
    difference_id: uuid.UUID | None = None,
) -> bool:
    """Tell whether this action (or difference) already moved this investment this way."""
    table = _table(PositionAdjustment.__table__)
    query = select(table.c.id).where(table.c.investment_id == investment_id, table.c.kind == kind)
    if corporate_action_id is not None:
        query = query.where(table.c.corporate_action_id == corporate_action_id)
    if difference_id is not None:
        query = query.where(table.c.difference_id == difference_id)
    return conn.execute(query.limit(1)).first() is not None


# --- reconciliation ---------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredDifference:
    """A difference to store for one connection and day."""

    kind: DifferenceKind
    symbol: str
    exchange: str
    asset_id: uuid.UUID | None
    ours: Decimal
    broker: Decimal
    classification: str
    detail: str
    currency: str | None = None


def ledger_cash_flows(
    conn: Connection, connection_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, Decimal]:
    """Return, per connection, the cash our ledger moved through it (sells - buys - fees + ...).

    Fills count at ``filled_quantity x average_fill_price`` and ``fees`` of their orders; the
    adjustments of the connection's investments add their ``cash_delta`` (dividends, cash in
    lieu, accepted cash differences).
    """
    if not connection_ids:
        return {}
    orders = _table(SmallcaseExecutionOrder.__table__)
    runs = _table(SmallcaseExecutionRun.__table__)
    out: dict[uuid.UUID, Decimal] = dict.fromkeys(connection_ids, Decimal(0))
    rows = conn.execute(
        select(runs.c.broker_connection_id, orders.c.side, orders.c.order_metadata)
        .join(orders, orders.c.execution_run_id == runs.c.id)
        .where(runs.c.broker_connection_id.in_(list(connection_ids)))
    )
    for connection_id, side, metadata in rows:
        metadata = metadata or {}
        filled = _dec(metadata.get("filled_quantity"))
        if filled <= 0:
            continue
        gross = (filled * _dec(metadata.get("average_fill_price"))).quantize(MONEY_Q)
        fees = _dec(metadata.get("fees"))
        out[connection_id] += (gross if side == OrderSide.SELL.value else -gross) - fees
    adjustments = _table(PositionAdjustment.__table__)
    investments = _table(UserSmallcaseInvestment.__table__)
    for connection_id, money in conn.execute(
        select(investments.c.broker_connection_id, func.sum(adjustments.c.cash_delta))
        .join(investments, investments.c.id == adjustments.c.investment_id)
        .where(investments.c.broker_connection_id.in_(list(connection_ids)))
        .group_by(investments.c.broker_connection_id)
    ):
        out[connection_id] += _dec(money)
    return {c: v.quantize(MONEY_Q) for c, v in out.items()}


@dataclass(frozen=True)
class CashAnchor:
    """The first reconciliation of a connection that saw the broker's cash."""

    snapshot_date: date
    broker_cash: Decimal
    ledger_cash_flow: Decimal


def cash_anchor(conn: Connection, connection_id: uuid.UUID) -> CashAnchor | None:
    """Return the connection's cash anchor, or None before its first cash reconciliation."""
    table = _table(Reconciliation.__table__)
    row = conn.execute(
        select(table.c.snapshot_date, table.c.broker_cash, table.c.ledger_cash_flow)
        .where(table.c.broker_connection_id == connection_id, table.c.broker_cash.is_not(None))
        .order_by(table.c.snapshot_date)
        .limit(1)
    ).first()
    if row is None:
        return None
    return CashAnchor(row.snapshot_date, _dec(row.broker_cash), _dec(row.ledger_cash_flow))


def record_reconciliation(
    conn: Connection,
    connection_id: uuid.UUID,
    day: date,
    *,
    broker_cash: Decimal | None,
    ledger_cash_flow: Decimal | None,
    currency: str | None,
    differences: Sequence[StoredDifference],
) -> list[uuid.UUID]:
    """Store one connection's reconciliation of ``day``; return its open differences' ids.

    A re-run of the day replaces the day's open differences (accepted ones stay accepted);
    open differences of earlier days that are no longer seen are marked resolved.
    """
    now = utcnow()
    values: dict[str, Any] = {
        "broker_cash": broker_cash,
        "ledger_cash_flow": ledger_cash_flow,
        "currency": currency,
        "differences": len(differences),
        "updated_at": now,
    }
    _write_reconciliation_row(conn, connection_id, day, values, now)
    return _write_differences(conn, connection_id, day, differences, now)


def _write_reconciliation_row(
    conn: Connection,
    connection_id: uuid.UUID,
    day: date,
    values: dict[str, Any],
    now: datetime,
) -> None:
    """Insert or update the day's reconciliation row; a re-run keeps the day's cash anchor."""
    recs = _table(Reconciliation.__table__)
    found = conn.execute(
        select(recs.c.id).where(
            recs.c.broker_connection_id == connection_id, recs.c.snapshot_date == day
        )
    ).first()
    if found is None:
        conn.execute(
            recs.insert().values(
                id=uuid7(),
                broker_connection_id=connection_id,
                snapshot_date=day,
                created_at=now,
                **values,
            )
        )
        return
    anchor = cash_anchor(conn, connection_id)
    if anchor is not None and anchor.snapshot_date == day:
        values.pop("broker_cash")  # the anchor stays what it was
        values.pop("ledger_cash_flow")
    conn.execute(recs.update().where(recs.c.id == found.id).values(**values))


def _write_differences(
    conn: Connection,
    connection_id: uuid.UUID,
    day: date,
    differences: Sequence[StoredDifference],
    now: datetime,
) -> list[uuid.UUID]:
    """Replace the day's open differences, resolve older open ones not seen; return the open."""
    table = _table(ReconciliationDifference.__table__)
    mine = table.c.broker_connection_id == connection_id
    stored = {
        (r.kind, r.symbol, r.exchange): r
        for r in conn.execute(
            select(
                table.c.id, table.c.kind, table.c.symbol, table.c.exchange, table.c.status
            ).where(mine, table.c.snapshot_date == day)
        )
    }
    seen: list[uuid.UUID] = []
    for d in differences:
        key = (d.kind.value, d.symbol, d.exchange)
        row_values = {
            "asset_id": d.asset_id,
            "currency": d.currency,
            "ours": d.ours,
            "broker": d.broker,
            "classification": d.classification,
            "detail": d.detail,
            "updated_at": now,
        }
        old = stored.get(key)
        if old is None:
            new_id = uuid7()
            conn.execute(
                table.insert().values(
                    id=new_id,
                    broker_connection_id=connection_id,
                    snapshot_date=day,
                    kind=d.kind.value,
                    symbol=d.symbol,
                    exchange=d.exchange,
                    status=DifferenceStatus.OPEN.value,
                    created_at=now,
                    **row_values,
                )
            )
            seen.append(uuid.UUID(str(new_id)))
        elif old.status == DifferenceStatus.OPEN.value:
            conn.execute(table.update().where(table.c.id == old.id).values(**row_values))
            seen.append(old.id)
    conn.execute(
        update(table)
        .where(
            mine,
            table.c.status == DifferenceStatus.OPEN.value,
            table.c.id.not_in(seen) if seen else and_(True),
        )
        .values(status=DifferenceStatus.RESOLVED.value, resolved_at=now, updated_at=now)
    )
    return seen


@dataclass(frozen=True)
class DifferenceRow:
    """A stored reconciliation difference."""

    id: uuid.UUID
    connection_id: uuid.UUID
    snapshot_date: date
    kind: DifferenceKind
    asset_id: uuid.UUID | None
    symbol: str
    exchange: str
    currency: str | None
    ours: Decimal
    broker: Decimal
    classification: str
    detail: str | None
    status: DifferenceStatus

    @property
    def difference(self) -> Decimal:
        """Return broker minus ours."""
        return self.broker - self.ours


def list_differences(
    conn: Connection,
    *,
    status: DifferenceStatus | None = DifferenceStatus.OPEN,
    connection_ids: Iterable[uuid.UUID] | None = None,
    ids: Iterable[uuid.UUID] | None = None,
) -> list[DifferenceRow]:
    """Return stored differences (open ones by default), by connection, day and asset."""
    table = _table(ReconciliationDifference.__table__)
    query = select(table)
    if status is not None:
        query = query.where(table.c.status == status.value)
    if connection_ids is not None:
        query = query.where(table.c.broker_connection_id.in_(list(connection_ids)))
    if ids is not None:
        query = query.where(table.c.id.in_(list(ids)))
    query = query.order_by(
        table.c.broker_connection_id, table.c.snapshot_date, table.c.kind, table.c.symbol
    )
    return [
        DifferenceRow(
            id=r.id,
            connection_id=r.broker_connection_id,
            snapshot_date=r.snapshot_date,
            kind=DifferenceKind(r.kind),
            asset_id=r.asset_id,
            symbol=r.symbol,
            exchange=r.exchange,
            currency=r.currency,
            ours=_dec(r.ours),
            broker=_dec(r.broker),
            classification=r.classification,
            detail=r.detail,
            status=DifferenceStatus(r.status),
        )
        for r in conn.execute(query)
    ]


def mark_accepted(conn: Connection, difference_id: uuid.UUID, by: str, now: datetime) -> None:
    """Mark an open difference accepted; raise when it is not open any more."""
    table = _table(ReconciliationDifference.__table__)
    done = conn.execute(
        update(table)
        .where(table.c.id == difference_id, table.c.status == DifferenceStatus.OPEN.value)
        .values(
            status=DifferenceStatus.ACCEPTED.value, accepted_by=by, resolved_at=now, updated_at=now
        )
    )
    if done.rowcount != 1:
        raise RuntimeError(f"reconciliation difference {difference_id} is not open any more")


# --- the planning gates -----------------------------------------------------------------------


@dataclass(frozen=True)
class PlanningGate:
    """Why an investment must not be planned now."""

    investment_id: uuid.UUID
    reason: str  # CORPORATE_ACTION_PENDING or RECONCILIATION_DIFFERENCE
    detail: str


def planning_gates(
    conn: Connection,
    investment_ids: Sequence[uuid.UUID],
    asset_ids: Iterable[uuid.UUID],
    *,
    as_of: date | None = None,
    tolerance: Decimal = QUANTITY_TOLERANCE,
    cash_tolerance: Decimal = CASH_TOLERANCE,
) -> dict[uuid.UUID, list[PlanningGate]]:
    """Return, per investment that must not be planned, its reasons (none: plan it).

    * ``corporate_action_pending``: an asset of the plan (``asset_ids``: the targets and what
      is held) or held by the investment has a detected action due (ex-date on or before
      ``as_of``, default today) that is not applied to the ledger yet;
    * ``reconciliation_difference``: the investment's connection has an open difference with
      the broker beyond the tolerance (quantity, or cash in the account's currency).
    """
    if not investment_ids:
        return {}
    out: dict[uuid.UUID, list[PlanningGate]] = defaultdict(list)
    # Both tables are small next to the ledger: read what is pending or open first, and touch
    # the investments (100,000 in a large rebalance) only when something is.
    _action_gates(conn, list(investment_ids), set(asset_ids), as_of or utcnow().date(), out)
    _difference_gates(conn, set(investment_ids), tolerance, cash_tolerance, out)
    return dict(out)


def _action_gates(
    conn: Connection,
    ids: list[uuid.UUID],
    planned: set[uuid.UUID],
    as_of: date,
    out: dict[uuid.UUID, list[PlanningGate]],
) -> None:
    """Add a gate per investment and corporate action due on an asset it plans or has held."""
    wanted = set(ids)
    pending = list_actions(conn, status=CorporateActionStatus.DETECTED, due_by=as_of)
    if not pending:
        return
    held: dict[uuid.UUID, set[uuid.UUID]] = defaultdict(set)
    orders = _table(SmallcaseExecutionOrder.__table__)
    runs = _table(SmallcaseExecutionRun.__table__)
    touched = {a.asset_id for a in pending} - planned
    if touched:
        for investment_id, asset_id in conn.execute(
            select(runs.c.investment_id, orders.c.asset_id)
            .join(orders, orders.c.execution_run_id == runs.c.id)
            .where(orders.c.asset_id.in_(touched))
            .distinct()
        ):
            if investment_id in wanted:
                held[investment_id].add(asset_id)
    for investment_id in ids:
        for action in pending:
            if action.asset_id not in planned and action.asset_id not in held[investment_id]:
                continue
            what = (
                f"ratio {action.ratio.normalize():f}"
                if action.ratio is not None
                else f"{_text(action.cash_amount or Decimal(0))} {action.currency} per share"
            )
            out[investment_id].append(
                PlanningGate(
                    investment_id,
                    CORPORATE_ACTION_PENDING,
                    f"{action.symbol} ({action.exchange}): {action.action_type.value} "
                    f"({what}) on {action.ex_date} not yet applied to the ledger",
                )
            )


def _difference_gates(
    conn: Connection,
    wanted: set[uuid.UUID],
    tolerance: Decimal,
    cash_tolerance: Decimal,
    out: dict[uuid.UUID, list[PlanningGate]],
) -> None:
    """Add a gate per investment and open difference beyond tolerance on its connection."""
    by_connection: dict[uuid.UUID, list[DifferenceRow]] = defaultdict(list)
    for d in list_differences(conn):
        limit = cash_tolerance if d.kind is DifferenceKind.CASH else tolerance
        if abs(d.difference) > limit:
            by_connection[d.connection_id].append(d)
    if not by_connection:
        return
    investments = _table(UserSmallcaseInvestment.__table__)
    for investment_id, connection_id in conn.execute(
        select(investments.c.id, investments.c.broker_connection_id).where(
            investments.c.broker_connection_id.in_(list(by_connection))
        )
    ):
        if investment_id not in wanted:
            continue
        for d in by_connection[connection_id]:
            what = (
                f"cash ({d.currency or '?'})"
                if d.kind is DifferenceKind.CASH
                else f"{d.symbol} ({d.exchange or '?'})"
            )
            out[investment_id].append(
                PlanningGate(
                    investment_id,
                    RECONCILIATION_DIFFERENCE,
                    f"{what}: ours {_text(d.ours)}, broker {_text(d.broker)} on "
                    f"{d.snapshot_date} ({d.classification}); difference {d.id}",
                )
            )


def _text(value: Decimal) -> str:
    return f"{value.normalize():f}" if value else "0"


__all__ = [
    "CASH_TOLERANCE",
    "CORPORATE_ACTION_PENDING",
    "QUANTITY_TOLERANCE",
    "RECONCILIATION_DIFFERENCE",
    "ActionRow",
    "CashAnchor",
    "DifferenceRow",
    "LedgerAdjustments",
    "PlanningGate",
    "ReportedAction",
    "StoredDifference",
    "adjust_planning_state",
    "adjustment_exists",
    "cash_anchor",
    "investment_adjustments",
    "ledger_cash_flows",
    "list_actions",
    "list_differences",
    "mark_accepted",
    "mark_applied",
    "mark_dismissed",
    "planning_gates",
    "record_actions",
    "record_reconciliation",
]
