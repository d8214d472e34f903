"""A deterministic simulated source for demos, tests and benchmarks (no network).

Each symbol follows its own geometric random walk on the sessions of its exchange calendar,
counted from a fixed epoch (2000-01-03). Day ``i`` of a symbol always draws the same random
numbers (the generator is seeded from a stable hash of ``seed`` and the symbol, and draws are
laid out day by day), so a bar depends only on (seed, symbol, day): an incremental fetch equals
the matching slice of a full fetch, and the same inputs give byte-identical frames.

Bars are realistic: low <= min(open, close) <= max(open, close) <= high, prices rounded to
cents (at least 0.01), volumes whole numbers. No bars before the epoch or beyond the range
the exchange calendar knows.

Options:

* ``seed`` (int, default 0): a different seed gives a different market.
* ``adjusted`` (bool, default True): report split-adjusted history.
* ``split``: ``{symbol: {"date": "YYYY-MM-DD", "ratio": R}}`` (or a list of such mappings per
  symbol) simulates an R-for-1 split on that date. From the split date on, the stock trades at
  1/R of the unsplit walk with R times the volume, in both modes. Before it, unadjusted bars
  keep the unsplit walk, while adjusted bars are divided by R (volume times R), the way a vendor
  back-adjusts history once the split has happened: downstream split handling can be tested by
  comparing a fetch with and without the option.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

import numpy as np
import pandas as pd

from saras.marketdata import calendars
from saras.marketdata._util import Options, check_unique
from saras.marketdata.base import (
    BAR_COLUMNS,
    BarRequest,
    FetchResult,
    UnknownExchangeError,
    empty_bars,
)

EPOCH = date(2000, 1, 3)
_DRAWS_PER_DAY = 5


@functools.cache
def _epoch_index(calendar_name: str) -> int:
    days = calendars._session_days(calendar_name)
    return int(np.searchsorted(days, np.datetime64(EPOCH, "D"), side="left"))


def _symbol_params(seed: int, symbol: str) -> tuple[int, float, float, float, float]:
    digest = hashlib.blake2b(f"{seed}:{symbol}".encode(), digest_size=16).digest()
    rng_seed = int.from_bytes(digest[:8], "little")
    u = [int.from_bytes(digest[8 + 2 * i : 10 + 2 * i], "little") / 65535.0 for i in range(4)]
    p0 = 10 ** (1.3 + 2.0 * u[0])  # 20 .. 2000
    sigma = 0.01 + 0.015 * u[1]  # 1% .. 2.5% daily
    mu = (u[2] - 0.3) * 0.0005  # slight upward drift on average
    v0 = 10 ** (5.0 + 2.0 * u[3])  # 100k .. 10M shares
    return rng_seed, p0, sigma, mu, v0


def _walk(seed: int, symbol: str, n: int) -> tuple[np.ndarray, ...]:
    """Return unsplit open, high, low, close, volume for sessions 0..n-1 from the epoch."""
    rng_seed, p0, sigma, mu, v0 = _symbol_params(seed, symbol)
    z = np.random.Generator(np.random.PCG64(rng_seed)).standard_normal((n, _DRAWS_PER_DAY))
    log_close = np.log(p0) + np.cumsum(mu - 0.5 * sigma * sigma + sigma * z[:, 0])
    close = np.exp(log_close)
    prev_close = np.empty(n)
    prev_close[0] = p0
    prev_close[1:] = close[:-1]
    open_ = prev_close * np.exp(0.25 * sigma * z[:, 1])
    high = np.maximum(open_, close) * np.exp(0.5 * sigma * np.abs(z[:, 2]))
    low = np.minimum(open_, close) * np.exp(-0.5 * sigma * np.abs(z[:, 3]))
    volume = v0 * np.exp(0.35 * z[:, 4])
    return open_, high, low, close, volume


def _parse_splits(opts: Options) -> dict[str, list[tuple[np.datetime64, float]]]:
    raw = opts.raw("split", {})
    if not isinstance(raw, Mapping):
        raise opts.error("split", "must map symbol -> {'date': 'YYYY-MM-DD', 'ratio': number}")
    out: dict[str, list[tuple[np.datetime64, float]]] = {}
    for symbol, spec in raw.items():
        specs = spec if isinstance(spec, list | tuple) else [spec]
        parsed = []
        for item in specs:
            if not isinstance(item, Mapping) or "date" not in item or "ratio" not in item:
                raise opts.error("split", f"{symbol}: expected {{'date': ..., 'ratio': ...}}")
            try:
                day = item["date"]
                when = day if isinstance(day, date) else date.fromisoformat(str(day))
                ratio = float(item["ratio"])
            except (TypeError, ValueError) as exc:
                raise opts.error("split", f"{symbol}: bad date or ratio ({exc})") from exc
            if not ratio > 0:
                raise opts.error("split", f"{symbol}: ratio must be > 0, got {item['ratio']!r}")
            parsed.append((np.datetime64(when, "D"), ratio))
        out[str(symbol)] = sorted(parsed)
    return out


class SimulatedSource:
    """Deterministic random-walk daily bars on real exchange calendars."""

    name = "simulated"

    def __init__(self, options: Mapping[str, Any] | None = None):
        opts = Options(self.name, options, ("seed", "adjusted", "split"))
        self._seed: int = opts.number("seed", 0, integer=True)
        self._adjusted: bool = opts.bool_("adjusted", True)
        self._splits = _parse_splits(opts)

    def __repr__(self) -> str:
        return f"SimulatedSource(seed={self._seed}, adjusted={self._adjusted})"

    def fetch_daily_bars(self, requests: Sequence[BarRequest]) -> FetchResult:
        """Generate daily bars for every request (pure computation, no I/O)."""
        check_unique(requests)
        failures: dict[str, str] = {}
        symbols: list[str] = []
        counts: list[int] = []
        date_parts: list[np.ndarray] = []
        value_parts: list[list[np.ndarray]] = [[] for _ in range(5)]
        for req in requests:
            try:
                name = calendars.calendar_for(req.exchange)
            except UnknownExchangeError as exc:
                failures[req.symbol] = str(exc)
                continue
            days = calendars._session_days(name)
            epoch = _epoch_index(name)
            lo = max(int(np.searchsorted(days, np.datetime64(req.start, "D"))), epoch)
            hi = int(np.searchsorted(days, np.datetime64(req.end, "D"), side="right"))
            if hi <= lo:
                if req.end < EPOCH:
                    failures[req.symbol] = f"simulated history starts on {EPOCH}"
                elif not calendars.covers(req.exchange, req.start, req.end):
                    failures[req.symbol] = (
                        f"{req.start}..{req.end} is outside the {name} calendar's known range"
                    )
                continue  # otherwise: no session in range, nothing to deliver
            columns = [col[lo - epoch :] for col in _walk(self._seed, req.symbol, hi - epoch)]
            self._apply_splits(req.symbol, days[lo:hi], columns)
            prices = [np.maximum(np.round(col, 2), 0.01) for col in columns[:4]]
            volume = np.round(columns[4])
            for part, values in zip(value_parts, [*prices, volume], strict=True):
                part.append(values)
            symbols.append(req.symbol)
            counts.append(hi - lo)
            date_parts.append(calendars._session_dates(name)[lo:hi])
        if not symbols:
            return FetchResult(empty_bars(), self._adjusted, failures, self.name)
        frame = pd.DataFrame(
            {
                "symbol": np.repeat(np.array(symbols, dtype=object), counts),
                "price_date": np.concatenate(date_parts),
                **{
                    col: np.concatenate(part)
                    for col, part in zip(BAR_COLUMNS[2:], value_parts, strict=True)
                },
            },
            columns=list(BAR_COLUMNS),
        )
        return FetchResult(frame, self._adjusted, failures, self.name)

    def _apply_splits(self, symbol: str, days: np.ndarray, columns: list[np.ndarray]) -> None:
        splits = self._splits.get(symbol)
        if not splits:
            return
        if self._adjusted:
            factor = np.full(len(days), float(np.prod([ratio for _, ratio in splits])))
        else:
            factor = np.ones(len(days))
            for when, ratio in splits:
                factor[days >= when] *= ratio
        for i in range(4):
            columns[i] = columns[i] / factor
        columns[4] = columns[4] * factor
