"""The canonical daily-bar frame, the market-data source protocol and its error classes.

Every source returns the same frame shape (``BAR_COLUMNS``):

* ``symbol``: ``object`` dtype of ``str``, our own symbol as stored in ``assets.symbol``
  (``"RELIANCE"``, ``"AAPL"``; never a vendor ticker such as ``"RELIANCE.NS"``);
* ``price_date``: ``object`` dtype of ``datetime.date``, the exchange-local trading date
  (``None`` only where a source could not parse a date; validation rejects such rows);
* ``open``, ``high``, ``low``, ``close``, ``volume``: ``float64`` (the DB boundary quantizes).

A source never turns a symbol it could not deliver into an empty success: such a symbol is
listed in ``FetchResult.failures`` with a short reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

BAR_COLUMNS: tuple[str, ...] = ("symbol", "price_date", "open", "high", "low", "close", "volume")
PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")
VALUE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume")


# --------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------


class MarketDataError(Exception):
    """Base class of every market-data failure."""


class SourceConfigError(MarketDataError, ValueError):
    """A source was given bad or missing options; ``option`` names the culprit."""

    def __init__(self, message: str, *, option: str | None = None, source: str | None = None):
        super().__init__(message)
        self.option = option
        self.source = source


class SourceAuthError(SourceConfigError):
    """The source rejected our credentials (HTTP 401/403, expired Kite token): fatal, no retry."""


class SourceUnavailableError(MarketDataError):
    """The whole source is down or throttling us after bounded retries: retry the task later."""

    def __init__(self, message: str, *, source: str | None = None):
        super().__init__(message)
        self.source = source


class UnknownExchangeError(MarketDataError, ValueError):
    """An exchange code we have no trading calendar for."""


class CalendarRangeError(MarketDataError, ValueError):
    """A date or instant outside the range the exchange calendar knows."""


def is_retryable(exc: BaseException) -> bool:
    """Tell whether a market-data exception is worth retrying (for ``retry_condition_fn``)."""
    return isinstance(exc, SourceUnavailableError)


# --------------------------------------------------------------------------------------
# Requests and results
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BarRequest:
    """Daily bars wanted for one symbol on one exchange, ``start`` to ``end`` inclusive."""

    symbol: str
    exchange: str
    start: date
    end: date

    def __post_init__(self) -> None:
        if not isinstance(self.symbol, str) or not self.symbol.strip():
            raise ValueError(f"BarRequest.symbol must be a non-empty string, got {self.symbol!r}")
        if not isinstance(self.exchange, str) or not self.exchange.strip():
            raise ValueError(
                f"BarRequest.exchange must be a non-empty string for {self.symbol!r}, "
                f"got {self.exchange!r}"
            )
        for name in ("start", "end"):
            value = getattr(self, name)
            if isinstance(value, datetime) or not isinstance(value, date):
                raise ValueError(
                    f"BarRequest.{name} for {self.symbol!r} must be a datetime.date, got {value!r}"
                )
        if self.start > self.end:
            raise ValueError(
                f"BarRequest for {self.symbol!r}: start {self.start} is after end {self.end}"
            )


@dataclass
class FetchResult:
    """What a source delivered for one batch of requests."""

    bars: pd.DataFrame
    adjusted: bool
    failures: dict[str, str] = field(default_factory=dict)
    source: str = ""

    @property
    def symbols(self) -> list[str]:
        """List the symbols that have at least one bar, in order of appearance."""
        return list(pd.unique(self.bars["symbol"]))


@runtime_checkable
class MarketDataSource(Protocol):
    """A provider of daily bars: one call per batch of symbols, failures per symbol."""

    name: str

    def fetch_daily_bars(self, requests: Sequence[BarRequest]) -> FetchResult:
        """Fetch daily bars for every request; a failing symbol must not stop the others."""
        ...


# --------------------------------------------------------------------------------------
# Frame helpers
# --------------------------------------------------------------------------------------


def empty_bars() -> pd.DataFrame:
    """Return an empty frame with the canonical columns and dtypes."""
    return pd.DataFrame(
        {
            "symbol": pd.Series([], dtype=object),
            "price_date": pd.Series([], dtype=object),
            **{col: pd.Series([], dtype=np.float64) for col in VALUE_COLUMNS},
        }
    )


def _one_date(value: Any) -> date | None:
    if value is None or value is pd.NaT:
        return None
    if isinstance(value, pd.Timestamp):
        # An aware timestamp keeps its own wall-clock date: 00:00+05:30 is that IST day.
        return value.date()
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, np.datetime64):
        return None if np.isnat(value) else pd.Timestamp(value).date()
    if isinstance(value, str):
        text = value.strip()
        if len(text) >= 10 and text[4] == "-" and text[7] == "-":
            try:
                return date.fromisoformat(text[:10])
            except ValueError:
                return None
        # Never guess: 02-01-2024 is 2 January or 1 February depending on who wrote it. A
        # source with another format parses it itself (the csv source's ``date_format``).
        return None
    if isinstance(value, float) and np.isnan(value):
        return None
    return None


def to_date_array(values: Any) -> np.ndarray:
    """Convert dates, datetimes, timestamps or ISO strings to an object array of ``date``.

    Aware timestamps keep their local date (``2020-10-01T00:00:00+05:30`` is 2020-10-01).
    Strings must be ISO (``YYYY-MM-DD``, optionally with a time and offset): any other text,
    ``02-01-2024`` included, becomes ``None`` (never a guessed day). Unparseable values become
    ``None``. Works on unique values, so it is cheap on big frames.
    """
    ser = values if isinstance(values, pd.Series) else pd.Series(values)
    if len(ser) == 0:
        return np.empty(0, dtype=object)
    if isinstance(ser.dtype, pd.DatetimeTZDtype):
        ser = ser.dt.tz_localize(None)
    if pd.api.types.is_datetime64_any_dtype(ser.dtype):
        normalized = ser.dt.normalize()
        codes, uniques = pd.factorize(normalized, use_na_sentinel=True)
        lookup = np.array([ts.date() for ts in uniques] + [None], dtype=object)
        return lookup[codes]  # code -1 picks the trailing None
    codes, uniques = pd.factorize(ser, use_na_sentinel=True)
    lookup = np.array([_one_date(v) for v in uniques] + [None], dtype=object)
    return lookup[codes]


def normalize_bars(df: pd.DataFrame) -> pd.DataFrame:
    """Return ``df`` coerced to the canonical columns, dtypes and a fresh RangeIndex.

    Extra columns are dropped; non-numeric values become NaN (validation rejects them);
    ``price_date`` accepts dates, datetimes, timestamps (aware ones keep their local date)
    and ISO strings.
    """
    missing = [col for col in BAR_COLUMNS if col not in df.columns]
    if missing:
        raise ValueError(f"bar frame lacks column(s) {missing}; expected {list(BAR_COLUMNS)}")
    if len(df) == 0:
        return empty_bars()
    out: dict[str, Any] = {}
    symbol = df["symbol"]
    if symbol.dtype != object or not all(isinstance(s, str) for s in pd.unique(symbol)):
        symbol = symbol.astype(str)
    out["symbol"] = symbol.to_numpy(dtype=object)
    price_date = df["price_date"]
    if price_date.dtype == object and all(
        type(v) is date
        for v in pd.unique(price_date)  # fast path: already canonical
    ):
        out["price_date"] = price_date.to_numpy(dtype=object)
    else:
        out["price_date"] = to_date_array(price_date)
    for col in VALUE_COLUMNS:
        values = df[col]
        if values.dtype != np.float64:
            values = pd.to_numeric(values, errors="coerce").astype(np.float64)
        out[col] = values.to_numpy(dtype=np.float64)
    return pd.DataFrame(out, columns=list(BAR_COLUMNS))


def concat_bars(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate canonical frames (skipping empty ones) into one canonical frame."""
    parts = [f for f in frames if len(f)]
    if not parts:
        return empty_bars()
    if len(parts) == 1:
        return parts[0].reset_index(drop=True)
    return pd.concat(parts, ignore_index=True)
