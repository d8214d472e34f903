"""A stateful fake of Alpaca's Trading API on 127.0.0.1, speaking the real wire format.

Used by the Alpaca adapter's tests, by flow-level reliability tests and by benchmarks. Only the
standard library: an ``http.server.ThreadingHTTPServer`` in a daemon thread.

Start it and point alpaca-py (or ``AlpacaBroker`` through ``connection_metadata["base_url"]``) at
``fake.url``::

    with FakeAlpaca(cash=Decimal("10000")) as fake:
        fake.add_asset("AAPL", price=Decimal("190"))
        client = TradingClient(FAKE_KEY_ID, FAKE_SECRET, url_override=fake.url)
        ...
        assert len(fake.order_posts()) == 1

What it serves (bodies shaped like Alpaca's, numbers as strings, times ISO 8601 UTC):

* ``GET /v2/account``, ``GET /v2/positions``, ``GET /v2/clock``,
  ``GET /v2/assets`` (``status``, ``asset_class``, ``exchange``), ``GET /v2/assets/{symbol}``;
* ``POST /v2/orders``: ``client_order_id`` unique forever (422 ``40010001``), at most 48
  characters, exactly one of ``qty``/``notional``, fractional only for fractionable assets
  and ``time_in_force=day``, notional only for market orders (422 ``42210000``), buys of at
  least $1 and within buying power (403 ``40310000`` "insufficient buying power"), sells
  within the position;
* ``GET /v2/orders`` (``status`` open/closed/all, ``after``/``until`` exclusive on
  ``submitted_at``, ``limit`` default 50 max 500, ``direction`` default desc, ``symbols``,
  ``side``), ``GET /v2/orders/{id}``, ``GET /v2/orders:by_client_order_id?client_order_id=``,
  ``DELETE /v2/orders/{id}`` (204; 422 when not cancelable; 404), ``DELETE /v2/orders``;
* ``GET /v2/account/activities/FILL`` (and ``/v2/account/activities?activity_types=FILL``): one
  TradeActivity per execution (``price``, ``qty``, ``cum_qty``, ``leaves_qty``, ``order_id``,
  ``type`` fill/partial_fill, ``transaction_time``), ``after``/``until``, ``direction`` (default
  desc), ``page_size`` (max 100), ``page_token``.

Authentication: ``APCA-API-KEY-ID`` / ``APCA-API-SECRET-KEY`` must match the configured keys, else
401 ``{"code":40110000,"message":"request is not authorized"}``. Every authenticated answer
carries ``X-RateLimit-Limit``, ``X-RateLimit-Remaining`` and ``X-RateLimit-Reset`` (epoch
seconds) counted over a rolling minute per key; ``rate_limit_per_minute=N`` enforces N with 429s.

The book: cash, positions and orders. Buying power is cash minus what open buy orders reserve
(a cash account). Orders fill at the symbol's price (``add_asset``/``set_price``, default 100),
following a ``FillRule`` per symbol: at once, after N reads of the order, partially first, or
never (``auto_fill=False`` leaves every order ``new`` until ``fill_order``). Limit orders fill
only when marketable. Cash and positions move with each fill. The market clock does not gate
fills.

Faults, programmable per request: ``inject(Fault..., method=, path=, times=)`` queues faults
matched in order, or ``fault_hook`` (a callable from the ``RecordedRequest`` to a ``Fault`` or
None) decides for every request. Kinds:

=========================  =============================================================
``timeout_after_accept``   process the request (the order IS created), hold the connection
                           ``delay`` seconds (longer than the client timeout), close it
``drop_after_accept``      process, then close the connection without answering
``refuse``                 reset the connection before processing anything; the client sees
                           "connection aborted" (for a real "connection refused", use
                           ``refusing()`` or ``stop()``: nothing listens on the port)
``http_500_placed``        process, then answer 500 JSON
``http_500_not_placed``    answer 500 JSON without processing
``http_504_html``          answer a 504 HTML gateway page (``placed=True``: after processing)
``http_429``               answer 429 with ``X-RateLimit-Remaining: 0`` and a reset
                           ``reset_in`` seconds ahead, without processing
``malformed_json``         process, then answer 200 with a truncated JSON body
``delay``                  sleep ``delay`` seconds, then behave normally (``Fault.slow``)
``respond``                answer ``status``/``body``/``content_type`` without processing
                           (``Fault.respond``: also serves recorded bodies verbatim)
=========================  =============================================================

For example ``fake.inject(Fault.http_500(placed=True), method="POST", path="/v2/orders")``, or
``fake.fault_hook = lambda r: Fault.refuse() if r.path == "/v2/clock" else None``.

``latency_ms`` adds a delay to every request (benchmarks). Every request is recorded
(``requests``, ``requests_to()``, ``order_posts()``) with method, path, query, JSON body, status
and fault; secrets are never recorded. Inspect the book with ``orders``, ``order_by_client_id``,
``positions`` and ``cash``; arrange it with ``add_asset``, ``set_price``, ``set_position``,
``set_fill_rule``, ``seed_order``, ``set_order_status``, ``fill_order`` and ``market_open``.

``FakeClock`` is a manual clock whose ``sleep`` advances it: share one between the fake and the
adapter to test rate limits without waiting. ``alpaca_connection(fake)`` returns the
``ConnectionConfig`` and ``BrokerCredentials`` that point an adapter at the fake.
"""

from __future__ import annotations

import json
import math
import re
import socket
import struct
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

from pydantic import SecretStr

from saras.brokers.base import BrokerCredentials, ConnectionConfig

__all__ = [
    "DEFAULT_PRICE",
    "FAKE_KEY_ID",
    "FAKE_SECRET",
    "PROXY_ENVIRONMENT",
    "FakeAlpaca",
    "FakeClock",
    "Fault",
    "FaultKind",
    "FillRule",
    "RecordedRequest",
    "alpaca_connection",
]

FAKE_KEY_ID = "PKFAKE7QX2ALPACA0001"
FAKE_SECRET = "fake-secret-9b1f6e0c4d2a47e8a3c5d7f9b1e3a5c7"
DEFAULT_PRICE = Decimal("100")
#: Variables that would send requests to 127.0.0.1 through a proxy: clear them in tests.
PROXY_ENVIRONMENT = tuple(
    name for base in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY") for name in (base, base.lower())
)

FaultKind = Literal[
    "timeout_after_accept",
    "drop_after_accept",
    "refuse",
    "http_500_placed",
    "http_500_not_placed",
    "http_504_html",
    "http_429",
    "malformed_json",
    "delay",
    "respond",
]

OPEN_STATUSES = frozenset(
    {
        "new",
        "accepted",
        "pending_new",
        "accepted_for_bidding",
        "partially_filled",
        "pending_cancel",
        "pending_replace",
        "pending_review",
        "held",
        "stopped",
        "suspended",
        "calculated",
        "done_for_day",
    }
)
CLOSED_STATUSES = frozenset({"filled", "canceled", "expired", "replaced", "rejected"})

_NEW_YORK = ZoneInfo("America/New_York")
_NINE_PLACES = Decimal("0.000000001")
_SYMBOL_RE = re.compile(r"^[A-Z][A-Z0-9.]{0,9}$")
_HTML_504 = (
    "<html><body><h1>504 Gateway Time-out</h1>The server didn't respond in time.</body></html>"
)


class FakeClock:
    """A manual epoch clock whose ``sleep`` advances it: waits without waiting.

    Give the same instance to ``FakeAlpaca(clock=...)`` and to the adapter (``clock=``,
    ``sleep=clock.sleep``) so rate-limit windows and reset headers agree. Thread-safe.
    """

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._now = start
        self._lock = threading.Lock()
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def sleep(self, seconds: float) -> None:
        """Record the wait and move the clock forward by it."""
        with self._lock:
            self.sleeps.append(seconds)
            self._now += max(seconds, 0.0)

    def advance(self, seconds: float) -> None:
        """Move the clock forward without recording a sleep."""
        with self._lock:
            self._now += seconds


def alpaca_connection(
    fake: FakeAlpaca,
    *,
    connection_id: str = "alpaca-fake",
    paper: bool = True,
    key_id: str | None = None,
    secret_key: str | None = None,
) -> tuple[ConnectionConfig, BrokerCredentials]:
    """Return the connection config and credentials that point an adapter at ``fake``."""
    config = ConnectionConfig(
        connection_id=connection_id,
        broker_type="alpaca",
        paper_trading=paper,
        metadata={"base_url": fake.url},
    )
    credentials = BrokerCredentials(
        api_key=SecretStr(key_id if key_id is not None else fake.key_id),
        api_secret=SecretStr(secret_key if secret_key is not None else fake._secret),
    )
    return config, credentials


@dataclass(frozen=True)
class Fault:
    """One injected misbehaviour of the fake (see the module docstring for the kinds)."""

    kind: FaultKind
    delay: float = 0.0
    reset_in: float = 1.0
    placed: bool = False
    status: int = 200
    body: str = ""
    content_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def timeout_after_accept(cls, delay: float = 5.0) -> Fault:
        """Process the request, then hold the connection ``delay`` seconds and close it."""
        return cls("timeout_after_accept", delay=delay)

    @classmethod
    def drop_after_accept(cls) -> Fault:
        """Process the request, then close the connection without an answer."""
        return cls("drop_after_accept")

    @classmethod
    def refuse(cls) -> Fault:
        """Reset the connection before processing anything."""
        return cls("refuse")

    @classmethod
    def http_500(cls, *, placed: bool) -> Fault:
        """Answer 500 JSON, after processing the request (``placed``) or instead of it."""
        return cls("http_500_placed" if placed else "http_500_not_placed")

    @classmethod
    def http_504_html(cls, *, placed: bool = False) -> Fault:
        """Answer a 504 HTML gateway page, after processing (``placed``) or instead of it."""
        return cls("http_504_html", placed=placed)

    @classmethod
    def http_429(cls, reset_in: float = 1.0) -> Fault:
        """Answer 429 with rate-limit headers resetting ``reset_in`` seconds ahead."""
        return cls("http_429", reset_in=reset_in)

    @classmethod
    def malformed_json(cls) -> Fault:
        """Process the request, then answer 200 with a truncated JSON body."""
        return cls("malformed_json")

    @classmethod
    def slow(cls, delay: float) -> Fault:
        """Sleep ``delay`` seconds before behaving normally."""
        return cls("delay", delay=delay)

    @classmethod
    def respond(
        cls,
        status: int,
        body: str | object,
        *,
        content_type: str = "application/json",
        headers: Mapping[str, str] | None = None,
    ) -> Fault:
        """Answer a canned response (JSON-encoded unless ``body`` is a str), processing nothing."""
        text = body if isinstance(body, str) else json.dumps(body)
        return cls(
            "respond", status=status, body=text, content_type=content_type, headers=headers or {}
        )


@dataclass(frozen=True)
class FillRule:
    """How the fake fills an order for a symbol.

    ``polls_before_fill``: reads of the order (by id, by client id, or in a list) before its
    first fill; 0 fills on submission. ``partial_ratio``: fill only this share of the quantity
    first (status ``partially_filled``); ``polls_before_complete``: further reads before the
    rest fills (None: it never completes). ``price`` overrides the symbol's price.
    """

    polls_before_fill: int = 0
    partial_ratio: Decimal | None = None
    polls_before_complete: int | None = 1
    price: Decimal | None = None


@dataclass
class RecordedRequest:
    """A request as the fake saw it (secrets are never recorded)."""

    method: str
    path: str
    query: dict[str, list[str]]
    key_id: str | None
    body: Any = None
    raw_body: str = ""
    status: int | None = None  # None when the connection was closed without an answer
    fault: FaultKind | None = None
    at: float = 0.0


@dataclass
class _Asset:
    symbol: str
    asset_id: str
    price: Decimal
    fractionable: bool = True
    tradable: bool = True
    exchange: str = "NASDAQ"
    name: str = ""
    marginable: bool = True
    shortable: bool = False
    status: str = "active"


@dataclass
class _Position:
    qty: Decimal
    cost: Decimal  # total cost basis of the quantity held


@dataclass
class _Order:
    id: str
    client_order_id: str
    symbol: str
    asset_id: str
    side: str
    type: str
    time_in_force: str
    qty: Decimal | None
    notional: Decimal | None
    limit_price: Decimal | None
    status: str
    created_at: datetime
    submitted_at: datetime
    updated_at: datetime
    rule: FillRule
    filled_qty: Decimal = Decimal("0")
    filled_notional: Decimal = Decimal("0")
    filled_at: datetime | None = None
    canceled_at: datetime | None = None
    expired_at: datetime | None = None
    failed_at: datetime | None = None
    replaced_at: datetime | None = None
    replaced_by: str | None = None
    reads: int = 0
    reads_at_partial: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class _ApiError(Exception):
    def __init__(self, status: int, body: dict[str, Any]):
        super().__init__(body.get("message", ""))
        self.status = status
        self.body = body


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False
    request_queue_size = 128  # a burst of connections queues (socketserver's 5 drops some)
    fake: FakeAlpaca


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "FakeAlpaca/1.0"

    def do_GET(self) -> None:
        self.server.fake._serve(self)

    def do_POST(self) -> None:
        self.server.fake._serve(self)

    def do_DELETE(self) -> None:
        self.server.fake._serve(self)

    def do_PATCH(self) -> None:
        self.server.fake._serve(self)

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output quiet."""


class FakeAlpaca:
    """A stateful fake Alpaca Trading API server on 127.0.0.1 (see the module docstring)."""

    def __init__(
        self,
        *,
        key_id: str = FAKE_KEY_ID,
        secret_key: str = FAKE_SECRET,
        cash: Decimal | str | int = Decimal("100000"),
        default_price: Decimal | str | int = DEFAULT_PRICE,
        auto_assets: bool = True,
        auto_fill: bool = True,
        rate_limit_per_minute: int | None = None,
        latency_ms: float = 0.0,
        clock: Callable[[], float] = time.time,
        port: int = 0,
        host: str = "127.0.0.1",
    ) -> None:
        self.key_id = key_id
        self._secret = secret_key
        self.default_price = Decimal(str(default_price))
        self.auto_assets = auto_assets
        self.auto_fill = auto_fill
        self.rate_limit_per_minute = rate_limit_per_minute
        self.latency_ms = latency_ms
        self.clock = clock
        self.default_fill_rule = FillRule()
        self.fault_hook: Callable[[RecordedRequest], Fault | None] | None = None
        self.market_open: bool | None = None  # None: computed from the clock (NYSE hours)
        self.account_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"fake-alpaca/{key_id}"))
        self._host = host
        self._port = port
        self._lock = threading.RLock()
        self._cash = Decimal(str(cash))
        self._assets: dict[str, _Asset] = {}
        self._positions: dict[str, _Position] = {}
        self._orders: dict[str, _Order] = {}
        self._client_ids: dict[str, str] = {}  # every client_order_id ever used -> order id
        self._activities: list[dict[str, Any]] = []  # FILL activities, oldest first
        self._fill_rules: dict[str, FillRule] = {}
        self._faults: list[tuple[Fault, str | None, str | None, int | None]] = []
        self._requests: list[RecordedRequest] = []
        self._hits: dict[str, deque[float]] = {}
        self._last_stamp: datetime | None = None
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._halt = threading.Event()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> FakeAlpaca:
        """Start serving in a daemon thread (on the same port again after a stop)."""
        with self._lock:
            if self._httpd is not None:
                return self
            httpd = _Server((self._host, self._port), _Handler)
            httpd.fake = self
            self._port = httpd.server_address[1]
            self._halt = threading.Event()
            self._httpd = httpd
            self._thread = threading.Thread(
                target=httpd.serve_forever,
                kwargs={"poll_interval": 0.02},
                name=f"fake-alpaca-{self._port}",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket; the book is kept."""
        with self._lock:
            httpd, thread = self._httpd, self._thread
            self._httpd = self._thread = None
            self._halt.set()
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> FakeAlpaca:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @contextmanager
    def refusing(self) -> Iterator[None]:
        """Refuse connections (nothing listens on the port) inside the block."""
        self.stop()
        try:
            yield
        finally:
            self.start()

    @property
    def url(self) -> str:
        """Base URL to give alpaca-py's ``url_override`` (no trailing slash, no /v2)."""
        if self._port == 0:
            raise RuntimeError("FakeAlpaca is not started")
        return f"http://{self._host}:{self._port}"

    @property
    def port(self) -> int:
        """The port the fake listens on (0 before the first start)."""
        return self._port

    # ------------------------------------------------------------------ faults and records

    def inject(
        self,
        fault: Fault,
        *,
        method: str | None = None,
        path: str | None = None,
        times: int | None = 1,
    ) -> None:
        """Queue a fault for the next ``times`` matching requests (None: every one).

        ``path`` matches the path exactly, or as a prefix when it ends with ``*``.
        """
        with self._lock:
            self._faults.append((fault, method.upper() if method else None, path, times))

    def clear_faults(self) -> None:
        """Drop every queued fault and the fault hook."""
        with self._lock:
            self._faults.clear()
            self.fault_hook = None

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def requests_to(self, method: str, path: str) -> list[RecordedRequest]:
        """The recorded requests with this method and exact path."""
        return [r for r in self.requests if r.method == method.upper() and r.path == path]

    def order_posts(self) -> list[RecordedRequest]:
        """The recorded ``POST /v2/orders`` requests."""
        return self.requests_to("POST", "/v2/orders")

    def clear_requests(self) -> None:
        """Forget the recorded requests (the book is kept)."""
        with self._lock:
            self._requests.clear()

    # ------------------------------------------------------------------ the book

    @property
    def cash(self) -> Decimal:
        """Cash in the account."""
        with self._lock:
            return self._cash

    @cash.setter
    def cash(self, value: Decimal | str | int) -> None:
        with self._lock:
            self._cash = Decimal(str(value))

    def add_asset(
        self,
        symbol: str,
        *,
        price: Decimal | str | int | None = None,
        fractionable: bool = True,
        tradable: bool = True,
        exchange: str = "NASDAQ",
        name: str | None = None,
    ) -> None:
        """Register (or update) an asset and its price."""
        with self._lock:
            asset = self._asset(symbol, create=True)
            assert asset is not None
            if price is not None:
                asset.price = Decimal(str(price))
            asset.fractionable = fractionable
            asset.tradable = tradable
            asset.exchange = exchange
            asset.name = name or asset.name

    def set_price(self, symbol: str, price: Decimal | str | int) -> None:
        """Set the price market orders for ``symbol`` fill at."""
        with self._lock:
            asset = self._asset(symbol, create=True)
            assert asset is not None
            asset.price = Decimal(str(price))

    def set_fill_rule(self, symbol: str | None, rule: FillRule) -> None:
        """Set how orders for ``symbol`` fill (None: the default for every symbol)."""
        with self._lock:
            if symbol is None:
                self.default_fill_rule = rule
            else:
                self._fill_rules[symbol.upper()] = rule

    def set_position(
        self, symbol: str, qty: Decimal | str | int, avg_entry_price: Decimal | str | int
    ) -> None:
        """Set a position directly (negative quantity: short)."""
        with self._lock:
            self._asset(symbol, create=True)
            quantity = Decimal(str(qty))
            if quantity == 0:
                self._positions.pop(symbol.upper(), None)
                return
            cost = quantity * Decimal(str(avg_entry_price))
            self._positions[symbol.upper()] = _Position(qty=quantity, cost=cost)

    @property
    def positions(self) -> dict[str, Decimal]:
        """Quantity held per symbol."""
        with self._lock:
            return {symbol: p.qty for symbol, p in self._positions.items()}

    @property
    def orders(self) -> list[dict[str, Any]]:
        """Every order in the book as Alpaca would render it, oldest first."""
        with self._lock:
            return [self._order_json(o) for o in self._orders.values()]

    def order_by_client_id(self, client_order_id: str) -> dict[str, Any] | None:
        """The order with this client id as Alpaca would render it, or None."""
        with self._lock:
            order_id = self._client_ids.get(client_order_id)
            return self._order_json(self._orders[order_id]) if order_id else None

    def seed_order(
        self,
        symbol: str,
        side: str = "buy",
        qty: Decimal | str | int | None = 1,
        *,
        notional: Decimal | str | int | None = None,
        status: str = "filled",
        client_order_id: str | None = None,
        order_type: str = "market",
        limit_price: Decimal | str | int | None = None,
        submitted_at: datetime | None = None,
        filled_qty: Decimal | str | int | None = None,
        filled_avg_price: Decimal | str | int | None = None,
    ) -> dict[str, Any]:
        """Put an order straight into the book (no checks, cash and positions untouched)."""
        with self._lock:
            asset = self._asset(symbol, create=True)
            assert asset is not None
            stamp = submitted_at.astimezone(UTC) if submitted_at else self._stamp()
            quantity = None if qty is None else Decimal(str(qty))
            order = _Order(
                id=str(uuid.uuid4()),
                client_order_id=client_order_id or str(uuid.uuid4()),
                symbol=asset.symbol,
                asset_id=asset.asset_id,
                side=side,
                type=order_type,
                time_in_force="day",
                qty=quantity if notional is None else None,
                notional=None if notional is None else Decimal(str(notional)),
                limit_price=None if limit_price is None else Decimal(str(limit_price)),
                status=status,
                created_at=stamp,
                submitted_at=stamp,
                updated_at=stamp,
                rule=FillRule(polls_before_fill=10**9),
            )
            if filled_qty is not None:
                order.filled_qty = Decimal(str(filled_qty))
            elif status == "filled" and quantity is not None:
                order.filled_qty = quantity
            if order.filled_qty > 0:
                price = Decimal(str(filled_avg_price)) if filled_avg_price else asset.price
                order.filled_notional = order.filled_qty * price
                if status == "filled":
                    order.filled_at = stamp
                self._record_fill_activity(order, order.filled_qty, price, stamp)
            self._orders[order.id] = order
            self._client_ids[order.client_order_id] = order.id
            return self._order_json(order)

    def set_order_status(self, order_id: str, status: str, **fields: Any) -> dict[str, Any]:
        """Force an order's status (any string, for mapping tests) and raw JSON fields."""
        with self._lock:
            order = self._orders[order_id]
            order.status = status
            order.updated_at = self._stamp()
            order.extra.update(fields)
            return self._order_json(order)

    def fill_order(
        self,
        order_id: str,
        qty: Decimal | str | int | None = None,
        price: Decimal | str | int | None = None,
    ) -> dict[str, Any]:
        """Execute ``qty`` (default: the rest) of an open order at ``price`` (default: market)."""
        with self._lock:
            order = self._orders[order_id]
            asset = self._asset(order.symbol)
            assert asset is not None
            fill_price = Decimal(str(price)) if price is not None else asset.price
            remaining = self._remaining_qty(order, fill_price)
            quantity = remaining if qty is None else min(Decimal(str(qty)), remaining)
            self._execute(order, quantity, fill_price)
            return self._order_json(order)

    # ------------------------------------------------------------------ serving

    def _serve(self, handler: _Handler) -> None:
        split = urlsplit(handler.path)
        record = RecordedRequest(
            method=handler.command,
            path=split.path,
            query=parse_qs(split.query),
            key_id=handler.headers.get("APCA-API-KEY-ID"),
            at=self.clock(),
        )
        with self._lock:
            self._requests.append(record)
            halt = self._halt
        if self.latency_ms > 0:
            halt.wait(self.latency_ms / 1000)
        fault = self._pick_fault(record)
        record.fault = fault.kind if fault else None
        if fault is not None and fault.kind == "refuse":
            self._close(handler, reset=True)
            return
        if fault is not None and fault.kind == "delay":
            halt.wait(fault.delay)
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length > 0 else b""
        record.raw_body = raw.decode("utf-8", "replace")
        if raw:
            try:
                record.body = json.loads(raw)
            except ValueError:
                record.body = None

        auth = self._authenticate(handler)
        if auth is not None:
            self._send(handler, record, 401, auth)
            return
        limit_headers, throttled = self._count(record.key_id or "")
        if throttled:
            body = {"code": 42910000, "message": "rate limit exceeded"}
            self._send(handler, record, 429, body, headers=limit_headers)
            return

        if fault is not None:
            early = self._early_fault(fault)
            if early is not None:
                status, text, content_type, extra = early
                self._send_text(
                    handler, record, status, text, content_type, {**limit_headers, **extra}
                )
                return

        try:
            status, payload = self._route(handler.command, split.path, record)
        except _ApiError as exc:
            status, payload = exc.status, exc.body

        if fault is not None and fault.kind in ("timeout_after_accept", "drop_after_accept"):
            if fault.kind == "timeout_after_accept":
                halt.wait(fault.delay)
            self._close(handler, reset=False)
            return
        if fault is not None and fault.kind == "http_500_placed":
            body = {"code": 50010000, "message": "internal server error occurred"}
            self._send(handler, record, 500, body, headers=limit_headers)
            return
        if fault is not None and fault.kind == "http_504_html":  # placed=True
            self._send_text(handler, record, 504, _HTML_504, "text/html", limit_headers)
            return
        if fault is not None and fault.kind == "malformed_json":
            text = json.dumps(payload) if payload is not None else "{}"
            self._send_text(
                handler,
                record,
                200,
                text[: max(1, len(text) // 2)],
                "application/json",
                limit_headers,
            )
            return
        self._send(handler, record, status, payload, headers=limit_headers)

    def _pick_fault(self, record: RecordedRequest) -> Fault | None:
        hook = self.fault_hook
        if hook is not None:
            chosen = hook(record)
            if chosen is not None:
                return chosen
        with self._lock:
            for index, (fault, method, path, times) in enumerate(self._faults):
                if method is not None and method != record.method:
                    continue
                if path is not None:
                    if path.endswith("*"):
                        if not record.path.startswith(path[:-1]):
                            continue
                    elif path != record.path:
                        continue
                if times is not None:
                    if times <= 1:
                        del self._faults[index]
                    else:
                        self._faults[index] = (fault, method, path, times - 1)
                return fault
        return None

    def _early_fault(self, fault: Fault) -> tuple[int, str, str, dict[str, str]] | None:
        match fault.kind:
            case "http_500_not_placed":
                body = {"code": 50010000, "message": "internal server error occurred"}
                return 500, json.dumps(body), "application/json", {}
            case "http_504_html" if not fault.placed:
                return 504, _HTML_504, "text/html", {}
            case "http_429":
                reset = math.ceil(self.clock() + fault.reset_in)
                headers = {
                    "X-RateLimit-Limit": str(self.rate_limit_per_minute or 200),
                    "X-RateLimit-Remaining": "0",
                    "X-RateLimit-Reset": str(reset),
                }
                body = {"code": 42910000, "message": "rate limit exceeded"}
                return 429, json.dumps(body), "application/json", headers
            case "respond":
                return fault.status, fault.body, fault.content_type, dict(fault.headers)
        return None

    def _authenticate(self, handler: _Handler) -> dict[str, Any] | None:
        key = handler.headers.get("APCA-API-KEY-ID")
        secret = handler.headers.get("APCA-API-SECRET-KEY")
        if key == self.key_id and secret == self._secret:
            return None
        return {"code": 40110000, "message": "request is not authorized"}

    def _count(self, key_id: str) -> tuple[dict[str, str], bool]:
        """Count a request in the key's rolling minute; tell whether it is over the limit."""
        now = self.clock()
        limit = self.rate_limit_per_minute
        with self._lock:
            window = self._hits.setdefault(key_id, deque())
            while window and window[0] <= now - 60:
                window.popleft()
            if limit is not None and len(window) >= limit:
                headers = {
                    "X-RateLimit-Limit": str(limit),
                    "X-RateLimit-Remaining": "0",
                    "X-RateLimit-Reset": str(math.ceil(window[0] + 60)),
                }
                return headers, True
            window.append(now)
            shown = limit or 200
            headers = {
                "X-RateLimit-Limit": str(shown),
                "X-RateLimit-Remaining": str(max(shown - len(window), 0)),
                "X-RateLimit-Reset": str(math.ceil(window[0] + 60)),
            }
            return headers, False

    def _send(
        self,
        handler: _Handler,
        record: RecordedRequest,
        status: int,
        payload: Any,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        text = "" if payload is None else json.dumps(payload)
        self._send_text(handler, record, status, text, "application/json", headers or {})

    @staticmethod
    def _send_text(
        handler: _Handler,
        record: RecordedRequest,
        status: int,
        text: str,
        content_type: str,
        headers: Mapping[str, str],
    ) -> None:
        data = text.encode("utf-8")
        record.status = status
        try:
            handler.send_response(status)
            if data:
                handler.send_header("Content-Type", f"{content_type}; charset=utf-8")
            handler.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                handler.send_header(name, value)
            handler.end_headers()
            if data:
                handler.wfile.write(data)
        except OSError:
            pass  # the client went away (it timed out): nothing to answer to

    @staticmethod
    def _close(handler: _Handler, *, reset: bool) -> None:
        """Close the connection without an answer (with a TCP reset when ``reset``)."""
        handler.close_connection = True
        sock = handler.connection
        try:
            if reset:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            else:
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        except OSError:
            pass

    # ------------------------------------------------------------------ routes

    def _route(self, method: str, path: str, record: RecordedRequest) -> tuple[int, Any]:
        query = record.query
        match method, path:
            case "GET", "/v2/account":
                return 200, self._account_json()
            case "GET", "/v2/positions":
                return 200, self._positions_json()
            case "GET", "/v2/clock":
                return 200, self._clock_json()
            case "GET", "/v2/assets":
                return 200, self._assets_json(query)
            case "GET", _ if path.startswith("/v2/assets/"):
                return 200, self._asset_json(path.removeprefix("/v2/assets/"))
            case "POST", "/v2/orders":
                return 200, self._create_order(record.body)
            case "GET", "/v2/orders":
                return 200, self._list_orders(query)
            case "DELETE", "/v2/orders":
                return 207, self._cancel_all()
            case "GET", "/v2/orders:by_client_order_id":
                client_id = (query.get("client_order_id") or [""])[0]
                return 200, self._read_order(self._client_ids.get(client_id))
            case "GET", _ if path.startswith("/v2/orders/"):
                return 200, self._read_order(path.removeprefix("/v2/orders/"))
            case "DELETE", _ if path.startswith("/v2/orders/"):
                self._cancel(path.removeprefix("/v2/orders/"))
                return 204, None
            case "GET", "/v2/account/activities/FILL":
                return 200, self._fill_activities(query)
            case "GET", "/v2/account/activities":
                types = {t.strip() for t in (query.get("activity_types") or [""])[0].split(",")}
                return 200, self._fill_activities(query) if types & {"FILL", ""} else []
        raise _ApiError(404, {"code": 40410000, "message": "endpoint not found"})

    # ------------------------------------------------------------------ book internals

    def _stamp(self) -> datetime:
        """A strictly increasing timestamp from the clock (microsecond steps on ties)."""
        with self._lock:
            now = datetime.fromtimestamp(self.clock(), tz=UTC)
            if self._last_stamp is not None and now <= self._last_stamp:
                now = self._last_stamp + timedelta(microseconds=1)
            self._last_stamp = now
            return now

    def _asset(self, symbol: str, *, create: bool = False) -> _Asset | None:
        key = symbol.upper()
        asset = self._assets.get(key)
        if asset is None and (create or (self.auto_assets and _SYMBOL_RE.match(key))):
            asset = _Asset(
                symbol=key,
                asset_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"fake-alpaca/asset/{key}")),
                price=self.default_price,
                name=f"{key} Fake Common Stock",
            )
            self._assets[key] = asset
        return asset

    def _rule(self, symbol: str) -> FillRule:
        return self._fill_rules.get(symbol.upper(), self.default_fill_rule)

    def _reserved(self) -> Decimal:
        """Cash reserved by open buy orders."""
        total = Decimal("0")
        for order in self._orders.values():
            if order.side != "buy" or order.status not in OPEN_STATUSES:
                continue
            if order.notional is not None:
                total += max(order.notional - order.filled_notional, Decimal("0"))
            else:
                asset = self._asset(order.symbol)
                price = order.limit_price or (asset.price if asset else self.default_price)
                total += ((order.qty or Decimal("0")) - order.filled_qty) * price
        return total

    def _create_order(self, body: Any) -> dict[str, Any]:
        with self._lock:
            if not isinstance(body, dict):
                raise _invalid("request body format is invalid", status=400)
            symbol = body.get("symbol")
            if not isinstance(symbol, str) or not symbol:
                raise _invalid("symbol is required")
            client_id = body.get("client_order_id")
            if client_id is None:
                client_id = str(uuid.uuid4())
            if not isinstance(client_id, str) or len(client_id) > 48:
                raise _invalid("client_order_id must be no more than 48 characters")
            if client_id in self._client_ids:
                raise _ApiError(
                    422, {"code": 40010001, "message": "client_order_id must be unique"}
                )
            side = body.get("side")
            if side not in ("buy", "sell"):
                raise _invalid("side must be buy or sell")
            order_type = body.get("type")
            if order_type not in ("market", "limit"):
                raise _invalid(f"order type {order_type!r} is not supported by the fake")
            tif = body.get("time_in_force")
            if tif not in ("day", "gtc", "opg", "cls", "ioc", "fok"):
                raise _invalid("invalid time_in_force")
            asset = self._asset(symbol)
            if asset is None:
                raise _invalid(f'asset "{symbol}" not found')
            if not asset.tradable:
                raise _ApiError(
                    422, {"code": 42210000, "message": f"asset {asset.symbol} is not tradable"}
                )
            qty = _decimal_field(body, "qty")
            notional = _decimal_field(body, "notional")
            if qty is None and notional is None:
                raise _invalid("qty or notional is required")
            if qty is not None and notional is not None:
                raise _invalid("only one of qty or notional can be specified")
            amount = qty if qty is not None else notional
            assert amount is not None
            if amount <= 0:
                raise _invalid("qty must be > 0" if qty is not None else "notional must be > 0")
            fractional = notional is not None or (qty is not None and qty != qty.to_integral())
            if fractional:
                if not asset.fractionable:
                    raise _ApiError(
                        422,
                        {"code": 42210000, "message": f"asset {asset.symbol} is not fractionable"},
                    )
                if tif != "day":
                    raise _ApiError(
                        422, {"code": 42210000, "message": "fractional orders must be DAY orders"}
                    )
            if notional is not None and order_type != "market":
                raise _ApiError(
                    422, {"code": 42210000, "message": "notional orders must be market orders"}
                )
            limit_price = _decimal_field(body, "limit_price")
            if order_type == "limit" and (limit_price is None or limit_price <= 0):
                raise _invalid("limit_price is required for limit orders")
            rule = self._rule(asset.symbol)
            price = rule.price or asset.price
            if side == "buy":
                if notional is not None:
                    cost = notional
                else:
                    assert qty is not None
                    cost = qty * (limit_price if order_type == "limit" and limit_price else price)
                if cost < 1:
                    raise _ApiError(403, {"code": 40310000, "message": "cost basis must be >= 1"})
                buying_power = self._cash - self._reserved()
                if cost > buying_power:
                    raise _ApiError(
                        403,
                        {
                            "buying_power": _fmt(buying_power),
                            "code": 40310000,
                            "cost_basis": _fmt(cost),
                            "message": "insufficient buying power",
                        },
                    )
            else:
                wanted = qty if qty is not None else (notional or Decimal(0)) / price
                held = self._positions.get(asset.symbol)
                available = (held.qty if held else Decimal(0)) - self._open_sell_qty(asset.symbol)
                if wanted > available:
                    message = (
                        f"insufficient qty available for order (requested: {_fmt(wanted)}, "
                        f"available: {_fmt(max(available, Decimal(0)))})"
                    )
                    raise _ApiError(403, {"code": 40310000, "message": message})
            stamp = self._stamp()
            order = _Order(
                id=str(uuid.uuid4()),
                client_order_id=client_id,
                symbol=asset.symbol,
                asset_id=asset.asset_id,
                side=side,
                type=order_type,
                time_in_force=tif,
                qty=qty,
                notional=notional,
                limit_price=limit_price,
                status="new",
                created_at=stamp,
                submitted_at=stamp,
                updated_at=stamp,
                rule=rule,
            )
            self._orders[order.id] = order
            self._client_ids[client_id] = order.id
            self._advance(order, read=False)
            return self._order_json(order)

    def _open_sell_qty(self, symbol: str) -> Decimal:
        total = Decimal("0")
        for order in self._orders.values():
            if order.symbol == symbol and order.side == "sell" and order.status in OPEN_STATUSES:
                total += (order.qty or Decimal(0)) - order.filled_qty
        return total

    def _remaining_qty(self, order: _Order, price: Decimal) -> Decimal:
        if order.qty is not None:
            return order.qty - order.filled_qty
        assert order.notional is not None
        rest = order.notional - order.filled_notional
        return (rest / price).quantize(_NINE_PLACES, rounding=ROUND_DOWN)

    def _advance(self, order: _Order, *, read: bool) -> None:
        """Move an open order along its fill rule (on submission and on every read)."""
        if read:
            order.reads += 1
        if not self.auto_fill or order.status not in ("new", "partially_filled"):
            return
        rule = order.rule
        asset = self._asset(order.symbol)
        assert asset is not None
        price = rule.price or asset.price
        if order.limit_price is not None:
            marketable = (
                price <= order.limit_price if order.side == "buy" else price >= order.limit_price
            )
            if not marketable:
                return
        if order.filled_qty == 0:
            if order.reads < rule.polls_before_fill:
                return
            total = self._remaining_qty(order, price)
            if rule.partial_ratio is not None:
                part = (total * rule.partial_ratio).quantize(_NINE_PLACES, rounding=ROUND_DOWN)
                if order.qty is not None and order.qty == order.qty.to_integral():
                    part = part.to_integral_value(rounding=ROUND_DOWN)
                if 0 < part < total:
                    self._execute(order, part, price)
                    order.reads_at_partial = order.reads
                    return
            self._execute(order, total, price)
            return
        if rule.polls_before_complete is None:
            return
        if order.reads - order.reads_at_partial < rule.polls_before_complete:
            return
        self._execute(order, self._remaining_qty(order, price), price)

    def _execute(self, order: _Order, qty: Decimal, price: Decimal) -> None:
        """Fill ``qty`` of an order at ``price``: move cash and the position."""
        if qty <= 0:
            return
        value = qty * price
        held = self._positions.get(order.symbol) or _Position(Decimal(0), Decimal(0))
        if order.side == "buy":
            self._cash -= value
            held = _Position(held.qty + qty, held.cost + value)
        else:
            self._cash += value
            avg = held.cost / held.qty if held.qty else price
            held = _Position(held.qty - qty, held.cost - avg * qty)
        if held.qty == 0:
            self._positions.pop(order.symbol, None)
        else:
            self._positions[order.symbol] = held
        order.filled_qty += qty
        order.filled_notional += value
        stamp = self._stamp()
        order.updated_at = stamp
        done = (
            order.filled_qty >= order.qty
            if order.qty is not None
            else self._remaining_qty(order, price) <= 0
        )
        if done:
            order.status = "filled"
            order.filled_at = stamp
        else:
            order.status = "partially_filled"
        self._record_fill_activity(order, qty, price, stamp)

    def _record_fill_activity(
        self, order: _Order, qty: Decimal, price: Decimal, stamp: datetime
    ) -> None:
        """Append the FILL activity of one execution (Alpaca's per-fill record)."""
        leaves = (order.qty - order.filled_qty) if order.qty is not None else Decimal(0)
        done = order.status == "filled"
        self._activities.append(
            {
                "id": f"{stamp:%Y%m%d%H%M%S%f}"[:17] + f"::{uuid.uuid4()}",
                "activity_type": "FILL",
                "transaction_time": _ts(stamp),
                "type": "fill" if done else "partial_fill",
                "price": _fmt(price),
                "qty": _fmt(qty),
                "side": order.side,
                "symbol": order.symbol,
                "leaves_qty": _fmt(max(leaves, Decimal(0))),
                "order_id": order.id,
                "cum_qty": _fmt(order.filled_qty),
                "order_status": order.status,
                "_at": stamp,
                "_seq": len(self._activities),
            }
        )

    def _read_order(self, order_id: str | None) -> dict[str, Any]:
        with self._lock:
            order = self._orders.get(order_id or "")
            if order is None:
                raise _ApiError(404, {"code": 40410000, "message": "order not found"})
            self._advance(order, read=True)
            return self._order_json(order)

    def _list_orders(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        def one(name: str) -> str | None:
            values = query.get(name)
            return values[0] if values else None

        status = one("status") or "open"
        if status not in ("open", "closed", "all"):
            raise _invalid("invalid status")
        try:
            limit = min(int(one("limit") or 50), 500)
        except ValueError:
            raise _invalid("invalid limit") from None
        direction = one("direction") or "desc"
        after = _parse_time_param(one("after"), "after")
        until = _parse_time_param(one("until"), "until")
        symbols = {s.strip().upper() for s in (one("symbols") or "").split(",") if s.strip()}
        side = one("side")
        with self._lock:
            chosen = []
            for order in self._orders.values():
                if status == "open" and order.status not in OPEN_STATUSES:
                    continue
                if status == "closed" and order.status in OPEN_STATUSES:
                    continue
                if after is not None and not order.submitted_at > after:
                    continue
                if until is not None and not order.submitted_at < until:
                    continue
                if symbols and order.symbol not in symbols:
                    continue
                if side and order.side != side:
                    continue
                chosen.append(order)
            chosen.sort(key=lambda o: o.submitted_at, reverse=direction != "asc")
            page = chosen[:limit]
            for order in page:
                self._advance(order, read=True)
            return [self._order_json(o) for o in page]

    def _fill_activities(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        """Serve FILL activities like Alpaca: newest first unless ``direction=asc``, paged.

        ``after``/``until`` are exclusive bounds on ``transaction_time``; ``page_size`` (default
        and maximum 100) and ``page_token`` (the id of the last entry of the previous page).
        """

        def one(name: str) -> str | None:
            values = query.get(name)
            return values[0] if values else None

        direction = one("direction") or "desc"
        if direction not in ("asc", "desc"):
            raise _invalid("invalid direction", status=400)
        try:
            page_size = min(int(one("page_size") or 100), 100)
        except ValueError:
            raise _invalid("invalid page_size", status=400) from None
        after = _parse_time_param(one("after"), "after")
        until = _parse_time_param(one("until"), "until")
        token = one("page_token")
        with self._lock:
            rows = [
                a
                for a in self._activities
                if (after is None or a["_at"] > after) and (until is None or a["_at"] < until)
            ]
        rows.sort(key=lambda a: (a["_at"], a["_seq"]), reverse=direction == "desc")
        if token:
            ids = [a["id"] for a in rows]
            rows = rows[ids.index(token) + 1 :] if token in ids else []
        return [{k: v for k, v in a.items() if not k.startswith("_")} for a in rows[:page_size]]

    def _cancel(self, order_id: str) -> None:
        with self._lock:
            order = self._orders.get(order_id)
            if order is None:
                raise _ApiError(404, {"code": 40410000, "message": "order not found"})
            if order.status not in OPEN_STATUSES:
                raise _ApiError(422, {"code": 42210000, "message": "order is not cancelable"})
            stamp = self._stamp()
            order.status = "canceled"
            order.canceled_at = order.updated_at = stamp

    def _cancel_all(self) -> list[dict[str, Any]]:
        with self._lock:
            results = []
            for order in list(self._orders.values()):
                if order.status in OPEN_STATUSES:
                    self._cancel(order.id)
                    results.append({"id": order.id, "status": 200})
            return results

    # ------------------------------------------------------------------ rendering

    def _order_json(self, order: _Order) -> dict[str, Any]:
        avg = order.filled_notional / order.filled_qty if order.filled_qty else None
        body: dict[str, Any] = {
            "id": order.id,
            "client_order_id": order.client_order_id,
            "created_at": _ts(order.created_at),
            "updated_at": _ts(order.updated_at),
            "submitted_at": _ts(order.submitted_at),
            "filled_at": _ts(order.filled_at),
            "expired_at": _ts(order.expired_at),
            "canceled_at": _ts(order.canceled_at),
            "failed_at": _ts(order.failed_at),
            "replaced_at": _ts(order.replaced_at),
            "replaced_by": order.replaced_by,
            "replaces": None,
            "asset_id": order.asset_id,
            "symbol": order.symbol,
            "asset_class": "us_equity",
            "notional": _fmt(order.notional),
            "qty": _fmt(order.qty),
            "filled_qty": _fmt(order.filled_qty),
            "filled_avg_price": _fmt(avg.quantize(_NINE_PLACES) if avg is not None else None),
            "order_class": "",
            "order_type": order.type,
            "type": order.type,
            "side": order.side,
            "position_intent": "buy_to_open" if order.side == "buy" else "sell_to_close",
            "time_in_force": order.time_in_force,
            "limit_price": _fmt(order.limit_price),
            "stop_price": None,
            "status": order.status,
            "extended_hours": False,
            "legs": None,
            "trail_percent": None,
            "trail_price": None,
            "hwm": None,
            "subtag": None,
            "source": None,
        }
        body.update(order.extra)
        return body

    def _account_json(self) -> dict[str, Any]:
        with self._lock:
            long_value = sum(
                (p.qty * self._price(s) for s, p in self._positions.items() if p.qty > 0),
                Decimal(0),
            )
            short_value = sum(
                (p.qty * self._price(s) for s, p in self._positions.items() if p.qty < 0),
                Decimal(0),
            )
            equity = self._cash + long_value + short_value
            buying_power = self._cash - self._reserved()
            return {
                "id": self.account_id,
                "account_number": "PA3FAKE00042",
                "status": "ACTIVE",
                "crypto_status": "INACTIVE",
                "currency": "USD",
                "buying_power": _fmt(buying_power),
                "regt_buying_power": _fmt(buying_power),
                "daytrading_buying_power": "0",
                "effective_buying_power": _fmt(buying_power),
                "non_marginable_buying_power": _fmt(buying_power),
                "options_buying_power": _fmt(buying_power),
                "bod_dtbp": "0",
                "cash": _fmt(self._cash),
                "accrued_fees": "0",
                "pending_transfer_in": "0",
                "portfolio_value": _fmt(equity),
                "equity": _fmt(equity),
                "last_equity": _fmt(equity),
                "long_market_value": _fmt(long_value),
                "short_market_value": _fmt(short_value),
                "position_market_value": _fmt(long_value - short_value),
                "initial_margin": "0",
                "maintenance_margin": "0",
                "last_maintenance_margin": "0",
                "sma": "0",
                "daytrade_count": 0,
                "multiplier": "1",
                "pattern_day_trader": False,
                "trading_blocked": False,
                "transfers_blocked": False,
                "account_blocked": False,
                "trade_suspended_by_user": False,
                "shorting_enabled": False,
                "options_approved_level": 0,
                "options_trading_level": 0,
                "created_at": "2023-02-14T15:04:27.117425Z",
            }

    def _price(self, symbol: str) -> Decimal:
        asset = self._asset(symbol)
        return asset.price if asset else self.default_price

    def _positions_json(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = []
            for symbol, position in sorted(self._positions.items()):
                asset = self._asset(symbol)
                assert asset is not None
                price = asset.price
                market_value = position.qty * price
                avg = position.cost / position.qty
                pl = market_value - position.cost
                plpc = pl / abs(position.cost) if position.cost else Decimal(0)
                rows.append(
                    {
                        "asset_id": asset.asset_id,
                        "symbol": symbol,
                        "exchange": asset.exchange,
                        "asset_class": "us_equity",
                        "asset_marginable": asset.marginable,
                        "avg_entry_price": _fmt(avg.quantize(_NINE_PLACES)),
                        "qty": _fmt(position.qty),
                        "qty_available": _fmt(position.qty - self._open_sell_qty(symbol)),
                        "side": "long" if position.qty > 0 else "short",
                        "market_value": _fmt(market_value),
                        "cost_basis": _fmt(position.cost),
                        "unrealized_pl": _fmt(pl),
                        "unrealized_plpc": _fmt(plpc.quantize(_NINE_PLACES)),
                        "unrealized_intraday_pl": _fmt(pl),
                        "unrealized_intraday_plpc": _fmt(plpc.quantize(_NINE_PLACES)),
                        "current_price": _fmt(price),
                        "lastday_price": _fmt(price),
                        "change_today": "0",
                    }
                )
            return rows

    def _clock_json(self) -> dict[str, Any]:
        now = datetime.fromtimestamp(self.clock(), tz=UTC).astimezone(_NEW_YORK)
        today_open = now.replace(hour=9, minute=30, second=0, microsecond=0)
        today_close = now.replace(hour=16, minute=0, second=0, microsecond=0)
        trading_day = now.weekday() < 5
        in_hours = trading_day and today_open <= now < today_close
        is_open = in_hours if self.market_open is None else self.market_open
        day = now
        if not trading_day or now >= today_open:
            day = now + timedelta(days=1)
        while day.weekday() >= 5:
            day += timedelta(days=1)
        next_open = _ny(day, 9, 30)
        close_day = now if trading_day and now < today_close else day
        next_close = _ny(close_day, 16, 0)
        return {
            "timestamp": now.isoformat(timespec="microseconds"),
            "is_open": is_open,
            "next_open": next_open.isoformat(),
            "next_close": next_close.isoformat(),
        }

    def _asset_row(self, asset: _Asset) -> dict[str, Any]:
        return {
            "id": asset.asset_id,
            "class": "us_equity",
            "exchange": asset.exchange,
            "symbol": asset.symbol,
            "name": asset.name,
            "status": asset.status,
            "tradable": asset.tradable,
            "marginable": asset.marginable,
            "shortable": asset.shortable,
            "easy_to_borrow": asset.shortable,
            "fractionable": asset.fractionable,
            "maintenance_margin_requirement": 30,
            "attributes": ["fractional_eh_enabled"] if asset.fractionable else [],
        }

    def _asset_json(self, symbol_or_id: str) -> dict[str, Any]:
        with self._lock:
            for asset in self._assets.values():
                if asset.asset_id == symbol_or_id:
                    return self._asset_row(asset)
            found = self._asset(symbol_or_id)
            if found is None:
                raise _ApiError(404, {"code": 40410000, "message": "asset not found"})
            return self._asset_row(found)

    def _assets_json(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        status = (query.get("status") or [""])[0]
        asset_class = (query.get("asset_class") or [""])[0]
        exchange = (query.get("exchange") or [""])[0]
        with self._lock:
            rows = []
            for asset in sorted(self._assets.values(), key=lambda a: a.symbol):
                if status and asset.status != status:
                    continue
                if asset_class and asset_class != "us_equity":
                    continue
                if exchange and asset.exchange != exchange:
                    continue
                rows.append(self._asset_row(asset))
            return rows


def _invalid(message: str, *, status: int = 422) -> _ApiError:
    return _ApiError(status, {"code": 40010000, "message": message})


def _decimal_field(body: Mapping[str, Any], name: str) -> Decimal | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool):
        raise _invalid(f"{name} is invalid")
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise _invalid(f"{name} is invalid") from None
    if not number.is_finite():
        raise _invalid(f"{name} is invalid")
    return number


def _parse_time_param(value: str | None, name: str) -> datetime | None:
    if not value:
        return None
    text = value.strip().replace(" ", "+")  # a '+' left unescaped in a query string
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise _invalid(f"{name} is not a valid timestamp") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _fmt(value: Decimal | None) -> str | None:
    """Render a Decimal the way Alpaca does: a plain string, no exponent, no trailing zeros."""
    if value is None:
        return None
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "") else text


def _ts(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _ny(day: datetime, hour: int, minute: int) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=_NEW_YORK)
