"""Replays of the shared reference data (skipped when ``<repo>/../shared/reference`` is absent).

The reference files are read in place, never copied into the repository.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from types import ModuleType
from typing import Any

import pandas as pd
import pytest

from saras.brokers.zerodha.data import KiteSource
from saras.marketdata import BarRequest, calendars
from saras.marketdata.csv import CsvSource
from saras.marketdata.validation import missing_sessions, validate_bars
from saras.marketdata.yfinance_source import YFinanceSource

WIDE = (date(1990, 1, 1), date(2025, 12, 31))


def test_yahoo_chart_json_through_yfinance(
    reference_dir: Path, fake_yahoo: Any, yahoo_session: Any
) -> None:
    payload = json.loads((reference_dir / "wire/yahoo/chart_ORCL_2014_1d.json").read_text())
    fake_yahoo.add_chart_payload("ORCL", payload)
    quote = payload["chart"]["result"][0]["indicators"]["quote"][0]
    adjclose = payload["chart"]["result"][0]["indicators"]["adjclose"][0]["adjclose"]
    req = BarRequest("ORCL", "NYSE", date(2014, 1, 1), date(2014, 12, 31))

    raw = YFinanceSource({"session": yahoo_session, "auto_adjust": False}).fetch_daily_bars([req])
    assert raw.failures == {}
    bars = raw.bars
    assert len(bars) == len(quote["close"]) == 252
    assert bars["close"].tolist() == pytest.approx(quote["close"])
    assert bars["price_date"].iloc[0] == date(2014, 1, 2)
    assert bars["price_date"].iloc[-1] == date(2014, 12, 31)
    checked = validate_bars(bars, "NYSE", today=date(2026, 1, 1))
    assert len(checked.rejected) == 0 and len(checked.off_calendar) == 0
    assert missing_sessions(bars, [req]) == {}

    adjusted = YFinanceSource({"session": yahoo_session}).fetch_daily_bars([req])
    assert adjusted.adjusted is True
    assert adjusted.bars["close"].tolist() == pytest.approx(adjclose)


CSV_FILES = [
    # (directory, pattern, symbol, exchange, check_calendar)
    ("ohlcv/backtrader", "{lower}-1995-2014.txt", "ORCL", "NYSE", True),
    ("ohlcv/backtrader", "{lower}-1999-2014.txt", "NVDA", "NASDAQ", True),
    ("ohlcv/backtrader", "{lower}-1996-2015.txt", "YHOO", "NASDAQ", True),
    ("ohlcv/backtrader", "{lower}-2014.txt", "ORCL", "NYSE", True),
    ("ohlcv/backtrader", "{symbol}.txt", "2006-day-001", "NYSE", False),  # a European index
    ("ohlcv/backtrader", "{symbol}.txt", "2005-2006-day-001", "NYSE", False),
    ("ohlcv/backtesting.py", "{symbol}.csv", "GOOG", "NASDAQ", True),
    ("ohlcv/nse-kite-daily", "{symbol}_2020-10-01_to_2025-09-30.csv", "RELIANCE", "NSE", True),
    ("ohlcv/nse-kite-daily", "{symbol}_2020-10-01_to_2025-09-30.csv", "INFY", "NSE", True),
    ("ohlcv/nse-kite-daily", "{symbol}_2020-10-01_to_2025-09-30.csv", "TCS", "NSE", True),
    ("ohlcv/nse-kite-daily", "{symbol}_2020-10-01_to_2025-09-30.csv", "HDFCBANK", "NSE", True),
    ("ohlcv/nse-kite-daily", "{symbol}_2020-10-01_to_2025-09-30.csv", "SBIN", "NSE", True),
]


@pytest.mark.parametrize(
    ("folder", "pattern", "symbol", "exchange", "check_calendar"),
    CSV_FILES,
    ids=[f"{c[2]}:{c[1]}" for c in CSV_FILES],
)
def test_reference_csvs_load_and_validate(
    reference_dir: Path, folder: str, pattern: str, symbol: str, exchange: str, check_calendar: bool
) -> None:
    path = reference_dir / folder
    rows_in_file = (
        sum(1 for _ in path.joinpath(pattern.format(symbol=symbol, lower=symbol.lower())).open())
        - 1
    )
    src = CsvSource({"path": str(path), "pattern": pattern})
    result = src.fetch_daily_bars([BarRequest(symbol, exchange, *WIDE)])
    assert result.failures == {}
    assert len(result.bars) == rows_in_file  # every row delivered, none silently dropped
    checked = validate_bars(result.bars, exchange, today=date(2026, 1, 1))
    counts = checked.reject_counts()
    assert len(checked.valid) + sum(counts.values()) == rows_in_file
    assert len(checked.valid) >= 0.99 * rows_in_file, counts
    if check_calendar:
        first, last = checked.valid["price_date"].min(), checked.valid["price_date"].max()
        gaps = missing_sessions(checked.valid, [BarRequest(symbol, exchange, first, last)])
        assert len(gaps.get(symbol, [])) <= 0.01 * rows_in_file
        # Off-calendar bars are special sessions: few, kept in valid.
        assert len(checked.off_calendar) <= 0.01 * rows_in_file
        if exchange == "NSE":
            flagged = set(checked.off_calendar["price_date"])
            assert date(2023, 11, 12) in flagged  # Muhurat trading, a Sunday
            assert not calendars.is_session("NSE", date(2023, 11, 12))


def test_nse_daily_csv_replayed_through_kite(reference_dir: Path, fake_kite: Any) -> None:
    csv = reference_dir / "ohlcv/nse-kite-daily/INFY_2020-10-01_to_2025-09-30.csv"
    frame = pd.read_csv(csv)
    rows = [
        [ts.replace(" ", "T").replace("+05:30", "+0530"), o, h, lo, c, int(v)]
        for ts, o, h, lo, c, v in frame[
            ["timestamp", "open", "high", "low", "close", "volume"]
        ].itertuples(index=False)
    ]
    fake_kite.add_instrument("NSE", "INFY", 408065)
    fake_kite.add_candle_rows(408065, rows)
    src = KiteSource(
        {"api_key": "kitekey", "access_token": "kitetoken", "root": fake_kite.url, "max_days": 700},
        sleep=lambda s: None,
    )
    req = BarRequest("INFY", "NSE", date(2020, 10, 1), date(2025, 9, 30))
    result = src.fetch_daily_bars([req])
    assert len(result.bars) == len(frame)
    assert len(fake_kite.historical_requests()) == 3  # 1826 days in spans of 700
    assert result.bars["price_date"].iloc[0] == date(2020, 10, 1)
    checked = validate_bars(result.bars, "NSE", today=date(2026, 1, 1))
    assert len(checked.rejected) == 0
    assert missing_sessions(checked.valid, [req]) == {}


def test_kite_wire_files_through_the_sdk(
    reference_dir: Path, fakes: ModuleType, fake_kite: Any
) -> None:
    wire = reference_dir / "wire/kite"
    fake_kite.fail_next(
        "/instruments/NSE",
        fakes.Scripted(200, (wire / "instruments_nse.csv").read_text(), "text/csv"),
    )
    fake_kite.fail_next(
        "/instruments/historical/",
        fakes.Scripted(200, json.loads((wire / "historical_minute.json").read_text())),
    )
    src = KiteSource(
        {"api_key": "kitekey", "access_token": "kitetoken", "root": fake_kite.url},
        sleep=lambda s: None,
    )
    assert src.instrument_token("BANKBEES", "NSE") == 2928385
    result = src.fetch_daily_bars(
        [BarRequest("BANKBEES", "NSE", date(2017, 12, 15), date(2017, 12, 15))]
    )
    assert fake_kite.historical_requests()[0].path == "/instruments/historical/2928385/day"
    # Minute candles all fall on the same IST day: one bar survives, the rest are duplicates.
    assert set(result.bars["price_date"]) == {date(2017, 12, 15)}
    checked = validate_bars(result.bars, "NSE", today=date(2026, 1, 1))
    assert len(checked.valid) == 1 and checked.reject_counts()["duplicate"] == len(result.bars) - 1
