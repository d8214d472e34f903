"""Bar validation: each reject reason, duplicates, off-calendar flags, gaps, frame helpers."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from saras.marketdata import BAR_COLUMNS, REJECT_REASONS, BarRequest, normalize_bars
from saras.marketdata.base import empty_bars
from saras.marketdata.validation import missing_sessions, validate_bars

NAN = float("nan")
TODAY = date(2024, 7, 10)


def frame(rows: list[tuple]) -> pd.DataFrame:
    return normalize_bars(pd.DataFrame(rows, columns=list(BAR_COLUMNS)))


def test_each_reason_is_counted_once_in_priority_order() -> None:
    rows = [
        ("AAA", date(2024, 7, 1), 10.0, 11.0, 9.0, 10.5, 100.0),  # valid
        ("AAA", date(2024, 7, 2), NAN, 11.0, 9.0, 10.5, 100.0),  # nan
        ("AAA", date(2024, 7, 3), 10.0, 11.0, 0.0, 10.5, 100.0),  # non_positive_price
        ("AAA", date(2024, 7, 5), 10.0, 9.0, 11.0, 10.0, 100.0),  # high_below_low
        ("AAA", date(2024, 7, 8), 12.0, 11.0, 9.0, 10.5, 100.0),  # open_outside_range
        ("AAA", date(2024, 7, 9), 10.0, 11.0, 9.0, 8.5, 100.0),  # close_outside_range
        ("BBB", date(2024, 7, 1), 10.0, 11.0, 9.0, 10.5, -1.0),  # negative_volume
        ("BBB", date(2024, 7, 11), 10.0, 11.0, 9.0, 10.5, 100.0),  # future_date
        ("BBB", date(2024, 7, 2), 10.0, 11.0, 9.0, 10.5, 100.0),  # valid (first)
        ("BBB", date(2024, 7, 2), 10.1, 11.0, 9.0, 10.5, 100.0),  # duplicate
        ("BBB", date(2024, 7, 3), -5.0, NAN, 9.0, 10.5, 100.0),  # nan wins over non_positive
        ("BBB", date(2024, 7, 5), 10.0, 1e30, 9.0, 10.5, 100.0),  # out_of_range (numeric(20,6))
    ]
    result = validate_bars(frame(rows), "NYSE", today=TODAY)
    counts = result.reject_counts()
    assert counts == {
        "nan": 2,
        "out_of_range": 1,
        "non_positive_price": 1,
        "high_below_low": 1,
        "open_outside_range": 1,
        "close_outside_range": 1,
        "negative_volume": 1,
        "future_date": 1,
        "duplicate": 1,
    }
    assert set(counts) == set(REJECT_REASONS)
    assert len(result.valid) == 2
    assert list(result.rejected.columns) == [*BAR_COLUMNS, "reason"]
    dup = result.rejected[result.rejected["reason"] == "duplicate"]
    assert dup["open"].tolist() == [10.1]  # the first one was kept
    assert result.valid.loc[result.valid["symbol"] == "BBB", "open"].tolist() == [10.0]
    assert list(result.valid.index) == [0, 1]


def test_duplicate_of_an_invalid_row_keeps_the_valid_one() -> None:
    rows = [
        ("AAA", date(2024, 7, 1), NAN, 11.0, 9.0, 10.5, 100.0),
        ("AAA", date(2024, 7, 1), 10.0, 11.0, 9.0, 10.5, 100.0),
    ]
    result = validate_bars(frame(rows), "NYSE", today=TODAY)
    assert len(result.valid) == 1 and result.reject_counts()["nan"] == 1
    assert result.reject_counts()["duplicate"] == 0


def test_missing_date_and_non_numeric_cells_are_nan() -> None:
    raw = pd.DataFrame(
        {
            "symbol": ["AAA", "AAA", "AAA"],
            "price_date": ["2024-07-01", "not a date", "2024-07-02T00:00:00+05:30"],
            "open": ["10", "10", "null"],
            "high": [11, 11, 11],
            "low": [9, 9, 9],
            "close": [10, 10, 10],
            "volume": [1, 1, 1],
        }
    )
    result = validate_bars(raw, "NYSE", today=TODAY)
    assert result.reject_counts()["nan"] == 2
    assert result.valid["price_date"].tolist() == [date(2024, 7, 1)]


def test_tolerates_float_noise_at_the_range_edges() -> None:
    rows = [("AAA", date(2024, 7, 1), 11.000000000001, 11.0, 9.0, 9.0, 1.0)]
    assert len(validate_bars(frame(rows), "NYSE", today=TODAY).valid) == 1


def test_off_calendar_bars_are_kept_and_flagged() -> None:
    rows = [
        ("RELIANCE", date(2023, 11, 10), 2300.0, 2320.0, 2290.0, 2310.0, 5e6),  # Friday
        ("RELIANCE", date(2023, 11, 12), 2330.0, 2340.0, 2325.0, 2335.0, 8e5),  # Muhurat, Sunday
        ("RELIANCE", date(2023, 11, 13), 2335.0, 2350.0, 2320.0, 2340.0, 4e6),  # Monday
        ("AAPL", date(2023, 11, 12), 186.0, 187.0, 185.0, 186.5, 1e6),  # Sunday: not NYSE
        ("AAPL", date(2023, 11, 13), 186.0, 187.0, 185.0, 186.5, 1e6),
    ]
    result = validate_bars(
        frame(rows), {"RELIANCE": "NSE", "AAPL": "NASDAQ"}, today=date(2023, 12, 1)
    )
    assert len(result.valid) == 5 and len(result.rejected) == 0
    flagged = sorted(
        zip(result.off_calendar["symbol"], result.off_calendar["price_date"], strict=True)
    )
    assert flagged == [("AAPL", date(2023, 11, 12)), ("RELIANCE", date(2023, 11, 12))]


def test_rejected_bars_are_not_flagged_off_calendar() -> None:
    rows = [("AAA", date(2024, 7, 6), NAN, 11.0, 9.0, 10.0, 1.0)]  # Saturday and broken
    result = validate_bars(frame(rows), "NYSE", today=TODAY)
    assert len(result.off_calendar) == 0 and len(result.rejected) == 1


def test_days_beyond_the_calendar_are_not_flagged() -> None:
    rows = [("AAA", date(2040, 1, 7), 10.0, 11.0, 9.0, 10.0, 1.0)]  # a Saturday, far ahead
    result = validate_bars(frame(rows), "NSE", today=date(2041, 1, 1))
    assert len(result.valid) == 1 and len(result.off_calendar) == 0


def test_a_symbol_without_exchange_is_named() -> None:
    rows = [("AAA", date(2024, 7, 1), 10.0, 11.0, 9.0, 10.0, 1.0)]
    with pytest.raises(ValueError, match="AAA"):
        validate_bars(frame(rows), {"BBB": "NYSE"}, today=TODAY)


def test_empty_frame() -> None:
    result = validate_bars(empty_bars(), "NYSE", today=TODAY)
    assert len(result.valid) == 0 and list(result.rejected.columns) == [*BAR_COLUMNS, "reason"]
    assert result.reject_counts() == dict.fromkeys(REJECT_REASONS, 0)


def test_missing_sessions_lists_gaps_not_holidays() -> None:
    # NYSE 2024-07-01..07-09: sessions 1,2,3,5,8,9 (4th is a holiday). Bars lack the 3rd and 8th.
    days = [1, 2, 5, 9]
    rows = [("AAA", date(2024, 7, d), 10.0, 11.0, 9.0, 10.0, 1.0) for d in days]
    rows += [("BBB", date(2024, 7, d), 10.0, 11.0, 9.0, 10.0, 1.0) for d in (1, 2, 3, 5, 8, 9)]
    bars = frame(rows)
    reqs = [
        BarRequest("AAA", "NYSE", date(2024, 7, 1), date(2024, 7, 9)),
        BarRequest("BBB", "NYSE", date(2024, 7, 1), date(2024, 7, 9)),
        BarRequest("CCC", "NYSE", date(2024, 7, 5), date(2024, 7, 8)),  # no bars at all
        BarRequest("DDD", "NYSE", date(2024, 7, 6), date(2024, 7, 7)),  # weekend only
    ]
    gaps = missing_sessions(bars, reqs)
    assert gaps == {
        "AAA": [date(2024, 7, 3), date(2024, 7, 8)],
        "CCC": [date(2024, 7, 5), date(2024, 7, 8)],
    }
    assert validate_bars(bars, "NYSE", today=TODAY).missing_sessions(reqs) == gaps
    assert missing_sessions(empty_bars(), reqs[:1]) == {
        "AAA": [date(2024, 7, d) for d in (1, 2, 3, 5, 8, 9)]
    }


def test_normalize_bars_coerces_types() -> None:
    raw = pd.DataFrame(
        {
            "symbol": ["AAA"],
            "price_date": pd.to_datetime(["2024-07-01T00:00:00+05:30"]),
            "open": ["10.5"],
            "high": [11],
            "low": [np.int64(9)],
            "close": [10.0],
            "volume": [100],
            "extra": ["dropped"],
        }
    )
    out = normalize_bars(raw)
    assert list(out.columns) == list(BAR_COLUMNS)
    assert out.loc[0, "price_date"] == date(2024, 7, 1)  # local date, not the UTC day before
    assert all(out[c].dtype == np.float64 for c in BAR_COLUMNS[2:])
    with pytest.raises(ValueError, match="volume"):
        normalize_bars(raw.drop(columns=["volume"]))


def test_vectorised_on_a_large_frame() -> None:
    n = 200_000
    dates = pd.bdate_range("2015-01-01", periods=1000).date
    df = pd.DataFrame(
        {
            "symbol": np.repeat(np.array([f"S{i}" for i in range(n // 1000)], dtype=object), 1000),
            "price_date": np.tile(np.array(dates, dtype=object), n // 1000),
            "open": np.full(n, 10.0),
            "high": np.full(n, 11.0),
            "low": np.full(n, 9.0),
            "close": np.full(n, 10.0),
            "volume": np.full(n, 5.0),
        }
    )
    df.loc[7, "close"] = 99.0
    result = validate_bars(df, "NYSE", today=date(2030, 1, 1))
    assert result.reject_counts()["close_outside_range"] == 1
    assert len(result.valid) == n - 1
    assert len(result.off_calendar) > 0  # bdate_range ignores NYSE holidays
