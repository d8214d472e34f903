"""Alpaca kit: raw JSON payloads to our types (``Decimal`` from Alpaca strings, aware UTC)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from saras.brokers.alpaca.config import BROKER
from saras.brokers.alpaca.errors import AlpacaResponseError, _BadPayload
from saras.brokers.base import (
    AccountInfo,
    BrokerOrder,
    BrokerOrderStatus,
    BrokerPosition,
    Fill,
    MarketClock,
)
from saras.domain.enums import OrderSide


def _decimal_places(value: Decimal) -> int:
    exponent = value.normalize().as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


def map_order_status(
    status: str, *, filled_quantity: Decimal, quantity: Decimal | None
) -> BrokerOrderStatus:
    """Map an Alpaca order status to ours; an unknown status raises ``AlpacaResponseError``.

    Statuses that do not end an order report partial progress when shares have filled.
    """

    def working(base: BrokerOrderStatus) -> BrokerOrderStatus:
        return BrokerOrderStatus.PARTIALLY_FILLED if filled_quantity > 0 else base

    match status:
        # Received by Alpaca, not yet working at an execution venue.
        case "accepted":
            return working(BrokerOrderStatus.PENDING)
        case "pending_new":
            return working(BrokerOrderStatus.PENDING)
        case "pending_review":
            return working(BrokerOrderStatus.PENDING)
        case "held":  # e.g. a bracket leg waiting for its parent
            return working(BrokerOrderStatus.PENDING)
        case "suspended":  # not eligible for trading for now
            return working(BrokerOrderStatus.PENDING)
        # Working at the exchange.
        case "new":  # routed to the exchange: Alpaca's usual initial state
            return working(BrokerOrderStatus.OPEN)
        case "accepted_for_bidding":  # at the exchange, priced in an auction
            return working(BrokerOrderStatus.OPEN)
        case "stopped":  # a trade is guaranteed but has not happened yet
            return working(BrokerOrderStatus.OPEN)
        case "pending_cancel":  # still working until the cancel is confirmed
            return working(BrokerOrderStatus.OPEN)
        case "pending_replace":
            return working(BrokerOrderStatus.OPEN)
        case "done_for_day":  # no more executions today; may resume on the next day
            return working(BrokerOrderStatus.OPEN)
        case "partially_filled":
            return BrokerOrderStatus.PARTIALLY_FILLED
        case "filled":
            return BrokerOrderStatus.FILLED
        case "calculated":  # done for the day, settlement calculations pending
            if quantity is not None and filled_quantity >= quantity:
                return BrokerOrderStatus.FILLED
            return working(BrokerOrderStatus.OPEN)
        # Over. A cancelled or expired order may have filled in part: see filled_quantity.
        case "canceled":
            return BrokerOrderStatus.CANCELLED
        case "replaced":  # superseded by another order (replaced_by); this one is over
            return BrokerOrderStatus.CANCELLED
        case "expired":
            return BrokerOrderStatus.EXPIRED
        case "rejected":
            return BrokerOrderStatus.REJECTED
        case _:
            raise AlpacaResponseError(
                f"alpaca: unknown order status {status!r}; map it in saras.brokers.alpaca",
                broker=BROKER,
            )


def _field(raw: Mapping[str, Any], name: str) -> Any:
    if name not in raw:
        raise _BadPayload(f"{name} is missing")
    return raw[name]


def _text(raw: Mapping[str, Any], name: str) -> str:
    value = _field(raw, name)
    if not isinstance(value, str) or not value:
        raise _BadPayload(f"{name} is not a non-empty string")
    return value


def _decimal(value: Any, name: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        raise _BadPayload(f"{name} is not a number: {value!r}")
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise _BadPayload(f"{name} is not a number: {value!r}") from None
    if not number.is_finite():
        raise _BadPayload(f"{name} is not finite: {value!r}")
    return number


def _optional_decimal(raw: Mapping[str, Any], name: str) -> Decimal | None:
    value = raw.get(name)
    if value is None or value == "":
        return None
    return _decimal(value, name)


def _time(value: Any, name: str) -> datetime | None:
    """Parse an ISO 8601 time (``Z`` or offset, up to nanoseconds) to aware UTC."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _BadPayload(f"{name} is not a timestamp: {value!r}")
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    head, dot, rest = text.partition(".")
    if dot:  # keep microseconds: Alpaca may send nanoseconds
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = f"{head}.{rest[: min(digits, 6)]}{rest[digits:]}"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise _BadPayload(f"{name} is not a timestamp: {value!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)  # Alpaca's times are UTC when unmarked
    return parsed.astimezone(UTC)


def _plain(number: Decimal) -> str:
    text = format(number.normalize(), "f")
    return "0" if text == "-0" else text


def _parse_order(raw: Any) -> BrokerOrder:
    """Translate Alpaca's order entity."""
    if not isinstance(raw, Mapping):
        raise _BadPayload(f"an order must be an object, not {type(raw).__name__}")
    order_id = _text(raw, "id")
    status_text = _text(raw, "status")
    quantity = _optional_decimal(raw, "qty")
    filled = _optional_decimal(raw, "filled_qty") or Decimal("0")
    average = _optional_decimal(raw, "filled_avg_price")
    if filled <= 0:
        average = None  # Alpaca may say 0 for "no fills yet": there is no average price
    side_text = _text(raw, "side")
    match side_text:
        case "buy":
            side = OrderSide.BUY
        case "sell":
            side = OrderSide.SELL
        case _:
            raise _BadPayload(f"unknown side {side_text!r}")
    status = map_order_status(status_text, filled_quantity=filled, quantity=quantity)
    submitted_at = _time(raw.get("submitted_at"), "submitted_at") or _time(
        raw.get("created_at"), "created_at"
    )
    updated_at = _time(raw.get("updated_at"), "updated_at")
    filled_at = _time(raw.get("filled_at"), "filled_at")
    fees = _optional_decimal(raw, "commission") or Decimal("0")
    if filled > 0 and average is not None and (filled_at or updated_at or submitted_at) is None:
        raise _BadPayload("a filled order carries no time")
    reason: str | None = None
    match status_text:
        case "rejected":
            reason = "rejected by Alpaca (no reason given)"
        case "replaced":
            reason = f"replaced by order {raw.get('replaced_by') or 'unknown'}"
        case "expired":
            reason = f"expired (time in force {raw.get('time_in_force') or 'unknown'})"
    client_id = raw.get("client_order_id")
    return BrokerOrder(
        broker_order_id=order_id,
        client_order_id=client_id if isinstance(client_id, str) and client_id else None,
        symbol=_text(raw, "symbol"),
        side=side,
        quantity=quantity,
        filled_quantity=filled,
        average_fill_price=average,
        status=status,
        submitted_at=submitted_at,
        updated_at=updated_at,
        reason=reason,
        fees=fees,
    )


def _parse_fill_activities(raw: Any) -> list[tuple[str, Fill]]:
    """Translate a page of FILL activities into (order id, Fill) pairs, in the page's order."""
    if not isinstance(raw, list):
        raise _BadPayload(f"activities must be a list, not {type(raw).__name__}")
    out = []
    for row in raw:
        if not isinstance(row, Mapping):
            raise _BadPayload("an activity must be an object")
        if row.get("activity_type", "FILL") != "FILL":
            continue
        at = _time(row.get("transaction_time"), "transaction_time")
        if at is None:
            raise _BadPayload("a FILL activity carries no transaction_time")
        fill = Fill(
            fill_id=_text(row, "id"),
            quantity=_decimal(_field(row, "qty"), "qty"),
            price=_decimal(_field(row, "price"), "price"),
            fees=Decimal(0),  # US equities: commission-free; Alpaca reports fees as activities
            filled_at=at,
        )
        out.append((_text(row, "order_id"), fill))
    return out


def _parse_order_page(raw: Any) -> list[tuple[BrokerOrder, datetime]]:
    """Translate a page of GET /v2/orders, each order with the time it is paged by."""
    if not isinstance(raw, list):
        raise _BadPayload(f"an order list must be an array, not {type(raw).__name__}")
    page = []
    for item in raw:
        order = _parse_order(item)
        if order.submitted_at is None:
            raise _BadPayload(f"order {order.broker_order_id} has no submission time")
        page.append((order, order.submitted_at))
    return page


def _parse_account(raw: Any) -> AccountInfo:
    if not isinstance(raw, Mapping):
        raise _BadPayload(f"the account must be an object, not {type(raw).__name__}")
    return AccountInfo(
        cash=_decimal(_field(raw, "cash"), "cash"),
        buying_power=_decimal(_field(raw, "buying_power"), "buying_power"),
        currency=_text(raw, "currency"),
    )


def _parse_positions(raw: Any) -> list[BrokerPosition]:
    if not isinstance(raw, list):
        raise _BadPayload(f"positions must be an array, not {type(raw).__name__}")
    positions = []
    for item in raw:
        if not isinstance(item, Mapping):
            raise _BadPayload("a position must be an object")
        quantity = _decimal(_field(item, "qty"), "qty")
        if item.get("side") == "short" and quantity > 0:
            quantity = -quantity
        exchange = item.get("exchange")
        positions.append(
            BrokerPosition(
                symbol=_text(item, "symbol"),
                quantity=quantity,
                average_price=_optional_decimal(item, "avg_entry_price"),
                market_value=_optional_decimal(item, "market_value"),
                exchange=exchange if isinstance(exchange, str) and exchange else None,
            )
        )
    return positions


def _parse_clock(raw: Any) -> MarketClock:
    if not isinstance(raw, Mapping):
        raise _BadPayload(f"the clock must be an object, not {type(raw).__name__}")
    is_open = _field(raw, "is_open")
    if not isinstance(is_open, bool):
        raise _BadPayload(f"is_open is not a boolean: {is_open!r}")
    return MarketClock(
        is_open=is_open,
        next_open=_time(raw.get("next_open"), "next_open"),
        next_close=_time(raw.get("next_close"), "next_close"),
    )
