"""The toy kit: the Broker protocol over ``ToyVenue``, on the shared kit."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from saras.brokers.base import (
    AccountInfo,
    BrokerCapabilities,
    BrokerCredentials,
    BrokerOrder,
    BrokerOrderStatus,
    BrokerPosition,
    ConnectionConfig,
    Fill,
    MarketClock,
    OrderRequest,
)
from saras.brokers.errors import OrderNotFoundError, OrderRejectedError
from saras.brokers.kit.rate import RateLimiter
from saras.brokers.kit.resend import place_once
from saras.domain.enums import OrderSide
from tests.toy_broker.venue import VENUES, ToyVenue, VenueOrder

BROKER = "toy"
_STATES = {
    "WORKING": BrokerOrderStatus.OPEN,
    "DONE": BrokerOrderStatus.FILLED,
    "KILLED": BrokerOrderStatus.CANCELLED,
    "REFUSED": BrokerOrderStatus.REJECTED,
}


def parse(order: VenueOrder) -> BrokerOrder:
    """Turn the venue's order into ours (explicit status table, one fill per done order)."""
    fills = ()
    if order.price is not None and order.filled > 0:
        fills = (Fill(f"{order.id}-1", order.filled, order.price, Decimal(0), order.at),)
    return BrokerOrder(
        broker_order_id=order.id,
        client_order_id=order.tag,
        symbol=order.symbol,
        side=OrderSide.BUY if order.side == "B" else OrderSide.SELL,
        quantity=order.qty,
        filled_quantity=order.filled,
        average_fill_price=order.price,
        status=_STATES[order.state],
        submitted_at=order.at,
        updated_at=order.at,
        reason=order.note or None,
        fills=fills,
        fills_reported=True,
    )


class ToyBroker:
    """One account at a ``ToyVenue`` (named by ``connection_metadata["venue"]``)."""

    broker_type = BROKER

    @classmethod
    def capabilities(cls, config: ConnectionConfig) -> BrokerCapabilities:
        """Fractional, never real money, no secrets."""
        return BrokerCapabilities(
            real_money=False, fractional=True, quantity_decimals=6, remote=False
        )

    def __init__(self, config: ConnectionConfig, credentials: BrokerCredentials, **_: Any) -> None:
        self.venue: ToyVenue = VENUES[str(config.metadata["venue"])]
        self.limiter = RateLimiter([(100, 1.0)])

    def get_account(self) -> AccountInfo:
        return AccountInfo(cash=self.venue.cash, buying_power=self.venue.cash, currency="USD")

    def get_positions(self) -> Sequence[BrokerPosition]:
        return [BrokerPosition(s, q) for s, q in self.venue.positions.items() if q]

    def place_order(self, request: OrderRequest, *, resume: bool = False) -> BrokerOrder:
        if request.quantity is None:
            raise OrderRejectedError("the toy venue takes quantities only", broker=BROKER)
        quantity = request.quantity

        def send() -> BrokerOrder:
            self.limiter.acquire()
            side = "B" if request.side is OrderSide.BUY else "S"
            order = self.venue.submit(request.client_order_id, request.symbol, side, quantity)
            return parse(order)

        return place_once(
            key=request.client_order_id,
            client_order_id=request.client_order_id,
            broker=BROKER,
            resume=resume,
            find=lambda: self.get_order_by_client_id(request.client_order_id),
            send=send,
        )

    def get_order_by_client_id(self, client_order_id: str) -> BrokerOrder | None:
        found = [o for o in self.venue.orders.values() if o.tag == client_order_id]
        return parse(found[0]) if found else None

    def get_order(self, broker_order_id: str) -> BrokerOrder:
        order = self.venue.orders.get(broker_order_id)
        if order is None:
            raise OrderNotFoundError(f"toy order {broker_order_id} not found", broker=BROKER)
        return parse(order)

    def list_orders(self, since: datetime) -> Sequence[BrokerOrder]:
        return [parse(o) for o in self.venue.orders.values() if o.at >= since]

    def cancel_order(self, broker_order_id: str) -> None:
        order = self.venue.orders.get(broker_order_id)
        if order is not None and order.state == "WORKING":
            order.state = "KILLED"

    def get_clock(self) -> MarketClock:
        return MarketClock(is_open=True, next_open=None)
