"""The Kite source through the real kiteconnect client against a local fake Kite API."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from saras.brokers.zerodha.data import KiteSource, day_spans
from saras.marketdata import (
    BarRequest,
    SourceAuthError,
    SourceConfigError,
    SourceUnavailableError,
    get_source,
)
from saras.marketdata.validation import validate_bars
from tests.fakes.fake_alpaca import FakeClock

RELIANCE = [
    ("2023-11-09", 2290.0, 2305.0, 2280.0, 2300.0, 4_100_000),
    ("2023-11-10", 2300.0, 2320.0, 2290.0, 2310.0, 5_000_000),
    ("2023-11-12", 2330.0, 2340.0, 2325.0, 2335.0, 800_000),  # Muhurat (a Sunday)
    ("2023-11-13", 2335.0, 2350.0, 2320.0, 2340.0, 4_000_000),
]
INFY = [
    ("2023-11-09", 1390.0, 1400.0, 1385.0, 1395.0, 3_000_000),
    ("2023-11-10", 1395.0, 1399.0, 1380.0, 1384.0, 2_500_000),
]


@pytest.fixture
def kite(fake_kite: Any) -> Any:
    fake_kite.add_instrument("NSE", "RELIANCE", 738561, "RELIANCE INDUSTRIES")
    fake_kite.add_instrument("NSE", "INFY", 408065, "INFOSYS")
    fake_kite.add_instrument("NSE", "NIFTY 50", 256265, segment="INDICES")
    fake_kite.add_instrument("BSE", "RELIANCE", 128083204, "RELIANCE INDUSTRIES")
    fake_kite.add_candles(738561, RELIANCE)
    fake_kite.add_candles(408065, INFY, colon_offset=True)
    return fake_kite


def opts(fake: Any, **extra: Any) -> dict[str, Any]:
    return {"api_key": "kitekey", "access_token": "kitetoken", "root": fake.url, **extra}


def r(
    symbol: str, start: str = "2023-11-01", end: str = "2023-11-30", exchange: str = "NSE"
) -> BarRequest:
    return BarRequest(symbol, exchange, date.fromisoformat(start), date.fromisoformat(end))


def test_instruments_resolve_and_candles_keep_the_ist_date(kite: Any) -> None:
    clock = FakeClock(start=100.0)
    src = KiteSource(opts(kite), sleep=clock.sleep, clock=clock)
    result = src.fetch_daily_bars([r("RELIANCE"), r("INFY")])
    assert result.failures == {} and result.adjusted is True and result.source == "kite"
    rel = result.bars[result.bars["symbol"] == "RELIANCE"]
    assert rel["price_date"].tolist() == [date(2023, 11, d) for d in (9, 10, 12, 13)]
    infy = result.bars[result.bars["symbol"] == "INFY"]
    assert infy["price_date"].tolist() == [date(2023, 11, 9), date(2023, 11, 10)]
    assert len(kite.seen("/instruments/NSE")) == 1  # one dump for both symbols
    paths = [q.path for q in kite.historical_requests()]
    assert paths == ["/instruments/historical/738561/day", "/instruments/historical/408065/day"]
    first = kite.historical_requests()[0].args
    assert first["from"] == "2023-11-01 00:00:00" and first["to"] == "2023-11-30 23:59:59"
    # 3 requests at most 3/s: the limiter spaced them 1/3 s apart.
    assert clock.sleeps == pytest.approx([1 / 3, 1 / 3])
    checked = validate_bars(result.bars, "NSE", today=date(2023, 12, 1))
    assert checked.off_calendar["price_date"].tolist() == [date(2023, 11, 12)]
    # The instruments dump is cached on the instance.
    src.fetch_daily_bars([r("INFY")])
    assert len(kite.seen("/instruments/NSE")) == 1


def test_bse_uses_its_own_dump(kite: Any) -> None:
    kite.add_candles(128083204, RELIANCE[:2])
    src = KiteSource(opts(kite), sleep=lambda s: None)
    result = src.fetch_daily_bars([r("RELIANCE", exchange="BSE")])
    assert len(result.bars) == 2
    assert kite.historical_requests()[0].path == "/instruments/historical/128083204/day"


def test_long_ranges_are_split_into_allowed_spans(kite: Any) -> None:
    src = KiteSource(opts(kite), sleep=lambda s: None)
    result = src.fetch_daily_bars([r("RELIANCE", "2015-01-01", "2024-12-31")])
    assert len(result.bars) == 4
    seen = [(q.args["from"], q.args["to"]) for q in kite.historical_requests()]
    assert seen == [
        ("2015-01-01 00:00:00", "2020-06-22 23:59:59"),
        ("2020-06-23 00:00:00", "2024-12-31 23:59:59"),
    ]
    assert day_spans(date(2024, 1, 1), date(2024, 1, 10), 4) == [
        (date(2024, 1, 1), date(2024, 1, 4)),
        (date(2024, 1, 5), date(2024, 1, 8)),
        (date(2024, 1, 9), date(2024, 1, 10)),
    ]


def test_expired_token_is_fatal_and_says_log_in(fake_kite: Any) -> None:
    src = KiteSource(opts(fake_kite, access_token="stale-token-123"), sleep=lambda s: None)
    with pytest.raises(SourceAuthError, match="log in to Kite again") as err:
        src.fetch_daily_bars([r("RELIANCE")])
    assert "stale-token-123" not in str(err.value)
    assert len(fake_kite.requests) == 1  # never retried


def test_token_expiring_mid_batch_stops_the_batch(fakes: ModuleType, kite: Any) -> None:
    kite.fail_next("/instruments/historical/408065", fakes.KITE_TOKEN_EXPIRED)
    src = KiteSource(opts(kite), sleep=lambda s: None)
    with pytest.raises(SourceAuthError):
        src.fetch_daily_bars([r("RELIANCE"), r("INFY")])


def test_gateway_page_and_throttling_are_retried(fakes: ModuleType, kite: Any) -> None:
    kite.fail_next("/instruments/historical/738561", fakes.KITE_502_HTML)
    kite.fail_next("/instruments/historical/738561", fakes.KITE_429)
    clock = FakeClock(start=100.0)
    src = KiteSource(opts(kite, rate_per_second=0), sleep=clock.sleep, clock=clock)
    result = src.fetch_daily_bars([r("RELIANCE")])
    assert len(result.bars) == 4 and result.failures == {}
    assert clock.sleeps == [1.0, 2.0]  # exponential backoff
    assert len(kite.historical_requests()) == 3


def test_unknown_symbols_and_bad_tokens_fail_alone(kite: Any) -> None:
    src = KiteSource(opts(kite, instrument_tokens={"OLDCO": 999}), sleep=lambda s: None)
    result = src.fetch_daily_bars([r("GHOST"), r("OLDCO"), r("INFY"), r("AAPL", exchange="NYSE")])
    assert set(result.bars["symbol"]) == {"INFY"}
    assert "not in kite's NSE instruments list" in result.failures["GHOST"]
    assert "invalid token" in result.failures["OLDCO"]
    assert "NSE and BSE only" in result.failures["AAPL"]


def test_persistent_outage_trips_the_breaker(fakes: ModuleType, kite: Any) -> None:
    kite.add_instrument("NSE", "TCS", 2953217)
    kite.add_instrument("NSE", "SBIN", 779521)
    kite.add_candles(2953217, INFY)
    kite.add_candles(779521, INFY)
    for token in (408065, 2953217):
        kite.fail_next(f"/instruments/historical/{token}", fakes.KITE_503, times=10)
    src = KiteSource(opts(kite, max_retries=1, max_consecutive_failures=2), sleep=lambda s: None)
    result = src.fetch_daily_bars([r("RELIANCE"), r("INFY"), r("TCS"), r("SBIN")])
    assert set(result.bars["symbol"]) == {"RELIANCE"}
    assert set(result.failures) == {"INFY", "TCS", "SBIN"}
    assert "NetworkException (503)" in result.failures["INFY"]
    assert "after 1 retries" in result.failures["TCS"]
    assert "not attempted" in result.failures["SBIN"]
    assert all("/779521/" not in q.path for q in kite.historical_requests())
    assert len(kite.historical_requests()) == 1 + 2 + 2


def test_nothing_delivered_through_an_outage_is_unavailable(fakes: ModuleType, kite: Any) -> None:
    kite.fail_next("/instruments/historical/", fakes.KITE_503, times=10)
    src = KiteSource(opts(kite, max_retries=2), sleep=lambda s: None)
    with pytest.raises(SourceUnavailableError, match="kite"):
        src.fetch_daily_bars([r("RELIANCE")])


def test_instruments_cached_on_disk(kite: Any, tmp_path: Path) -> None:
    first = KiteSource(opts(kite, cache_dir=str(tmp_path)), sleep=lambda s: None)
    first.fetch_daily_bars([r("RELIANCE")])
    files = list(tmp_path.glob("kite-instruments-NSE-*.json"))
    assert len(files) == 1
    second = KiteSource(opts(kite, cache_dir=str(tmp_path)), sleep=lambda s: None)
    assert len(second.fetch_daily_bars([r("INFY")]).bars) == 2
    assert len(kite.seen("/instruments/NSE")) == 1


def test_options_are_checked_and_secrets_hidden() -> None:
    with pytest.raises(SourceConfigError, match="access_token"):
        KiteSource({"api_key": "k"})
    with pytest.raises(SourceConfigError, match="root"):
        KiteSource({"api_key": "k", "access_token": "t", "root": "ftp://x"})
    src = get_source("kite", {"api_key": "k", "access_token": "very-secret"})
    assert "very-secret" not in repr(src)
