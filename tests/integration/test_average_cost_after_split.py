"""The executor's running average cost follows splits: a buy after a split averages with the
split-adjusted position (the ledger's), not with the shares and price from before the split."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from models import PositionAdjustment, SmallcaseExecutionOrder, SmallcaseExecutionRun
from saras.brokers.base import BrokerOrder, BrokerOrderStatus
from saras.domain.enums import AdjustmentKind, OrderSide, OrderStatus
from saras.repositories.execution import (
    OrderRow,
    RunContext,
    investment_position,
    record_fills,
)
from tests import factories as f

BEFORE = datetime(2024, 3, 1, 15, tzinfo=UTC)  # the first buy
SPLIT = datetime(2024, 3, 4, 0, tzinfo=UTC)  # a 4:1 split, ex-date
AFTER = datetime(2024, 3, 5, 15, tzinfo=UTC)  # the second buy


def _order(db: Session, run: SmallcaseExecutionRun, asset_id: uuid.UUID, **kw: object) -> Any:
    row = SmallcaseExecutionOrder(
        execution_run_id=run.id, asset_id=asset_id, side="buy", quantity=Decimal(10), **kw
    )
    db.add(row)
    db.flush()
    return row


def test_a_buy_after_a_split_averages_with_the_split_position(db: Session) -> None:
    owner = f.user(db)
    connection = f.connection(db, owner)
    portfolio = f.portfolio(db, owner)
    asset = f.asset(db)
    inv = f.investment(db, owner, f.smallcase(db, {}), portfolio, connection)
    run = SmallcaseExecutionRun(
        investment_id=inv.id,
        broker_connection_id=connection.id,
        run_type="invest",
        status="executing",
    )
    db.add(run)
    db.flush()
    # 10 shares at 100, then a 4:1 split: 40 shares at 25 (the ledger's adjustment row)
    _order(
        db,
        run,
        asset.id,
        status="filled",
        order_metadata={
            "filled_quantity": "10",
            "average_fill_price": "100",
            "fees": "0",
            "filled_at": BEFORE.isoformat(),
            "position_quantity": "10",
            "position_average_price": "100",
        },
    )
    db.add(
        PositionAdjustment(
            investment_id=inv.id,
            asset_id=asset.id,
            kind=AdjustmentKind.SPLIT.value,
            quantity_delta=Decimal(30),
            average_price=Decimal(25),
            effective_at=SPLIT,
        )
    )
    db.flush()
    conn = db.connection()
    quantity, average = investment_position(conn, inv.id, asset.id)
    assert (quantity, average) == (Decimal(40), Decimal(25))

    # then 10 more at 26: (40 x 25 + 10 x 26) / 50 = 25.2, not (10 x 100 + 10 x 26) / 20 = 63
    second = _order(db, run, asset.id, status="submitted", broker_order_id="b-2")
    order = OrderRow(
        id=second.id,
        asset_id=asset.id,
        symbol=asset.symbol,
        exchange=asset.exchange,
        fractionable=True,
        side=OrderSide.BUY,
        quantity=Decimal(10),
        price=Decimal(26),
        order_type="market",
        status=OrderStatus.SUBMITTED,
        broker_order_id="b-2",
    )
    report = BrokerOrder(
        broker_order_id="b-2",
        client_order_id=None,
        symbol=asset.symbol,
        side=OrderSide.BUY,
        quantity=Decimal(10),
        filled_quantity=Decimal(10),
        average_fill_price=Decimal(26),
        status=BrokerOrderStatus.FILLED,
        updated_at=AFTER,
    )
    ctx = RunContext(run.id, inv.id, portfolio.id, "USD")
    state = record_fills(conn, ctx, order, report, AFTER)
    assert state.position_quantity == Decimal(50)
    assert state.position_average_price == Decimal("25.2")
