"""The Yahoo Finance source (name ``yfinance``) through ``yf.download``.

``yf.download`` swallows every per-ticker error, rate limiting included: a failed ticker comes
back as all-NaN columns. So coverage is checked per symbol, the reason is taken from what
yfinance logs, the failed symbols are retried (bounded, exponential backoff, injectable sleep)
and whatever still fails is listed in ``FetchResult.failures``: never an empty success. When
nothing at all could be fetched and the failures look transient (rate limit, network), the
whole source is reported unavailable (``SourceUnavailableError``).

Tickers: US symbols as they are, with ``.`` written ``-`` (``BRK.B`` -> ``BRK-B``); NSE
symbols get ``.NS`` and BSE ``.BO``; the ``tickers`` option overrides per symbol. Bars come
back under our own symbols. ``end`` is inclusive for us, exclusive for yfinance (one day added).

Options:

* ``auto_adjust`` (bool, default True): split- and dividend-adjusted OHLC
  (``FetchResult.adjusted``). With False, Yahoo's close is split-adjusted only.
* ``session``: a ``curl_cffi.requests.Session`` to use (tests point it at a local server).
  yfinance keeps one session per process: the one given last wins.
* ``batch_size`` (default 100), ``threads`` (default 4; 1 = sequential), ``timeout`` (s, 10),
  ``max_retries`` (default 3), ``backoff`` (base seconds, default 2.0).
* ``tickers``: ``{symbol: yahoo_ticker}`` overrides.
* ``cache_dir``: where yfinance keeps its on-disk caches (time zones, cookies); process-wide.

yfinance also caches past-dated responses in process; that cache is cleared before each retry
so a retry really asks Yahoo again.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Mapping, Sequence
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd
import yfinance as yf
from yfinance.data import YfData
from yfinance.exceptions import YFException

from saras.marketdata import calendars
from saras.marketdata._util import (
    Options,
    RetryPolicy,
    Sleep,
    bars_frame,
    clip_to_range,
    group_by_range,
    real_sleep,
    triage,
)
from saras.marketdata.base import (
    BarRequest,
    FetchResult,
    SourceAction,
    SourceUnavailableError,
    concat_bars,
)

_EXCHANGE_SUFFIX: dict[str, str] = {"NSE": ".NS", "BSE": ".BO"}
_TRANSIENT = re.compile(
    r"rate.?limit|too many requests|timeout|timed out|connection|currently down|"
    r"curl|resolve|temporar|\b5\d\d\b",
    re.IGNORECASE,
)
_SUMMARY_LINE = re.compile(r"^\s*\[(?P<tickers>[^\]]*)\]:\s*(?P<reason>.+)$", re.DOTALL)
_TICKER_LINE = re.compile(r"^\s*\$?(?P<ticker>[A-Za-z0-9.\-^=&]+):\s*(?P<reason>.+)$", re.DOTALL)
_OPTIONS = (
    "auto_adjust",
    "session",
    "batch_size",
    "threads",
    "timeout",
    "max_retries",
    "backoff",
    "tickers",
    "cache_dir",
)
_cache_dir_lock = threading.Lock()
_cache_dir_set: str | None = None


def is_transient_reason(reason: str) -> bool:
    """Tell whether a yfinance failure reason looks transient (throttling, network)."""
    return bool(_TRANSIENT.search(reason))


class _ErrorCapture(logging.Handler):
    """Collect the per-ticker errors yfinance logs (download() reports them nowhere else)."""

    def __init__(self, tickers: set[str]):
        super().__init__(level=logging.ERROR)
        self._tickers = tickers
        self.reasons: dict[str, str] = {}

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage().strip()
        summary = _SUMMARY_LINE.match(message)
        if summary:
            for ticker in re.findall(r"'([^']+)'", summary.group("tickers")):
                if ticker.upper() in self._tickers:
                    self.reasons[ticker.upper()] = _clean(summary.group("reason"))
            return
        single = _TICKER_LINE.match(message)
        if single and single.group("ticker").upper() in self._tickers:
            self.reasons.setdefault(single.group("ticker").upper(), _clean(single.group("reason")))


def _clean(reason: str) -> str:
    reason = reason.strip().splitlines()[0] if reason.strip() else "unknown error"
    return reason[:300]


class YFinanceSource:
    """Daily bars from Yahoo Finance, batched through ``yf.download``."""

    name = "yfinance"

    def __init__(self, options: Mapping[str, Any] | None = None, *, sleep: Sleep = real_sleep):
        opts = Options(self.name, options, _OPTIONS)
        self._auto_adjust = opts.bool_("auto_adjust", True)
        self._session = opts.raw("session")
        if self._session is not None:
            from curl_cffi import requests as curl_requests

            if not isinstance(self._session, curl_requests.Session):
                raise opts.error("session", "must be a curl_cffi.requests.Session")
        self._batch_size: int = opts.number("batch_size", 100, minimum=1, integer=True)
        threads = opts.raw("threads")
        if isinstance(threads, bool):
            self._threads = 4 if threads else 1
        else:
            self._threads = opts.number("threads", 4, minimum=1, integer=True)
        self._timeout: float = opts.number("timeout", 10.0, minimum=0.1)
        self._retry = RetryPolicy.from_options(opts, max_retries=3, base=2.0)
        overrides = opts.raw("tickers", {})
        if not isinstance(overrides, Mapping):
            raise opts.error("tickers", "must map symbol -> Yahoo ticker")
        self._overrides = {str(k): str(v) for k, v in overrides.items()}
        self._cache_dir = opts.str_("cache_dir")
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"YFinanceSource(auto_adjust={self._auto_adjust}, batch_size={self._batch_size})"

    def yahoo_ticker(self, symbol: str, exchange: str) -> str:
        """Return the Yahoo ticker for our symbol (``RELIANCE`` on NSE -> ``RELIANCE.NS``)."""
        if symbol in self._overrides:
            return self._overrides[symbol]
        code = exchange.strip().upper()
        if code in _EXCHANGE_SUFFIX:
            return symbol + _EXCHANGE_SUFFIX[code]
        if calendars.calendar_for(code) == "XBOM":
            return symbol + ".NS"
        return symbol.replace(".", "-")

    def fetch_daily_bars(self, requests: Sequence[BarRequest]) -> FetchResult:
        """Download daily bars in batches; list every symbol that could not be delivered."""
        self._apply_cache_dir()
        # A call may be the re-fetch of a history the source has just rewritten (a split):
        # yfinance's in-process cache of past-dated answers would hand back the old one.
        _clear_response_cache()
        failures: dict[str, str] = {}
        frames: list[pd.DataFrame] = []
        actions: list[SourceAction] = []
        transient: set[str] = set()
        todo = triage(requests, failures)
        for start, end, batch in group_by_range(todo, self._batch_size):
            pending: dict[str, BarRequest] = {}
            for req in batch:
                ticker = self.yahoo_ticker(req.symbol, req.exchange).upper()
                if ticker in pending:
                    failures[req.symbol] = f"Yahoo ticker {ticker} also used for another symbol"
                    continue
                pending[ticker] = req
            reasons: dict[str, str] = {}
            for attempt in range(self._retry.max_retries + 1):
                if attempt:
                    self._sleep(self._retry.delay(attempt - 1))
                    _clear_response_cache()
                got, errors = self._download(pending, start, end, actions)
                for ticker, frame in got.items():
                    frames.append(frame)
                    del pending[ticker]
                reasons.update(errors)
                if not pending:
                    break
            for ticker, req in pending.items():
                reason = reasons.get(ticker, "Yahoo returned no bars for this range")
                failures[req.symbol] = f"{ticker}: {reason}"
                if is_transient_reason(reason):
                    transient.add(req.symbol)
        bars = concat_bars(frames)
        if len(bars) == 0 and failures and transient and transient == set(failures):
            raise SourceUnavailableError(
                f"yfinance delivered nothing after {self._retry.max_retries} retries: "
                + "; ".join(f"{s}: {r}" for s, r in list(failures.items())[:5]),
                source=self.name,
            )
        return FetchResult(bars, self._auto_adjust, failures, self.name, actions)

    def _download(
        self,
        pending: Mapping[str, BarRequest],
        start: date,
        end: date,
        actions: list[SourceAction],
    ) -> tuple[dict[str, pd.DataFrame], dict[str, str]]:
        """Run one ``yf.download``; return frames per delivered ticker and reasons per failure."""
        tickers = sorted(pending)
        capture = _ErrorCapture(set(tickers))
        logger = logging.getLogger("yfinance")
        logger.addHandler(capture)
        try:
            data = yf.download(
                tickers,
                start=start.isoformat(),
                end=(end + timedelta(days=1)).isoformat(),
                interval="1d",
                auto_adjust=self._auto_adjust,
                actions=True,  # adds the `Dividends` and `Stock Splits` columns
                repair=False,
                keepna=False,
                group_by="ticker",
                threads=self._threads if len(tickers) > 1 and self._threads > 1 else False,
                progress=False,
                timeout=self._timeout,
                session=self._session,
                multi_level_index=True,
            )
        except YFException as exc:  # download() itself failed: every ticker of the batch did
            reason = _clean(f"{type(exc).__name__}: {exc}")
            return {}, dict.fromkeys(tickers, reason)
        finally:
            logger.removeHandler(capture)
        return self._split(data, pending, start, end, actions), capture.reasons

    def _split(
        self,
        data: pd.DataFrame | None,
        pending: Mapping[str, BarRequest],
        start: date,
        end: date,
        actions: list[SourceAction],
    ) -> dict[str, pd.DataFrame]:
        got: dict[str, pd.DataFrame] = {}
        if data is None or data.empty or not isinstance(data.columns, pd.MultiIndex):
            return got
        present = set(data.columns.get_level_values(0))
        for ticker, req in pending.items():
            if ticker not in present:
                continue
            sub = data[ticker]
            actions.extend(_actions(req.symbol, sub, start, end))
            cols = [c for c in ("Open", "High", "Low", "Close", "Volume") if c in sub.columns]
            if len(cols) < 5:
                continue
            # Rows that are NaN everywhere are the outer join's filler for other tickers' days.
            sub = sub.loc[~sub[cols].isna().all(axis=1)]
            if sub.empty:
                continue
            index = pd.DatetimeIndex(sub.index)
            if index.tz is not None:
                index = index.tz_localize(None)
            dates = np.array([ts.date() for ts in index], dtype=object)
            frame = bars_frame(
                req.symbol,
                dates,
                sub["Open"].to_numpy(),
                sub["High"].to_numpy(),
                sub["Low"].to_numpy(),
                sub["Close"].to_numpy(),
                sub["Volume"].to_numpy(),
            )
            frame = clip_to_range(frame, start, end)
            if len(frame):
                got[ticker] = frame
        return got

    def _apply_cache_dir(self) -> None:
        global _cache_dir_set
        if self._cache_dir is None:
            return
        with _cache_dir_lock:
            if _cache_dir_set != self._cache_dir:
                yf.set_tz_cache_location(self._cache_dir)
                _cache_dir_set = self._cache_dir


def _actions(symbol: str, frame: pd.DataFrame, start: date, end: date) -> list[SourceAction]:
    """Read Yahoo's ``Stock Splits`` and ``Dividends`` columns (0 or NaN: none that day).

    ``Stock Splits`` is Yahoo's numerator / denominator (4.0 for 4:1, 0.1 for 1:10); Yahoo's
    dividends are per share, already adjusted for later splits.
    """
    out: list[SourceAction] = []
    for column in ("Stock Splits", "Dividends"):
        if column not in frame.columns:
            continue
        for stamp, value in frame[column].items():
            if value is None or pd.isna(value) or float(value) <= 0:
                continue
            day = pd.Timestamp(stamp).date()
            if not start <= day <= end:
                continue
            amount = Decimal(repr(round(float(value), 12)))
            if column == "Dividends":
                out.append(SourceAction(symbol, "dividend", day, cash_amount=amount))
            elif amount != 1:
                kind = "split" if amount > 1 else "reverse_split"
                out.append(SourceAction(symbol, kind, day, ratio=amount))
    return out


def _clear_response_cache() -> None:
    """Forget yfinance's in-process cache of past-dated responses (so a retry asks again)."""
    cache_get = getattr(YfData, "cache_get", None)
    cache_clear = getattr(cache_get, "cache_clear", None)
    if callable(cache_clear):
        cache_clear()
