"""A stateful fake Kite Connect v3 server on 127.0.0.1 for tests and benchmarks (stdlib only).

It speaks the wire format the real ``kiteconnect`` SDK expects, so adapters are tested through the
real client: ``KiteConnect(api_key, access_token=..., root=fake.url)``.

What it models
--------------
* Authentication: every request must carry ``Authorization: token <api_key>:<access_token>`` and
  ``X-Kite-Version: 3``. A wrong or expired token gets ``403`` with ``error_type`` TokenException,
  exactly like the real API after the daily 06:00 IST expiry.
* The book of one account: cash, CNC holdings (settled ``quantity`` and ``t1_quantity``), today's
  CNC positions, today's orders (with their status history and tags) and trades.
* Order placement (``POST /orders/{regular,amo}``, form encoded) with the real validations: whole
  positive quantities, ``tag`` of at most 20 alphanumeric characters, a ``price`` on LIMIT orders
  and ``market_protection`` (not 0) on MARKET orders (mandatory since April 2026). Like Kite, an
  accepted order is answered ``200`` *before* the risk checks: insufficient funds or holdings show
  up as ``REJECTED`` with a ``status_message`` in the book, not as an HTTP error.
* Fills: market orders (and crossing limit orders) fill at the symbol's configured price,
  immediately, on the N-th read of the order, partially, or only when the test says so
  (:class:`FillPolicy`). AMO orders wait in ``AMO REQ RECEIVED`` until :meth:`FakeKite.open_market`.
* Rate limits per API key (sliding windows): orders 10/s and 400/min, quotes 1/s, everything else
  10/s; an excess request gets ``429`` NetworkException "Too many requests".
* Fault injection per request (:meth:`FakeKite.inject`), see :data:`FAULTS`, and connection refusal
  (:meth:`FakeKite.refusing`).
* Canned responses (:meth:`FakeKite.set_canned`) to replay recorded payloads for a route.
* Every request is recorded (:attr:`FakeKite.requests`) without its credentials, so a test can
  assert that exactly one order was sent per tag.

Error texts: the token, "Too many requests", market-protection, ``Invalid `tag```, "Enter Valid
Price", OMS-unreachable and insufficient-funds messages follow Kite's documented or observed
texts; the others (marked *modelled* in the source) are our own wording in Kite's shape.

API at a glance
---------------
* Lifecycle: ``start()``, ``stop()``, context manager, ``url``, ``port``,
  ``connection_metadata()`` (``{"root": url}`` for a connection row), ``refuse_connections()``,
  ``accept_connections()``, ``refusing()``.
* Book setup: ``set_price``, ``set_cash``, ``add_holding``, ``set_fill_policy``,
  ``market_open`` (None: unchecked), ``latency_ms``, ``enforce_rate_limits``, ``rate_limits``,
  ``rate_clock``.
* Driving: ``fill``, ``set_order_status``, ``open_market``, ``end_of_day``, ``expire_token``,
  ``set_access_token``, ``inject`` / ``clear_faults`` / ``pending_faults``, ``set_canned`` /
  ``clear_canned``.
* Inspection: ``requests``, ``placement_requests(tag)``, ``orders()``, ``order(id)``,
  ``orders_with_tag(tag)``, ``cash``, ``holdings()``, ``positions()``, ``clear_requests()``.

Usage::

    with FakeKite(prices={"INFY": "1500.50"}, cash="100000") as fake:
        kite = KiteConnect(fake.api_key, access_token=fake.access_token, root=fake.url)
        fake.inject("timeout_after_accept", delay=2.0)
        ...
        assert len(fake.orders_with_tag(tag)) == 1
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import re
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_DOWN, Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

__all__ = [
    "FAULTS",
    "FakeKite",
    "Fault",
    "FillPolicy",
    "RecordedRequest",
    "at_ist",
    "ist_datetime",
]

IST = ZoneInfo("Asia/Kolkata")
KITE_VERSION = "3"

#: Fault kinds understood by :meth:`FakeKite.inject`, and what each does to the matching request.
FAULTS: dict[str, str] = {
    "timeout_after_accept": "process the request (the order is created), then hold the response "
    "for `delay` seconds so the client times out",
    "timeout_before_accept": "hold the request for `delay` seconds, then close without processing",
    "drop_after_accept": "process the request, then close the connection without any response",
    "drop_before_accept": "close the connection without processing or answering",
    "http_500_placed": "process the request, then answer 500 GeneralException",
    "http_500_not_placed": "answer 500 GeneralException without processing",
    "http_503_placed": "process the request, then answer 503 NetworkException (OMS unreachable)",
    "http_503_not_placed": "answer 503 NetworkException (OMS unreachable) without processing",
    "http_502_html": "answer a 502 HTML gateway page (processed first if placed=True)",
    "http_429": "answer 429 NetworkException 'Too many requests' without processing",
    "malformed_json": "answer 200 with a truncated JSON body (processed first unless placed=False)",
    "token_expired": "expire the access token now and answer 403 TokenException",
    "latency": "wait `delay` seconds, then process and answer normally",
    "error": "answer `status` with `error_type` and `message` (processed first if placed=True)",
}

_PLACED_BY_DEFAULT = {
    "timeout_after_accept": True,
    "drop_after_accept": True,
    "http_500_placed": True,
    "http_503_placed": True,
    "malformed_json": True,
    "latency": True,
}

_PENDING_STATUSES = {
    "PUT ORDER REQ RECEIVED",
    "VALIDATION PENDING",
    "OPEN PENDING",
    "AMO REQ RECEIVED",
    "TRIGGER PENDING",
    "MODIFY VALIDATION PENDING",
    "MODIFY PENDING",
    "MODIFIED",
    "CANCEL PENDING",
    "OPEN",
}
_TAG_RE = re.compile(r"^[A-Za-z0-9]{1,20}$")
_QTY_RE = re.compile(r"^[0-9]+$")

# Error texts. Quoted from Kite (docs, forum, SDK tests) unless marked modelled.
MSG_TOKEN = "Incorrect `api_key` or `access_token`."
MSG_TOO_MANY = "Too many requests"
MSG_MARKET_PROTECTION = (
    "Market orders without market protection are not allowed via API. "
    "Please set market protection or use a Limit order."
)
MSG_TAG = "Invalid `tag`."
MSG_PRICE = "Enter Valid Price"
MSG_OMS = "Request failed (kitetrade-oms)"
MSG_500 = "Something went wrong. Please try again."  # modelled
MSG_MARKET_CLOSED = (  # modelled on Kite's answer to a regular order after hours
    "Markets are closed right now. Use GTT for placing long standing orders instead."
)
HTML_502 = b"<html><body><h1>502 Bad Gateway</h1></body></html>"

_INSTRUMENT_HEADER = (
    "instrument_token,exchange_token,tradingsymbol,name,last_price,expiry,strike,"
    "tick_size,lot_size,instrument_type,segment,exchange"
)


@dataclass(frozen=True)
class FillPolicy:
    """How the fake fills orders that can trade (market orders, crossing limit orders).

    ``mode``: ``immediate`` (filled when accepted); ``polls`` (filled on the ``polls``-th read of
    the order through ``GET /orders`` or ``GET /orders/{id}``); ``partial`` (``fraction`` of the
    quantity, rounded down and at least 1 share, fills when accepted, the rest stays OPEN until
    :meth:`FakeKite.fill`); ``manual`` (stays OPEN until :meth:`FakeKite.fill`).
    """

    mode: str = "immediate"
    polls: int = 1
    fraction: Decimal = Decimal("0.5")

    def __post_init__(self) -> None:
        if self.mode not in {"immediate", "polls", "partial", "manual"}:
            raise ValueError(f"unknown fill mode {self.mode!r}")


@dataclass
class Fault:
    """One programmed fault, consumed by the next ``times`` matching requests."""

    kind: str
    method: str | None
    path: str
    times: int
    delay: float
    placed: bool
    status: int | None = None
    error_type: str | None = None
    message: str | None = None

    def matches(self, method: str, path: str) -> bool:
        """Tell whether this fault applies to a request."""
        if self.method is not None and self.method.upper() != method:
            return False
        return fnmatch.fnmatchcase(path, self.path)


@dataclass
class RecordedRequest:
    """A request as the fake saw it (credentials are never recorded)."""

    method: str
    path: str
    query: dict[str, list[str]]
    form: dict[str, str]
    authorized: bool
    received_at: float
    status: int | None = None  # None: no answer was sent (dropped / timed out)
    fault: str | None = None


@dataclass
class _Response:
    status: int
    body: bytes
    content_type: str = "application/json"


@dataclass
class _Trade:
    trade_id: str
    quantity: int
    price: Decimal
    at: datetime


@dataclass
class _Order:
    order_id: str
    variety: str
    exchange: str
    symbol: str
    instrument_token: int
    side: str
    quantity: int
    product: str
    order_type: str
    price: Decimal
    validity: str
    market_protection: Decimal
    tag: str | None
    placed_at: datetime
    status: str = "PUT ORDER REQ RECEIVED"
    status_message: str | None = None
    status_message_raw: str | None = None
    exchange_order_id: str | None = None
    filled: int = 0
    cancelled: int = 0
    average_price: Decimal = Decimal("0")
    updated_at: datetime | None = None
    exchange_at: datetime | None = None
    reads: int = 0
    blocked: Decimal = Decimal("0")
    trades: list[_Trade] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def pending(self) -> int:
        return self.quantity - self.filled - self.cancelled

    @property
    def is_live(self) -> bool:
        return self.status in _PENDING_STATUSES


@dataclass
class _Holding:
    symbol: str
    exchange: str
    quantity: int
    t1_quantity: int
    average_price: Decimal


@dataclass
class _Position:
    symbol: str
    exchange: str
    buy_quantity: int = 0
    buy_value: Decimal = Decimal("0")
    sell_quantity: int = 0
    sell_value: Decimal = Decimal("0")

    @property
    def quantity(self) -> int:
        return self.buy_quantity - self.sell_quantity


def _ist(dt: datetime | None) -> str | None:
    """Format an aware time the way Kite does: naive IST, seconds precision."""
    if dt is None:
        return None
    return dt.astimezone(IST).strftime("%Y-%m-%d %H:%M:%S")


def _num(value: Decimal) -> float | int:
    """Render a Decimal as a JSON number (Kite sends numbers, not strings)."""
    return int(value) if value == value.to_integral_value() else float(value)


def _token_of(symbol: str) -> int:
    return zlib.crc32(symbol.encode()) % 10_000_000 + 100_000


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"  # one request per connection: no stale keep-alive sockets

    def do_GET(self) -> None:
        self.server.fake._handle(self, "GET")

    def do_POST(self) -> None:
        self.server.fake._handle(self, "POST")

    def do_PUT(self) -> None:
        self.server.fake._handle(self, "PUT")

    def do_DELETE(self) -> None:
        self.server.fake._handle(self, "DELETE")

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: tests read :attr:`FakeKite.requests` instead."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stop() must not wait for handlers parked in a timeout fault
    request_queue_size = 128  # a burst of connections queues (socketserver's 5 drops some)

    def __init__(self, address: tuple[str, int], fake: FakeKite):
        self.fake = fake
        super().__init__(address, _Handler)


class _Window:
    """Sliding-window counter: at most ``limit`` events in any ``period`` seconds."""

    def __init__(self, limit: int, period: float):
        self.limit = limit
        self.period = period
        self.events: deque[float] = deque()


class FakeKite:
    """A fake Kite Connect v3 server with one account's book, fault injection and a request log.

    Start it with :meth:`start` (or ``with FakeKite() as fake``), point the SDK at :attr:`url`, and
    stop it with :meth:`stop`. All book methods are thread-safe.
    """

    #: Sliding-window limits per API key and category: ``(requests, seconds)``.
    DEFAULT_RATE_LIMITS: Mapping[str, tuple[tuple[int, float], ...]] = {
        "orders": ((10, 1.0), (400, 60.0)),
        "quote": ((1, 1.0),),
        "historical": ((3, 1.0),),
        "other": ((10, 1.0),),
    }

    def __init__(
        self,
        *,
        api_key: str = "fakekiteapikey",
        access_token: str = "fakekiteaccesstoken",
        cash: Decimal | str | int | float = Decimal("1000000"),
        prices: Mapping[str, Decimal | str | int | float] | None = None,
        fill_policy: FillPolicy | None = None,
        enforce_rate_limits: bool = True,
        rate_limits: Mapping[str, tuple[tuple[int, float], ...]] | None = None,
        market_open: bool | None = None,
        clock: Callable[[], datetime] | None = None,
        token_expires_at: datetime | None = None,
        rate_clock: Callable[[], float] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        user_id: str = "AB1234",
    ):
        self.api_key = api_key
        self.access_token = access_token
        self.host = host
        self.user_id = user_id
        self.enforce_rate_limits = enforce_rate_limits
        self.rate_limits = dict(rate_limits or self.DEFAULT_RATE_LIMITS)
        #: None: do not check; False: regular orders are refused, AMO accepted; True: the reverse.
        self.market_open = market_open
        #: Latency added to every request, in milliseconds.
        self.latency_ms = 0.0
        self.token_expires_at = token_expires_at
        #: Monotonic seconds used by the rate-limit windows; freeze it for deterministic tests.
        self.rate_clock: Callable[[], float] = rate_clock or time.monotonic
        self._clock = clock or (lambda: datetime.now(UTC))
        self._port = port
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._token_expired = False
        self._faults: list[Fault] = []
        self._canned: dict[tuple[str, str], _Response] = {}
        self._windows: dict[tuple[str, str], list[_Window]] = {}
        self._requests: list[RecordedRequest] = []
        self._prices: dict[str, Decimal] = {}
        self._fill_policies: dict[str | None, FillPolicy] = {None: fill_policy or FillPolicy()}
        self._opening_cash = Decimal(str(cash))
        self._cash = Decimal(str(cash))
        self._holdings: dict[str, _Holding] = {}
        self._positions: dict[str, _Position] = {}
        self._orders: dict[str, _Order] = {}
        self._order_seq = 0
        self._trade_seq = 0
        for symbol, price in (prices or {}).items():
            self.set_price(symbol, price)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> FakeKite:
        """Start serving in a daemon thread; return self."""
        with self._lock:
            if self._server is None:
                self._stopping.clear()
                self._serve()
        return self

    def stop(self) -> None:
        """Stop serving and wake up any handler parked in a timeout fault."""
        self._stopping.set()
        with self._lock:
            self._shutdown_server()

    def __enter__(self) -> FakeKite:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Root URL to give the SDK (``KiteConnect(..., root=fake.url)``)."""
        if not self._port:
            raise RuntimeError("FakeKite is not started")
        return f"http://{self.host}:{self._port}"

    @property
    def port(self) -> int:
        """Port the fake listens on (kept across refuse/accept)."""
        return self._port

    def connection_metadata(self) -> dict[str, object]:
        """Return ``connection_metadata`` that points an adapter at this fake."""
        return {"root": self.url}

    def refuse_connections(self) -> None:
        """Close the listening socket: new connections are refused until accept_connections()."""
        with self._lock:
            self._shutdown_server()

    def accept_connections(self) -> None:
        """Listen again on the same port after refuse_connections()."""
        with self._lock:
            if self._server is None and not self._stopping.is_set():
                self._serve()

    @contextlib.contextmanager
    def refusing(self) -> Iterator[None]:
        """Refuse connections (ECONNREFUSED, nothing sent) inside the ``with`` block."""
        self.refuse_connections()
        try:
            yield
        finally:
            self.accept_connections()

    def _serve(self) -> None:
        server = _Server((self.host, self._port), self)
        self._port = server.server_address[1]
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        thread.name = f"fake-kite-{self._port}"
        thread.start()
        self._server, self._thread = server, thread

    def _shutdown_server(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    # ------------------------------------------------------------------ setup of the book

    def set_price(self, symbol: str, price: Decimal | str | int | float) -> None:
        """Make a symbol tradable (on NSE and BSE) at this price; market orders fill at it."""
        with self._lock:
            self._prices[symbol] = Decimal(str(price))

    def set_fill_policy(self, policy: FillPolicy, symbol: str | None = None) -> None:
        """Set how orders fill, for one symbol or (symbol=None) by default."""
        with self._lock:
            self._fill_policies[symbol] = policy

    def set_cash(self, amount: Decimal | str | int | float) -> None:
        """Set the account's available cash (and the day's opening balance)."""
        with self._lock:
            self._cash = self._opening_cash = Decimal(str(amount))

    def add_holding(
        self,
        symbol: str,
        quantity: int,
        average_price: Decimal | str | int | float,
        *,
        t1_quantity: int = 0,
        exchange: str = "NSE",
    ) -> None:
        """Put shares in the demat account (settled ``quantity`` plus unsettled ``t1_quantity``)."""
        with self._lock:
            self._holdings[symbol] = _Holding(
                symbol, exchange, quantity, t1_quantity, Decimal(str(average_price))
            )
            self._prices.setdefault(symbol, Decimal(str(average_price)))

    def set_canned(
        self,
        method: str,
        path: str,
        body: bytes | str | Mapping[str, Any] | list[Any],
        *,
        status: int = 200,
        content_type: str = "application/json",
    ) -> None:
        """Answer ``method path`` with a fixed body (after the auth check), e.g. a recording."""
        if isinstance(body, str):
            raw = body.encode()
        elif isinstance(body, bytes):
            raw = body
        else:
            raw = json.dumps(body).encode()
        with self._lock:
            self._canned[(method.upper(), path)] = _Response(status, raw, content_type)

    def clear_canned(self) -> None:
        """Forget every canned response."""
        with self._lock:
            self._canned.clear()

    # ------------------------------------------------------------------ faults and tokens

    def inject(
        self,
        kind: str,
        *,
        method: str | None = "POST",
        path: str = "/orders/*",
        times: int = 1,
        delay: float = 2.0,
        placed: bool | None = None,
        status: int | None = None,
        error_type: str | None = None,
        message: str | None = None,
    ) -> Fault:
        """Program a fault for the next ``times`` requests matching ``method`` and ``path`` glob.

        By default a fault hits the next order placement (``POST /orders/*``). ``method=None``
        matches any method. ``placed`` overrides whether the request is processed (the order
        created) before the fault's answer; see :data:`FAULTS`.
        """
        if kind not in FAULTS:
            raise ValueError(f"unknown fault {kind!r}; known: {', '.join(sorted(FAULTS))}")
        fault = Fault(
            kind=kind,
            method=method,
            path=path,
            times=times,
            delay=delay,
            placed=_PLACED_BY_DEFAULT.get(kind, False) if placed is None else placed,
            status=status,
            error_type=error_type,
            message=message,
        )
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        """Drop every pending fault."""
        with self._lock:
            self._faults.clear()

    def pending_faults(self) -> list[Fault]:
        """Return the faults not consumed yet."""
        with self._lock:
            return [f for f in self._faults if f.times > 0]

    def expire_token(self) -> None:
        """Expire the access token now (as Kite does at 06:00 IST): every call gets 403."""
        with self._lock:
            self._token_expired = True

    def set_access_token(self, access_token: str) -> None:
        """Simulate a fresh login: accept this token from now on."""
        with self._lock:
            self.access_token = access_token
            self._token_expired = False
            self.token_expires_at = None

    # ------------------------------------------------------------------ driving orders

    def fill(
        self,
        order_id: str,
        quantity: int | None = None,
        price: Decimal | str | int | float | None = None,
    ) -> None:
        """Execute (part of) a working order: ``quantity`` shares (default: all) at ``price``."""
        with self._lock:
            order = self._orders[order_id]
            if not order.is_live or order.status == "AMO REQ RECEIVED":
                raise ValueError(f"order {order_id} is {order.status}, it cannot fill")
            qty = order.pending if quantity is None else quantity
            px = self._fill_price(order) if price is None else Decimal(str(price))
            self._execute(order, qty, px)

    def set_order_status(self, order_id: str, status: str, message: str | None = None) -> None:
        """Force an order into any status (for status-mapping tests); adds a history entry."""
        with self._lock:
            order = self._orders[order_id]
            self._transition(order, status, message)

    def open_market(self) -> None:
        """Open the session: AMO orders go to the exchange and fill per their policy."""
        with self._lock:
            self.market_open = True
            for order in self._orders.values():
                if order.status == "AMO REQ RECEIVED":
                    self._transition(order, "OPEN PENDING")
                    self._open(order)

    def end_of_day(self) -> None:
        """Close the day: cancel working orders, settle positions into holdings, clear the book.

        Today's CNC buys become ``t1_quantity`` holdings, yesterday's ``t1_quantity`` settles into
        ``quantity``, today's sells leave the holdings, and the order book starts empty.
        """
        with self._lock:
            for order in self._orders.values():
                if order.is_live:
                    self._release(order)
                    order.cancelled = order.pending
                    self._transition(order, "CANCELLED")
            for settled in self._holdings.values():
                settled.quantity += settled.t1_quantity
                settled.t1_quantity = 0
            for pos in self._positions.values():
                holding = self._holdings.get(pos.symbol)
                if holding is None:
                    holding = _Holding(pos.symbol, pos.exchange, 0, 0, Decimal("0"))
                    self._holdings[pos.symbol] = holding
                if pos.buy_quantity:
                    total = holding.quantity + holding.t1_quantity + pos.buy_quantity
                    cost = (
                        holding.average_price * (holding.quantity + holding.t1_quantity)
                        + pos.buy_value
                    )
                    holding.average_price = (cost / total).quantize(Decimal("0.000001"))
                    holding.t1_quantity += pos.buy_quantity
                holding.quantity -= pos.sell_quantity
            self._holdings = {
                s: h for s, h in self._holdings.items() if h.quantity or h.t1_quantity
            }
            self._positions.clear()
            self._orders.clear()
            self._opening_cash = self._cash

    # ------------------------------------------------------------------ inspection

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        """Forget the request log."""
        with self._lock:
            self._requests.clear()

    def placement_requests(self, tag: str | None = None) -> list[RecordedRequest]:
        """Order placements received (``POST /orders/...``), optionally only those with a tag."""
        return [
            r
            for r in self.requests
            if r.method == "POST"
            and r.path.startswith("/orders/")
            and (tag is None or r.form.get("tag") == tag)
        ]

    def orders(self) -> list[dict[str, Any]]:
        """Today's order book as ``GET /orders`` would return it."""
        with self._lock:
            return [self._snapshot(o) for o in self._orders.values()]

    def order(self, order_id: str) -> dict[str, Any]:
        """One order's latest state."""
        with self._lock:
            return self._snapshot(self._orders[order_id])

    def orders_with_tag(self, tag: str) -> list[dict[str, Any]]:
        """Orders in the book carrying ``tag``."""
        return [o for o in self.orders() if o["tag"] == tag]

    @property
    def cash(self) -> Decimal:
        """Cash available now (opening balance, minus buys, plus sells, minus blocked)."""
        with self._lock:
            return self._cash - self._blocked()

    def holdings(self) -> list[dict[str, Any]]:
        """Holdings as ``GET /portfolio/holdings`` would return them."""
        with self._lock:
            return self._holdings_payload()

    def positions(self) -> dict[str, list[dict[str, Any]]]:
        """Positions as ``GET /portfolio/positions`` would return them."""
        with self._lock:
            return self._positions_payload()

    # ------------------------------------------------------------------ HTTP plumbing

    def _handle(self, handler: _Handler, method: str) -> None:
        parts = urlsplit(handler.path)
        path = parts.path.rstrip("/") or "/"
        query = parse_qs(parts.query, keep_blank_values=True)
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        form: dict[str, str] = {}
        if raw and "json" not in (handler.headers.get("Content-Type") or ""):
            form = {k: v[-1] for k, v in parse_qs(raw.decode(), keep_blank_values=True).items()}
        authorized = self._authorized(handler.headers.get("Authorization"))
        record = RecordedRequest(method, path, query, form, authorized, time.monotonic())
        with self._lock:
            self._requests.append(record)
            fault = self._take_fault(method, path)
        record.fault = fault.kind if fault else None

        if self.latency_ms:
            self._stopping.wait(self.latency_ms / 1000)
        if fault is not None and fault.kind in {"latency", "timeout_before_accept"}:
            if self._stopping.wait(fault.delay):
                return
            if fault.kind == "timeout_before_accept":
                return  # close without an answer: the client has given up by now
        if fault is not None and fault.kind == "drop_before_accept":
            return

        response = self._answer(method, path, query, form, handler, fault)
        if response is None:  # dropped after processing
            return
        if (
            fault is not None
            and fault.kind == "timeout_after_accept"
            and self._stopping.wait(fault.delay)
        ):
            return
        record.status = response.status
        self._write(handler, response)

    def _answer(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        form: dict[str, str],
        handler: _Handler,
        fault: Fault | None,
    ) -> _Response | None:
        with self._lock:
            if handler.headers.get("X-Kite-Version") != KITE_VERSION:
                return _error(400, "InputException", "Invalid or missing `X-Kite-Version`.")
            if fault is not None and fault.kind == "token_expired":
                self._token_expired = True
            if not self._authorized(handler.headers.get("Authorization")):
                return _error(403, "TokenException", MSG_TOKEN)
            if self.enforce_rate_limits and not self._admit(method, path):
                return _error(429, "NetworkException", MSG_TOO_MANY)
            if fault is None or fault.kind in {"latency", "timeout_after_accept"}:
                return self._route(method, path, query, form)
            if fault.kind == "drop_after_accept":
                self._route(method, path, query, form)
                return None
            if fault.placed:
                self._route(method, path, query, form)
            return _fault_response(fault)

    def _write(self, handler: _Handler, response: _Response) -> None:
        try:
            handler.send_response(response.status)
            handler.send_header("Content-Type", response.content_type)
            handler.send_header("Content-Length", str(len(response.body)))
            handler.end_headers()
            handler.wfile.write(response.body)
        except OSError:
            pass  # the client hung up (it timed out): nothing to tell it

    def _authorized(self, header: str | None) -> bool:
        with self._lock:
            expected = f"token {self.api_key}:{self.access_token}"
            if header != expected or self._token_expired:
                return False
            if self.token_expires_at is not None and self._clock() >= self.token_expires_at:
                self._token_expired = True
                return False
            return True

    def _take_fault(self, method: str, path: str) -> Fault | None:
        for fault in self._faults:
            if fault.times > 0 and fault.matches(method, path):
                fault.times -= 1
                if fault.times == 0:
                    self._faults.remove(fault)
                return fault
        return None

    def _admit(self, method: str, path: str) -> bool:
        if path.startswith("/orders") and method in {"POST", "PUT", "DELETE"}:
            category = "orders"
        elif path.startswith("/quote"):
            category = "quote"
        elif path.startswith("/instruments/historical"):
            category = "historical"
        else:
            category = "other"
        limits = self.rate_limits.get(category, ())
        windows = self._windows.setdefault(
            (self.api_key, category), [_Window(n, s) for n, s in limits]
        )
        now = self.rate_clock()
        for window in windows:
            while window.events and window.events[0] <= now - window.period:
                window.events.popleft()
            if len(window.events) >= window.limit:
                return False
        for window in windows:
            window.events.append(now)
        return True

    # ------------------------------------------------------------------ routes

    def _route(
        self, method: str, path: str, query: dict[str, list[str]], form: dict[str, str]
    ) -> _Response:
        canned = self._canned.get((method, path))
        if canned is not None:
            return canned
        parts = [p for p in path.split("/") if p]
        match method, parts:
            case "GET", ["user", "margins"]:
                return _ok(self._margins_payload())
            case "GET", ["user", "margins", segment]:
                payload = self._margins_payload()
                if segment not in payload:
                    return _error(400, "InputException", "Invalid segment.")
                return _ok(payload[segment])
            case "GET", ["user", "profile"]:
                return _ok({"user_id": self.user_id, "user_name": "Fake Kite", "broker": "ZERODHA"})
            case "GET", ["orders"]:
                self._advance_reads(list(self._orders.values()))
                return _ok([self._snapshot(o) for o in self._orders.values()])
            case "GET", ["orders", order_id]:
                order = self._orders.get(order_id)
                if order is None:
                    return _error(400, "InputException", "Couldn't find that `order_id`.")
                self._advance_reads([order])
                return _ok(order.history)
            case "GET", ["orders", order_id, "trades"]:
                order = self._orders.get(order_id)
                if order is None:
                    return _error(400, "InputException", "Couldn't find that `order_id`.")
                return _ok([self._trade_payload(order, t) for t in order.trades])
            case "GET", ["trades"]:
                return _ok(
                    [self._trade_payload(o, t) for o in self._orders.values() for t in o.trades]
                )
            case "POST", ["orders", variety]:
                return self._place(variety, form)
            case "DELETE", ["orders", variety, order_id]:
                return self._cancel(variety, order_id)
            case "GET", ["portfolio", "holdings"]:
                return _ok(self._holdings_payload())
            case "GET", ["portfolio", "positions"]:
                return _ok(self._positions_payload())
            case "GET", ["instruments"]:
                return self._instruments(None)
            case "GET", ["instruments", exchange]:
                return self._instruments(exchange)
            case "GET", ["quote", "ltp"]:
                return _ok(self._ltp(query.get("i", [])))
        return _error(404, "GeneralException", "Route not found")

    def _place(self, variety: str, form: dict[str, str]) -> _Response:
        if variety not in {"regular", "amo"}:
            return _error(400, "InputException", "Invalid `variety`.")
        for name in ("exchange", "tradingsymbol", "transaction_type", "quantity", "product"):
            if not form.get(name):
                return _error(400, "InputException", f"Missing `{name}`.")
        if not form.get("order_type"):
            return _error(400, "InputException", "Missing `order_type`.")
        exchange, symbol = form["exchange"], form["tradingsymbol"]
        if exchange not in {"NSE", "BSE"}:
            return _error(400, "InputException", "Invalid `exchange`.")
        if symbol not in self._prices:
            return _error(400, "InputException", "Invalid `tradingsymbol`.")
        if form["transaction_type"] not in {"BUY", "SELL"}:
            return _error(400, "InputException", "Invalid `transaction_type`.")
        if not _QTY_RE.match(form["quantity"]) or int(form["quantity"]) <= 0:
            return _error(400, "InputException", "Invalid `quantity`.")
        if form["product"] not in {"CNC", "MIS", "NRML", "MTF"}:
            return _error(400, "InputException", "Invalid `product`.")
        order_type = form["order_type"]
        if order_type not in {"MARKET", "LIMIT"}:
            return _error(400, "InputException", "Invalid `order_type`.")
        tag = form.get("tag")
        if tag is not None and not _TAG_RE.match(tag):
            return _error(400, "InputException", MSG_TAG)
        price = _decimal(form.get("price"))
        if order_type == "LIMIT" and (price is None or price <= 0):
            return _error(400, "OrderException", MSG_PRICE)
        protection = _decimal(form.get("market_protection"))
        if order_type == "MARKET" and (
            protection is None
            or protection == 0
            or not (protection == -1 or Decimal("0") < protection <= Decimal("100"))
        ):
            return _error(400, "InputException", MSG_MARKET_PROTECTION)
        if self.market_open is False and variety == "regular":
            return _error(400, "InputException", MSG_MARKET_CLOSED)
        if self.market_open is True and variety == "amo":  # modelled
            return _error(400, "InputException", "AMO orders are not allowed during market hours.")

        now = self._clock()
        self._order_seq += 1
        order = _Order(
            order_id=f"{now.astimezone(IST):%y%m%d}{self._order_seq:09d}",
            variety=variety,
            exchange=exchange,
            symbol=symbol,
            instrument_token=_token_of(symbol),
            side=form["transaction_type"],
            quantity=int(form["quantity"]),
            product=form["product"],
            order_type=order_type,
            price=price or Decimal("0"),
            validity=form.get("validity") or "DAY",
            market_protection=protection or Decimal("0"),
            tag=tag,
            placed_at=now,
        )
        self._orders[order.order_id] = order
        self._transition(order, "PUT ORDER REQ RECEIVED")
        self._transition(order, "VALIDATION PENDING")
        reason = self._risk_check(order)
        if reason is not None:
            self._transition(order, "REJECTED", reason[0], reason[1])
        elif variety == "amo":
            self._block(order)
            self._transition(order, "AMO REQ RECEIVED")
        else:
            self._block(order)
            self._transition(order, "OPEN PENDING")
            self._open(order)
        return _ok({"order_id": order.order_id})

    def _cancel(self, variety: str, order_id: str) -> _Response:
        order = self._orders.get(order_id)
        if order is None:
            return _error(400, "InputException", "Couldn't find that `order_id`.")
        if order.variety != variety:
            return _error(400, "InputException", "Invalid `variety`.")
        if not order.is_live:  # modelled
            return _error(
                400,
                "OrderException",
                f"Order cannot be cancelled as it is in {order.status} state.",
            )
        self._release(order)
        order.cancelled = order.pending
        self._transition(order, "CANCEL PENDING")
        self._transition(order, "CANCELLED")
        return _ok({"order_id": order.order_id})

    # ------------------------------------------------------------------ order engine

    def _risk_check(self, order: _Order) -> tuple[str, str] | None:
        if order.product != "CNC":
            return None
        if order.side == "BUY":
            unit = order.price if order.order_type == "LIMIT" else self._prices[order.symbol]
            required = unit * order.quantity
            available = self._cash - self._blocked()
            if required > available:
                return (
                    f"Insufficient funds. Required margin is {required:.2f} but available "
                    f"margin is {available:.2f}. Check the orderbook for open orders.",
                    f"RMS:Margin Exceeds,Required:{required:.2f}, Available:{available:.2f} "
                    "for entity account across exchange across segment across product ",
                )
            return None
        held = self._holdings.get(order.symbol)
        owned = (held.quantity + held.t1_quantity) if held else 0
        pos = self._positions.get(order.symbol)
        owned += pos.quantity if pos else 0
        selling = sum(
            o.pending
            for o in self._orders.values()
            if o.is_live and o.side == "SELL" and o.symbol == order.symbol and o is not order
        )
        if order.quantity > owned - selling:  # modelled
            return (
                "Insufficient holdings. Check your holdings and open sell orders.",
                f"RMS:Rule: Check holding, available:{max(owned - selling, 0)}",
            )
        return None

    def _open(self, order: _Order) -> None:
        order.exchange_order_id = f"13{self._order_seq:014d}"
        order.exchange_at = self._clock()
        self._transition(order, "OPEN")
        policy = self._fill_policies.get(order.symbol) or self._fill_policies[None]
        if not self._crosses(order):
            return
        if policy.mode == "immediate":
            self._execute(order, order.pending, self._fill_price(order))
        elif policy.mode == "partial":
            part = int((Decimal(order.quantity) * policy.fraction).to_integral_value(ROUND_DOWN))
            part = min(max(part, 1), order.quantity)
            self._execute(order, part, self._fill_price(order))

    def _advance_reads(self, orders: list[_Order]) -> None:
        for order in orders:
            if order.status != "OPEN" or not self._crosses(order):
                continue
            policy = self._fill_policies.get(order.symbol) or self._fill_policies[None]
            if policy.mode != "polls":
                continue
            order.reads += 1
            if order.reads >= policy.polls:
                self._execute(order, order.pending, self._fill_price(order))

    def _crosses(self, order: _Order) -> bool:
        if order.order_type == "MARKET":
            return True
        market = self._prices[order.symbol]
        return order.price >= market if order.side == "BUY" else order.price <= market

    def _fill_price(self, order: _Order) -> Decimal:
        market = self._prices[order.symbol]
        if order.order_type == "LIMIT":
            return min(order.price, market) if order.side == "BUY" else max(order.price, market)
        return market

    def _execute(self, order: _Order, quantity: int, price: Decimal) -> None:
        if quantity <= 0 or quantity > order.pending:
            raise ValueError(f"cannot fill {quantity} of order {order.order_id}")
        now = self._clock()
        self._trade_seq += 1
        order.trades.append(_Trade(f"{50000000 + self._trade_seq}", quantity, price, now))
        value = sum((t.price * t.quantity for t in order.trades), Decimal("0"))
        order.filled += quantity
        order.average_price = (value / order.filled).quantize(Decimal("0.0001")).normalize()
        pos = self._positions.setdefault(order.symbol, _Position(order.symbol, order.exchange))
        if order.side == "BUY":
            order.blocked -= min(order.blocked, price * quantity)
            self._cash -= price * quantity
            pos.buy_quantity += quantity
            pos.buy_value += price * quantity
        else:
            self._cash += price * quantity
            pos.sell_quantity += quantity
            pos.sell_value += price * quantity
        if order.pending == 0:
            order.blocked = Decimal("0")
            self._transition(order, "COMPLETE")
        else:
            self._transition(order, "OPEN")

    def _block(self, order: _Order) -> None:
        if order.side == "BUY" and order.product == "CNC":
            unit = order.price if order.order_type == "LIMIT" else self._prices[order.symbol]
            order.blocked = unit * order.quantity

    def _release(self, order: _Order) -> None:
        order.blocked = Decimal("0")

    def _blocked(self) -> Decimal:
        return sum((o.blocked for o in self._orders.values() if o.is_live), Decimal("0"))

    def _transition(
        self, order: _Order, status: str, message: str | None = None, raw: str | None = None
    ) -> None:
        order.status = status
        order.status_message = message
        order.status_message_raw = raw or message
        order.updated_at = self._clock()
        order.history.append(self._snapshot(order))

    # ------------------------------------------------------------------ payloads

    def _snapshot(self, order: _Order) -> dict[str, Any]:
        return {
            "account_id": self.user_id,
            "placed_by": self.user_id,
            "order_id": order.order_id,
            "exchange_order_id": order.exchange_order_id,
            "parent_order_id": None,
            "status": order.status,
            "status_message": order.status_message,
            "status_message_raw": order.status_message_raw,
            "order_timestamp": _ist(order.placed_at),
            "exchange_update_timestamp": _ist(order.updated_at) if order.exchange_at else None,
            "exchange_timestamp": _ist(order.exchange_at),
            "variety": order.variety,
            "modified": False,
            "exchange": order.exchange,
            "tradingsymbol": order.symbol,
            "instrument_token": order.instrument_token,
            "order_type": order.order_type,
            "transaction_type": order.side,
            "validity": order.validity,
            "validity_ttl": 0,
            "product": order.product,
            "quantity": order.quantity,
            "disclosed_quantity": 0,
            "price": _num(order.price),
            "trigger_price": 0,
            "average_price": _num(order.average_price),
            "filled_quantity": order.filled,
            "pending_quantity": order.pending if order.is_live else 0,
            "cancelled_quantity": order.cancelled,
            "market_protection": _num(order.market_protection),
            "meta": {},
            "tag": order.tag,
            "tags": [order.tag] if order.tag else [],
            "guid": f"fake-{order.order_id}",
        }

    def _trade_payload(self, order: _Order, trade: _Trade) -> dict[str, Any]:
        return {
            "trade_id": trade.trade_id,
            "order_id": order.order_id,
            "exchange": order.exchange,
            "tradingsymbol": order.symbol,
            "instrument_token": order.instrument_token,
            "product": order.product,
            "average_price": _num(trade.price),
            "quantity": trade.quantity,
            "exchange_order_id": order.exchange_order_id,
            "transaction_type": order.side,
            "fill_timestamp": _ist(trade.at),
            "order_timestamp": trade.at.astimezone(IST).strftime("%H:%M:%S"),
            "exchange_timestamp": _ist(trade.at),
        }

    def _margins_payload(self) -> dict[str, Any]:
        live = self._cash - self._blocked()
        segment = {
            "enabled": True,
            "net": _num(live),
            "available": {
                "adhoc_margin": 0,
                "cash": _num(self._opening_cash),
                "opening_balance": _num(self._opening_cash),
                "live_balance": _num(live),
                "collateral": 0,
                "intraday_payin": 0,
            },
            "utilised": {
                "debits": _num(self._opening_cash - live),
                "exposure": 0,
                "m2m_realised": 0,
                "m2m_unrealised": 0,
                "option_premium": 0,
                "payout": 0,
                "span": 0,
                "holding_sales": 0,
                "turnover": 0,
                "liquid_collateral": 0,
                "stock_collateral": 0,
                "delivery": 0,
            },
        }
        commodity = json.loads(json.dumps(segment))
        commodity["net"] = 0
        commodity["available"].update(cash=0, opening_balance=0, live_balance=0)
        commodity["utilised"]["debits"] = 0
        return {"equity": segment, "commodity": commodity}

    def _holdings_payload(self) -> list[dict[str, Any]]:
        rows = []
        for h in self._holdings.values():
            last = self._prices.get(h.symbol, h.average_price)
            pos = self._positions.get(h.symbol)
            qty = h.quantity + h.t1_quantity
            rows.append(
                {
                    "tradingsymbol": h.symbol,
                    "exchange": h.exchange,
                    "instrument_token": _token_of(h.symbol),
                    "isin": f"INE{_token_of(h.symbol):07d}01",
                    "product": "CNC",
                    "price": 0,
                    "quantity": h.quantity,
                    "used_quantity": pos.sell_quantity if pos else 0,
                    "t1_quantity": h.t1_quantity,
                    "realised_quantity": h.quantity,
                    "authorised_quantity": 0,
                    "authorised_date": None,
                    "authorisation": {},
                    "opening_quantity": h.quantity,
                    "short_quantity": 0,
                    "collateral_quantity": 0,
                    "collateral_type": "",
                    "discrepancy": False,
                    "average_price": _num(h.average_price),
                    "last_price": _num(last),
                    "close_price": _num(last),
                    "pnl": _num((last - h.average_price) * qty),
                    "day_change": 0,
                    "day_change_percentage": 0,
                    "mtf": {
                        "quantity": 0,
                        "used_quantity": 0,
                        "average_price": 0,
                        "value": 0,
                        "initial_margin": 0,
                    },
                }
            )
        return rows

    def _positions_payload(self) -> dict[str, list[dict[str, Any]]]:
        rows = []
        for p in self._positions.values():
            last = self._prices[p.symbol]
            buy_price = p.buy_value / p.buy_quantity if p.buy_quantity else Decimal("0")
            sell_price = p.sell_value / p.sell_quantity if p.sell_quantity else Decimal("0")
            qty = p.quantity
            avg = buy_price if qty > 0 else sell_price if qty < 0 else Decimal("0")
            rows.append(
                {
                    "tradingsymbol": p.symbol,
                    "exchange": p.exchange,
                    "instrument_token": _token_of(p.symbol),
                    "product": "CNC",
                    "quantity": qty,
                    "overnight_quantity": 0,
                    "multiplier": 1,
                    "average_price": _num(avg),
                    "close_price": _num(last),
                    "last_price": _num(last),
                    "value": _num(p.sell_value - p.buy_value),
                    "pnl": _num(p.sell_value - p.buy_value + qty * last),
                    "m2m": 0,
                    "unrealised": 0,
                    "realised": 0,
                    "buy_quantity": p.buy_quantity,
                    "buy_price": _num(buy_price),
                    "buy_value": _num(p.buy_value),
                    "buy_m2m": _num(p.buy_value),
                    "sell_quantity": p.sell_quantity,
                    "sell_price": _num(sell_price),
                    "sell_value": _num(p.sell_value),
                    "sell_m2m": _num(p.sell_value),
                    "day_buy_quantity": p.buy_quantity,
                    "day_buy_price": _num(buy_price),
                    "day_buy_value": _num(p.buy_value),
                    "day_sell_quantity": p.sell_quantity,
                    "day_sell_price": _num(sell_price),
                    "day_sell_value": _num(p.sell_value),
                }
            )
        return {"net": rows, "day": json.loads(json.dumps(rows))}

    def _instruments(self, exchange: str | None) -> _Response:
        exchanges = ["NSE", "BSE"] if exchange is None else [exchange]
        lines = [_INSTRUMENT_HEADER]
        for ex in exchanges:
            if ex not in {"NSE", "BSE"}:
                continue
            for symbol, price in sorted(self._prices.items()):
                token = _token_of(symbol) + (0 if ex == "NSE" else 1)
                lines.append(
                    f"{token},{token // 256},{symbol},{symbol} LTD,{price},,0.0,0.05,1,EQ,{ex},{ex}"
                )
        return _Response(200, ("\n".join(lines) + "\n").encode(), "text/csv")

    def _ltp(self, instruments: list[str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in instruments:
            _, _, symbol = key.partition(":")
            if symbol in self._prices:
                out[key] = {
                    "instrument_token": _token_of(symbol),
                    "last_price": _num(self._prices[symbol]),
                }
        return out


def _decimal(text: str | None) -> Decimal | None:
    if text is None or text == "":
        return None
    try:
        return Decimal(text)
    except ArithmeticError:
        return None


def _ok(data: Any) -> _Response:
    return _Response(200, json.dumps({"status": "success", "data": data}).encode())


def _error(status: int, error_type: str, message: str) -> _Response:
    body = {"status": "error", "message": message, "data": None, "error_type": error_type}
    return _Response(status, json.dumps(body).encode())


def _fault_response(fault: Fault) -> _Response:
    match fault.kind:
        case "http_500_placed" | "http_500_not_placed":
            return _error(500, "GeneralException", fault.message or MSG_500)
        case "http_503_placed" | "http_503_not_placed":
            return _error(503, "NetworkException", fault.message or MSG_OMS)
        case "http_502_html":
            return _Response(502, HTML_502, "text/html")
        case "http_429":
            return _error(429, "NetworkException", MSG_TOO_MANY)
        case "malformed_json":
            return _Response(200, b'{"status": "success", "data": {"order_id": "15')
        case "token_expired":
            return _error(403, "TokenException", MSG_TOKEN)
        case "error":
            return _error(
                fault.status or 400,
                fault.error_type or "InputException",
                fault.message or "Invalid input.",
            )
    raise AssertionError(f"fault {fault.kind} has no canned answer")


def ist_datetime(text: str) -> datetime:
    """Parse a Kite-style naive IST timestamp into an aware UTC datetime (a test helper)."""
    naive = datetime.strptime(text, "%Y-%m-%d %H:%M:%S")  # noqa: DTZ007 - IST applied next
    return naive.replace(tzinfo=IST).astimezone(UTC)


def at_ist(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    """Return an aware UTC datetime for a wall-clock time in India (a test helper)."""
    return datetime(year, month, day, hour, minute, second, tzinfo=IST).astimezone(UTC)
