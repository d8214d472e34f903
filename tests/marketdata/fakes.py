"""Local fake HTTP servers speaking the wire formats of Yahoo's chart API, Alpaca's data API
and Kite's instruments/historical API, for tests that drive the REAL SDKs against 127.0.0.1.

Each fake runs a werkzeug server in a thread, records every request (``.requests``) and can be
scripted to fail: ``fail_next(...)`` queues error answers consumed before normal service.
Fixture values are our own small numbers, shaped like the recorded reference payloads.
"""

from __future__ import annotations

import base64
import json
import threading
import time as time_module
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from curl_cffi import requests as curl_requests
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

NEW_YORK = ZoneInfo("America/New_York")
KOLKATA = ZoneInfo("Asia/Kolkata")

# A bar fixture row: (date, open, high, low, close, volume), optionally adj close before volume.
Bar = tuple[Any, ...]


@dataclass
class Recorded:
    """One request as the fake server saw it."""

    method: str
    path: str
    args: dict[str, str]
    headers: dict[str, str]


@dataclass
class Scripted:
    """A canned answer: status, body (dict -> JSON, str -> text), content type, headers."""

    status: int
    body: Any
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to stall before answering (timeouts)

    def response(self) -> Response:
        """Build the werkzeug response."""
        data = json.dumps(self.body) if isinstance(self.body, dict | list) else str(self.body)
        return Response(
            data, status=self.status, content_type=self.content_type, headers=self.headers
        )


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:
        """Keep test output clean: requests are recorded, not logged."""


class FakeServer:
    """A threaded werkzeug server on 127.0.0.1 with request recording and scripted failures."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        self._script: deque[tuple[str, Scripted]] = deque()
        self._server = make_server(
            "127.0.0.1", 0, self._wsgi, threaded=True, request_handler=_QuietHandler
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def url(self) -> str:
        """Base URL, no trailing slash."""
        return f"http://127.0.0.1:{self._server.server_port}"

    def start(self) -> FakeServer:
        """Start serving in a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def fail_next(self, path_contains: str, answer: Scripted, times: int = 1) -> None:
        """Answer the next ``times`` requests whose path contains the text with ``answer``."""
        with self._lock:
            for _ in range(times):
                self._script.append((path_contains, answer))

    def seen(self, path_contains: str = "") -> list[Recorded]:
        """Return the recorded requests whose path contains the given text."""
        with self._lock:
            return [r for r in self.requests if path_contains in r.path]

    def _scripted(self, path: str) -> Scripted | None:
        with self._lock:
            for i, (needle, answer) in enumerate(self._script):
                if needle in path:
                    del self._script[i]
                    return answer
        return None

    def _wsgi(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        request = Request(environ)
        with self._lock:
            self.requests.append(
                Recorded(
                    request.method,
                    request.path,
                    dict(request.args.items()),
                    {k.lower(): v for k, v in request.headers.items()},
                )
            )
        answer = self._scripted(request.path)
        if answer is not None and answer.delay:
            time_module.sleep(answer.delay)
        response = answer.response() if answer is not None else self.handle(request)
        return response(environ, start_response)

    def handle(self, request: Request) -> Response:
        """Answer a request (subclasses implement the API)."""
        raise NotImplementedError


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body), status=status, content_type="application/json", headers=headers or {}
    )


def _day(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


# ---------------------------------------------------------------------------------------------
# Yahoo
# ---------------------------------------------------------------------------------------------


class LocalYahooSession(curl_requests.Session):
    """A curl_cffi session that sends every ``*.yahoo.com`` request to a local server."""

    def __init__(self, base_url: str, **kwargs: Any):
        super().__init__(**kwargs)
        self._base_url = base_url.rstrip("/")

    def request(self, method: Any, url: str, *args: Any, **kwargs: Any) -> Any:
        """Rewrite Yahoo URLs to the local server, then send."""
        parts = urlsplit(url)
        if parts.hostname and parts.hostname.endswith("yahoo.com"):
            url = self._base_url + (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return super().request(method, url, *args, **kwargs)


YAHOO_DELISTED = {
    "chart": {
        "result": None,
        "error": {"code": "Not Found", "description": "No data found, symbol may be delisted"},
    }
}
YAHOO_429 = Scripted(429, "Too Many Requests", "text/plain")


@dataclass
class _Chart:
    meta: dict[str, Any]
    timestamps: list[int]
    quote: dict[str, list[Any]]
    adjclose: list[Any] | None
    #: Yahoo's ``events``: {"dividends": {ts: {"amount", "date"}}, "splits": {ts: {"date",
    #: "numerator", "denominator", "splitRatio"}}}, keyed by the event's timestamp as a string
    events: dict[str, dict[str, dict[str, Any]]] | None = None


class FakeYahoo(FakeServer):
    """Yahoo's cookie, crumb and v8 chart endpoints; unknown tickers answer 404 'delisted'."""

    def __init__(self) -> None:
        super().__init__()
        self.charts: dict[str, _Chart] = {}

    def add_symbol(
        self,
        ticker: str,
        bars: Sequence[Bar],
        *,
        tz: str = "America/New_York",
        exchange: str = "NMS",
        currency: str = "USD",
        open_time: time = time(9, 30),
        dividends: Mapping[str, float] | None = None,
        splits: Mapping[str, tuple[int, int]] | None = None,
    ) -> None:
        """Serve daily bars (date, open, high, low, close[, adjclose], volume) for a ticker.

        ``dividends`` ({day: amount}) and ``splits`` ({day: (numerator, denominator)}) are
        served as Yahoo's chart ``events``, stamped at the session's open like the bars.
        """
        zone = ZoneInfo(tz)
        stamps: list[int] = []
        cols: dict[str, list[Any]] = {k: [] for k in ("open", "high", "low", "close", "volume")}
        adj: list[Any] = []
        for row in bars:
            day = _day(row[0])
            stamps.append(int(datetime.combine(day, open_time, zone).timestamp()))
            o, h, lo, c = row[1:5]
            adjc, v = (row[5], row[6]) if len(row) == 7 else (c, row[5])
            for key, value in zip(
                ("open", "high", "low", "close", "volume"), (o, h, lo, c, v), strict=True
            ):
                cols[key].append(value)
            adj.append(adjc)
        gmtoffset = int(datetime.now(zone).utcoffset().total_seconds())  # type: ignore[union-attr]
        meta = {
            "currency": currency,
            "symbol": ticker,
            "exchangeName": exchange,
            "fullExchangeName": exchange,
            "instrumentType": "EQUITY",
            "firstTradeDate": stamps[0] if stamps else None,
            "regularMarketTime": stamps[-1] if stamps else None,
            "hasPrePostMarketData": False,
            "gmtoffset": gmtoffset,
            "timezone": "EST" if tz == "America/New_York" else "IST",
            "exchangeTimezoneName": tz,
            "regularMarketPrice": cols["close"][-1] if stamps else None,
            "chartPreviousClose": cols["close"][0] if stamps else None,
            "priceHint": 2,
            "dataGranularity": "1d",
            "range": "",
            "validRanges": ["1d", "5d", "1mo", "3mo", "6mo", "1y", "2y", "5y", "10y", "ytd", "max"],
        }
        events: dict[str, dict[str, dict[str, Any]]] = {}
        for day, amount in (dividends or {}).items():
            ts = int(datetime.combine(_day(day), open_time, zone).timestamp())
            events.setdefault("dividends", {})[str(ts)] = {"amount": amount, "date": ts}
        for day, (numerator, denominator) in (splits or {}).items():
            ts = int(datetime.combine(_day(day), open_time, zone).timestamp())
            events.setdefault("splits", {})[str(ts)] = {
                "date": ts,
                "numerator": numerator,
                "denominator": denominator,
                "splitRatio": f"{numerator}:{denominator}",
            }
        self.charts[ticker.upper()] = _Chart(meta, stamps, cols, adj, events or None)

    def add_chart_payload(self, ticker: str, payload: dict[str, Any]) -> None:
        """Serve a recorded v8 chart payload (sliced by period1/period2 like Yahoo)."""
        result = payload["chart"]["result"][0]
        quote = result["indicators"]["quote"][0]
        adj = result["indicators"].get("adjclose", [{}])[0].get("adjclose")
        self.charts[ticker.upper()] = _Chart(
            dict(result["meta"]),
            list(result["timestamp"]),
            {k: list(quote[k]) for k in ("open", "high", "low", "close", "volume")},
            list(adj) if adj is not None else None,
        )

    def chart_requests(self, ticker: str) -> list[Recorded]:
        """Return the chart requests made for ``ticker``."""
        return self.seen(f"/v8/finance/chart/{ticker}")

    def handle(self, request: Request) -> Response:
        path = request.path
        if path == "/":
            return Response("<html><body>ok</body></html>", content_type="text/html")
        if path == "/v1/test/getcrumb":
            return Response("fakeCrumb123", content_type="text/plain")
        if path.startswith("/consent"):
            return Response("<html><body>consent</body></html>", content_type="text/html")
        if path.startswith("/v8/finance/chart/"):
            return self._chart(path.rsplit("/", 1)[1].upper(), request)
        if path.startswith("/v10/finance/quoteSummary/"):
            body = {
                "quoteSummary": {
                    "result": None,
                    "error": {"code": "Not Found", "description": "Quote not found for symbol"},
                }
            }
            return _json(body, 404)
        if path.startswith("/v7/finance/quote"):
            return _json({"quoteResponse": {"result": [], "error": None}}, 404)
        return _json(
            {
                "finance": {
                    "result": None,
                    "error": {"code": "Not Found", "description": "HTTP 404 Not Found"},
                }
            },
            404,
        )

    def _chart(self, ticker: str, request: Request) -> Response:
        chart = self.charts.get(ticker)
        if chart is None:
            return _json(YAHOO_DELISTED, 404)
        if "period1" in request.args:
            p1 = int(request.args["period1"])
            p2 = int(request.args.get("period2", 2**62))
            keep = [i for i, ts in enumerate(chart.timestamps) if p1 <= ts < p2]
        else:  # range=1d etc.: the latest bar (what the tz lookup asks for)
            keep = [len(chart.timestamps) - 1] if chart.timestamps else []
        result: dict[str, Any] = {"meta": chart.meta}
        if keep:
            result["timestamp"] = [chart.timestamps[i] for i in keep]
            result["indicators"] = {
                "quote": [{k: [v[i] for i in keep] for k, v in chart.quote.items()}],
            }
            if chart.adjclose is not None:
                result["indicators"]["adjclose"] = [{"adjclose": [chart.adjclose[i] for i in keep]}]
            if chart.events and "events=" in request.query_string.decode():
                low, high = result["timestamp"][0], result["timestamp"][-1]
                result["events"] = {
                    kind: {k: v for k, v in found.items() if low <= v["date"] <= high}
                    for kind, found in chart.events.items()
                }
        else:
            result["indicators"] = {"quote": [{}], "adjclose": [{}]}
        return _json({"chart": {"result": [result], "error": None}})


# ---------------------------------------------------------------------------------------------
# Alpaca market data
# ---------------------------------------------------------------------------------------------

ALPACA_401 = Scripted(401, {"message": "unauthorized"})


def alpaca_429(reset_epoch: int) -> Scripted:
    """Alpaca's rate-limit answer with its X-RateLimit headers."""
    return Scripted(
        429,
        {"code": 42910000, "message": "rate limit exceeded"},
        headers={
            "X-RateLimit-Limit": "200",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": str(reset_epoch),
        },
    )


ALPACA_504_HTML = Scripted(
    504, "<html><body><h1>504 Gateway Time-out</h1></body></html>", "text/html"
)


class FakeAlpacaData(FakeServer):
    """``GET /v2/stocks/bars`` with key headers, 1Day bars at New York midnight, paging."""

    def __init__(self, key: str = "PKTEST", secret: str = "s3cr3t", page_size: int = 10_000):
        super().__init__()
        self.key, self.secret, self.page_size = key, secret, page_size
        self.bars: dict[str, list[dict[str, Any]]] = {}
        #: ``GET /v1/corporate-actions``: group (``forward_splits``, ``cash_dividends``, ...) ->
        #: items as Alpaca sends them
        self.corporate_actions: dict[str, list[dict[str, Any]]] = {}

    def add_corporate_action(self, group: str, **item: Any) -> None:
        """Serve one corporate action (e.g. ``forward_splits``, symbol=, new_rate=, old_rate=,
        ex_date=) with the fields Alpaca adds (id, cusip, process_date)."""
        full = {
            "id": f"ca-{sum(len(v) for v in self.corporate_actions.values()) + 1}",
            "cusip": "000000000",
            "process_date": item.get("ex_date"),
            **item,
        }
        if group == "reverse_splits":
            full.setdefault("old_cusip", "000000000")
            full.setdefault("new_cusip", "000000001")
            full.pop("cusip", None)
        if group == "cash_dividends":
            full.setdefault("special", False)
            full.setdefault("foreign", False)
        self.corporate_actions.setdefault(group, []).append(full)

    def add_bars(self, symbol: str, bars: Sequence[Bar]) -> None:
        """Serve daily bars (date, open, high, low, close, volume) for ``symbol``."""
        rows = []
        for day_, o, h, lo, c, v in bars:
            midnight = datetime.combine(_day(day_), time(0), NEW_YORK).astimezone(UTC)
            rows.append(
                {
                    "t": midnight.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "o": o,
                    "h": h,
                    "l": lo,
                    "c": c,
                    "v": v,
                    "n": 1000,
                    "vw": round((h + lo + c) / 3, 4),
                }
            )
        self.bars[symbol] = rows

    def handle(self, request: Request) -> Response:
        if request.path not in ("/v2/stocks/bars", "/v1/corporate-actions"):
            return _json({"message": "Not Found"}, 404)
        if (
            request.headers.get("APCA-API-KEY-ID") != self.key
            or request.headers.get("APCA-API-SECRET-KEY") != self.secret
        ):
            return _json({"message": "unauthorized"}, 401)
        if request.path == "/v1/corporate-actions":
            return self._corporate_actions(request)
        args = request.args
        if args.get("timeframe") != "1Day":
            return _json({"code": 42210000, "message": "invalid timeframe"}, 422)
        symbols = [s for s in args.get("symbols", "").split(",") if s]
        for sym in symbols:
            if not sym.replace(".", "").isalnum() or sym != sym.upper():
                return _json({"code": 42210000, "message": f"invalid symbol: {sym}"}, 400)
        start = _rfc3339(args["start"]) if "start" in args else datetime.min.replace(tzinfo=UTC)
        end = _rfc3339(args["end"]) if "end" in args else datetime.max.replace(tzinfo=UTC)
        rows = [
            (sym, bar)
            for sym in sorted(symbols)
            for bar in self.bars.get(sym, [])
            if start <= _rfc3339(bar["t"]) <= end
        ]
        offset = int(base64.b64decode(args["page_token"]).decode()) if args.get("page_token") else 0
        limit = min(int(args.get("limit", 1000)), self.page_size)
        page = rows[offset : offset + limit]
        out: dict[str, list[dict[str, Any]]] = {}
        for sym, bar in page:
            out.setdefault(sym, []).append(bar)
        more = offset + limit < len(rows)
        token = base64.b64encode(str(offset + limit).encode()).decode() if more else None
        return _json(
            {"bars": out, "next_page_token": token},
            headers={"X-RateLimit-Limit": "200", "X-RateLimit-Remaining": "199"},
        )

    def _corporate_actions(self, request: Request) -> Response:
        args = request.args
        symbols = {s for s in args.get("symbols", "").split(",") if s}
        types = {t for t in args.get("types", "").split(",") if t}
        start = date.fromisoformat(args["start"]) if "start" in args else date.min
        end = date.fromisoformat(args["end"]) if "end" in args else date.max
        found: dict[str, list[dict[str, Any]]] = {}
        for group, items in self.corporate_actions.items():
            if types and group.removesuffix("s") not in types:
                continue
            for item in items:
                if symbols and item.get("symbol") not in symbols:
                    continue
                if not start <= date.fromisoformat(item["ex_date"]) <= end:
                    continue
                found.setdefault(group, []).append(item)
        return _json({"corporate_actions": found, "next_page_token": None})


def _rfc3339(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


# ---------------------------------------------------------------------------------------------
# Kite
# ---------------------------------------------------------------------------------------------

KITE_TOKEN_EXPIRED = Scripted(
    403,
    {
        "status": "error",
        "message": "Incorrect `api_key` or `access_token`.",
        "data": None,
        "error_type": "TokenException",
    },
)
KITE_429 = Scripted(
    429,
    {
        "status": "error",
        "message": "Too many requests",
        "data": None,
        "error_type": "NetworkException",
    },
)
KITE_502_HTML = Scripted(502, "<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html")
KITE_503 = Scripted(
    503,
    {
        "status": "error",
        "message": "Request failed (kitetrade-oms)",
        "data": None,
        "error_type": "NetworkException",
    },
)

_INSTRUMENT_HEADER = (
    "instrument_token,exchange_token,tradingsymbol,name,last_price,expiry,"
    "strike,tick_size,lot_size,instrument_type,segment,exchange"
)


class FakeKite(FakeServer):
    """Kite's ``/instruments/{exchange}`` CSV and ``/instruments/historical/{token}/day``."""

    MAX_DAY_SPAN = 2000

    def __init__(self, api_key: str = "kitekey", access_token: str = "kitetoken"):
        super().__init__()
        self.api_key, self.access_token = api_key, access_token
        self.instruments: dict[str, list[tuple[int, str, str, str]]] = {}
        self.candles: dict[int, list[list[Any]]] = {}

    def add_instrument(
        self,
        exchange: str,
        tradingsymbol: str,
        token: int,
        name: str = "",
        segment: str | None = None,
    ) -> None:
        """List an instrument in the exchange's instruments dump."""
        self.instruments.setdefault(exchange, []).append(
            (token, tradingsymbol, segment or exchange, name or tradingsymbol)
        )

    def add_candles(self, token: int, bars: Sequence[Bar], *, colon_offset: bool = False) -> None:
        """Serve day candles (date, open, high, low, close, volume) for an instrument token."""
        offset = "+05:30" if colon_offset else "+0530"
        self.candles[token] = [
            [f"{_day(row[0]).isoformat()}T00:00:00{offset}", *row[1:6]] for row in bars
        ]

    def add_candle_rows(self, token: int, rows: Sequence[Sequence[Any]]) -> None:
        """Serve recorded candle rows as they are (timestamp string first)."""
        self.candles[token] = [list(r) for r in rows]

    def historical_requests(self) -> list[Recorded]:
        """Return the historical-data requests made."""
        return self.seen("/instruments/historical/")

    def handle(self, request: Request) -> Response:
        auth = request.headers.get("Authorization", "")
        if auth != f"token {self.api_key}:{self.access_token}":
            return KITE_TOKEN_EXPIRED.response()
        parts = request.path.strip("/").split("/")
        if parts[:2] == ["instruments", "historical"] and len(parts) == 4:
            return self._historical(int(parts[2]), parts[3], request)
        if parts[0] == "instruments" and len(parts) == 2:
            return self._instruments(parts[1])
        return _json(
            {
                "status": "error",
                "message": "Route not found",
                "data": None,
                "error_type": "GeneralException",
            },
            404,
        )

    def _instruments(self, exchange: str) -> Response:
        lines = [_INSTRUMENT_HEADER]
        for token, symbol, segment, name in self.instruments.get(exchange, []):
            lines.append(
                f"{token},{token // 256},{symbol},{name},0.0,,0.0,0.05,1,EQ,{segment},{exchange}"
            )
        return Response("\n".join(lines) + "\n", content_type="text/csv")

    def _historical(self, token: int, interval: str, request: Request) -> Response:
        def error(message: str) -> Response:
            return _json(
                {
                    "status": "error",
                    "message": message,
                    "data": None,
                    "error_type": "InputException",
                },
                400,
            )

        if interval != "day":
            return error("invalid interval")
        try:
            start = datetime.strptime(request.args["from"] + "+0530", "%Y-%m-%d %H:%M:%S%z")
            end = datetime.strptime(request.args["to"] + "+0530", "%Y-%m-%d %H:%M:%S%z")
        except (KeyError, ValueError):
            return error("invalid from/to")
        if end - start > timedelta(days=self.MAX_DAY_SPAN):
            return error(f"interval exceeds max limit: {self.MAX_DAY_SPAN} days")
        if token not in self.candles:
            return error("invalid token")
        rows = [
            row
            for row in self.candles[token]
            if start.date() <= date.fromisoformat(str(row[0])[:10]) <= end.date()
        ]
        return _json({"status": "success", "data": {"candles": rows}})
