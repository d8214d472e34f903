"""The Alpaca market-data source (name ``alpaca``) through alpaca-py's historical data client.

One ``StockBarsRequest(timeframe=1Day)`` per batch of symbols sharing a date range; the SDK
follows ``next_page_token`` itself (``_get_marketdata`` loops until the token is null).
Daily bars are stamped at midnight New York time written in UTC (``2024-01-03T05:00:00Z``):
they are mapped to the New York date.

What the SDK does not do, done here:

* a request timeout (the SDK sets none): a default timeout on its ``requests`` session;
* retries with backoff we control: the SDK's own fixed 3 s retry on 429/504 is switched off
  and 429, 5xx and network errors are retried (bounded, exponential, honouring
  ``X-RateLimit-Reset``, injectable ``sleep``);
* error mapping: 401/403 -> ``SourceAuthError`` (fatal, for the whole batch; a 403 about the
  data subscription -> ``SourceConfigError`` naming ``feed``); 400/422 for a batch -> the batch
  is split to isolate the bad symbol(s), which become failures; a symbol that comes back
  without bars is a failure (unknown, or no trading in range).

Options: ``api_key`` and ``api_secret`` (required; str or SecretStr, never logged),
``data_url`` (endpoint override, e.g. a proxy or a test server), ``feed`` (default ``iex``),
``adjustment`` (``raw``, ``split``, ``dividend``, ``all``; default ``all``; ``FetchResult.adjusted``
is true for ``split`` and ``all``), ``batch_size`` (default 200), ``timeout`` (s, 30),
``max_retries`` (3), ``backoff`` (base seconds, 1.0), ``corporate_actions`` (default True).

Corporate actions: with each batch, ``GET /v1/corporate-actions`` (alpaca-py's
``CorporateActionsClient``; the answer's ``corporate_actions`` maps ``forward_splits``,
``reverse_splits``, ``stock_dividends`` and ``cash_dividends`` to lists of
``{symbol, new_rate, old_rate | rate, ex_date, ...}``) fills ``FetchResult.actions``: a split's
ratio is ``new_rate / old_rate``, a stock dividend of ``rate`` is a bonus issue of ratio
``1 + rate``, a cash dividend's ``rate`` is per share. Best effort: an account without access
to the endpoint still gets its bars (the failure is logged).
"""

from __future__ import annotations

import json
import logging
import re
import time as _time
from collections.abc import Mapping, Sequence
from datetime import date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd
import requests
from alpaca.common.exceptions import APIError
from alpaca.data.enums import Adjustment, CorporateActionsType, DataFeed
from alpaca.data.historical import StockHistoricalDataClient
from alpaca.data.historical.corporate_actions import CorporateActionsClient
from alpaca.data.requests import CorporateActionsRequest, StockBarsRequest
from alpaca.data.timeframe import TimeFrame
from requests.adapters import HTTPAdapter

from saras.marketdata._util import (
    Clock,
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
    SourceAuthError,
    SourceConfigError,
    SourceUnavailableError,
    concat_bars,
)

log = logging.getLogger(__name__)
NEW_YORK = ZoneInfo("America/New_York")
_ACTION_TYPES = [
    CorporateActionsType.FORWARD_SPLIT,
    CorporateActionsType.REVERSE_SPLIT,
    CorporateActionsType.STOCK_DIVIDEND,
    CorporateActionsType.CASH_DIVIDEND,
]
_OPTIONS = (
    "corporate_actions",
    "api_key",
    "api_secret",
    "data_url",
    "feed",
    "adjustment",
    "batch_size",
    "timeout",
    "max_retries",
    "backoff",
)


class _TimeoutAdapter(HTTPAdapter):
    """An HTTP adapter that applies a default timeout to every request without one."""

    def __init__(self, timeout: float):
        super().__init__()
        self._timeout = timeout

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        """Send with the default timeout unless the caller gave one."""
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self._timeout
        return super().send(request, **kwargs)


class _Rejected(Exception):
    def __init__(self, status: int | None, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class _Exhausted(Exception):
    """Retries used up on a transient error."""


def _body_message(exc: APIError) -> str:
    text = str(exc)
    try:
        body = json.loads(text)
    except ValueError:
        return " ".join(text.split())[:200] or "no message"
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])[:200]
    return text[:200]


class AlpacaSource:
    """Daily bars from Alpaca's market-data API."""

    name = "alpaca"

    def __init__(
        self,
        options: Mapping[str, Any] | None = None,
        *,
        sleep: Sleep = real_sleep,
        wall_clock: Clock = _time.time,
    ):
        opts = Options(self.name, options, _OPTIONS)
        self._api_key = opts.secret("api_key", required=True)
        self._api_secret = opts.secret("api_secret", required=True)
        data_url = opts.str_("data_url")
        if data_url is not None:
            data_url = data_url.rstrip("/")
            data_url = data_url.removesuffix("/v2")
            if not data_url.startswith(("http://", "https://")):
                raise opts.error("data_url", "must start with http:// or https://")
        self._data_url = data_url
        self._feed = opts.choice("feed", "iex", [f.value for f in DataFeed])
        self._adjustment = opts.choice("adjustment", "all", [a.value for a in Adjustment])
        self._batch_size: int = opts.number("batch_size", 200, minimum=1, integer=True)
        self._timeout: float = opts.number("timeout", 30.0, minimum=0.1)
        self._retry = RetryPolicy.from_options(opts, max_retries=3, base=1.0)
        self._sleep = sleep
        self._wall_clock = wall_clock
        self._client: StockHistoricalDataClient | None = None
        self._with_actions = opts.bool_("corporate_actions", True)

    def __repr__(self) -> str:
        return (
            f"AlpacaSource(data_url={self._data_url!r}, feed={self._feed!r}, "
            f"adjustment={self._adjustment!r})"
        )

    @property
    def adjusted(self) -> bool:
        """Tell whether the configured adjustment makes history split-adjusted."""
        return self._adjustment in ("split", "all")

    def _get_client(self) -> StockHistoricalDataClient:
        if self._client is None:
            assert self._api_key is not None and self._api_secret is not None
            client = StockHistoricalDataClient(
                api_key=self._api_key.get_secret_value(),
                secret_key=self._api_secret.get_secret_value(),
                url_override=self._data_url,
                raw_data=True,
            )
            client._retry = 0  # we retry ourselves: backoff, Retry-After, injectable sleep
            adapter = _TimeoutAdapter(self._timeout)
            client._session.mount("http://", adapter)
            client._session.mount("https://", adapter)
            self._client = client
        return self._client

    def fetch_daily_bars(self, requests: Sequence[BarRequest]) -> FetchResult:
        """Fetch daily bars in multi-symbol batches; list every symbol not delivered."""
        failures: dict[str, str] = {}
        transient: set[str] = set()
        frames: list[pd.DataFrame] = []
        todo = triage(requests, failures)
        actions: list[SourceAction] = []
        for start, end, batch in group_by_range(todo, self._batch_size):
            self._fetch_batch(batch, start, end, frames, failures, transient)
            if self._with_actions:
                actions.extend(self._get_actions([r.symbol for r in batch], start, end))
        bars = concat_bars(frames)
        if len(bars) == 0 and failures and transient == set(failures):
            raise SourceUnavailableError(
                f"alpaca delivered nothing after {self._retry.max_retries} retries: "
                + next(iter(failures.values())),
                source=self.name,
            )
        return FetchResult(bars, self.adjusted, failures, self.name, actions)

    def _get_actions(self, symbols: list[str], start: date, end: date) -> list[SourceAction]:
        """Ask Alpaca for the batch's splits and dividends (best effort, never fatal)."""
        assert self._api_key is not None and self._api_secret is not None
        client = CorporateActionsClient(
            api_key=self._api_key.get_secret_value(),
            secret_key=self._api_secret.get_secret_value(),
            url_override=self._data_url,
            raw_data=True,
        )
        client._retry = 0
        adapter = _TimeoutAdapter(self._timeout)
        client._session.mount("http://", adapter)
        client._session.mount("https://", adapter)
        request = CorporateActionsRequest(
            symbols=symbols, types=_ACTION_TYPES, start=start, end=end
        )
        try:
            raw = client.get_corporate_actions(request)
        except APIError as exc:
            log.warning(
                "alpaca corporate actions unavailable (HTTP %s: %s): none captured",
                exc.status_code,
                _body_message(exc),
            )
            return []
        except (requests.ConnectionError, requests.Timeout) as exc:
            log.warning("alpaca corporate actions unavailable (%s)", type(exc).__name__)
            return []
        return _actions(raw if isinstance(raw, dict) else {}, set(symbols))

    def _fetch_batch(
        self,
        batch: list[BarRequest],
        start: date,
        end: date,
        frames: list[pd.DataFrame],
        failures: dict[str, str],
        transient: set[str],
    ) -> None:
        symbols = [req.symbol for req in batch]
        try:
            raw = self._get_bars(symbols, start, end)
        except _Rejected as exc:
            if len(batch) == 1:
                failures[batch[0].symbol] = f"HTTP {exc.status}: {exc.message}"
                return
            # Isolate the symbol(s) the API refuses: the ones its message names, else one by one.
            named = [
                req
                for req in batch
                if re.search(rf"(?<![\w.]){re.escape(req.symbol)}(?![\w.])", exc.message)
            ]
            if named:
                for req in named:
                    failures[req.symbol] = f"HTTP {exc.status}: {exc.message}"
                rest = [req for req in batch if req not in named]
                if rest:
                    self._fetch_batch(rest, start, end, frames, failures, transient)
            else:
                for req in batch:
                    self._fetch_batch([req], start, end, frames, failures, transient)
            return
        except _Exhausted as exc:
            for req in batch:
                failures[req.symbol] = str(exc)
                transient.add(req.symbol)
            return
        for req in batch:
            rows = raw.get(req.symbol) or []
            frame = clip_to_range(_frame(req.symbol, rows), req.start, req.end)
            if len(frame) == 0:
                failures[req.symbol] = (
                    f"Alpaca returned no bars from {req.start} to {req.end} "
                    "(unknown symbol or no trading in range)"
                )
            else:
                frames.append(frame)

    def _get_bars(
        self, symbols: list[str], start: date, end: date
    ) -> dict[str, list[dict[str, Any]]]:
        client = self._get_client()
        request = StockBarsRequest(
            symbol_or_symbols=symbols,
            timeframe=TimeFrame.Day,
            start=datetime.combine(start, time(0), NEW_YORK),
            end=datetime.combine(end, time(23, 59, 59), NEW_YORK),
            adjustment=Adjustment(self._adjustment),
            feed=DataFeed(self._feed),
        )
        reason = "no attempt made"
        for attempt in range(self._retry.max_retries + 1):
            hint: float | None = None
            try:
                result = client.get_stock_bars(request)
                return result if isinstance(result, dict) else {}
            except APIError as exc:
                status = exc.status_code
                message = _body_message(exc)
                if status == 401 or (status == 403 and "subscription" not in message.lower()):
                    raise SourceAuthError(
                        f"alpaca rejected the API credentials (HTTP {status}: {message}); "
                        "check the connection's api_key and api_secret",
                        source=self.name,
                    ) from None
                if status == 403:
                    raise SourceConfigError(
                        f"alpaca refused the data feed {self._feed!r} (HTTP 403: {message})",
                        option="feed",
                        source=self.name,
                    ) from None
                if status == 429 or (status is not None and status >= 500):
                    reason = f"HTTP {status}: {message}"
                    hint = self._reset_hint(exc)
                else:
                    raise _Rejected(status, message) from None
            except (requests.ConnectionError, requests.Timeout) as exc:
                reason = f"network error: {type(exc).__name__}"
            if attempt < self._retry.max_retries:
                self._sleep(self._retry.delay(attempt, hint))
        raise _Exhausted(f"{reason} (after {self._retry.max_retries} retries)")

    def _reset_hint(self, exc: APIError) -> float | None:
        response = exc.response
        if response is None:
            return None
        reset = response.headers.get("X-RateLimit-Reset")
        retry_after = response.headers.get("Retry-After")
        try:
            if reset is not None:
                return max(0.0, float(reset) - self._wall_clock())
            if retry_after is not None:
                return max(0.0, float(retry_after))
        except ValueError:
            return None
        return None


def _number(value: Any) -> Decimal | None:
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() and number > 0 else None


def _actions(raw: Mapping[str, Any], symbols: set[str]) -> list[SourceAction]:
    """Translate Alpaca's corporate-actions answer (grouped by type) into ``SourceAction``s."""
    out: list[SourceAction] = []
    for group, items in raw.items():
        for item in items if isinstance(items, list) else []:
            symbol = item.get("symbol")
            if symbol not in symbols or not item.get("ex_date"):
                continue
            ex_date = date.fromisoformat(str(item["ex_date"])[:10])
            match group:
                case "forward_splits" | "reverse_splits":
                    new, old = _number(item.get("new_rate")), _number(item.get("old_rate"))
                    if new is None or old is None or new == old:
                        continue
                    ratio = (new / old).quantize(Decimal("1e-12"))
                    kind = "split" if ratio > 1 else "reverse_split"
                    out.append(SourceAction(symbol, kind, ex_date, ratio=ratio))
                case "stock_dividends":
                    rate = _number(item.get("rate"))
                    if rate is not None:
                        out.append(SourceAction(symbol, "bonus", ex_date, ratio=1 + rate))
                case "cash_dividends":
                    rate = _number(item.get("rate"))
                    if rate is not None:
                        out.append(SourceAction(symbol, "dividend", ex_date, cash_amount=rate))
                case _:
                    continue
    return out


def _frame(symbol: str, rows: list[dict[str, Any]]) -> pd.DataFrame:
    if not rows:
        return bars_frame(symbol, [], [], [], [], [], [])
    stamps = pd.to_datetime([row.get("t") for row in rows], utc=True, errors="coerce")
    local = stamps.tz_convert(NEW_YORK)
    dates = [None if pd.isna(ts) else ts.date() for ts in local]
    return bars_frame(
        symbol,
        dates,
        [row.get("o") for row in rows],
        [row.get("h") for row in rows],
        [row.get("l") for row in rows],
        [row.get("c") for row in rows],
        [row.get("v") for row in rows],
    )
