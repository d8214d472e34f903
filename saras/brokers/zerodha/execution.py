"""Zerodha Kite Connect adapter: CNC delivery orders in whole shares on NSE and BSE.

Kite has no idempotency key. Each order carries a deterministic ``tag``
(:func:`saras.brokers.ids.kite_tag` of our client order id, 20 alphanumeric characters), and every
doubt about an order placement is settled by reading today's order book and matching the tag
before anything is sent again (Zerodha's own advice: a 200 means *received*, and a non-400 error
may still have placed the order).

How answers are classified (the SDK raises by the body's ``error_type``, not the HTTP status):

=====================================  ==========================  ==============================
Kite / transport answer                reads                       order placement
=====================================  ==========================  ==============================
TokenException (403)                   FatalBrokerError, on_fatal  same; nothing is retried
PermissionException                    FatalBrokerError            same
InputException / OrderException (4xx)  NonRetryableBrokerError     OrderRejectedError (reason)
InputException / OrderException (5xx)  NonRetryableBrokerError     look the tag up, then
                                                                   OrderRejectedError
NetworkException "Too many requests"   RateLimitedError            RateLimitedError (not placed)
other NetworkException, 5xx            RetryableBrokerError        ambiguous: look the tag up
DataException (HTML 502, bad JSON)     RetryableBrokerError        ambiguous: look the tag up
GeneralException 4xx (MarginException  NonRetryableBrokerError     look the tag up, then
  and other unknown error types)                                   OrderRejectedError
read timeout, reset after sending      RetryableBrokerError        ambiguous: look the tag up
connection refused / connect timeout   RetryableBrokerError        RetryableBrokerError (not sent)
=====================================  ==========================  ==============================

An ambiguous placement whose order cannot be found raises :class:`AmbiguousOrderError`; the caller
resolves it later with ``place_order(request, resume=True)``, which looks the tag up again first
and, when this adapter sent the tag less than ``lookup_horizon`` seconds ago (default 30 s, or
``connection_metadata["lookup_horizon"]``; always longer than the request timeout), raises
``AmbiguousOrderError`` again instead of sending: Kite may list an order seconds after the request
timed out, and an early "absent" would place it twice. Across processes the executor applies the
same horizon from the send time it stores with the order. ``timeout`` defaults to
``connection_metadata["request_timeout"]``, else 7 s.

Caveat: Kite's order book holds *today's* orders only. A resume on a later trading day cannot see
yesterday's order and would place it again: callers must resolve ambiguous Kite orders the same
day (or reconcile them against holdings and trades instead).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

from saras.brokers.base import (
    LOOKUP_HORIZON_KEY,
    REQUEST_TIMEOUT_KEY,
    AccountInfo,
    BrokerAsset,
    BrokerCapabilities,
    BrokerCredentials,
    BrokerOrder,
    BrokerOrderStatus,
    BrokerPosition,
    ConnectionConfig,
    Fill,
    MarketClock,
    OrderRequest,
    default_lookup_horizon,
    metadata_seconds,
)
from saras.brokers.errors import (
    AmbiguousOrderError,
    BrokerError,
    FatalBrokerError,
    NonRetryableBrokerError,
    OrderNotFoundError,
    OrderRejectedError,
    RateLimitedError,
    RetryableBrokerError,
)
from saras.brokers.ids import kite_tag
from saras.brokers.kit.clock import market_clock
from saras.brokers.kit.rate import Budget, RateLimiter, shared
from saras.brokers.kit.resend import SendLog, place_once, resolve
from saras.brokers.zerodha.capabilities import capabilities as kite_capabilities
from saras.brokers.zerodha.config import (
    _EXCHANGES,
    _SUFFIXES,
    BROKER,
    DEFAULT_TIMEOUT,
    NSE_HOURS,
    ORDERS_PER_DAY,
    ORDERS_PER_MINUTE,
)
from saras.brokers.zerodha.errors import KiteMappingError, _classify, _Kind, _Outcome, _sdk_errors
from saras.brokers.zerodha.parsing import (
    _EPOCH,
    _decimal,
    _empty_row,
    _fill,
    _has_tag,
    _kite_time,
    _map_side,
    _required,
    map_kite_status,
)
from saras.domain.enums import OrderSide, OrderType

if TYPE_CHECKING:
    from kiteconnect import KiteConnect

__all__ = [
    "KiteMappingError",
    "KiteRateLimiter",
    "ZerodhaBroker",
    "map_kite_status",
    "nse_market_clock",
]

log = logging.getLogger(__name__)

_T = TypeVar("_T")


# --------------------------------------------------------------------------- rate limiting


@dataclass(frozen=True)
class KiteRateLimiter:
    """Client-side limits of one Kite account: orders 10/s, 400/min and 5,000/day; reads 10/s.

    Built on the kit's one ``RateLimiter`` (sliding windows, as Kite counts). With an account key
    the order limits are also declared as shared budgets ``broker:<connection id>:orders`` and
    ``...:orders-day``, which every process honours when a shared backend is installed.
    """

    orders: RateLimiter
    other: RateLimiter

    @classmethod
    def create(
        cls,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        margin: float = 0.05,
        account_key: str | None = None,
    ) -> KiteRateLimiter:
        """Build the limiter pair with Kite's published limits."""
        budgets = (
            ()
            if account_key is None
            else (
                Budget(f"broker:{account_key}:orders", ORDERS_PER_MINUTE, 60.0),
                Budget(f"broker:{account_key}:orders-day", ORDERS_PER_DAY, 86_400.0),
            )
        )
        return cls(
            orders=RateLimiter(
                [(10, 1.0), (ORDERS_PER_MINUTE, 60.0), (ORDERS_PER_DAY, 86_400.0)],
                clock=clock,
                sleep=sleep,
                margin=margin,
                budgets=budgets,
            ),
            other=RateLimiter([(10, 1.0)], clock=clock, sleep=sleep, margin=margin),
        )

    @classmethod
    def for_account(cls, account_key: str) -> KiteRateLimiter:
        """Return the process-wide limiter shared by every adapter of one account."""
        return shared(f"kite:{account_key}", lambda: cls.create(account_key=account_key))


# --------------------------------------------------------------------------- market calendar


def nse_market_clock(now: datetime) -> MarketClock:
    """Return whether the Indian equity market is open at ``now`` (aware) and its next open/close.

    The kit's market clock on the NSE calendar (XBOM: NSE and BSE share sessions and holidays);
    beyond its recorded years, weekdays 09:15-15:30 IST. Muhurat sessions are not modelled.
    """
    return market_clock("NSE", now, fallback=NSE_HOURS)


@dataclass(frozen=True)
class _Spec:
    """A validated order request in Kite's terms."""

    client_order_id: str
    tag: str
    exchange: str
    symbol: str
    side: OrderSide
    quantity: int
    order_type: OrderType
    price: Decimal | None

    def params(self, variety: str) -> dict[str, Any]:
        params: dict[str, Any] = {
            "variety": variety,
            "exchange": self.exchange,
            "tradingsymbol": self.symbol,
            "transaction_type": "BUY" if self.side is OrderSide.BUY else "SELL",
            "quantity": self.quantity,
            "product": "CNC",
            "validity": "DAY",
            "tag": self.tag,
        }
        if self.order_type is OrderType.MARKET:
            params["order_type"] = "MARKET"
            params["market_protection"] = -1  # automatic protection; 0 is refused since 2026-04
        else:
            params["order_type"] = "LIMIT"
            params["price"] = format(self.price, "f")  # plain notation, never "1E+3"
        return params

    def matches(self, order: Mapping[str, Any]) -> bool:
        return (
            str(order.get("tradingsymbol")) == self.symbol
            and str(order.get("transaction_type")).upper()
            == ("BUY" if self.side is OrderSide.BUY else "SELL")
            and _decimal(order.get("quantity")) == self.quantity
        )


def _instruments(kite: KiteConnect, venue: str) -> Any:
    """Return Kite's instruments dump of one exchange."""
    return kite.instruments(venue)


def _utc_now() -> datetime:
    return datetime.now(UTC)


# --------------------------------------------------------------------------- the adapter


class ZerodhaBroker:
    """A Zerodha Kite Connect account behind the Broker protocol (CNC, whole shares, INR).

    Nothing happens on construction: the SDK client is built on first use. ``clock`` gives the
    wall time (aware) used for the market clock and the regular/AMO choice; ``monotonic`` and
    ``sleep`` drive the rate limiter and the pauses between order-book lookups. ``on_fatal`` is
    called with a user-facing message when the access token is rejected, so the caller can mark
    the connection ``expired``. By default, adapters of the same ``connection_id`` in one process
    share one rate limiter; pass ``rate_limiter`` to control it.
    """

    broker_type = BROKER
    currency = "INR"

    @classmethod
    def capabilities(cls, config: ConnectionConfig) -> BrokerCapabilities:
        """Return Kite's capabilities (see ``capabilities.py``)."""
        return kite_capabilities(config)

    def __init__(
        self,
        config: ConnectionConfig,
        credentials: BrokerCredentials,
        *,
        timeout: float | None = None,
        lookup_horizon: float | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], datetime] = _utc_now,
        monotonic: Callable[[], float] | None = None,
        on_fatal: Callable[[str], None] | None = None,
        rate_limiter: KiteRateLimiter | None = None,
        lookup_delays: Sequence[float] = (0.0, 1.0, 2.0),
        confirm_placement: bool = True,
    ):
        self._config = config
        self._credentials = credentials
        self._timeout = timeout or metadata_seconds(config, REQUEST_TIMEOUT_KEY) or DEFAULT_TIMEOUT
        horizon = (
            lookup_horizon
            or metadata_seconds(config, LOOKUP_HORIZON_KEY)
            or default_lookup_horizon(self._timeout)
        )
        if horizon <= self._timeout:
            raise ValueError(
                f"Kite connection {config.connection_id}: the lookup horizon ({horizon:g} s) must "
                f"be longer than the request timeout ({self._timeout:g} s)"
            )
        self._lookup_horizon = horizon
        self._monotonic = monotonic or time.monotonic
        self._confirm_placement = confirm_placement
        self._sleep = sleep
        self._clock = clock
        self._on_fatal = on_fatal
        self._lookup_delays = tuple(lookup_delays) or (0.0,)
        if rate_limiter is None:
            if monotonic is None and sleep is time.sleep:
                rate_limiter = KiteRateLimiter.for_account(config.connection_id)
            else:
                rate_limiter = KiteRateLimiter.create(
                    clock=monotonic or time.monotonic, sleep=sleep
                )
        self._limiter = rate_limiter
        self._lock = threading.Lock()
        self._sdk: KiteConnect | None = None
        self._fatal: str | None = None
        # tag -> when this adapter last sent it (monotonic): not re-sent inside the horizon
        self._sent = SendLog(self._monotonic)

    @property
    def request_timeout(self) -> float:
        """Return the HTTP timeout of every request, in seconds."""
        return self._timeout

    @property
    def lookup_horizon(self) -> float:
        """Return how long an order sent without a clear answer may take to show in the book."""
        return self._lookup_horizon

    def __repr__(self) -> str:
        return f"ZerodhaBroker(connection_id={self._config.connection_id!r})"

    # ------------------------------------------------------------------ protocol

    def get_account(self) -> AccountInfo:
        """Return the equity segment's cash and buying power in INR."""
        margins = self._read("margins", lambda k: k.margins())
        equity = margins.get("equity") if isinstance(margins, Mapping) else None
        if not isinstance(equity, Mapping) or not isinstance(equity.get("available"), Mapping):
            raise NonRetryableBrokerError(
                f"Kite connection {self._config.connection_id}: no equity segment in margins",
                broker=BROKER,
            )
        available = equity["available"]
        live = available.get("live_balance")
        cash = _decimal(live if live is not None else available.get("cash"))
        net = _decimal(equity.get("net")) if equity.get("net") is not None else cash
        # CNC delivery buys are paid from cash: collateral margin (part of `net`) cannot buy them.
        paise = Decimal("0.01")
        return AccountInfo(
            cash=cash.quantize(paise),
            buying_power=min(cash, net).quantize(paise),
            currency=self.currency,
        )

    def get_positions(self) -> Sequence[BrokerPosition]:
        """Return CNC holdings (settled + T1) plus today's CNC net positions, per symbol.

        A share bought today shows in ``positions()["net"]`` (product CNC) today and in
        ``holdings()`` as ``t1_quantity`` from the next trading day until it settles into
        ``quantity``; a share sold today stays in holdings' ``quantity`` and shows as a negative
        CNC net position. So what the account owns is ``quantity + t1_quantity`` plus the CNC net
        quantity of today, which is what this returns (``used_quantity`` is not subtracted again).
        """
        holdings = self._read("holdings", lambda k: k.holdings()) or []
        positions = self._read("positions", lambda k: k.positions()) or {}
        rows: dict[str, dict[str, Any]] = {}
        for h in holdings:
            symbol = _required(h, "tradingsymbol")
            qty = _decimal(h.get("quantity")) + _decimal(h.get("t1_quantity"))
            row = rows.setdefault(symbol, _empty_row(h))
            row["held"] += qty
            row["held_cost"] += qty * _decimal(h.get("average_price"))
            row["last"] = _decimal(h.get("last_price")) or row["last"]
        net = positions.get("net", []) if isinstance(positions, Mapping) else []
        for p in net:
            if str(p.get("product")).upper() != "CNC" or str(p.get("exchange")) not in _EXCHANGES:
                continue
            symbol = _required(p, "tradingsymbol")
            row = rows.setdefault(symbol, _empty_row(p))
            qty = _decimal(p.get("quantity"))
            row["today"] += qty
            if qty > 0:
                row["today_cost"] += qty * _decimal(p.get("average_price"))
            row["last"] = _decimal(p.get("last_price")) or row["last"]
        result = []
        for symbol, row in sorted(rows.items()):
            quantity = row["held"] + row["today"]
            if quantity == 0:
                continue
            bought = row["held"] + max(row["today"], Decimal("0"))
            cost = row["held_cost"] + row["today_cost"]
            average = (cost / bought) if bought > 0 and cost > 0 else None
            last = row["last"]
            result.append(
                BrokerPosition(
                    symbol=symbol,
                    quantity=quantity,
                    average_price=average,
                    market_value=(quantity * last) if last else None,
                    exchange=row["exchange"],
                )
            )
        return result

    def place_order(self, request: OrderRequest, *, resume: bool = False) -> BrokerOrder:
        """Place a CNC order exactly once (regular in market hours, AMO outside them).

        With ``resume=True``, or when this adapter already sent the same tag, the order book is
        read first and a matching order is returned instead of placing again.
        """
        spec = self._spec(request)
        return place_once(
            key=spec.tag,
            client_order_id=spec.client_order_id,
            broker=BROKER,
            resume=resume,
            find=lambda: self._find(spec),
            send=lambda: self._send(spec),
            sent=self._sent,
            horizon=self._lookup_horizon,
        )

    def _send(self, spec: _Spec) -> BrokerOrder:
        """Send the order once (regular in market hours, AMO outside them) and read the answer."""
        variety = "regular" if self.get_clock().is_open else "amo"
        params = spec.params(variety)
        kite = self._kite()
        self._limiter.orders.acquire()
        try:
            order_id = kite.place_order(**params)
        except _sdk_errors() as exc:
            return self._placement_failed(spec, _classify(exc))
        if not isinstance(order_id, str | int) or not str(order_id):
            return self._placement_failed(
                spec, _Outcome(_Kind.AMBIGUOUS, "Kite answered without an order id")
            )
        log.info(
            "kite order placed: connection=%s tag=%s order_id=%s variety=%s",
            self._config.connection_id,
            spec.tag,
            order_id,
            variety,
        )
        return self._after_placement(spec, str(order_id))

    def get_order_by_client_id(self, client_order_id: str) -> BrokerOrder | None:
        """Find today's order carrying our id's tag; None when the book has none."""
        tag = kite_tag(client_order_id)
        orders = self._read("orders", lambda k: k.orders()) or []
        matches = [o for o in orders if _has_tag(o, tag)]
        if not matches:
            return None
        order = self._pick(matches, tag)
        return self._with_fills(self._map(order, client_order_id=client_order_id))

    def get_order(self, broker_order_id: str) -> BrokerOrder:
        """Return an order's latest state (the last entry of its history) with its fills."""
        return self._with_fills(self._map(self._history(broker_order_id)[-1]))

    def _history(self, broker_order_id: str) -> list[dict[str, Any]]:
        """Return an order's history, oldest first; OrderNotFoundError when Kite has none."""
        history = self._read(
            "order_history",
            lambda k: k.order_history(broker_order_id),
            not_found=broker_order_id,
        )
        if not history:
            raise OrderNotFoundError(
                f"Kite has no order {broker_order_id}", broker=BROKER, status_code=404
            )
        return list(history)

    def list_orders(self, since: datetime) -> Sequence[BrokerOrder]:
        """List today's orders submitted at or after ``since`` (Kite keeps only today's book)."""
        if since.tzinfo is None:
            raise ValueError("since must be timezone-aware")
        orders = self._read("orders", lambda k: k.orders()) or []
        mapped = [self._map(o) for o in orders]
        mapped = [o for o in mapped if o.submitted_at is None or o.submitted_at >= since]
        if not any(o.filled_quantity > 0 for o in mapped):
            return mapped
        trades = self._read("trades", lambda k: k.trades()) or []
        by_order: dict[str, list[Fill]] = {}
        for t in trades:
            by_order.setdefault(str(t.get("order_id")), []).append(_fill(t))
        return [
            replace(o, fills=tuple(by_order.get(o.broker_order_id, ())), fills_reported=True)
            for o in mapped
        ]

    def cancel_order(self, broker_order_id: str) -> None:
        """Cancel a working order (regular or AMO); a finished order is left alone."""
        history = self._history(broker_order_id)
        if self._map(history[-1]).is_terminal:
            return
        variety = str(history[-1].get("variety") or "regular")
        kite = self._kite()
        self._limiter.orders.acquire()
        try:
            kite.cancel_order(variety=variety, order_id=broker_order_id)
        except _sdk_errors() as exc:
            raise self._read_error("cancel_order", _classify(exc)) from None
        log.info(
            "kite cancel sent: connection=%s order_id=%s variety=%s",
            self._config.connection_id,
            broker_order_id,
            variety,
        )

    def get_clock(self) -> MarketClock:
        """Return whether NSE/BSE are open now and when they next open and close."""
        now = self._clock()
        if now.tzinfo is None:
            raise ValueError("the injected clock must return aware datetimes")
        return nse_market_clock(now)

    # ------------------------------------------------------------------ placement internals

    def _spec(self, request: OrderRequest) -> _Spec:
        def reject(reason: str) -> OrderRejectedError:
            return OrderRejectedError(
                f"order {request.client_order_id}: {reason}", reason=reason, broker=BROKER
            )

        if request.quantity is None:
            raise reject("Kite takes whole-share quantities; notional orders are not supported")
        if request.quantity != request.quantity.to_integral_value():
            raise reject(f"Kite trades whole shares only, got quantity {request.quantity}")
        symbol = request.symbol.strip().upper()
        exchange = (request.exchange or "").strip().upper() or None
        for suffix, suffix_exchange in _SUFFIXES.items():
            if symbol.endswith(suffix):
                symbol = symbol[: -len(suffix)]
                if exchange is not None and exchange != suffix_exchange:
                    raise reject(f"symbol {request.symbol} is not listed on {exchange}")
                exchange = suffix_exchange
        exchange = exchange or "NSE"
        if exchange not in _EXCHANGES:
            raise reject(f"exchange {exchange} is not supported for CNC orders (NSE, BSE)")
        if request.order_type is OrderType.LIMIT and (
            request.limit_price is None or request.limit_price <= 0
        ):
            raise reject("a limit order needs a positive limit price")
        return _Spec(
            client_order_id=request.client_order_id,
            tag=kite_tag(request.client_order_id),
            exchange=exchange,
            symbol=symbol,
            side=request.side,
            quantity=int(request.quantity),
            order_type=request.order_type,
            price=request.limit_price if request.order_type is OrderType.LIMIT else None,
        )

    def _find(self, spec: _Spec) -> BrokerOrder | None:
        """Look an order up in today's book by tag, checking it is the order we meant."""
        orders = self._read("orders", lambda k: k.orders()) or []
        matches = [o for o in orders if _has_tag(o, spec.tag)]
        if not matches:
            return None
        strangers = [o for o in matches if not spec.matches(o)]
        if strangers:
            raise NonRetryableBrokerError(
                f"order {spec.client_order_id}: Kite's book has an order tagged {spec.tag} for "
                f"another instrument, side or quantity ({strangers[0].get('order_id')}); "
                "not placing it",
                broker=BROKER,
            )
        order = self._pick(matches, spec.tag)
        return self._with_fills(self._map(order, client_order_id=spec.client_order_id))

    def _pick(self, matches: list[Mapping[str, Any]], tag: str) -> Mapping[str, Any]:
        if len(matches) > 1:
            log.error(
                "kite book has %d orders tagged %s on connection %s: %s",
                len(matches),
                tag,
                self._config.connection_id,
                ", ".join(str(o.get("order_id")) for o in matches),
            )
        return min(matches, key=lambda o: _kite_time(o.get("order_timestamp")) or _EPOCH)

    def _placement_failed(self, spec: _Spec, outcome: _Outcome) -> BrokerOrder:
        """Raise what a failed placement means; an ambiguous one is looked up first."""
        cid = spec.client_order_id
        if outcome.kind is not _Kind.AMBIGUOUS and outcome.kind is not _Kind.REJECTED_5XX:
            self._sent.forget(spec.tag)  # the venue's answer proves nothing was placed
            raise self._refusal(cid, outcome)
        # AMBIGUOUS or REJECTED_5XX: the order may exist; read the book before anything else.
        log.warning(
            "kite placement of %s (tag %s) got an ambiguous answer: %s; checking the order book",
            cid,
            spec.tag,
            outcome.message,
        )
        lookup = resolve(
            lambda: self._find(spec),
            delays=self._lookup_delays,
            sleep=self._sleep,
            final=(FatalBrokerError, NonRetryableBrokerError, KiteMappingError),
            stop_when_absent=outcome.kind is _Kind.REJECTED_5XX,
        )
        if lookup.order is not None:
            log.info("kite order %s found by tag %s after an ambiguous answer", cid, spec.tag)
            return lookup.order
        if outcome.kind is _Kind.REJECTED_5XX and lookup.error is None:
            self._sent.forget(spec.tag)
            raise self._refusal(cid, replace(outcome, kind=_Kind.REJECTED))
        detail = (
            f"the order book could not be read ({lookup.error})"
            if lookup.error is not None
            else "it is not in the order book yet"
        )
        raise AmbiguousOrderError(
            f"order {cid} (tag {spec.tag}): Kite gave no clear answer ({outcome.message}) and "
            f"{detail}; resolve with place_order(resume=True)",
            client_order_id=cid,
            broker=BROKER,
        )

    def _refusal(self, cid: str, outcome: _Outcome) -> BrokerError:
        """Return the error of a placement Kite answered clearly without placing it."""
        match outcome.kind:
            case _Kind.FATAL | _Kind.CONFIG:
                return self._fatal_error(outcome)
            case _Kind.RATE_LIMITED:
                return RateLimitedError(
                    f"order {cid}: Kite throttled the placement ({outcome.message}); not placed",
                    broker=BROKER,
                    status_code=outcome.status_code or 429,
                    retry_after=1.0,
                )
            case _Kind.NOT_SENT:
                return RetryableBrokerError(
                    f"order {cid}: {outcome.message}; nothing was sent", broker=BROKER
                )
            case _Kind.REJECTED:
                return OrderRejectedError(
                    f"order {cid}: Kite rejected it: {outcome.message}",
                    reason=outcome.message,
                    broker=BROKER,
                    status_code=outcome.status_code,
                )
            case _:
                raise AssertionError(f"not a refusal: {outcome.kind}")

    def _after_placement(self, spec: _Spec, order_id: str) -> BrokerOrder:
        """Return the order as Kite now reports it, or PENDING if it cannot be read right now.

        With ``confirm_placement=False`` it is PENDING at once: Kite's 200 means "received", and
        a caller that polls anyway (the executor) saves two reads per order, which is what lets
        one account place near its 10 orders/s.
        """
        if not self._confirm_placement:
            return self._pending(spec, order_id)
        try:
            order = self.get_order(order_id)
        except BrokerError as exc:  # the order exists: report it PENDING rather than lose its id
            log.warning("kite order %s placed but not readable yet: %s", order_id, exc)
            return self._pending(spec, order_id)
        return replace(order, client_order_id=spec.client_order_id)

    def _pending(self, spec: _Spec, order_id: str) -> BrokerOrder:
        return BrokerOrder(
            broker_order_id=order_id,
            client_order_id=spec.client_order_id,
            symbol=spec.symbol,
            side=spec.side,
            quantity=Decimal(spec.quantity),
            filled_quantity=Decimal("0"),
            average_fill_price=None,
            status=BrokerOrderStatus.PENDING,
            submitted_at=self._clock().astimezone(UTC),
        )

    def list_assets(self, exchange: str | None = None) -> Sequence[BrokerAsset]:
        """Return Kite's equity instruments (NSE and BSE) from the instruments dump."""
        exchanges = [exchange.upper()] if exchange else ["NSE", "BSE"]
        out = []
        for venue in exchanges:
            rows = self._read("instruments", functools.partial(_instruments, venue=venue)) or []
            for row in rows:
                if str(row.get("instrument_type", "EQ")) != "EQ" or str(row.get("segment")) not in {
                    venue,
                    "",
                }:
                    continue
                out.append(
                    BrokerAsset(
                        symbol=str(row["tradingsymbol"]).upper(),
                        exchange=venue,
                        currency="INR",
                        name=row.get("name") or None,
                        metadata={
                            "instrument_token": int(row["instrument_token"]),
                            "lot_size": int(row.get("lot_size") or 1),
                            "tick_size": str(_decimal(row.get("tick_size")) or "0.05"),
                        },
                    )
                )
        return out

    # ------------------------------------------------------------------ reads and mapping

    def _kite(self) -> KiteConnect:
        """Return the SDK client, built on first use; fail fast once the token was refused."""
        with self._lock:
            if self._fatal is not None:
                raise FatalBrokerError(self._fatal, broker=BROKER, status_code=403)
            if self._sdk is not None:
                return self._sdk
            api_key = self._credentials.api_key
            token = self._credentials.access_token
            if api_key and token and api_key.get_secret_value() and token.get_secret_value():
                from kiteconnect import KiteConnect

                root = self._config.metadata.get("root")
                self._sdk = KiteConnect(
                    api_key.get_secret_value(),
                    access_token=token.get_secret_value(),
                    root=str(root) if root else None,
                    timeout=self._timeout,
                )
                return self._sdk
            message = self._login_message("has no Kite API key or access token")
            self._fatal = message
        if self._on_fatal is not None:
            self._on_fatal(message)
        raise FatalBrokerError(message, broker=BROKER)

    def _read(
        self, op: str, call: Callable[[KiteConnect], _T], *, not_found: str | None = None
    ) -> _T:
        """Run one read through the limiter and translate its failures."""
        kite = self._kite()
        self._limiter.other.acquire()
        try:
            return call(kite)
        except _sdk_errors() as exc:
            outcome = _classify(exc)
            if not_found is not None and outcome.kind in {_Kind.REJECTED, _Kind.REJECTED_5XX}:
                raise OrderNotFoundError(
                    f"Kite has no order {not_found}: {outcome.message}",
                    reason=outcome.message,
                    broker=BROKER,
                    status_code=outcome.status_code,
                ) from None
            raise self._read_error(op, outcome) from None

    def _read_error(self, op: str, outcome: _Outcome) -> BrokerError:
        cid = self._config.connection_id
        match outcome.kind:
            case _Kind.FATAL | _Kind.CONFIG:
                return self._fatal_error(outcome)
            case _Kind.RATE_LIMITED:
                return RateLimitedError(
                    f"Kite {op} throttled on connection {cid}: {outcome.message}",
                    broker=BROKER,
                    status_code=outcome.status_code or 429,
                    retry_after=1.0,
                )
            case _Kind.REJECTED | _Kind.REJECTED_5XX:
                return NonRetryableBrokerError(
                    f"Kite refused {op} on connection {cid}: {outcome.message}",
                    reason=outcome.message,
                    broker=BROKER,
                    status_code=outcome.status_code,
                )
        return RetryableBrokerError(
            f"Kite {op} failed on connection {cid}: {outcome.message}",
            broker=BROKER,
            status_code=outcome.status_code,
        )

    def _login_message(self, what: str) -> str:
        return (
            f"Kite connection {self._config.connection_id} {what}: log in to Kite again to "
            "renew the access token (it expires every day at 06:00 IST)"
        )

    def _fatal_error(self, outcome: _Outcome) -> FatalBrokerError:
        if outcome.kind is _Kind.CONFIG:
            return FatalBrokerError(
                f"Kite connection {self._config.connection_id}: {outcome.message}", broker=BROKER
            )
        if outcome.token:
            message = self._login_message(f"was refused by Kite ({outcome.message})")
        else:
            message = (
                f"Kite connection {self._config.connection_id} lacks a permission: "
                f"{outcome.message}"
            )
        first = False
        if outcome.token:  # every later call fails fast, without asking Kite again
            with self._lock:
                first = self._fatal is None
                self._fatal = self._fatal or message
        if first and self._on_fatal is not None:
            self._on_fatal(message)
        log.error("kite connection %s is unusable: %s", self._config.connection_id, message)
        return FatalBrokerError(message, broker=BROKER, status_code=outcome.status_code)

    def _map(self, order: Mapping[str, Any], *, client_order_id: str | None = None) -> BrokerOrder:
        """Translate one Kite order dict into a BrokerOrder (without fills)."""
        filled = _decimal(order.get("filled_quantity"))
        status = map_kite_status(str(order.get("status") or ""), filled)
        average = _decimal(order.get("average_price"))
        submitted = _kite_time(order.get("order_timestamp"))
        updated = (
            _kite_time(order.get("exchange_update_timestamp"))
            or _kite_time(order.get("exchange_timestamp"))
            or submitted
        )
        reason = order.get("status_message") or None
        tag = order.get("tag")
        return BrokerOrder(
            broker_order_id=_required(order, "order_id"),
            client_order_id=client_order_id or (str(tag) if tag else None),
            symbol=_required(order, "tradingsymbol"),
            side=_map_side(order.get("transaction_type")),
            quantity=_decimal(order.get("quantity")),
            filled_quantity=filled,
            average_fill_price=average if filled > 0 and average > 0 else None,
            status=status,
            submitted_at=submitted,
            updated_at=updated,
            reason=str(reason) if reason else None,
        )

    def _with_fills(self, order: BrokerOrder) -> BrokerOrder:
        if order.filled_quantity <= 0:
            return order
        trades = self._read("order_trades", lambda k: k.order_trades(order.broker_order_id)) or []
        return replace(order, fills=tuple(_fill(t) for t in trades), fills_reported=True)
