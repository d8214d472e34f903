"""Execution runs and orders: loading a run, recording order status and fills in the ledger.

Fills are recorded from the broker's cumulative view of an order (filled quantity, average
price, fees): each new report adds only the difference to what is already recorded, so a
report seen twice, or a process killed between two writes, never counts a share twice. One
order update (status, ledger rows, holdings, cash, position) is one transaction.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from sqlalchemy import Connection, select, update
from uuid_utils.compat import uuid7

from models import (
    Asset,
    Portfolio,
    PortfolioHolding,
    SmallcaseExecutionOrder,
    SmallcaseExecutionRun,
    TradingTransaction,
)
from saras.brokers.base import BrokerOrder
from saras.domain.enums import OrderSide, OrderStatus
from saras.domain.plan_hash import order_line, run_orders_hash

PRICE_Q = Decimal("0.000001")
MONEY_Q = Decimal("0.0001")
QTY_Q = Decimal("0.000000001")


def qty_text(value: Decimal) -> str:
    """Format a quantity exactly at the stored scale (9 decimals)."""
    return f"{Decimal(value).quantize(QTY_Q):f}"


@dataclass
class OrderRow:
    """An execution order with what the executor needs about its asset."""

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
    metadata: dict[str, Any]

    @property
    def filled_quantity(self) -> Decimal:
        """Return what is already recorded as filled."""
        return Decimal(str(self.metadata.get("filled_quantity", "0")))


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
            metadata=dict(r.order_metadata or {}),
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


def set_order_status(
    conn: Connection,
    order: OrderRow,
    status: OrderStatus,
    *,
    broker_order_id: str | None = None,
    reason: str | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    """Persist an order's new status (and broker id, reason) in the caller's transaction."""
    metadata = dict(order.metadata)
    if reason:
        metadata["status_reason"] = reason[:1000]
    if extra:
        metadata.update(extra)
    values: dict[str, Any] = {"status": status.value, "order_metadata": metadata}
    if broker_order_id and broker_order_id != order.broker_order_id:
        values["broker_order_id"] = broker_order_id
        order.broker_order_id = broker_order_id
    conn.execute(
        update(SmallcaseExecutionOrder)
        .where(SmallcaseExecutionOrder.id == order.id)
        .values(**values)
    )
    order.status = status
    order.metadata = metadata


@dataclass(frozen=True)
class RunContext:
    """Who a run trades for: the ids the ledger needs."""

    run_id: uuid.UUID
    investment_id: uuid.UUID
    portfolio_id: uuid.UUID


def investment_position(
    conn: Connection, investment_id: uuid.UUID, asset_id: uuid.UUID
) -> tuple[Decimal, Decimal | None]:
    """Return an investment's recorded quantity and average price in one asset."""
    orders = conn.execute(
        select(SmallcaseExecutionOrder.side, SmallcaseExecutionOrder.order_metadata)
        .join(
            SmallcaseExecutionRun,
            SmallcaseExecutionRun.id == SmallcaseExecutionOrder.execution_run_id,
        )
        .where(
            SmallcaseExecutionRun.investment_id == investment_id,
            SmallcaseExecutionOrder.asset_id == asset_id,
        )
    ).all()
    quantity = Decimal(0)
    latest: tuple[datetime, Decimal] | None = None
    for side, metadata in orders:
        metadata = metadata or {}
        filled = Decimal(str(metadata.get("filled_quantity", "0")))
        quantity += filled if side == OrderSide.BUY.value else -filled
        if "position_average_price" in metadata and metadata.get("filled_at"):
            stamp = datetime.fromisoformat(str(metadata["filled_at"]))  # compared as instants
            if latest is None or stamp > latest[0]:
                latest = (stamp, Decimal(str(metadata["position_average_price"])))
    return quantity, (latest[1] if latest else None)


def record_fills(
    conn: Connection, ctx: RunContext, order: OrderRow, report: BrokerOrder, now: datetime
) -> Decimal:
    """Record what the broker filled beyond what we already recorded; return the new quantity.

    Adds one ``trading_transactions`` row (idempotent by broker transaction id), moves the
    portfolio's holding and cash, and stores the investment's position after the fill on the
    order's metadata. Everything in the caller's transaction.
    """
    previous_qty = order.filled_quantity
    new_qty = Decimal(report.filled_quantity).quantize(QTY_Q)
    if new_qty <= previous_qty or report.average_fill_price is None:
        return Decimal(0)
    delta = new_qty - previous_qty
    prev_avg = Decimal(str(order.metadata.get("average_fill_price", "0")))
    cumulative_cost = Decimal(report.average_fill_price) * new_qty
    price = ((cumulative_cost - prev_avg * previous_qty) / delta).quantize(PRICE_Q, ROUND_HALF_EVEN)
    prev_fees = Decimal(str(order.metadata.get("fees", "0")))
    fees = max(Decimal(report.fees) - prev_fees, Decimal(0)).quantize(MONEY_Q)
    broker_order_id = report.broker_order_id or order.broker_order_id or str(order.id)
    transaction_id = f"{broker_order_id}:{qty_text(new_qty)}"
    filled_at = report.updated_at or now

    exists = conn.execute(
        select(TradingTransaction.id).where(
            TradingTransaction.portfolio_id == ctx.portfolio_id,
            TradingTransaction.broker_transaction_id == transaction_id,
        )
    ).first()
    if exists is None:
        conn.execute(
            TradingTransaction.__table__.insert().values(
                id=_uuid7(),
                portfolio_id=ctx.portfolio_id,
                asset_id=order.asset_id,
                transaction_type=order.side.value,
                quantity=delta,
                price=price,
                fees=fees,
                broker_transaction_id=transaction_id,
                transaction_date=filled_at,
                created_at=now,
                updated_at=now,
            )
        )
        _move_holding(conn, ctx.portfolio_id, order, delta, price, now)
        gross = (delta * price).quantize(MONEY_Q, ROUND_HALF_EVEN)
        cash_change = -(gross + fees) if order.side is OrderSide.BUY else gross - fees
        conn.execute(
            update(Portfolio)
            .where(Portfolio.id == ctx.portfolio_id)
            .values(cash_balance=Portfolio.cash_balance + cash_change, updated_at=now)
        )

    position_qty, position_avg = investment_position(conn, ctx.investment_id, order.asset_id)
    if order.side is OrderSide.BUY:
        base = position_qty * (position_avg or Decimal(0))
        position_qty += delta
        position_avg = ((base + delta * price) / position_qty).quantize(PRICE_Q)
    else:
        position_qty -= delta
    metadata = dict(order.metadata)
    avg_fill = (cumulative_cost / new_qty).quantize(PRICE_Q, ROUND_HALF_EVEN)
    metadata.update(
        filled_quantity=qty_text(new_qty),
        average_fill_price=f"{avg_fill:f}",
        fees=f"{(prev_fees + fees):f}",
        filled_at=filled_at.isoformat(),
        position_quantity=qty_text(position_qty),
        position_average_price=f"{(position_avg or Decimal(0)):f}",
    )
    conn.execute(
        update(SmallcaseExecutionOrder)
        .where(SmallcaseExecutionOrder.id == order.id)
        .values(order_metadata=metadata)
    )
    order.metadata = metadata
    return delta


def _move_holding(
    conn: Connection,
    portfolio_id: uuid.UUID,
    order: OrderRow,
    delta: Decimal,
    price: Decimal,
    now: datetime,
) -> None:
    holding = conn.execute(
        select(PortfolioHolding.id, PortfolioHolding.quantity, PortfolioHolding.average_price)
        .where(
            PortfolioHolding.portfolio_id == portfolio_id,
            PortfolioHolding.asset_id == order.asset_id,
        )
        .with_for_update()
    ).first()
    if holding is None:
        if order.side is OrderSide.SELL:
            raise ValueError(
                f"sell fill of {order.symbol} for a portfolio that holds none (order {order.id})"
            )
        conn.execute(
            PortfolioHolding.__table__.insert().values(
                id=_uuid7(),
                portfolio_id=portfolio_id,
                asset_id=order.asset_id,
                quantity=delta,
                average_price=price,
                current_price=price,
                total_value=(delta * price).quantize(MONEY_Q),
                unrealized_pnl=Decimal(0),
                created_at=now,
                updated_at=now,
            )
        )
        return
    quantity = Decimal(str(holding.quantity))
    average = Decimal(str(holding.average_price or 0))
    if order.side is OrderSide.BUY:
        new_quantity = quantity + delta
        new_average = ((quantity * average + delta * price) / new_quantity).quantize(PRICE_Q)
    else:
        new_quantity = quantity - delta
        if new_quantity < 0:
            raise ValueError(
                f"sell fill of {delta} {order.symbol} exceeds the portfolio's {quantity}"
            )
        new_average = average
    conn.execute(
        update(PortfolioHolding)
        .where(PortfolioHolding.id == holding.id)
        .values(quantity=new_quantity, average_price=new_average, updated_at=now)
    )


def _uuid7() -> uuid.UUID:
    return uuid7()
