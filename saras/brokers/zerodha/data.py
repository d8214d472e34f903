"""The Zerodha Kite source (name ``kite``) through kiteconnect's historical candles.

* Instrument tokens come from the exchange's instruments dump (``kite.instruments("NSE")``),
  fetched once per exchange and cached on the instance, and on disk under ``cache_dir`` when
  given (one JSON file per exchange and IST day, since Zerodha regenerates the dump daily).
  The ``instrument_tokens`` option (``{symbol: token}``) skips the lookup.
* ``historical_data(token, from, to, "day")`` is called in spans of at most ``max_days``
  calendar days (Kite allows 2000 days per day-candle request), at most ``rate_per_second``
  requests per second (Kite: 3/s for historical data; a small interval limiter with an
  injectable clock and sleep).
* Candle timestamps carry ``+05:30``: the local (IST) date is the trading date.
* Errors: ``TokenException`` (expired or wrong access token) and ``PermissionException`` ->
  ``SourceAuthError`` for the whole batch, telling the user to log in again (the token never
  appears); ``NetworkException`` ("Too many requests", OMS unreachable), HTML gateway pages
  (``DataException``), other 5xx and network errors -> bounded retries with backoff, then a
  failure for that symbol; ``InputException`` (e.g. an invalid token) -> a failure for that
  symbol. After ``max_consecutive_failures`` symbols in a row failed transiently the rest of
  the batch is not attempted; if nothing was delivered that way the source is unavailable.

Kite's daily history is adjusted for splits, bonuses and other corporate actions (not for
ordinary dividends): ``FetchResult.adjusted`` is True unless the ``adjusted`` option says
otherwise.

Options: ``api_key`` and ``access_token`` (required; str or SecretStr), ``root`` (endpoint
override), ``timeout`` (s, 7), ``max_days`` (2000), ``rate_per_second`` (3), ``max_retries``
(3), ``backoff`` (1.0), ``max_consecutive_failures`` (3), ``cache_dir``, ``instrument_tokens``,
``adjusted`` (True).
"""

from __future__ import annotations

import json
import time as _time
from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd
import requests
from kiteconnect import KiteConnect
from kiteconnect import exceptions as kite_ex

from saras.brokers.kit.rate import RateLimiter
from saras.marketdata._util import (
    Clock,
    Options,
    RetryPolicy,
    Sleep,
    bars_frame,
    clip_to_range,
    real_sleep,
    triage,
)
from saras.marketdata.base import (
    BarRequest,
    FetchResult,
    SourceAuthError,
    SourceUnavailableError,
    concat_bars,
)

KOLKATA = ZoneInfo("Asia/Kolkata")
KITE_EXCHANGES = ("NSE", "BSE")
_OPTIONS = (
    "api_key",
    "access_token",
    "root",
    "timeout",
    "max_days",
    "rate_per_second",
    "max_retries",
    "backoff",
    "max_consecutive_failures",
    "cache_dir",
    "instrument_tokens",
    "adjusted",
)
_LOGIN_AGAIN = (
    "kite rejected the access token (expired or invalid; tokens expire at 06:00 IST): "
    "log in to Kite again to get a new access token"
)


class _SymbolFailed(Exception):
    def __init__(self, reason: str, *, transient: bool):
        super().__init__(reason)
        self.transient = transient


def day_spans(start: date, end: date, max_days: int) -> list[tuple[date, date]]:
    """Split [start, end] into consecutive inclusive spans of at most ``max_days`` days."""
    spans = []
    cursor = start
    while cursor <= end:
        last = min(end, cursor + timedelta(days=max_days - 1))
        spans.append((cursor, last))
        cursor = last + timedelta(days=1)
    return spans


class KiteSource:
    """Daily candles from Kite Connect's historical API (NSE, BSE)."""

    name = "kite"

    def __init__(
        self,
        options: Mapping[str, Any] | None = None,
        *,
        sleep: Sleep = real_sleep,
        clock: Clock = _time.monotonic,
    ):
        opts = Options(self.name, options, _OPTIONS)
        self._api_key = opts.secret("api_key", required=True)
        self._access_token = opts.secret("access_token", required=True)
        root = opts.str_("root")
        if root is not None and not root.startswith(("http://", "https://")):
            raise opts.error("root", "must start with http:// or https://")
        self._root = root
        self._timeout: float = opts.number("timeout", 7.0, minimum=0.1)
        self._max_days: int = opts.number("max_days", 2000, minimum=1, integer=True)
        self._rate: float = opts.number("rate_per_second", 3.0, minimum=0)
        self._retry = RetryPolicy.from_options(opts, max_retries=3, base=1.0)
        self._max_consecutive: int = opts.number(
            "max_consecutive_failures", 3, minimum=1, integer=True
        )
        cache_dir = opts.str_("cache_dir")
        self._cache_dir = Path(cache_dir) if cache_dir else None
        tokens = opts.raw("instrument_tokens", {})
        if not isinstance(tokens, Mapping):
            raise opts.error("instrument_tokens", "must map symbol -> instrument token")
        try:
            self._fixed_tokens = {str(k): int(v) for k, v in tokens.items()}
        except (TypeError, ValueError) as exc:
            raise opts.error("instrument_tokens", f"tokens must be integers ({exc})") from exc
        self._adjusted = opts.bool_("adjusted", True)
        self._sleep = sleep
        self._limiter = RateLimiter(
            interval=1.0 / self._rate if self._rate > 0 else None, clock=clock, sleep=sleep
        )
        self._tokens: dict[str, dict[str, int]] = {}
        self._kite: KiteConnect | None = None

    def __repr__(self) -> str:
        return f"KiteSource(root={self._root!r}, max_days={self._max_days})"

    def _client(self) -> KiteConnect:
        if self._kite is None:
            assert self._api_key is not None and self._access_token is not None
            self._kite = KiteConnect(
                self._api_key.get_secret_value(),
                access_token=self._access_token.get_secret_value(),
                root=self._root,
                timeout=self._timeout,
            )
        return self._kite

    def fetch_daily_bars(self, requests: Sequence[BarRequest]) -> FetchResult:
        """Fetch day candles symbol by symbol, in allowed spans and within the rate limit."""
        failures: dict[str, str] = {}
        frames: list[pd.DataFrame] = []
        transient: set[str] = set()
        consecutive = 0
        todo = triage(requests, failures)
        for i, req in enumerate(todo):
            if consecutive >= self._max_consecutive:
                for rest in todo[i:]:
                    failures[rest.symbol] = (
                        f"not attempted: kite failed {consecutive} symbols in a row"
                    )
                    transient.add(rest.symbol)
                break
            try:
                frame = self._fetch_symbol(req)
            except _SymbolFailed as exc:
                failures[req.symbol] = str(exc)
                if exc.transient:
                    transient.add(req.symbol)
                    consecutive += 1
                else:
                    consecutive = 0
                continue
            consecutive = 0
            frames.append(frame)
        bars = concat_bars(frames)
        if len(bars) == 0 and failures and transient == set(failures):
            raise SourceUnavailableError(
                "kite delivered nothing: " + next(iter(failures.values())), source=self.name
            )
        return FetchResult(bars, self._adjusted, failures, self.name)

    def _fetch_symbol(self, req: BarRequest) -> pd.DataFrame:
        exchange = req.exchange.strip().upper()
        if exchange not in KITE_EXCHANGES:
            raise _SymbolFailed(
                f"kite serves NSE and BSE only, not {req.exchange}", transient=False
            )
        token = self.instrument_token(req.symbol, exchange)
        records: list[dict[str, Any]] = []
        for lo, hi in day_spans(req.start, req.end, self._max_days):
            records.extend(
                self._call(
                    lambda lo=lo, hi=hi: self._client().historical_data(
                        token, f"{lo.isoformat()} 00:00:00", f"{hi.isoformat()} 23:59:59", "day"
                    )
                )
            )
        frame = clip_to_range(_frame(req.symbol, records), req.start, req.end)
        if len(frame) == 0:
            raise _SymbolFailed(
                f"kite returned no candles from {req.start} to {req.end}", transient=False
            )
        return frame

    def instrument_token(self, symbol: str, exchange: str) -> int:
        """Resolve a symbol to its Kite instrument token from the exchange's instruments dump."""
        if symbol in self._fixed_tokens:
            return self._fixed_tokens[symbol]
        tokens = self._tokens.get(exchange)
        if tokens is None:
            tokens = self._load_tokens(exchange)
            self._tokens[exchange] = tokens
        if symbol not in tokens:
            raise _SymbolFailed(
                f"{symbol} is not in kite's {exchange} instruments list", transient=False
            )
        return tokens[symbol]

    def _load_tokens(self, exchange: str) -> dict[str, int]:
        cache_file = None
        if self._cache_dir is not None:
            today = datetime.now(KOLKATA).date().isoformat()
            cache_file = self._cache_dir / f"kite-instruments-{exchange}-{today}.json"
            if cache_file.is_file():
                try:
                    return {str(k): int(v) for k, v in json.loads(cache_file.read_text()).items()}
                except (ValueError, OSError):
                    pass  # a corrupt cache is refetched below
        rows = self._call(lambda: self._client().instruments(exchange))
        tokens: dict[str, int] = {}
        for row in rows:
            if row.get("exchange") != exchange or row.get("segment") != exchange:
                continue  # keep the cash segment: NSE/BSE equities and ETFs
            tokens.setdefault(str(row["tradingsymbol"]), int(row["instrument_token"]))
        if cache_file is not None:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(tokens, sort_keys=True))
            tmp.replace(cache_file)
        return tokens

    def _call(self, fn: Any) -> Any:
        """Call the SDK within the rate limit, retrying transient errors with backoff."""
        reason = "no attempt made"
        for attempt in range(self._retry.max_retries + 1):
            self._limiter.acquire()
            try:
                return fn()
            except (kite_ex.TokenException, kite_ex.PermissionException) as exc:
                message = _LOGIN_AGAIN
                if isinstance(exc, kite_ex.PermissionException):
                    message = (
                        f"kite refused access ({exc.code}: {exc}); check the app's permissions"
                    )
                raise SourceAuthError(message, source=self.name) from None
            except kite_ex.InputException as exc:
                raise _SymbolFailed(
                    f"kite refused the request ({exc.code}: {exc})", transient=False
                ) from None
            except (kite_ex.NetworkException, kite_ex.DataException) as exc:
                reason = f"{type(exc).__name__} ({exc.code}): {_short(exc)}"
            except kite_ex.KiteException as exc:
                if exc.code is None or int(exc.code) < 500:
                    raise _SymbolFailed(
                        f"{type(exc).__name__} ({exc.code}): {_short(exc)}", transient=False
                    ) from None
                reason = f"{type(exc).__name__} ({exc.code}): {_short(exc)}"
            except (requests.ConnectionError, requests.Timeout) as exc:
                reason = f"network error: {type(exc).__name__}"
            if attempt < self._retry.max_retries:
                self._sleep(self._retry.delay(attempt))
        raise _SymbolFailed(f"{reason} (after {self._retry.max_retries} retries)", transient=True)


def _short(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return text[:160]


def _frame(symbol: str, records: list[dict[str, Any]]) -> pd.DataFrame:
    dates: list[date | None] = []
    for rec in records:
        stamp = rec.get("date")
        if isinstance(stamp, datetime):
            dates.append(stamp.date())  # aware +05:30: its own wall-clock date
        elif isinstance(stamp, date):
            dates.append(stamp)
        else:
            dates.append(None)
    return bars_frame(
        symbol,
        dates,
        [r.get("open") for r in records],
        [r.get("high") for r in records],
        [r.get("low") for r in records],
        [r.get("close") for r in records],
        [r.get("volume") for r in records],
    )


__all__ = ["KITE_EXCHANGES", "KiteSource", "day_spans"]
