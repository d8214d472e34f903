"""The CSV directory source: Yahoo and Kite shapes, local dates, failures, malformed cells."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from saras.marketdata import BarRequest, SourceConfigError, get_source
from saras.marketdata.csv import CsvSource
from saras.marketdata.validation import validate_bars

YAHOO_CSV = """Date,Open,High,Low,Close,Adj Close,Volume
2024-03-01,50.000000,51.000000,49.500000,50.500000,25.250000,1000000
2024-03-04,50.500000,52.000000,50.000000,51.000000,25.500000,1200000
2024-03-05,null,null,null,null,null,null
2024-03-06,51.000000,51.500000,50.250000,50.750000,25.375000,900000
2024-03-07,51.000000,51.500000,50.250000,abc,25.375000,900000
"""

KITE_CSV = """timestamp,open,high,low,close,volume,oi
2023-11-10 00:00:00+05:30,2300.0,2320.0,2290.0,2310.0,5000000,0
2023-11-12 00:00:00+05:30,2330.0,2340.0,2325.0,2335.0,800000,0
2023-11-13 00:00:00+05:30,2335.0,2350.0,2320.0,2340.0,4000000,0
"""

KITE_T_CSV = """date,open,high,low,close,volume
2024-01-01T00:00:00+05:30,100,101,99,100.5,10
2024-01-02T00:00:00+0530,100.5,102,100,101,11
"""

PANDAS_INDEX_CSV = """,Open,High,Low,Close,Volume
2024-03-01,10,11,9,10.5,100
2024-03-04,10.5,11,10,10.8,120
"""


@pytest.fixture
def dump(tmp_path: Path) -> Path:
    (tmp_path / "ACME.csv").write_text(YAHOO_CSV)
    (tmp_path / "RELIANCE.csv").write_text(KITE_CSV)
    (tmp_path / "TCS.csv").write_text(KITE_T_CSV)
    (tmp_path / "GOOG.csv").write_text(PANDAS_INDEX_CSV)
    (tmp_path / "BROKEN.csv").write_text("when,price\n2024-03-01,10\n")
    (tmp_path / "EMPTY.csv").write_text("")
    (tmp_path / "LOWER.csv").write_text(
        "DATE,OPEN,HIGH,LOW,CLOSE,VOLUME\n2024-03-01,1,2,0.5,1.5,7\n"
    )
    return tmp_path


def r(
    symbol: str, exchange: str = "NYSE", start: str = "2024-01-01", end: str = "2024-12-31"
) -> BarRequest:
    return BarRequest(symbol, exchange, date.fromisoformat(start), date.fromisoformat(end))


def test_yahoo_shape_with_malformed_cells(dump: Path) -> None:
    result = get_source("csv", {"path": str(dump)}).fetch_daily_bars([r("ACME")])
    assert result.failures == {} and result.adjusted is False and result.source == "csv"
    bars = result.bars
    assert bars["price_date"].tolist() == [date(2024, 3, d) for d in (1, 4, 5, 6, 7)]
    assert bars.loc[0, "close"] == 50.5 and bars.loc[0, "volume"] == 1_000_000
    checked = validate_bars(bars, "NYSE", today=date(2024, 12, 31))
    assert checked.reject_counts()["nan"] == 2  # the 'null' row and the 'abc' cell
    assert len(checked.valid) == 3


def test_adjust_scales_ohlc_by_adj_close(dump: Path) -> None:
    result = CsvSource({"path": dump, "adjust": True}).fetch_daily_bars([r("ACME")])
    assert result.adjusted is True
    first = result.bars.iloc[0]
    assert first["close"] == pytest.approx(25.25)
    assert first["open"] == pytest.approx(25.0) and first["high"] == pytest.approx(25.5)
    assert first["volume"] == 1_000_000
    # A file without an adjusted close cannot be adjusted: a failure for that symbol only.
    both = CsvSource({"path": dump, "adjust": True}).fetch_daily_bars([r("ACME"), r("GOOG")])
    assert "adjusted close" in both.failures["GOOG"] and "ACME" not in both.failures


def test_kite_shape_keeps_the_local_date(dump: Path) -> None:
    result = CsvSource({"path": dump}).fetch_daily_bars(
        [r("RELIANCE", "NSE", "2023-11-01", "2023-11-30"), r("TCS", "NSE")]
    )
    assert result.failures == {}
    rel = result.bars[result.bars["symbol"] == "RELIANCE"]["price_date"].tolist()
    assert rel == [date(2023, 11, 10), date(2023, 11, 12), date(2023, 11, 13)]
    tcs = result.bars[result.bars["symbol"] == "TCS"]["price_date"].tolist()
    assert tcs == [date(2024, 1, 1), date(2024, 1, 2)]
    checked = validate_bars(result.bars, "NSE", today=date(2024, 12, 31))
    assert checked.off_calendar["price_date"].tolist() == [date(2023, 11, 12)]  # Muhurat


def test_header_variants(dump: Path) -> None:
    result = CsvSource({"path": dump}).fetch_daily_bars([r("GOOG"), r("LOWER")])
    assert result.failures == {}
    assert len(result.bars) == 3


def test_range_filter_and_failures(dump: Path) -> None:
    src = CsvSource({"path": dump})
    result = src.fetch_daily_bars(
        [
            r("ACME", start="2024-03-04", end="2024-03-05"),
            r("NOPE"),
            r("BROKEN"),
            r("EMPTY"),
            r("ACME2", start="2024-03-09", end="2024-03-10"),  # weekend: skipped, no failure
            r("../etc"),
            r("LOWER", start="2024-06-03", end="2024-06-07"),
        ]
    )
    assert result.bars["price_date"].tolist() == [date(2024, 3, 4), date(2024, 3, 5)]
    assert set(result.failures) == {"NOPE", "BROKEN", "EMPTY", "../etc", "LOWER"}
    assert "no file NOPE.csv" in result.failures["NOPE"]
    assert "missing column" in result.failures["BROKEN"]
    assert "no rows" in result.failures["LOWER"]


def test_pattern_option(dump: Path) -> None:
    (dump / "acme-2024.txt").write_text(YAHOO_CSV)
    src = CsvSource({"path": dump, "pattern": "{lower}-2024.txt"})
    assert src.file_for("ACME").name == "acme-2024.txt"
    assert len(src.fetch_daily_bars([r("ACME")]).bars) == 5


def test_config_errors_name_the_option(tmp_path: Path) -> None:
    with pytest.raises(SourceConfigError, match="'path'"):
        CsvSource({})
    with pytest.raises(SourceConfigError, match="pattern"):
        CsvSource({"path": tmp_path, "pattern": "fixed.csv"})
    missing = CsvSource({"path": tmp_path / "nope"})  # construction does no I/O
    with pytest.raises(SourceConfigError, match="does not exist"):
        missing.fetch_daily_bars([r("ACME")])


# --- never guess a date format (issue 10) -----------------------------------------------------

DMY_CSV = """Date,Open,High,Low,Close,Volume
02-01-2024,10,11,9,10.5,100
03-01-2024,10.5,11,10,10.8,120
"""


def test_day_month_dates_are_refused_naming_the_value(tmp_path: Path) -> None:
    (tmp_path / "INFY.csv").write_text(DMY_CSV)
    result = get_source("csv", {"path": str(tmp_path)}).fetch_daily_bars([r("INFY", "NSE")])
    assert len(result.bars) == 0
    assert "'02-01-2024' is not ISO" in result.failures["INFY"]
    assert "date_format" in result.failures["INFY"]


def test_a_declared_date_format_reads_the_right_days(tmp_path: Path) -> None:
    (tmp_path / "INFY.csv").write_text(DMY_CSV)
    source = get_source("csv", {"path": str(tmp_path), "date_format": "%d-%m-%Y"})
    result = source.fetch_daily_bars([r("INFY", "NSE")])
    assert list(result.bars["price_date"]) == [date(2024, 1, 2), date(2024, 1, 3)]


def test_a_date_format_without_codes_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(SourceConfigError, match="date_format"):
        get_source("csv", {"path": str(tmp_path), "date_format": "dd-mm-yyyy"})


def test_an_out_of_range_price_rejects_its_row_only(tmp_path: Path) -> None:
    (tmp_path / "BIG.csv").write_text(
        "Date,Open,High,Low,Close,Volume\n"
        "2024-03-01,10,11,9,10.5,100\n"
        "2024-03-04,10,1e30,9,10.5,100\n"
    )
    result = get_source("csv", {"path": str(tmp_path)}).fetch_daily_bars([r("BIG")])
    checked = validate_bars(result.bars, "NYSE", today=date(2024, 12, 31))
    assert len(checked.valid) == 1
    assert checked.reject_counts()["out_of_range"] == 1
