"""Execution runs and orders: loading a run, recording order status and fills in the ledger.

Fills are recorded from the broker's own fills (each at its price and quantity, once by its
id), or, for a broker without per-fill data, from its cumulative view (the difference to what is
already recorded), so a report seen twice, or a process killed between two writes, never counts
a share twice. One order update (status, ledger rows, holdings, cash, position) is one
transaction, and every status change goes through the state tables with ``WHERE status = <old>``.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, cast

from sqlalchemy import Connection, Table, bindparam, select, text, update
from uuid_utils.compat import uuid7

from models import (
    Asset,
    Portfolio,
    PortfolioHolding,
    PositionAdjustment,
    SmallcaseExecutionOrder,
    SmallcaseExecutionRun,
    TradingTransaction,
)
from models.base import utcnow
from saras.brokers.base import BrokerOrder
from saras.domain.enums import OrderSide, OrderStatus, RunStatus
from saras.domain.orders import (
    FillState,
    OrderEvent,
    RunEvent,
    transition,
    transition_run,
)
from saras.domain.plan_hash import order_line, run_orders_hash
from saras.errors import SarasError

PRICE_Q = Decimal("0.000001")
MONEY_Q = Decimal("0.0001")
QTY_Q = Decimal("0.000000001")


def qty_text(value: Decimal) -> str:
    """Format a quantity exactly at the stored scale (9 decimals)."""
    return f"{Decimal(value).quantize(QTY_Q):f}"


class StaleStatusError(SarasError):
    """A status write lost a race: the row was no longer in the status it was read in."""


@dataclass
class OrderRow:
    """An execution order with what the executor needs about its asset.

    ``fill`` is the typed state stored in ``order_metadata``; ``extra`` keeps any other keys of
    that column untouched. Status and fill state change only through :func:`apply_order_event`.
    """

    id: uuid.UUID
    asset_id: uuid.UUID
    symbol: str
    exchange: str
    fractionable: bool
    side: OrderSide
    quantity: Decimal
    price: Decimal | None
    order_type: str
    status: OrderStatus
    broker_order_id: str | None
    fill: FillState = field(default_factory=FillState)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def filled_quantity(self) -> Decimal:
        """Return what is already recorded as filled."""
        return self.fill.filled_quantity

    @property
    def send_quantity(self) -> Decimal:
        """Return the quantity to send: the approved one, or less once re-sized to the cash."""
        return self.quantity if self.fill.sized_quantity is None else self.fill.sized_quantity

    @property
    def metadata(self) -> dict[str, Any]:
        """Return the ``order_metadata`` as stored (read-only view)."""
        return self.fill.to_metadata(self.extra)


def load_orders(conn: Connection, run_id: uuid.UUID) -> list[OrderRow]:
    """Return a run's orders, sells first, then buys, each by symbol."""
    o = SmallcaseExecutionOrder
    rows = conn.execute(
        select(
            o.id,
            o.asset_id,
            Asset.symbol,
            Asset.exchange,
            Asset.metadata_.label("asset_metadata"),
            o.side,
            o.quantity,
            o.price,
            o.order_type,
            o.status,
            o.broker_order_id,
            o.order_metadata,
        )
        .join(Asset, Asset.id == o.asset_id)
        .where(o.execution_run_id == run_id)
    ).all()
    out = [
        OrderRow(
            id=r.id,
            asset_id=r.asset_id,
            symbol=r.symbol,
            exchange=r.exchange,
            fractionable=bool((r.asset_metadata or {}).get("fractionable", False)),
            side=OrderSide(r.side),
            quantity=Decimal(str(r.quantity)).quantize(QTY_Q),
            price=None if r.price is None else Decimal(str(r.price)),
            order_type=r.order_type,
            status=OrderStatus(r.status),
            broker_order_id=r.broker_order_id,
            fill=FillState.from_metadata(r.order_metadata),
            extra=dict(r.order_metadata or {}),
        )
        for r in rows
    ]
    out.sort(key=lambda x: (x.side is OrderSide.BUY, x.symbol, str(x.id)))
    return out


def orders_hash(run_id: uuid.UUID | str, orders: list[tuple[str, str, str, str]]) -> str:
    """Return the hash of a run's orders: (order id, symbol, side, 9-decimal quantity)."""
    return run_orders_hash(run_id, (order_line(*o) for o in orders))


def current_orders_hash(conn: Connection, run_id: uuid.UUID) -> str:
    """Recompute a run's order hash from the database as it is now."""
    rows = load_orders(conn, run_id)
    return orders_hash(
        run_id, [(str(o.id), o.symbol, o.side.value, qty_text(o.quantity)) for o in rows]
    )


def apply_order_event(
    conn: Connection,
    order: OrderRow,
    event: OrderEvent,
    *,
    reason: str | None = None,
    broker_order_id: str | None = None,
    fill: FillState | None = None,
) -> OrderStatus:
    """Move an order through the state table, in the caller's transaction; return its status.

    The write says ``WHERE status = <the status we read>``: if another executor changed the
    row meanwhile, :class:`StaleStatusError` is raised and nothing is written.
    """
    old = order.status
    new = transition(old, event)
    state = (fill or order.fill).with_reason(reason)
    values: dict[str, Any] = {
        "status": new.value,
        "order_metadata": state.to_metadata(order.extra),
        "updated_at": utcnow(),
    }
    if broker_order_id and broker_order_id != order.broker_order_id:
        values["broker_order_id"] = broker_order_id
    result = conn.execute(
        update(SmallcaseExecutionOrder)
        .where(SmallcaseExecutionOrder.id == order.id, SmallcaseExecutionOrder.status == old.value)
        .values(**values)
    )
    if result.rowcount != 1:
        raise StaleStatusError(
            f"order {order.id} ({order.side.value} {order.symbol}) is no longer {old.value}: "
            f"another executor changed it; event {event.value} not applied"
        )
    order.status = new
    order.fill = state
    if "broker_order_id" in values:
        order.broker_order_id = broker_order_id
    return new


@dataclass(frozen=True)
class OrderChange:
    """One event for one order, for :func:`apply_order_events` (arguments as in the single form)."""

    order: OrderRow
    event: OrderEvent
    reason: str | None = None
    broker_order_id: str | None = None
    fill: FillState | None = None


_BATCH_UPDATE = text(
    """
    UPDATE smallcase_execution_orders AS o
       SET status = v.new_status,
           order_metadata = CAST(v.metadata AS jsonb),
           broker_order_id = coalesce(v.broker_order_id, o.broker_order_id),
           updated_at = :now
      FROM unnest(CAST(:ids AS uuid[]), CAST(:olds AS text[]), CAST(:news AS text[]),
                  CAST(:metas AS text[]), CAST(:bids AS text[]))
           AS v(id, old_status, new_status, metadata, broker_order_id)
     WHERE o.id = v.id AND o.status = v.old_status
    RETURNING o.id
    """
)


def apply_order_events(conn: Connection, changes: list[OrderChange]) -> None:
    """Apply many order events in one statement, in the caller's transaction.

    The same guarded transitions as :func:`apply_order_event` (the state table, then ``WHERE
    status = <the status we read>`` for every row), set-based on PostgreSQL: if any row was
    changed by another executor, :class:`StaleStatusError` is raised naming it, and the caller's
    transaction (which must then roll back) has written nothing that counts. The in-memory rows
    are updated only once every row is written.
    """
    ids = [c.order.id for c in changes]
    if conn.dialect.name != "postgresql" or len(changes) < 2 or len(set(ids)) != len(ids):
        for c in changes:
            apply_order_event(
                conn,
                c.order,
                c.event,
                reason=c.reason,
                broker_order_id=c.broker_order_id,
                fill=c.fill,
            )
        return
    planned = []
    for c in changes:
        new = transition(c.order.status, c.event)  # an impossible event raises before any write
        state = (c.fill or c.order.fill).with_reason(c.reason)
        bid = c.broker_order_id if c.broker_order_id != c.order.broker_order_id else None
        planned.append((c.order, new, state, bid or None))
    written = set(
        conn.execute(
            _BATCH_UPDATE,
            {
                "now": utcnow(),
                "ids": ids,
                "olds": [o.status.value for o, *_ in planned],
                "news": [new.value for _, new, _, _ in planned],
                "metas": [json.dumps(st.to_metadata(o.extra)) for o, _, st, _ in planned],
                "bids": [bid for *_, bid in planned],
            },
        ).scalars()
    )
    lost = [(c, o) for c, (o, *_) in zip(changes, planned, strict=True) if o.id not in written]
    if lost:
        c, o = lost[0]
        raise StaleStatusError(
            f"{len(lost)} of {len(changes)} orders were changed by another executor, e.g. order "
            f"{o.id} ({o.side.value} {o.symbol}) is no longer {o.status.value}; event "
            f"{c.event.value} not applied"
        )
    for order, new, state, bid in planned:
        order.status = new
        order.fill = state
        if bid:
            order.broker_order_id = bid


def apply_run_event(
    conn: Connection,
    run_id: uuid.UUID,
    current: RunStatus,
    event: RunEvent,
    **values: Any,
) -> RunStatus:
    """Move a run through the state table with ``WHERE status = <current>``; return its status."""
    new = transition_run(current, event)
    result = conn.execute(
        update(SmallcaseExecutionRun)
        .where(SmallcaseExecutionRun.id == run_id, SmallcaseExecutionRun.status == current.value)
        .values(status=new.value, **values)
    )
    if result.rowcount != 1:
        raise StaleStatusError(
            f"run {run_id} is no longer {current.value}: another process changed it; "
            f"event {event.value} not applied"
        )
    return new


@dataclass(frozen=True)
class RunContext:
    """Who a run trades for: the ids the ledger needs."""

    run_id: uuid.UUID
    investment_id: uuid.UUID
    portfolio_id: uuid.UUID
    currency: str = ""


def investment_position(
    conn: Connection, investment_id: uuid.UUID, asset_id: uuid.UUID
) -> tuple[Decimal, Decimal | None]:
    """Return an investment's recorded quantity and average price in one asset."""
    return investment_positions(conn, investment_id, [asset_id])[asset_id]


def investment_positions(
    conn: Connection, investment_id: uuid.UUID, asset_ids: list[uuid.UUID]
) -> dict[uuid.UUID, tuple[Decimal, Decimal | None]]:
    """Return an investment's recorded quantity and average price in each asset (one query each).

    The ledger position: the fills plus the position adjustments (splits, bonus issues,
    accepted differences). The average is the latest one recorded, by a fill or by an
    adjustment (a split divides it by its ratio), so a buy after a split averages with the
    split-adjusted position, not with the shares and price from before it.
    """
    orders = conn.execute(
        select(
            SmallcaseExecutionOrder.asset_id,
            SmallcaseExecutionOrder.side,
            SmallcaseExecutionOrder.order_metadata,
        )
        .join(
            SmallcaseExecutionRun,
            SmallcaseExecutionRun.id == SmallcaseExecutionOrder.execution_run_id,
        )
        .where(
            SmallcaseExecutionRun.investment_id == investment_id,
            SmallcaseExecutionOrder.asset_id.in_(asset_ids),
        )
    ).all()
    quantity = dict.fromkeys(asset_ids, Decimal(0))
    latest: dict[uuid.UUID, tuple[datetime, Decimal]] = {}
    for asset_id, side, metadata in orders:
        state = FillState.from_metadata(metadata)
        filled = state.filled_quantity
        quantity[asset_id] += filled if side == OrderSide.BUY.value else -filled
        stamp, average = state.filled_at, state.position_average_price
        seen = latest.get(asset_id)
        if average is not None and stamp is not None and (seen is None or stamp > seen[0]):
            latest[asset_id] = (stamp, average)  # compared as instants
    adjustments = cast(Table, PositionAdjustment.__table__)
    for asset_id, delta, average, stamp in conn.execute(
        select(
            adjustments.c.asset_id,
            adjustments.c.quantity_delta,
            adjustments.c.average_price,
            adjustments.c.effective_at,
        ).where(adjustments.c.investment_id == investment_id, adjustments.c.asset_id.in_(asset_ids))
    ):
        quantity[asset_id] += Decimal(str(delta or 0))
        if average is None or stamp is None:
            continue
        stamp = stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=UTC)
        seen = latest.get(asset_id)
        if seen is None or stamp > seen[0]:
            latest[asset_id] = (stamp, Decimal(str(average)))
    return {a: (quantity[a], latest[a][1] if a in latest else None) for a in asset_ids}


def record_fills(
    conn: Connection, ctx: RunContext, order: OrderRow, report: BrokerOrder, now: datetime
) -> FillState:
    """Record what the broker filled beyond what we recorded; return the order's new state.

    Each of the broker's own fills (``report.fills``: Kite trades, Alpaca FILL activities) is
    recorded once, at its own price and quantity, so the ledger's cash is the broker's to the
    cent. An adapter that reports no per-fill data is recorded from its cumulative figures
    (filled quantity, average price), the difference to what is already recorded. Every fill is
    one ``trading_transactions`` row (idempotent by broker transaction id) and moves the
    portfolio's holding and cash. Nothing here writes the order row: the caller does, with its
    status, through :func:`apply_order_event`. Everything in the caller's transaction.
    """
    return record_fills_many(conn, ctx, [(order, report)], now)[0]


@dataclass(frozen=True)
class _Fill:
    """One fill to record: a ``trading_transactions`` row and its effect on the order."""

    transaction_id: str
    fill_id: str | None
    quantity: Decimal
    price: Decimal
    fees: Decimal
    filled_at: datetime


def _fills_to_record(order: OrderRow, report: BrokerOrder, now: datetime) -> list[_Fill]:
    """Return the broker's fills of an order that are not recorded yet, oldest first."""
    state = order.fill
    broker_order_id = report.broker_order_id or order.broker_order_id or str(order.id)
    per_fill = bool(report.fills) or report.fills_reported
    if per_fill and not (state.filled_quantity > 0 and not state.fill_ids):
        fresh = [f for f in report.fills if f.fill_id not in state.fill_ids and f.quantity > 0]
        return [
            _Fill(
                transaction_id=f"{broker_order_id}:{fill.fill_id}",
                fill_id=fill.fill_id,
                quantity=fill.quantity.quantize(QTY_Q),
                price=fill.price,
                fees=fill.fees.quantize(MONEY_Q),
                filled_at=fill.filled_at,
            )
            for fill in sorted(fresh, key=lambda f: (f.filled_at, f.fill_id))
        ]
    new_qty = Decimal(report.filled_quantity).quantize(QTY_Q)
    if new_qty <= state.filled_quantity or report.average_fill_price is None or state.fill_ids:
        return []
    delta = new_qty - state.filled_quantity
    cumulative_cost = Decimal(report.average_fill_price) * new_qty
    price = ((cumulative_cost - state.notional) / delta).quantize(PRICE_Q, ROUND_HALF_EVEN)
    fees = max(Decimal(report.fees) - state.fees, Decimal(0)).quantize(MONEY_Q)
    return [
        _Fill(
            transaction_id=f"{broker_order_id}:{qty_text(new_qty)}",
            fill_id=None,
            quantity=delta,
            price=price,
            fees=fees,
            filled_at=report.updated_at or now,
        )
    ]


def record_fills_many(
    conn: Connection,
    ctx: RunContext,
    answers: list[tuple[OrderRow, BrokerOrder]],
    now: datetime,
) -> list[FillState]:
    """Record the new fills of many orders (one per asset) set-based; return their new states.

    What :func:`record_fills` does for each order, with one read of the existing transaction
    ids, the investment's positions and the portfolio's holdings (locked), then multi-row
    writes. The orders must be of distinct assets: each one's position is read from the stored
    orders, which the caller writes only afterwards.
    """
    assets = [o.asset_id for o, _ in answers]
    if len(set(assets)) != len(assets):
        raise ValueError("record_fills_many takes at most one order per asset")
    plans = [_fills_to_record(o, r, now) for o, r in answers]
    if not any(plans):
        return [o.fill for o, _ in answers]
    moved = [o.asset_id for (o, _), fills in zip(answers, plans, strict=True) if fills]
    ids = [f.transaction_id for fills in plans for f in fills]
    existing = set(
        conn.execute(
            select(TradingTransaction.broker_transaction_id).where(
                TradingTransaction.portfolio_id == ctx.portfolio_id,
                TradingTransaction.broker_transaction_id.in_(ids),
            )
        ).scalars()
    )
    positions = investment_positions(conn, ctx.investment_id, moved)
    holdings = _Holdings(conn, ctx.portfolio_id, moved)
    rows: list[dict[str, Any]] = []
    cash = Decimal(0)
    states = []
    for (order, _), fills in zip(answers, plans, strict=True):
        state = order.fill
        for f in fills:
            if f.transaction_id not in existing:
                existing.add(f.transaction_id)
                rows.append(_transaction_row(ctx, order, f, now))
                holdings.move(order, f.quantity, f.price, now)
                gross = (f.quantity * f.price).quantize(MONEY_Q, ROUND_HALF_EVEN)
                cash += -(gross + f.fees) if order.side is OrderSide.BUY else gross - f.fees
            state = _after_fill(order, state, f, positions[order.asset_id])
        states.append(state)
    if rows:
        conn.execute(cast(Table, TradingTransaction.__table__).insert(), rows)
        holdings.write(conn, now)
        conn.execute(
            update(Portfolio)
            .where(Portfolio.id == ctx.portfolio_id)
            .values(cash_balance=Portfolio.cash_balance + cash, updated_at=now)
        )
    return states


def _transaction_row(ctx: RunContext, order: OrderRow, f: _Fill, now: datetime) -> dict[str, Any]:
    return {
        "id": _uuid7(),
        "portfolio_id": ctx.portfolio_id,
        "asset_id": order.asset_id,
        "transaction_type": order.side.value,
        "quantity": f.quantity,
        "price": f.price,
        "fees": f.fees,
        "broker_transaction_id": f.transaction_id,
        "transaction_date": f.filled_at,
        "created_at": now,
        "updated_at": now,
    }


def _after_fill(
    order: OrderRow, state: FillState, f: _Fill, stored: tuple[Decimal, Decimal | None]
) -> FillState:
    """Return the order's state once ``f`` is recorded (``stored``: the position as stored)."""
    position_qty, position_avg = stored
    # the stored position lacks what this call recorded before the caller's write: add it
    unstored = state.filled_quantity - order.fill.filled_quantity
    position_qty += unstored if order.side is OrderSide.BUY else -unstored
    if state.position_average_price is not None and unstored > 0:
        position_avg = state.position_average_price
    if order.side is OrderSide.BUY:
        base = position_qty * (position_avg or Decimal(0))
        position_qty += f.quantity
        position_avg = ((base + f.quantity * f.price) / position_qty).quantize(PRICE_Q)
    else:
        position_qty -= f.quantity
    return replace(
        state,
        filled_quantity=state.filled_quantity + f.quantity,
        notional=state.notional + f.quantity * f.price,
        fees=state.fees + f.fees,
        filled_at=f.filled_at,
        fill_ids=state.fill_ids + ((f.fill_id,) if f.fill_id is not None else ()),
        position_quantity=position_qty,
        position_average_price=position_avg or Decimal(0),
    )


class _Holdings:
    """A portfolio's holdings of some assets, read once (locked), moved in memory, written once."""

    def __init__(self, conn: Connection, portfolio_id: uuid.UUID, asset_ids: list[uuid.UUID]):
        self.portfolio_id = portfolio_id
        self.rows: dict[uuid.UUID, list[Any]] = {
            r.asset_id: [r.id, Decimal(str(r.quantity)), Decimal(str(r.average_price or 0))]
            for r in conn.execute(
                select(
                    PortfolioHolding.id,
                    PortfolioHolding.asset_id,
                    PortfolioHolding.quantity,
                    PortfolioHolding.average_price,
                )
                .where(
                    PortfolioHolding.portfolio_id == portfolio_id,
                    PortfolioHolding.asset_id.in_(asset_ids),
                )
                .with_for_update()
            )
        }
        self.new: dict[uuid.UUID, dict[str, Any]] = {}
        self.changed: set[uuid.UUID] = set()

    def move(self, order: OrderRow, delta: Decimal, price: Decimal, now: datetime) -> None:
        """Apply one fill to the holding of its asset (a buy creates it)."""
        row = self.rows.get(order.asset_id)
        if row is None:
            if order.side is OrderSide.SELL:
                raise ValueError(
                    f"sell fill of {order.symbol} for a portfolio that holds none "
                    f"(order {order.id})"
                )
            hid = _uuid7()
            self.rows[order.asset_id] = [hid, delta, price]
            self.new[order.asset_id] = {
                "id": hid,
                "portfolio_id": self.portfolio_id,
                "asset_id": order.asset_id,
                "current_price": price,
                "total_value": (delta * price).quantize(MONEY_Q),
                "unrealized_pnl": Decimal(0),
                "created_at": now,
                "updated_at": now,
            }
            return
        _, quantity, average = row
        if order.side is OrderSide.BUY:
            row[1] = quantity + delta
            row[2] = ((quantity * average + delta * price) / row[1]).quantize(PRICE_Q)
        else:
            if quantity - delta < 0:
                raise ValueError(
                    f"sell fill of {delta} {order.symbol} exceeds the portfolio's {quantity}"
                )
            row[1] = quantity - delta
        self.changed.add(order.asset_id)

    def write(self, conn: Connection, now: datetime) -> None:
        """Insert the new holdings and update the changed ones (multi-row statements)."""
        if self.new:
            values = [
                {**v, "quantity": self.rows[a][1], "average_price": self.rows[a][2]}
                for a, v in self.new.items()
            ]
            conn.execute(cast(Table, PortfolioHolding.__table__).insert(), values)
        changed = [self.rows[a] for a in self.changed if a not in self.new]
        if changed:
            conn.execute(
                update(PortfolioHolding)
                .where(PortfolioHolding.id == bindparam("b_id"))
                .values(
                    quantity=bindparam("b_quantity"),
                    average_price=bindparam("b_average"),
                    updated_at=now,
                ),
                [{"b_id": i, "b_quantity": q, "b_average": a} for i, q, a in changed],
            )


def _uuid7() -> uuid.UUID:
    return uuid7()
