"""A fourth broker is one package plus one registry line (issue 12).

``tests/toy_broker`` is a venue and its kit that nothing else in Saras knows. The run is planned
on an Alpaca connection (planning is not the point here), the connection is pointed at the toy
venue, and the normal executor opens it through ``open_broker`` and the registry.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session

from models import UserBrokerConnection
from saras.brokers import registry
from saras.domain.enums import OrderSide, OrderStatus
from saras.services.execution import execute_run
from tests.support.execution import FAST, Platform
from tests.toy_broker import ToyBroker, ToyVenue


@pytest.fixture
def toy() -> Iterator[None]:
    registry.register("toy", "tests.toy_broker:ToyBroker")  # the one registry line
    yield
    registry._BUILTIN.pop("toy", None)
    registry._registered.pop("toy", None)


def test_an_order_reaches_a_fourth_broker_through_the_normal_execution_path(
    alpaca: Platform, toy: None
) -> None:
    p = alpaca
    run_id = p.plan()
    venue = ToyVenue("toy-1", Decimal("100000"), p.prices)
    with Session(p.engine) as session, session.begin():
        session.execute(
            update(UserBrokerConnection)
            .where(UserBrokerConnection.id == p.connection_id)
            .values(broker_type="toy", connection_metadata={"venue": venue.name})
        )

    outcome = execute_run(p.engine, run_id, settings=FAST)

    assert outcome.status == "completed", outcome
    assert registry.factory_for("toy") is ToyBroker
    orders = p.orders(run_id)
    assert orders and all(o.status is OrderStatus.FILLED for o in orders)
    assert all(o.side is OrderSide.BUY for o in orders)
    assert venue.positions == {o.symbol: o.send_quantity for o in orders}
    assert venue.submissions == len(orders)  # each order sent once
    assert not p.fake.order_posts()  # nothing went to Alpaca
    spent = sum(o.send_quantity * p.prices[o.symbol] for o in orders)
    assert venue.cash == Decimal("100000") - spent
