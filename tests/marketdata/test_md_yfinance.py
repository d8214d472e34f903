"""The yfinance source through the real yfinance + curl_cffi against a local fake Yahoo."""

from __future__ import annotations

from datetime import date, time
from decimal import Decimal
from types import ModuleType
from typing import Any

import pytest

from saras.marketdata import BarRequest, SourceConfigError, SourceUnavailableError, get_source
from saras.marketdata.validation import missing_sessions, validate_bars
from saras.marketdata.yfinance_source import YFinanceSource

# Our own small fixture values. NYSE: 2024-07-04 is a holiday, the 3rd closes early.
ACME = [
    ("2024-07-01", 20.0, 20.8, 19.9, 20.5, 10.25, 1_000_000),
    ("2024-07-02", 20.5, 21.0, 20.2, 20.9, 10.45, 1_100_000),
    ("2024-07-03", 20.9, 21.1, 20.7, 21.0, 10.50, 600_000),
    ("2024-07-05", 21.0, 21.6, 20.9, 21.4, 10.70, 1_300_000),
    ("2024-07-08", 21.4, 21.5, 20.6, 20.8, 10.40, 900_000),
]
BOLT = [
    ("2024-07-01", 5.0, 5.2, 4.9, 5.1, 200_000),
    ("2024-07-02", 5.1, 5.3, 5.0, 5.2, 210_000),
    ("2024-07-03", 5.2, 5.2, 5.0, 5.05, 150_000),
    ("2024-07-05", 5.05, 5.4, 5.0, 5.3, 220_000),
]
TATA = [
    ("2024-07-01", 1000.0, 1010.0, 990.0, 1005.0, 50_000),
    ("2024-07-02", 1005.0, 1020.0, 1000.0, 1015.0, 52_000),
    ("2024-07-03", 1015.0, 1016.0, 1001.0, 1002.0, 48_000),
    ("2024-07-04", 1002.0, 1012.0, 998.0, 1010.0, 51_000),
    ("2024-07-05", 1010.0, 1030.0, 1008.0, 1025.0, 60_000),
]


def r(
    symbol: str, exchange: str = "NYSE", start: str = "2024-07-01", end: str = "2024-07-05"
) -> BarRequest:
    return BarRequest(symbol, exchange, date.fromisoformat(start), date.fromisoformat(end))


def serve(fake_yahoo: Any) -> None:
    fake_yahoo.add_symbol("ACME", ACME)
    fake_yahoo.add_symbol("BOLT", BOLT, exchange="NMS")
    fake_yahoo.add_symbol(
        "TATA.NS", TATA, tz="Asia/Kolkata", exchange="NSI", currency="INR", open_time=time(9, 15)
    )


def test_multi_symbol_download_across_exchanges(
    fake_yahoo: Any, yahoo_session: Any, sleeps: Any
) -> None:
    serve(fake_yahoo)
    reqs = [r("ACME"), r("BOLT", "NASDAQ"), r("TATA", "NSE")]
    src = get_source("yfinance", {"session": yahoo_session}, sleep=sleeps)
    result = src.fetch_daily_bars(reqs)
    assert result.failures == {} and sleeps.calls == []
    assert result.adjusted is True and result.source == "yfinance"
    bars = result.bars
    assert set(bars["symbol"]) == {"ACME", "BOLT", "TATA"}  # never 'TATA.NS'
    acme = bars[bars["symbol"] == "ACME"]
    # end is inclusive; the holiday has no bar (and the outer join adds none).
    assert acme["price_date"].tolist() == [date(2024, 7, d) for d in (1, 2, 3, 5)]
    # auto_adjust: OHLC scaled by adjclose/close (here exactly one half).
    assert acme["close"].tolist() == pytest.approx([10.25, 10.45, 10.50, 10.70])
    assert acme["open"].iloc[0] == pytest.approx(10.0)
    tata = bars[bars["symbol"] == "TATA"]
    assert tata["price_date"].tolist() == [date(2024, 7, d) for d in (1, 2, 3, 4, 5)]
    assert tata["close"].iloc[-1] == pytest.approx(1025.0)
    exchange_of = {"ACME": "NYSE", "BOLT": "NASDAQ", "TATA": "NSE"}
    checked = validate_bars(bars, exchange_of, today=date(2024, 7, 31))
    assert len(checked.rejected) == 0 and len(checked.off_calendar) == 0
    assert missing_sessions(checked.valid, reqs) == {}  # the holiday is not a gap
    # One chart request per ticker for the bars, with end + 1 day as period2.
    chart = [q for q in fake_yahoo.chart_requests("ACME") if "period1" in q.args]
    assert len(chart) == 1


def test_unadjusted_uses_close(fake_yahoo: Any, yahoo_session: Any) -> None:
    serve(fake_yahoo)
    src = YFinanceSource({"session": yahoo_session, "auto_adjust": False, "threads": 1})
    result = src.fetch_daily_bars([r("ACME")])
    assert result.adjusted is False
    assert result.bars["close"].tolist() == pytest.approx([20.5, 20.9, 21.0, 21.4])


def test_unknown_symbol_is_a_failure_and_others_succeed(
    fake_yahoo: Any, yahoo_session: Any, sleeps: Any
) -> None:
    serve(fake_yahoo)
    src = YFinanceSource({"session": yahoo_session, "max_retries": 1}, sleep=sleeps)
    result = src.fetch_daily_bars([r("ACME"), r("GHOST"), r("BOLT", "NASDAQ")])
    assert set(result.bars["symbol"]) == {"ACME", "BOLT"}
    assert list(result.failures) == ["GHOST"]
    assert result.failures["GHOST"].startswith("GHOST: ")
    assert len(result.failures["GHOST"]) > len("GHOST: ")  # yfinance's own reason text
    assert sleeps.calls == [2.0]  # one bounded retry, for the failed symbol only
    assert len([q for q in fake_yahoo.chart_requests("ACME") if "period1" in q.args]) == 1
    assert len(fake_yahoo.chart_requests("GHOST")) >= 2


def test_rate_limited_symbol_is_retried_then_delivered(
    fakes: ModuleType, fake_yahoo: Any, yahoo_session: Any, sleeps: Any
) -> None:
    serve(fake_yahoo)
    # yfinance asks twice per attempt on an error status: two 429s fail exactly one attempt.
    fake_yahoo.fail_next("/v8/finance/chart/BOLT", fakes.YAHOO_429, times=2)
    src = YFinanceSource({"session": yahoo_session}, sleep=sleeps)
    result = src.fetch_daily_bars([r("ACME"), r("BOLT", "NASDAQ")])
    assert result.failures == {}
    assert set(result.bars["symbol"]) == {"ACME", "BOLT"}
    assert sleeps.calls == [2.0]


def test_rate_limit_that_persists_is_a_failure_with_reason(
    fakes: ModuleType, fake_yahoo: Any, yahoo_session: Any, sleeps: Any
) -> None:
    serve(fake_yahoo)
    fake_yahoo.fail_next("/v8/finance/chart/BOLT", fakes.YAHOO_429, times=50)
    src = YFinanceSource({"session": yahoo_session, "max_retries": 2}, sleep=sleeps)
    result = src.fetch_daily_bars([r("ACME"), r("BOLT", "NASDAQ")])
    assert set(result.bars["symbol"]) == {"ACME"}
    assert "Rate limited" in result.failures["BOLT"] or "Too Many" in result.failures["BOLT"]
    assert sleeps.calls == [2.0, 4.0]


def test_whole_source_rate_limited_is_unavailable(
    fakes: ModuleType, fake_yahoo: Any, yahoo_session: Any, sleeps: Any
) -> None:
    serve(fake_yahoo)
    fake_yahoo.fail_next("/v8/finance/chart/", fakes.YAHOO_429, times=500)
    src = YFinanceSource({"session": yahoo_session, "max_retries": 1, "threads": 1}, sleep=sleeps)
    with pytest.raises(SourceUnavailableError, match="yfinance"):
        src.fetch_daily_bars([r("ACME"), r("BOLT", "NASDAQ")])


def test_null_cells_arrive_as_nan_for_validation(fake_yahoo: Any, yahoo_session: Any) -> None:
    rows = [
        ("2024-07-01", 20.0, 20.8, 19.9, 20.5, 1000),
        ("2024-07-02", 20.5, 21.0, None, 20.9, 1000),
    ]
    fake_yahoo.add_symbol("HOLE", rows)
    result = YFinanceSource({"session": yahoo_session, "auto_adjust": False}).fetch_daily_bars(
        [r("HOLE")]
    )
    checked = validate_bars(result.bars, "NYSE", today=date(2024, 7, 31))
    assert checked.reject_counts()["nan"] == 1 and len(checked.valid) == 1


def test_weekend_only_request_asks_nothing(fake_yahoo: Any, yahoo_session: Any) -> None:
    src = YFinanceSource({"session": yahoo_session})
    result = src.fetch_daily_bars([r("ACME", start="2024-07-06", end="2024-07-07")])
    assert len(result.bars) == 0 and result.failures == {}
    assert fake_yahoo.requests == []


def test_ticker_mapping_and_options() -> None:
    src = YFinanceSource({"tickers": {"M&M": "M&M.NS"}})
    assert src.yahoo_ticker("RELIANCE", "NSE") == "RELIANCE.NS"
    assert src.yahoo_ticker("RELIANCE", "BSE") == "RELIANCE.BO"
    assert src.yahoo_ticker("BRK.B", "NYSE") == "BRK-B"
    assert src.yahoo_ticker("M&M", "NSE") == "M&M.NS"
    with pytest.raises(SourceConfigError, match="session"):
        YFinanceSource({"session": object()})
    with pytest.raises(SourceConfigError, match="batch_size"):
        YFinanceSource({"batch_size": 0})


def test_splits_and_dividends_come_from_yahoos_events(
    fake_yahoo: Any, yahoo_session: Any, sleeps: Any
) -> None:
    fake_yahoo.add_symbol(
        "ACME", ACME, dividends={"2024-07-02": 0.24}, splits={"2024-07-05": (4, 1)}
    )
    fake_yahoo.add_symbol("BOLT", BOLT, splits={"2024-07-03": (1, 10)})
    src = get_source("yfinance", {"session": yahoo_session}, sleep=sleeps)

    result = src.fetch_daily_bars([r("ACME"), r("BOLT", "NASDAQ")])

    found = {(a.symbol, a.action_type, a.ex_date): a for a in result.actions}
    assert set(found) == {
        ("ACME", "dividend", date(2024, 7, 2)),
        ("ACME", "split", date(2024, 7, 5)),
        ("BOLT", "reverse_split", date(2024, 7, 3)),
    }
    assert found[("ACME", "dividend", date(2024, 7, 2))].cash_amount == Decimal("0.24")
    assert found[("ACME", "split", date(2024, 7, 5))].ratio == Decimal("4")
    assert found[("BOLT", "reverse_split", date(2024, 7, 3))].ratio == Decimal("0.1")
    # the bars are still only the sessions
    assert len(result.bars[result.bars["symbol"] == "ACME"]) == 4
