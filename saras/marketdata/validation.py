"""Pure, vectorised validation of canonical daily bars against sanity rules and calendars.

Each rejected row carries one short reason code, the first that applies in this order:

``nan``                 a missing or non-numeric price or volume, or an unparseable date
``out_of_range``        a price or volume the database columns cannot hold (price_history's
                        ``numeric(20, 6)`` prices: below 10^14; ``numeric(24, 4)`` volume:
                        below 10^20), such as a vendor's ``1e30``: that row only, never the batch
``non_positive_price``  open, high, low or close <= 0
``high_below_low``      high < low
``open_outside_range``  open outside [low, high]
``close_outside_range`` close outside [low, high]
``negative_volume``     volume < 0
``future_date``         price_date after ``today``
``duplicate``           a second bar for the same (symbol, price_date): among otherwise valid
                        rows the first one is kept and every later one is rejected

Range checks allow a relative slack of 1e-9 for float noise. Valid bars on a day that is not
a session of the symbol's exchange calendar stay valid and are also listed in
``off_calendar`` (NSE Muhurat trading, special Saturday sessions); days outside the range the
calendar knows are never flagged. ``missing_sessions`` lists calendar sessions a request's range
expects that the bars lack (gaps to report). Everything runs on whole columns: no per-row loops.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

from saras.domain.inputs import PRICE, VOLUME
from saras.marketdata import calendars
from saras.marketdata.base import BAR_COLUMNS, BarRequest, empty_bars, normalize_bars

REJECT_REASONS: tuple[str, ...] = (
    "nan",
    "out_of_range",
    "non_positive_price",
    "high_below_low",
    "open_outside_range",
    "close_outside_range",
    "negative_volume",
    "future_date",
    "duplicate",
)
_REL_TOL = 1e-9
#: the largest magnitudes price_history's columns hold (numeric(20, 6) and numeric(24, 4))
PRICE_LIMIT = 10.0 ** (PRICE[0] - PRICE[1])
VOLUME_LIMIT = 10.0 ** (VOLUME[0] - VOLUME[1])


@dataclass
class ValidationResult:
    """The outcome of ``validate_bars``: valid bars, rejected bars with reasons, flags."""

    valid: pd.DataFrame
    rejected: pd.DataFrame
    off_calendar: pd.DataFrame

    def reject_counts(self) -> dict[str, int]:
        """Count rejected rows per reason code (every code present, zeros included)."""
        counts = self.rejected["reason"].value_counts()
        return {reason: int(counts.get(reason, 0)) for reason in REJECT_REASONS}

    def missing_sessions(self, requests: Iterable[BarRequest]) -> dict[str, list[date]]:
        """List, per symbol, the sessions the valid bars lack (see ``missing_sessions``)."""
        return missing_sessions(self.valid, requests)


def _is_canonical(df: pd.DataFrame) -> bool:
    if list(df.columns) != list(BAR_COLUMNS):
        return False
    dtypes = df.dtypes
    return (
        dtypes["symbol"] == np.dtype(object)
        and dtypes["price_date"] == np.dtype(object)
        and all(dtypes[c] == np.float64 for c in BAR_COLUMNS[2:])
        and all(isinstance(s, str) for s in pd.unique(df["symbol"]))
    )


def _select(df: pd.DataFrame, mask: np.ndarray) -> pd.DataFrame:
    """Return the masked rows with a fresh RangeIndex (no copy when every row is kept)."""
    out = df.copy(deep=False) if mask.all() else df.take(np.flatnonzero(mask))
    out.index = pd.RangeIndex(len(out))
    return out


def validate_bars(
    bars: pd.DataFrame, exchange_of: Mapping[str, str] | str, *, today: date
) -> ValidationResult:
    """Split bars into valid and rejected rows and flag valid bars on non-session days.

    ``exchange_of`` is one exchange code for every symbol or a mapping symbol -> exchange code
    (every symbol in ``bars`` must be in it).
    """
    df = bars if _is_canonical(bars) else normalize_bars(bars)
    date_codes, date_uniques = pd.factorize(df["price_date"], use_na_sentinel=True)
    if not all(type(d) is date for d in date_uniques):
        df = normalize_bars(df)
        date_codes, date_uniques = pd.factorize(df["price_date"], use_na_sentinel=True)
    n = len(df)
    if n == 0:
        rejected = empty_bars()
        rejected["reason"] = pd.Series([], dtype=object)
        return ValidationResult(valid=empty_bars(), rejected=rejected, off_calendar=empty_bars())

    sym_codes, sym_uniques = pd.factorize(df["symbol"])
    unique_days = np.array(list(date_uniques), dtype="datetime64[D]")
    code = _reason_codes(df, date_codes, unique_days, today)
    ok = code == 0
    if ok.any():
        key = sym_codes.astype(np.int64) * (len(date_uniques) + 1) + date_codes
        dup_in_ok = pd.Series(key[ok]).duplicated(keep="first").to_numpy()
        ok_idx = np.flatnonzero(ok)
        code[ok_idx[dup_in_ok]] = 9
        ok[ok_idx[dup_in_ok]] = False
    off_row = _off_calendar_rows(sym_codes, sym_uniques, date_codes, unique_days, exchange_of)

    reasons = np.array(("", *REJECT_REASONS), dtype=object)[code[~ok]]
    valid = _select(df, ok)
    rejected = _select(df, ~ok).assign(reason=reasons)
    off_calendar = _select(df, ok & off_row)
    return ValidationResult(valid=valid, rejected=rejected, off_calendar=off_calendar)


def _reason_codes(
    df: pd.DataFrame, date_codes: np.ndarray, unique_days: np.ndarray, today: date
) -> np.ndarray:
    """Return each row's first failing rule as 1..8 (``REJECT_REASONS`` order), 0 when none."""
    o = df["open"].to_numpy()
    h = df["high"].to_numpy()
    lo = df["low"].to_numpy()
    c = df["close"].to_numpy()
    v = df["volume"].to_numpy()
    with np.errstate(invalid="ignore"):
        is_nan = ~(np.isfinite(o) & np.isfinite(h) & np.isfinite(lo) & np.isfinite(c))
        is_nan |= ~np.isfinite(v)
        is_nan |= date_codes < 0
        too_big = (np.abs(o) >= PRICE_LIMIT) | (np.abs(h) >= PRICE_LIMIT)
        too_big |= (np.abs(lo) >= PRICE_LIMIT) | (np.abs(c) >= PRICE_LIMIT)
        too_big |= np.abs(v) >= VOLUME_LIMIT
        non_positive = (o <= 0) | (h <= 0) | (lo <= 0) | (c <= 0)
        high_below_low = h < lo
        upper = h * (1 + _REL_TOL)
        lower = lo * (1 - _REL_TOL)
        open_outside = (o > upper) | (o < lower)
        close_outside = (c > upper) | (c < lower)
        negative_volume = v < 0
    future_unique = unique_days > np.datetime64(today, "D")
    future = np.zeros(len(df), dtype=bool)
    has_date = date_codes >= 0
    future[has_date] = future_unique[date_codes[has_date]]
    return np.select(
        [
            is_nan,
            too_big,
            non_positive,
            high_below_low,
            open_outside,
            close_outside,
            negative_volume,
            future,
        ],
        [1, 2, 3, 4, 5, 6, 7, 8],
        default=0,
    ).astype(np.int8)


def _off_calendar_rows(
    sym_codes: np.ndarray,
    sym_uniques: Iterable[str],
    date_codes: np.ndarray,
    unique_days: np.ndarray,
    exchange_of: Mapping[str, str] | str,
) -> np.ndarray:
    """Flag rows dated on a day their symbol's calendar knows and holds no session."""
    # one lookup table (calendar x unique date), then a gather per row
    cal_of_symbol = _calendar_per_symbol(sym_uniques, exchange_of)
    cal_names = sorted(set(cal_of_symbol))
    cal_index = {name: i for i, name in enumerate(cal_names)}
    off_table = np.zeros((len(cal_names), len(unique_days) + 1), dtype=bool)
    for name, i in cal_index.items():
        days = calendars._session_days(name)
        known = (unique_days >= days[0]) & (unique_days <= days[-1])
        off_table[i, :-1] = known & ~np.isin(unique_days, days)
    sym_cal = np.array([cal_index[name] for name in cal_of_symbol], dtype=np.int64)
    off_row: np.ndarray = off_table[sym_cal[sym_codes], date_codes]  # -1 hits the trailing False
    return off_row


def _calendar_per_symbol(symbols: Iterable[str], exchange_of: Mapping[str, str] | str) -> list[str]:
    syms = list(symbols)
    if isinstance(exchange_of, str):
        name = calendars.calendar_for(exchange_of)
        return [name] * len(syms)
    missing = [s for s in syms if s not in exchange_of]
    if missing:
        shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise ValueError(f"no exchange given for {len(missing)} symbol(s): {shown}")
    return [calendars.calendar_for(exchange_of[s]) for s in syms]


def missing_sessions(bars: pd.DataFrame, requests: Iterable[BarRequest]) -> dict[str, list[date]]:
    """List, per requested symbol, the calendar sessions in its range that ``bars`` lack.

    Only symbols with at least one gap appear. A symbol with no bars at all lists every
    session of its range. Sessions outside the calendar's known range are never expected.
    """
    reqs = list(requests)
    if not reqs:
        return {}
    if len(bars):
        sym_codes, sym_uniques = pd.factorize(bars["symbol"])
        date_codes, date_uniques = pd.factorize(bars["price_date"], use_na_sentinel=True)
        unique_days = np.array(
            [np.datetime64(d, "D") for d in date_uniques] + [np.datetime64("NaT")],
            dtype="datetime64[D]",
        )
        row_days = unique_days[date_codes]
        order = np.lexsort((row_days, sym_codes))
        sorted_codes = sym_codes[order]
        sorted_days = row_days[order]
        code_of = {sym: i for i, sym in enumerate(sym_uniques)}
    else:
        sorted_codes = np.empty(0, dtype=np.int64)
        sorted_days = np.empty(0, dtype="datetime64[D]")
        code_of = {}

    out: dict[str, list[date]] = {}
    for req in reqs:
        name = calendars.calendar_for(req.exchange)
        days = calendars._session_days(name)
        lo = int(np.searchsorted(days, np.datetime64(req.start, "D"), side="left"))
        hi = int(np.searchsorted(days, np.datetime64(req.end, "D"), side="right"))
        if hi <= lo:
            continue
        expected = days[lo:hi]
        code = code_of.get(req.symbol)
        if code is None:
            present = np.empty(0, dtype="datetime64[D]")
        else:
            a = int(np.searchsorted(sorted_codes, code, side="left"))
            b = int(np.searchsorted(sorted_codes, code, side="right"))
            present = sorted_days[a:b]
        lacking = ~np.isin(expected, present)
        if lacking.any():
            out[req.symbol] = list(calendars._session_dates(name)[lo:hi][lacking])
    return out
