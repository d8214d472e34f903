"""Zerodha kit: Kite payloads (orders, trades, holdings) to our types."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from saras.brokers.base import (
    BrokerOrderStatus,
    Fill,
)
from saras.brokers.zerodha.config import BROKER, IST
from saras.brokers.zerodha.errors import KiteMappingError
from saras.domain.enums import OrderSide


def map_kite_status(status: str, filled_quantity: Decimal) -> BrokerOrderStatus:
    """Map a Kite order status (and the filled quantity) to ours; unknown statuses raise."""
    partially = filled_quantity > 0
    match status.strip().upper():
        case "COMPLETE":
            return BrokerOrderStatus.FILLED
        case "REJECTED":
            return BrokerOrderStatus.REJECTED
        case "CANCELLED" | "CANCELLED AMO":
            return BrokerOrderStatus.CANCELLED
        case "LAPSED" | "EXPIRED":
            return BrokerOrderStatus.EXPIRED
        case "PUT ORDER REQ RECEIVED" | "VALIDATION PENDING" | "OPEN PENDING" | "AMO REQ RECEIVED":
            return BrokerOrderStatus.PARTIALLY_FILLED if partially else BrokerOrderStatus.PENDING
        case (
            "OPEN"
            | "TRIGGER PENDING"
            | "MODIFY VALIDATION PENDING"
            | "MODIFY PENDING"
            | "MODIFIED"
            | "CANCEL PENDING"
        ):
            return BrokerOrderStatus.PARTIALLY_FILLED if partially else BrokerOrderStatus.OPEN
        case _:
            raise KiteMappingError(f"unknown Kite order status {status!r}", broker=BROKER)


def _map_side(value: object) -> OrderSide:
    match str(value).upper():
        case "BUY":
            return OrderSide.BUY
        case "SELL":
            return OrderSide.SELL
        case _:
            raise KiteMappingError(f"unknown Kite transaction type {value!r}", broker=BROKER)


def _decimal(value: object) -> Decimal:
    """Turn a Kite number (int, float, str) into a Decimal via its string form."""
    if value is None or value == "":
        return Decimal("0")
    try:
        return Decimal(str(value))
    except InvalidOperation as exc:
        raise KiteMappingError(f"Kite sent a non-numeric amount {value!r}", broker=BROKER) from exc


def _kite_time(value: object) -> datetime | None:
    """Turn Kite's naive IST timestamp (str or SDK-parsed datetime) into aware UTC."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            return None  # e.g. the bare "09:16:39" order_timestamp on trades
    else:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=IST)
    return parsed.astimezone(UTC)


def _required(row: Mapping[str, Any], name: str) -> str:
    """Return a field Kite always sends, or fail clearly when it did not."""
    value = row.get(name)
    if value is None or value == "":
        raise KiteMappingError(f"Kite sent a row without {name!r}", broker=BROKER)
    return str(value)


def _has_tag(order: Mapping[str, Any], tag: str) -> bool:
    tags = order.get("tags") or ()
    return order.get("tag") == tag or (isinstance(tags, list) and tag in tags)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _fill(trade: Mapping[str, Any]) -> Fill:
    filled_at = (
        _kite_time(trade.get("fill_timestamp"))
        or _kite_time(trade.get("exchange_timestamp"))
        or _EPOCH
    )
    return Fill(
        fill_id=str(trade.get("trade_id")),
        quantity=_decimal(trade.get("quantity")),
        price=_decimal(trade.get("average_price")),
        fees=Decimal("0"),
        filled_at=filled_at,
    )


def _empty_row(source: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "exchange": str(source.get("exchange") or "NSE"),
        "held": Decimal("0"),
        "held_cost": Decimal("0"),
        "today": Decimal("0"),
        "today_cost": Decimal("0"),
        "last": Decimal("0"),
    }
