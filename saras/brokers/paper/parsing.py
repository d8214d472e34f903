"""Paper kit: rows of the ``paper_*`` tables to our types (Decimal and aware UTC columns)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect, RowMapping

from saras.brokers.base import (
    TERMINAL_BROKER_STATUSES,
    BrokerOrderStatus,
)
from saras.brokers.paper.config import QUANTITY_SCALE, PaperFillMode
from saras.domain.enums import OrderSide, OrderType


class _Dec(sa.types.TypeDecorator[Decimal]):
    """``Numeric(p, s)`` that binds and returns ``Decimal`` quantized to the column's scale.

    SQLite has no decimal type: SQLAlchemy hands back ``Decimal`` made from a float, so the value
    is quantized again on the way out to drop the float noise.
    """

    impl = sa.Numeric
    cache_ok = True

    def __init__(self, precision: int, scale: int) -> None:
        super().__init__(precision=precision, scale=scale, asdecimal=True)
        # Attributes named like the __init__ arguments make them part of the statement cache key.
        self.precision = precision
        self.scale = scale
        self._quantum = Decimal(1).scaleb(-scale)

    def process_bind_param(self, value: Any, dialect: Dialect) -> Decimal | None:
        """Quantize a bound value to the column's scale."""
        if value is None:
            return None
        return Decimal(str(value)).quantize(self._quantum, rounding=ROUND_HALF_UP)

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        """Return a stored value as a ``Decimal`` at the column's scale."""
        if value is None:
            return None
        return Decimal(str(value)).quantize(self._quantum, rounding=ROUND_HALF_UP)


class _UTCDateTime(sa.types.TypeDecorator[datetime]):
    """An aware timestamp, stored in UTC and always read back aware (SQLite drops the zone)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> datetime | None:
        """Refuse naive datetimes; store aware ones in UTC."""
        if value is None:
            return None
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise ValueError(f"paper broker timestamps must be aware datetimes, got {value!r}")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        """Return a stored timestamp as an aware UTC datetime."""
        if value is None:
            return None
        stamp: datetime = value
        if stamp.tzinfo is None:
            return stamp.replace(tzinfo=UTC)
        return stamp.astimezone(UTC)


def _quantity_type() -> _Dec:
    return _Dec(24, QUANTITY_SCALE)


def _money_type() -> _Dec:
    return _Dec(20, 6)


@dataclass
class _Order:
    """A paper order row, worked on in Python inside one transaction."""

    broker_order_id: str
    account_id: str
    client_order_id: str
    symbol: str
    exchange: str | None
    side: OrderSide
    quantity: Decimal | None
    notional: Decimal | None
    order_type: OrderType
    limit_price: Decimal | None
    status: BrokerOrderStatus
    filled_quantity: Decimal
    average_fill_price: Decimal | None
    fees: Decimal
    reason: str | None
    polls_seen: int
    fill_mode: PaperFillMode
    fill_delay_polls: int
    fill_ratio: Decimal
    fractional: bool
    submitted_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: RowMapping) -> _Order:
        """Build an order from a ``paper_orders`` row."""
        values = {f.name: row[f.name] for f in fields(cls)}
        values["side"] = OrderSide(values["side"])
        values["order_type"] = OrderType(values["order_type"])
        values["status"] = BrokerOrderStatus(values["status"])
        values["fill_mode"] = PaperFillMode(values["fill_mode"])
        return cls(**values)

    def values(self) -> dict[str, Any]:
        """Return the row's column values."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_BROKER_STATUSES
