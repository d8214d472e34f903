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
import json
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from email.utils import parsedate_to_datetime
from enum import Enum
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

import requests
import urllib3.exceptions
from alpaca.common.enums import BaseURL, Sort
from alpaca.common.exceptions import APIError
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide as AlpacaOrderSide
from alpaca.trading.enums import QueryOrderStatus, TimeInForce
from alpaca.trading.requests import GetOrdersRequest, LimitOrderRequest, MarketOrderRequest
from pydantic import SecretStr

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
    RateLimitedError,
    RetryableBrokerError,
)
from saras.brokers.kit.rate import Budget, RateLimiter, shared
from saras.brokers.kit.resend import place_once, resolve
from saras.domain.enums import BrokerType, OrderSide, OrderType

__all__ = [
    "AlpacaBroker",
    "AlpacaRateLimiter",
    "AlpacaResponseError",
    "map_order_status",
    "shared_rate_limiter",
]

log = logging.getLogger(__name__)

BROKER = BrokerType.ALPACA.value
PAGE_SIZE = 500  # Alpaca's maximum for GET /v2/orders
MAX_CLIENT_ORDER_ID = 48
MAX_DECIMALS = 9  # Alpaca takes quantities and notionals to 9 decimal places
MIN_BUY_VALUE = Decimal("1")
DEFAULT_TIMEOUT = 10.0
#: Alpaca's paper endpoint; every other alpaca.markets trading host moves real money
PAPER_HOST = "paper-api.alpaca.markets"
ALPACA_DOMAIN = "alpaca.markets"
CODE_DUPLICATE_CLIENT_ORDER_ID = 40010001
CODE_INSUFFICIENT = 40310000  # 403: insufficient buying power / quantity / cost basis
DEFAULT_REQUESTS_PER_MINUTE = 200
MAX_PAGES = 2_000
ACTIVITY_PAGE_SIZE = 100  # Alpaca's maximum for GET /v2/account/activities

T = TypeVar("T")
_TRANSPORT_ERRORS = (APIError, requests.RequestException)


class AlpacaResponseError(NonRetryableBrokerError):
    """Alpaca answered something this adapter cannot read (unknown status, missing field)."""


class _BadPayload(ValueError):
    """A response body that does not have the shape of Alpaca's entities."""


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


class _Kind(Enum):
    RETRY = "retry"  # nothing happened; trying again may work
    RATE_LIMITED = "rate_limited"
    AMBIGUOUS = "ambiguous"  # an order submission may or may not have been placed
    DUPLICATE = "duplicate"  # 422 40010001: an order with this client_order_id exists
    NOT_FOUND = "not_found"
    REJECTED = "rejected"
    FATAL = "fatal"
    INVALID = "invalid"


@dataclass(frozen=True)
class _Failure:
    kind: _Kind
    detail: str
    status: int | None = None
    reason: str | None = None
    retry_after: float | None = None


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
        """Return Alpaca's capabilities; live whenever the endpoint is not Alpaca's paper one."""
        return BrokerCapabilities(
            real_money=reaches_real_money(config),
            fractional=True,
            quantity_decimals=MAX_DECIMALS,
            min_order_value=MIN_BUY_VALUE,
        )

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
        """Sort an SDK or transport exception into one of our outcomes."""
        unknown = _Kind.AMBIGUOUS if order_submit else _Kind.RETRY
        if isinstance(exc, requests.exceptions.JSONDecodeError):
            return _Failure(unknown, "the answer is not valid JSON")
        if isinstance(exc, APIError):
            return self._classify_http(exc, order_submit=order_submit)
        if isinstance(
            exc,
            requests.exceptions.InvalidURL
            | requests.exceptions.MissingSchema
            | requests.exceptions.InvalidSchema,
        ):
            return _Failure(_Kind.FATAL, f"the base URL is not usable ({type(exc).__name__})")
        if _never_sent(exc):
            return _Failure(_Kind.RETRY, f"could not connect ({_connect_reason(exc)})")
        if isinstance(exc, requests.Timeout):
            return _Failure(unknown, f"no answer within {self._timeout:g} s")
        return _Failure(unknown, f"connection lost before the answer ({_connect_reason(exc)})")

    def _classify_http(self, exc: APIError, *, order_submit: bool) -> _Failure:
        status = exc.status_code  # safe: unlike .code/.message it does not parse the body
        response = exc.response
        text = response.text if response is not None else str(exc)
        code, message = _error_body(text)
        headers: Mapping[str, str] = response.headers if response is not None else {}
        detail = f"HTTP {status}"
        detail += f" {message}" if message else " (no JSON error body)"
        if code is not None:
            detail += f" (code {code})"
        lowered = (message or "").lower()
        unknown = _Kind.AMBIGUOUS if order_submit else _Kind.RETRY
        match status:
            case 429:
                retry_after = _retry_after(headers, self._clock())
                return _Failure(_Kind.RATE_LIMITED, detail, 429, retry_after=retry_after)
            case 401:
                return _Failure(_Kind.FATAL, detail, 401)
            case 403 if code == CODE_INSUFFICIENT or "insufficient" in lowered:
                return _Failure(_Kind.REJECTED, detail, 403, reason=message or detail)
            case 403:
                return _Failure(_Kind.FATAL, detail, 403)
            case 404:
                return _Failure(_Kind.NOT_FOUND, detail, 404, reason=message or "not found")
            case 422 if order_submit and (
                code == CODE_DUPLICATE_CLIENT_ORDER_ID
                or "client_order_id must be unique" in lowered
            ):
                return _Failure(_Kind.DUPLICATE, detail, 422)
            case 400 | 422:
                return _Failure(_Kind.REJECTED, detail, status, reason=message or detail)
            case 408 | None:
                return _Failure(unknown, detail, status)
            case int() if status >= 500:
                return _Failure(unknown, detail, status)
        return _Failure(_Kind.INVALID, detail, status, reason=message or detail)

    def _error(self, what: str, failure: _Failure, *, order: bool = False) -> BrokerError:
        """Turn a failure into one of our exceptions (secrets scrubbed)."""
        message = self._scrub(f"alpaca {what}: {failure.detail}")
        reason = self._scrub(failure.reason) if failure.reason else None
        status = failure.status
        match failure.kind:
            case _Kind.RATE_LIMITED:
                return RateLimitedError(
                    message, broker=BROKER, status_code=status, retry_after=failure.retry_after
                )
            case _Kind.RETRY | _Kind.AMBIGUOUS:
                return RetryableBrokerError(message, broker=BROKER, status_code=status)
            case _Kind.FATAL:
                return FatalBrokerError(message, broker=BROKER, status_code=status)
            case _Kind.NOT_FOUND:
                return OrderNotFoundError(message, reason=reason, broker=BROKER, status_code=status)
            case _Kind.REJECTED if order:
                return OrderRejectedError(message, reason=reason, broker=BROKER, status_code=status)
            case _Kind.REJECTED | _Kind.INVALID | _Kind.DUPLICATE:
                return NonRetryableBrokerError(
                    message, reason=reason, broker=BROKER, status_code=status
                )
        raise AssertionError(f"unhandled failure kind {failure.kind}")  # pragma: no cover

    def _scrub(self, text: str) -> str:
        """Mask the credentials in text that came from outside (defence in depth)."""
        for secret in (self._key.get_secret_value(), self._secret.get_secret_value()):
            if secret and secret in text:
                text = text.replace(secret, "**********")
        return text


# --------------------------------------------------------------------------- helpers


def reaches_real_money(config: ConnectionConfig) -> bool:
    """Tell whether orders through this connection can reach a live Alpaca account.

    A live row does. So does a "paper" row whose ``base_url`` names an Alpaca host other than
    the paper endpoint (``api.alpaca.markets`` is the live one): the URL decides where orders
    go, not the flag. An unreadable ``base_url`` counts as live. Other hosts (a local fake, a
    sandbox proxy) follow the row's flag.
    """
    if not config.paper_trading:
        return True
    override = config.metadata.get("base_url")
    if override is None or override == "":
        return False
    if not isinstance(override, str):
        return True
    try:
        host = (urlsplit(override.strip()).hostname or "").rstrip(".").lower()
    except ValueError:
        return True
    if not host:
        return True
    return (host == ALPACA_DOMAIN or host.endswith("." + ALPACA_DOMAIN)) and host != PAPER_HOST


def _base_url(config: ConnectionConfig) -> str:
    """Pick the endpoint: ``metadata["base_url"]`` if given, else paper or live."""
    override = config.metadata.get("base_url")
    if override is None or override == "":
        return str((BaseURL.TRADING_PAPER if config.paper_trading else BaseURL.TRADING_LIVE).value)
    if not isinstance(override, str) or not override.startswith(("http://", "https://")):
        raise FatalBrokerError(
            f"alpaca connection {config.connection_id}: base_url must be an http(s) URL",
            broker=BROKER,
        )
    url = override.rstrip("/")
    return url.removesuffix("/v2")  # alpaca-py appends /v2 itself


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


def _never_sent(exc: Exception) -> bool:
    """Tell whether a transport error happened before the request left (safe to send again)."""
    if isinstance(exc, requests.exceptions.ConnectTimeout | requests.exceptions.ProxyError):
        return True
    if isinstance(exc, requests.exceptions.SSLError):
        return True  # the TLS handshake precedes the request
    if isinstance(exc, requests.exceptions.ConnectionError) and not isinstance(
        exc, requests.exceptions.ReadTimeout
    ):
        reason: object = exc.args[0] if exc.args else None
        if isinstance(reason, urllib3.exceptions.MaxRetryError):
            reason = reason.reason
        return isinstance(
            reason, urllib3.exceptions.NewConnectionError | urllib3.exceptions.ConnectTimeoutError
        )
    return False


def _connect_reason(exc: Exception) -> str:
    reason: object = exc.args[0] if exc.args else None
    if isinstance(reason, urllib3.exceptions.MaxRetryError):
        reason = reason.reason
    return type(reason).__name__ if isinstance(reason, Exception) else type(exc).__name__


def _error_body(text: str) -> tuple[int | None, str | None]:
    """Read Alpaca's ``{"code": ..., "message": ...}`` error body; (None, None) if it is not one."""
    try:
        data = json.loads(text)
    except (TypeError, ValueError):
        return None, None
    if not isinstance(data, dict):
        return None, None
    raw_code = data.get("code")
    code: int | None = None
    if isinstance(raw_code, int) and not isinstance(raw_code, bool):
        code = raw_code
    elif isinstance(raw_code, str) and raw_code.isdigit():
        code = int(raw_code)
    message = data.get("message")
    return code, (message.strip()[:300] or None) if isinstance(message, str) else None


def _header_number(headers: Mapping[str, str], name: str) -> float | None:
    value = headers.get(name)
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _retry_after(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds to wait after a 429: ``Retry-After`` if sent, else ``X-RateLimit-Reset``.

    Alpaca sends ``X-RateLimit-Reset`` (epoch seconds); a proxy in front may send the more
    specific ``Retry-After`` (seconds or an HTTP date).
    """
    value = headers.get("Retry-After")
    if value is not None:
        seconds = _header_number(headers, "Retry-After")
        if seconds is not None:
            return max(seconds, 0.0)
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            when = None
        if when is not None:
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            return max(when.timestamp() - now, 0.0)
    reset = _header_number(headers, "X-RateLimit-Reset")
    if reset is not None:
        return max(reset - now, 0.0)
    return None


def _decimal_places(value: Decimal) -> int:
    exponent = value.normalize().as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


# --------------------------------------------------------------------------- parsing


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


def _get_fill_activities(query: dict[str, str | int]) -> Callable[[TradingClient], Any]:
    return lambda client: client.get("/account/activities/FILL", query)


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
