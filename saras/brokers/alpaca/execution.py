"""Alpaca adapter: the Broker protocol over alpaca-py's ``TradingClient``.

What alpaca-py does on its own, and what this adapter does about it (see BROKERS.md):

* It re-sends any request answered 429 or 504, ``POST /v2/orders`` included, 3 s apart, blindly.
  The adapter switches that off on every client it builds (``_retry = 0``, no retry codes) and
  retries itself, only where it is safe: reads, cancels, and order submissions that provably never
  reached Alpaca (connection refused, 429).
* It sets no request timeout. The adapter installs one on the client's ``requests`` session, and
  that session also paces requests (``AlpacaRateLimiter``) and reads Alpaca's rate-limit headers.
* Its ``APIError.code``/``.message`` parse the body as JSON and raise on an HTML gateway page. The
  adapter reads ``status_code`` and parses the body itself, defensively.

Placing an order exactly once rests on ``client_order_id``: Alpaca keeps it unique per account
forever (also after a cancel) and answers a repeat with 422 code 40010001. So a re-sent order can
never become a second order; the adapter reads that 422 as "already placed" and looks the order up.
An answer that leaves the outcome unknown (timeout or connection lost after sending, 5xx, an
unreadable 2xx) is resolved by looking the order up by ``client_order_id`` before anything else is
sent; if it is still not found, ``AmbiguousOrderError`` tells the caller to come back with
``place_order(..., resume=True)``.

Decisions:

* ``time_in_force`` is ``day`` for every order. Alpaca requires it for fractional and notional
  orders, and for whole shares it means an unfilled order ends with the session instead of
  lingering: a smallcase execution run is one session's work.
* An order entity reports fills cumulatively (``filled_qty``, and ``filled_avg_price``, an
  average the ledger must not price fills from). Each execution's own price and quantity are in
  the account's FILL activities (``GET /v2/account/activities/FILL``; alpaca-py's
  ``TradingClient`` has no method for it, so its generic ``get`` is used): a filled order is
  returned with ``fills`` read from there (``fill_id`` is the activity id), possibly fewer than
  ``filled_qty`` while activities lag.
* Responses are taken raw (``raw_data=True``) so that money and quantities are parsed from
  Alpaca's own strings with ``Decimal``; alpaca-py's models would go through ``float``. SDK objects
  never leave this module.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

import requests
from alpaca.common.enums import Sort
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide as AlpacaOrderSide
from alpaca.trading.enums import QueryOrderStatus, TimeInForce
from alpaca.trading.requests import GetOrdersRequest, LimitOrderRequest, MarketOrderRequest
from pydantic import SecretStr

from saras.brokers.alpaca.capabilities import capabilities as alpaca_capabilities
from saras.brokers.alpaca.config import (
    ACTIVITY_PAGE_SIZE,
    BROKER,
    DEFAULT_REQUESTS_PER_MINUTE,
    DEFAULT_TIMEOUT,
    MAX_CLIENT_ORDER_ID,
    MAX_DECIMALS,
    MAX_PAGES,
    MIN_BUY_VALUE,
    PAGE_SIZE,
    _base_url,
)
from saras.brokers.alpaca.errors import (
    _TRANSPORT_ERRORS,
    AlpacaResponseError,
    _BadPayload,
    _Failure,
    _header_number,
    _Kind,
    classify,
    scrub,
    to_error,
)
from saras.brokers.alpaca.parsing import (
    _decimal_places,
    _parse_account,
    _parse_clock,
    _parse_fill_activities,
    _parse_order,
    _parse_order_page,
    _parse_positions,
)
from saras.brokers.base import (
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
    metadata_seconds,
)
from saras.brokers.errors import (
    AmbiguousOrderError,
    BrokerError,
    FatalBrokerError,
    NonRetryableBrokerError,
    OrderNotFoundError,
    OrderRejectedError,
)
from saras.brokers.kit.rate import Budget, RateLimiter, shared
from saras.brokers.kit.resend import place_once, resolve
from saras.domain.enums import OrderSide, OrderType

__all__ = [
    "AlpacaBroker",
    "AlpacaRateLimiter",
    "shared_rate_limiter",
]

log = logging.getLogger(__name__)


T = TypeVar("T")


# --------------------------------------------------------------------------- rate limiting


class AlpacaRateLimiter(RateLimiter):
    """Pace the requests of one Alpaca account, and honour the server's rate-limit headers.

    The kit's limiter in its pacing form: ``burst`` requests at once, then one every
    ``60 / (requests_per_minute * utilisation)`` seconds, so any rolling minute holds at most
    ``burst + requests_per_minute * utilisation`` requests (195 of Alpaca's 200 by default) and
    a single process never draws a 429. When Alpaca reports ``X-RateLimit-Remaining: 0`` (or a
    429 asks to wait) every request waits until ``X-RateLimit-Reset``, capped at ``max_wait``.
    With ``account_key`` the budget ``broker:<connection id>`` (200/min) is shared across
    processes when a shared backend is installed.
    """

    def __init__(
        self,
        requests_per_minute: int = DEFAULT_REQUESTS_PER_MINUTE,
        *,
        utilisation: float = 0.95,
        burst: int = 5,
        clock: Callable[[], float] = time.time,
        max_wait: float = 60.0,
        account_key: str | None = None,
    ) -> None:
        if requests_per_minute <= 0 or not 0 < utilisation <= 1 or burst < 1:
            raise ValueError("requests_per_minute > 0, 0 < utilisation <= 1 and burst >= 1")
        budgets = (
            ()
            if account_key is None
            else (Budget(f"broker:{account_key}", DEFAULT_REQUESTS_PER_MINUTE, 60.0),)
        )
        super().__init__(
            interval=60.0 / (requests_per_minute * utilisation),
            burst=burst,
            clock=clock,
            max_wait=max_wait,
            budgets=budgets,
        )
        self.requests_per_minute = requests_per_minute
        self.remaining: int | None = None
        self.reset_at: float | None = None

    def observe(self, headers: Mapping[str, str]) -> None:
        """Read ``X-RateLimit-Remaining``/``X-RateLimit-Reset`` from a response."""
        remaining = _header_number(headers, "X-RateLimit-Remaining")
        reset = _header_number(headers, "X-RateLimit-Reset")
        if remaining is not None:
            self.remaining = int(remaining)
        if reset is not None:
            self.reset_at = reset
        if remaining is not None and remaining <= 0 and reset is not None:
            self.hold_until(reset)


def shared_rate_limiter(api_key_id: str, base_url: str, connection_id: str) -> AlpacaRateLimiter:
    """Return the process-wide limiter of one Alpaca account (real clock)."""
    key = hashlib.sha256(f"{base_url}\x00{api_key_id}".encode()).hexdigest()
    return shared(f"alpaca:{key}", lambda: AlpacaRateLimiter(account_key=connection_id))


class _GuardedSession(requests.Session):
    """The SDK's HTTP session, with a timeout on every request, pacing, and header tracking."""

    def __init__(
        self, *, timeout: float, limiter: AlpacaRateLimiter, sleep: Callable[[float], None]
    ) -> None:
        super().__init__()
        self._timeout = timeout
        self._limiter = limiter
        self._sleep = sleep

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
        """Send one request (alpaca-py passes no timeout: ours applies)."""
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self._timeout
        self._limiter.acquire(self._sleep)
        response = super().request(method, url, *args, **kwargs)  # type: ignore[arg-type]
        self._limiter.observe(response.headers)
        return response


# --------------------------------------------------------------------------- error classification


# --------------------------------------------------------------------------- the adapter


class AlpacaBroker:
    """One Alpaca account (paper or live) behind the Broker protocol."""

    broker_type: str = BROKER

    def __init__(
        self,
        config: ConnectionConfig,
        credentials: BrokerCredentials,
        *,
        timeout: float | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        max_attempts: int = 3,
        retry_backoff: float = 0.5,
        lookup_attempts: int = 3,
        lookup_wait: float = 0.5,
        rate_limiter: AlpacaRateLimiter | None = None,
    ) -> None:
        key, secret = credentials.api_key, credentials.api_secret
        if (
            key is None
            or secret is None
            or not key.get_secret_value()
            or not secret.get_secret_value()
        ):
            raise FatalBrokerError(
                f"alpaca connection {config.connection_id}: an api key and secret are required",
                broker=BROKER,
            )
        if timeout is None:
            timeout = metadata_seconds(config, REQUEST_TIMEOUT_KEY) or DEFAULT_TIMEOUT
        if timeout <= 0 or max_attempts < 1 or lookup_attempts < 1:
            raise ValueError("timeout > 0, max_attempts >= 1 and lookup_attempts >= 1")
        self.connection_id = config.connection_id
        self.paper = config.paper_trading
        self.base_url = _base_url(config)
        self._key: SecretStr = key
        self._secret: SecretStr = secret
        self._timeout = timeout
        self._sleep = sleep
        self._clock = clock
        self._max_attempts = max_attempts
        self._retry_backoff = retry_backoff
        self._lookup_attempts = lookup_attempts
        self._lookup_wait = lookup_wait
        if rate_limiter is None:
            # Share one bucket per account across the process when time is real; an injected
            # clock (tests, benchmarks) gets its own.
            rate_limiter = (
                shared_rate_limiter(key.get_secret_value(), self.base_url, config.connection_id)
                if clock is time.time
                else AlpacaRateLimiter(clock=clock)
            )
        self.rate_limiter = rate_limiter
        self._sdk: TradingClient | None = None
        self._sdk_lock = threading.Lock()

    @classmethod
    def capabilities(cls, config: ConnectionConfig) -> BrokerCapabilities:
        """Return Alpaca's capabilities (see ``capabilities.py``)."""
        return alpaca_capabilities(config)

    @property
    def request_timeout(self) -> float:
        """Return the HTTP timeout of every request, in seconds."""
        return self._timeout

    def __repr__(self) -> str:
        mode = "paper" if self.paper else "live"
        url = urlsplit(self.base_url)
        shown = f"{url.scheme}://{url.hostname}{f':{url.port}' if url.port else ''}{url.path}"
        return f"AlpacaBroker(connection_id={self.connection_id!r}, {mode}, {shown})"

    # ----------------------------------------------------------------- protocol: reads

    def get_account(self) -> AccountInfo:
        """Return cash, buying power and currency."""
        raw = self._read("get account", lambda client: client.get_account())
        return self._parsed("get account", raw, _parse_account)

    def get_positions(self) -> list[BrokerPosition]:
        """Return every position the broker holds for the account."""
        raw = self._read("get positions", lambda client: client.get_all_positions())
        return self._parsed("get positions", raw, _parse_positions)

    def get_order_by_client_id(self, client_order_id: str) -> BrokerOrder | None:
        """Look an order up by our id; None when Alpaca has no such order."""
        return self._find_by_client_id(client_order_id, attempts=self._max_attempts)

    def get_order(self, broker_order_id: str) -> BrokerOrder:
        """Look an order up by Alpaca's id."""
        what = f"get order {broker_order_id}"
        order_id = _order_uuid(broker_order_id, what)
        raw = self._read(what, lambda client: client.get_order_by_id(order_id))
        return self._with_fills(self._parsed(what, raw, _parse_order))

    def list_orders(self, since: datetime) -> list[BrokerOrder]:
        """List the account's orders submitted since ``since`` (aware), oldest first.

        GET /v2/orders returns at most 500 orders and alpaca-py does not page, so this pages
        itself: ascending by submission time, each next page ``after`` the last one's time less a
        microsecond (``after`` is exclusive and times can tie), duplicates dropped by id.
        """
        if since.tzinfo is None or since.utcoffset() is None:
            raise ValueError("list_orders needs an aware datetime")
        after = since.astimezone(UTC)
        found: dict[str, BrokerOrder] = {}
        for _ in range(MAX_PAGES):
            query = GetOrdersRequest(
                status=QueryOrderStatus.ALL, after=after, limit=PAGE_SIZE, direction=Sort.ASC
            )
            raw = self._read("list orders", _get_orders(query))
            page = self._parsed("list orders", raw, _parse_order_page)
            new = [(order, at) for order, at in page if order.broker_order_id not in found]
            for order, _at in page:
                found[order.broker_order_id] = order
            if len(page) < PAGE_SIZE:
                break
            if not new:
                raise AlpacaResponseError(
                    f"alpaca list orders: more than {PAGE_SIZE} orders share one submission "
                    f"time ({after.isoformat()}); cannot page past them",
                    broker=BROKER,
                )
            after = max(at for _order, at in page) - timedelta(microseconds=1)
        else:
            raise AlpacaResponseError(
                f"alpaca list orders: more than {MAX_PAGES} pages", broker=BROKER
            )
        epoch = datetime.min.replace(tzinfo=UTC)
        return sorted(found.values(), key=lambda o: o.submitted_at or o.updated_at or epoch)

    def cancel_order(self, broker_order_id: str) -> None:
        """Ask Alpaca to cancel an order; an order already cancelled is fine."""
        what = f"cancel order {broker_order_id}"
        order_id = _order_uuid(broker_order_id, what)
        try:
            self._read(what, lambda client: client.cancel_order_by_id(order_id))
        except OrderNotFoundError:
            raise
        except NonRetryableBrokerError as exc:
            if exc.status_code != 422:
                raise
            # Not cancelable: fine if it is cancelled already (e.g. by an earlier attempt whose
            # answer was lost); a filled or expired order is a real refusal.
            if self.get_order(broker_order_id).status is not BrokerOrderStatus.CANCELLED:
                raise

    def get_clock(self) -> MarketClock:
        """Return whether the market is open and when it next opens and closes."""
        raw = self._read("get clock", lambda client: client.get_clock())
        return self._parsed("get clock", raw, _parse_clock)

    # ----------------------------------------------------------------- protocol: placing

    def place_order(self, request: OrderRequest, *, resume: bool = False) -> BrokerOrder:
        """Place an order exactly once (see the module docstring for how)."""
        client_id = request.client_order_id
        sdk_request = self._sdk_order_request(request)  # local checks: nothing sent on failure

        def find() -> BrokerOrder | None:
            found = self._find_by_client_id(client_id, attempts=self._max_attempts)
            return None if found is None else self._same_order(found, request)

        return place_once(
            key=client_id,
            client_order_id=client_id,
            broker=BROKER,
            resume=resume,
            find=find,
            send=lambda: self._send(request, sdk_request),
        )

    def _send(
        self, request: OrderRequest, sdk_request: MarketOrderRequest | LimitOrderRequest
    ) -> BrokerOrder:
        """Send the order once and read Alpaca's answer (an unclear one is looked up)."""
        client_id = request.client_order_id
        outcome = self._submit(f"place order {client_id}", sdk_request)
        if isinstance(outcome, _Failure):
            return self._resolve(request, outcome)
        try:
            order = _parse_order(outcome)
        except _BadPayload as exc:
            # Alpaca said 2xx, so the order exists; its answer is unreadable: look it up.
            failure = _Failure(
                _Kind.AMBIGUOUS, f"the answer to the order could not be read ({exc})"
            )
            return self._resolve(request, failure)
        if order.client_order_id not in (None, client_id):
            failure = _Failure(_Kind.AMBIGUOUS, "the answer carries another client_order_id")
            return self._resolve(request, failure)
        log.info(
            "alpaca order %s placed as %s (%s)", client_id, order.broker_order_id, order.status
        )
        if order.filled_quantity <= 0:
            return order
        try:
            return self._with_fills(order)
        except BrokerError as exc:  # placed: report it working; a poll reads its fills
            log.warning("alpaca order %s placed; its fills not readable yet: %s", client_id, exc)
            return replace(
                order,
                status=BrokerOrderStatus.PENDING,
                filled_quantity=Decimal(0),
                average_fill_price=None,
            )

    def _sdk_order_request(self, request: OrderRequest) -> MarketOrderRequest | LimitOrderRequest:
        """Check an order against Alpaca's rules locally and build the SDK's request."""
        client_id = request.client_order_id

        def reject(reason: str) -> OrderRejectedError:
            return OrderRejectedError(
                f"alpaca order {client_id} ({request.symbol}): {reason}; nothing was sent",
                reason=reason,
                broker=BROKER,
            )

        if not client_id or len(client_id) > MAX_CLIENT_ORDER_ID:
            raise reject(f"client_order_id must be 1 to {MAX_CLIENT_ORDER_ID} characters")
        quantity, notional = request.quantity, request.notional
        if (quantity is None) == (notional is None):
            raise reject("give exactly one of quantity and notional")
        amount = quantity if quantity is not None else notional
        assert amount is not None
        if not amount.is_finite() or amount <= 0:
            raise reject("the quantity or notional must be positive")
        fractional = notional is not None or amount != amount.to_integral_value()
        if fractional and not request.fractionable:
            kind = "a notional order" if notional is not None else f"fractional quantity {amount}"
            raise reject(f"{request.symbol} is not fractionable: {kind} is not allowed")
        if notional is not None and request.order_type is not OrderType.MARKET:
            raise reject("a notional order must be a market order")
        if _decimal_places(amount) > MAX_DECIMALS:
            raise reject(f"{amount} has more than {MAX_DECIMALS} decimal places")
        limit_price = request.limit_price if request.order_type is OrderType.LIMIT else None
        if request.order_type is OrderType.LIMIT and (
            limit_price is None or not limit_price.is_finite() or limit_price <= 0
        ):
            raise reject("a limit order needs a positive limit price")
        if request.side is OrderSide.BUY:
            value = notional if notional is not None else None
            if value is None and limit_price is not None and quantity is not None:
                value = quantity * limit_price
            if value is not None and value < MIN_BUY_VALUE:
                raise reject(f"a buy must be worth at least ${MIN_BUY_VALUE} (this one: ${value})")
        # alpaca-py carries qty, notional and limit_price as floats: refuse what a float alters.
        for label, number in (("amount", amount), ("limit price", limit_price)):
            if number is not None and Decimal(repr(float(number))) != number:
                raise reject(f"the {label} {number} cannot be sent exactly")
        side = AlpacaOrderSide.BUY if request.side is OrderSide.BUY else AlpacaOrderSide.SELL
        size: dict[str, float] = (
            {"qty": float(quantity)} if quantity is not None else {"notional": float(amount)}
        )
        try:
            if limit_price is not None:
                return LimitOrderRequest(
                    symbol=request.symbol,
                    side=side,
                    time_in_force=TimeInForce.DAY,
                    client_order_id=client_id,
                    limit_price=float(limit_price),
                    **size,
                )
            return MarketOrderRequest(
                symbol=request.symbol,
                side=side,
                time_in_force=TimeInForce.DAY,
                client_order_id=client_id,
                **size,
            )
        except ValueError as exc:  # pydantic's ValidationError
            raise reject(f"invalid order: {exc}") from None

    def _submit(self, what: str, sdk_request: MarketOrderRequest | LimitOrderRequest) -> Any:
        """Send the order; return Alpaca's raw answer, or the failure that leaves it unknown."""
        for attempt in range(1, self._max_attempts + 1):
            try:
                return self._client().submit_order(sdk_request)
            except _TRANSPORT_ERRORS as exc:
                failure = self._classify(exc, order_submit=True)
            if failure.kind in (_Kind.AMBIGUOUS, _Kind.DUPLICATE):
                return failure
            # Only failures that prove nothing was placed are retried here (connection refused,
            # 429). Even a wrong guess could not duplicate the order: its client_order_id is
            # unique forever at Alpaca, and a repeat comes back as the 422 handled above.
            if failure.kind in (_Kind.RETRY, _Kind.RATE_LIMITED) and attempt < self._max_attempts:
                self._pause(failure, attempt)
                continue
            raise self._error(what, failure, order=True)
        raise AssertionError("unreachable")  # pragma: no cover

    def _resolve(self, request: OrderRequest, failure: _Failure) -> BrokerOrder:
        """Find out whether an order whose submission went unanswered exists at Alpaca."""
        client_id = request.client_order_id
        log.warning(
            "alpaca order %s: %s; looking it up by client_order_id",
            client_id,
            self._scrub(failure.detail),
        )
        lookup = resolve(
            lambda: self._find_by_client_id(client_id, attempts=1),
            delays=[self._lookup_wait * attempt for attempt in range(self._lookup_attempts)],
            sleep=self._sleep,
        )
        if lookup.order is not None:
            log.info(
                "alpaca order %s resolved: it exists as %s",
                client_id,
                lookup.order.broker_order_id,
            )
            return self._same_order(lookup.order, request)
        # Not found (yet). Sending it again here would be safe, as Alpaca refuses a second use of
        # the client_order_id (422 40010001), but the protocol leaves that decision to the caller:
        # a later place_order(..., resume=True) looks it up once more and sends it only if absent.
        message = (
            f"alpaca place order {client_id}: {failure.detail}; not found by client_order_id "
            f"after {self._lookup_attempts} lookups; place_order(..., resume=True) resolves it"
        )
        raise AmbiguousOrderError(self._scrub(message), client_order_id=client_id, broker=BROKER)

    def _same_order(self, found: BrokerOrder, request: OrderRequest) -> BrokerOrder:
        """Check that the order found under our client_order_id is the one we meant to place."""
        if found.symbol.upper() != request.symbol.upper() or found.side != request.side:
            raise NonRetryableBrokerError(
                f"alpaca client_order_id {request.client_order_id} is already used by another "
                f"order ({found.side} {found.symbol}, id {found.broker_order_id}); this "
                f"{request.side} {request.symbol} order cannot be placed under it",
                broker=BROKER,
            )
        if (
            request.quantity is not None
            and found.quantity is not None
            and found.quantity != request.quantity
        ):
            log.warning(
                "alpaca order %s exists with quantity %s, not the %s asked now: keeping the "
                "broker's order",
                request.client_order_id,
                found.quantity,
                request.quantity,
            )
        return found

    def list_assets(self, exchange: str | None = None) -> Sequence[BrokerAsset]:
        """Return Alpaca's active US equities, with whether each is fractionable."""
        from alpaca.trading.enums import AssetClass, AssetStatus
        from alpaca.trading.requests import GetAssetsRequest

        request = GetAssetsRequest(status=AssetStatus.ACTIVE, asset_class=AssetClass.US_EQUITY)
        rows = self._read("assets", lambda c: c.get_all_assets(request)) or []
        out = []
        for row in rows:
            raw: dict[str, Any] = row if isinstance(row, dict) else dict(cast(Any, row))
            venue = str(raw.get("exchange") or "").upper()
            if exchange and venue != exchange.upper():
                continue
            out.append(
                BrokerAsset(
                    symbol=str(raw["symbol"]).upper(),
                    exchange=venue or "US",
                    currency="USD",
                    name=raw.get("name"),
                    asset_type="equity",
                    tradable=bool(raw.get("tradable", True)),
                    metadata={
                        "fractionable": bool(raw.get("fractionable", False)),
                        "alpaca_asset_id": str(raw.get("id", "")),
                    },
                )
            )
        return out

    # ----------------------------------------------------------------- plumbing

    def _client(self) -> TradingClient:
        """Build the SDK client on first use: our session, no SDK retries."""
        with self._sdk_lock:
            if self._sdk is None:
                client = TradingClient(
                    api_key=self._key.get_secret_value(),
                    secret_key=self._secret.get_secret_value(),
                    paper=self.paper,
                    raw_data=True,
                    url_override=self.base_url,
                )
                for knob in ("_retry", "_retry_wait", "_retry_codes", "_session"):
                    if not hasattr(client, knob):  # never run with the SDK's blind retries on
                        raise RuntimeError(f"alpaca-py changed: TradingClient has no {knob}")
                client._retry = 0
                client._retry_wait = 0
                client._retry_codes = []
                client._session.close()
                client._session = _GuardedSession(
                    timeout=self._timeout, limiter=self.rate_limiter, sleep=self._sleep
                )
                self._sdk = client
            return self._sdk

    def _read(
        self, what: str, call: Callable[[TradingClient], T], *, attempts: int | None = None
    ) -> T:
        """Run an idempotent call, retrying what is worth retrying."""
        attempts = attempts or self._max_attempts
        for attempt in range(1, attempts + 1):
            try:
                return call(self._client())
            except _TRANSPORT_ERRORS as exc:
                failure = self._classify(exc, order_submit=False)
            if failure.kind in (_Kind.RETRY, _Kind.RATE_LIMITED) and attempt < attempts:
                self._pause(failure, attempt)
                continue
            raise self._error(what, failure)
        raise AssertionError("unreachable")  # pragma: no cover

    def _find_by_client_id(self, client_order_id: str, *, attempts: int) -> BrokerOrder | None:
        what = f"get order by client_order_id {client_order_id}"
        try:
            raw = self._read(
                what,
                lambda client: client.get_order_by_client_id(client_order_id),
                attempts=attempts,
            )
        except OrderNotFoundError:
            return None
        return self._with_fills(self._parsed(what, raw, _parse_order))

    def _with_fills(self, order: BrokerOrder) -> BrokerOrder:
        """Attach the order's executions, from the account's FILL activities (per-fill prices).

        Reads activities from just before the order's submission onwards, oldest first, page by
        page, until the executions found add up to the order's filled quantity (activities may
        lag the order: then what was found so far).
        """
        if order.filled_quantity <= 0:
            return order
        what = f"get fill activities of order {order.broker_order_id}"
        params: dict[str, str | int] = {"direction": "asc", "page_size": ACTIVITY_PAGE_SIZE}
        if order.submitted_at is not None:
            params["after"] = (order.submitted_at - timedelta(seconds=1)).isoformat()
        fills: list[Fill] = []
        for _ in range(MAX_PAGES):
            raw = self._read(what, _get_fill_activities(dict(params)))
            page = self._parsed(what, raw, _parse_fill_activities)
            fills.extend(f for order_id, f in page if order_id == order.broker_order_id)
            done = sum((f.quantity for f in fills), Decimal(0)) >= order.filled_quantity
            if done or len(page) < ACTIVITY_PAGE_SIZE:
                break
            params["page_token"] = page[-1][1].fill_id
        return replace(order, fills=tuple(fills), fills_reported=True)

    def _pause(self, failure: _Failure, attempt: int) -> None:
        backoff = self._retry_backoff * 2 ** (attempt - 1)
        if failure.kind is _Kind.RATE_LIMITED:
            # The limiter makes the next request wait (it may already know the reset time).
            self.rate_limiter.defer(
                failure.retry_after if failure.retry_after is not None else backoff
            )
        else:
            self._sleep(backoff)

    def _parsed(self, what: str, raw: Any, parse: Callable[[Any], T]) -> T:
        try:
            return parse(raw)
        except _BadPayload as exc:
            raise AlpacaResponseError(self._scrub(f"alpaca {what}: {exc}"), broker=BROKER) from None

    def _classify(self, exc: Exception, *, order_submit: bool) -> _Failure:
        return classify(exc, order_submit=order_submit, timeout=self._timeout, clock=self._clock)

    def _error(self, what: str, failure: _Failure, *, order: bool = False) -> BrokerError:
        return to_error(what, failure, order=order, scrub=self._scrub)

    def _scrub(self, text: str) -> str:
        """Mask the credentials in text that came from outside (defence in depth)."""
        return scrub(text, (self._key.get_secret_value(), self._secret.get_secret_value()))


# --------------------------------------------------------------------------- helpers


def _get_orders(query: GetOrdersRequest) -> Callable[[TradingClient], Any]:
    return lambda client: client.get_orders(query)


def _order_uuid(broker_order_id: str, what: str) -> str:
    """Alpaca order ids are UUIDs: anything else cannot exist there."""
    try:
        return str(uuid.UUID(str(broker_order_id)))
    except ValueError:
        raise OrderNotFoundError(
            f"alpaca {what}: not an Alpaca order id", reason="not an Alpaca order id", broker=BROKER
        ) from None


# --------------------------------------------------------------------------- parsing


def _get_fill_activities(query: dict[str, str | int]) -> Callable[[TradingClient], Any]:
    return lambda client: client.get("/account/activities/FILL", query)
