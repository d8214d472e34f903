"""The toy venue: one account's cash, positions and order book, in memory, thread-safe."""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

#: venues by name; a connection names its venue in ``connection_metadata["venue"]``
VENUES: dict[str, ToyVenue] = {}


@dataclass
class VenueOrder:
    """An order as the venue keeps it (the venue's own shape, not ours)."""

    id: str
    tag: str
    symbol: str
    side: str  # "B" or "S"
    qty: Decimal
    filled: Decimal = Decimal(0)
    price: Decimal | None = None
    state: str = "WORKING"  # WORKING, DONE, KILLED, REFUSED
    note: str = ""
    at: datetime = field(default_factory=lambda: datetime.now(UTC))


class ToyVenue:
    """Fills every market order at once at ``prices[symbol]``, or refuses it without cash."""

    def __init__(self, name: str, cash: Decimal, prices: dict[str, Decimal]) -> None:
        self.name = name
        self.cash = cash
        self.prices = dict(prices)
        self.positions: dict[str, Decimal] = {}
        self.orders: dict[str, VenueOrder] = {}
        self.submissions = 0
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        VENUES[name] = self

    def submit(self, tag: str, symbol: str, side: str, qty: Decimal) -> VenueOrder:
        """Accept an order (a repeated tag returns the first order: the venue dedupes)."""
        with self._lock:
            self.submissions += 1
            for order in self.orders.values():
                if order.tag == tag:
                    return order
            order = VenueOrder(f"T{next(self._ids)}", tag, symbol, side, qty)
            self.orders[order.id] = order
            self._fill(order)
            return order

    def _fill(self, order: VenueOrder) -> None:
        price = self.prices.get(order.symbol)
        signed = order.qty if order.side == "B" else -order.qty
        if price is None or self.cash - signed * price < 0:
            order.state, order.note = "REFUSED", "no price" if price is None else "no cash"
            return
        if self.positions.get(order.symbol, Decimal(0)) + signed < 0:
            order.state, order.note = "REFUSED", "short sale"
            return
        self.cash -= signed * price
        self.positions[order.symbol] = self.positions.get(order.symbol, Decimal(0)) + signed
        order.filled, order.price, order.state = order.qty, price, "DONE"
