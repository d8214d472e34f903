"""The Alpaca source through the real alpaca-py client against a local fake data API."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from types import ModuleType
from typing import Any

import pytest
from pydantic import SecretStr

from saras.brokers.alpaca.data import AlpacaSource
from saras.marketdata import (
    BarRequest,
    SourceAuthError,
    SourceConfigError,
    SourceUnavailableError,
    get_source,
    is_retryable,
)

ACME = [  # winter dates: bars stamped 05:00Z
    ("2024-01-02", 50.0, 51.0, 49.0, 50.5, 100_000),
    ("2024-01-03", 50.5, 52.0, 50.0, 51.5, 120_000),
    ("2024-01-04", 51.5, 51.8, 50.9, 51.0, 90_000),
    ("2024-01-05", 51.0, 51.2, 50.1, 50.2, 95_000),
]
BOLT = [  # summer dates: bars stamped 04:00Z; 2024-07-04 is a holiday
    ("2024-07-03", 9.0, 9.5, 8.9, 9.4, 5_000),
    ("2024-07-05", 9.4, 9.6, 9.1, 9.2, 6_000),
]


def r(symbol: str, start: str, end: str) -> BarRequest:
    return BarRequest(symbol, "NASDAQ", date.fromisoformat(start), date.fromisoformat(end))


def source(fake: Any, sleeps: Any = None, **options: Any) -> AlpacaSource:
    opts = {"api_key": "PKTEST", "api_secret": SecretStr("s3cr3t"), "data_url": fake.url}
    opts.update(options)
    kwargs = {"sleep": sleeps} if sleeps is not None else {}
    return AlpacaSource(opts, **kwargs)


def test_pages_are_followed_and_dates_are_new_york_dates(fake_alpaca: Any) -> None:
    fake_alpaca.page_size = 3
    fake_alpaca.add_bars("ACME", ACME)
    fake_alpaca.add_bars("BOLT", BOLT)
    src = get_source(
        "alpaca", {"api_key": "PKTEST", "api_secret": "s3cr3t", "data_url": fake_alpaca.url + "/"}
    )
    result = src.fetch_daily_bars(
        [r("ACME", "2024-01-01", "2024-07-31"), r("BOLT", "2024-01-01", "2024-07-31")]
    )
    assert result.failures == {} and result.adjusted is True and result.source == "alpaca"
    acme = result.bars[result.bars["symbol"] == "ACME"]
    assert acme["price_date"].tolist() == [date(2024, 1, d) for d in (2, 3, 4, 5)]
    bolt = result.bars[result.bars["symbol"] == "BOLT"]
    assert bolt["price_date"].tolist() == [date(2024, 7, 3), date(2024, 7, 5)]
    assert bolt["close"].tolist() == [9.4, 9.2] and bolt["volume"].tolist() == [5000.0, 6000.0]
    seen = fake_alpaca.seen("/v2/stocks/bars")
    assert len(seen) == 2  # 6 bars, pages of 3
    first, second = seen
    assert first.args["symbols"] == "ACME,BOLT" and first.args["timeframe"] == "1Day"
    assert first.args["feed"] == "iex" and first.args["adjustment"] == "all"
    assert first.args["start"].startswith("2024-01-01T05:00:00")
    assert first.args["end"].startswith("2024-08-01T03:59:59")
    assert "page_token" not in first.args and second.args["page_token"]
    assert first.headers["apca-api-key-id"] == "PKTEST"


def test_rate_limit_is_retried_after_the_reset(
    fakes: ModuleType, fake_alpaca: Any, sleeps: Any
) -> None:
    fake_alpaca.add_bars("ACME", ACME)
    fake_alpaca.fail_next("/v2/stocks/bars", fakes.alpaca_429(1_704_205_860))
    src = AlpacaSource(
        {"api_key": "PKTEST", "api_secret": "s3cr3t", "data_url": fake_alpaca.url},
        sleep=sleeps,
        wall_clock=lambda: 1_704_205_853.0,  # 7 s before X-RateLimit-Reset
    )
    result = src.fetch_daily_bars([r("ACME", "2024-01-02", "2024-01-05")])
    assert len(result.bars) == 4 and result.failures == {}
    assert sleeps.calls == [7.0]
    assert len(fake_alpaca.seen("/v2/stocks/bars")) == 2  # no hidden SDK retries


def test_gateway_html_then_success(fakes: ModuleType, fake_alpaca: Any, sleeps: Any) -> None:
    fake_alpaca.add_bars("ACME", ACME)
    fake_alpaca.fail_next("/v2/stocks/bars", fakes.ALPACA_504_HTML, times=2)
    result = source(fake_alpaca, sleeps).fetch_daily_bars([r("ACME", "2024-01-02", "2024-01-05")])
    assert len(result.bars) == 4
    assert sleeps.calls == [1.0, 2.0]


def test_persistent_throttling_makes_the_source_unavailable(
    fakes: ModuleType, fake_alpaca: Any, sleeps: Any
) -> None:
    fake_alpaca.add_bars("ACME", ACME)
    fake_alpaca.fail_next("/v2/stocks/bars", fakes.alpaca_429(0), times=10)
    with pytest.raises(SourceUnavailableError, match="429") as err:
        source(fake_alpaca, sleeps, max_retries=2).fetch_daily_bars(
            [r("ACME", "2024-01-02", "2024-01-05")]
        )
    assert is_retryable(err.value)
    assert len(fake_alpaca.seen("/v2/stocks/bars")) == 3


def test_unauthorized_is_fatal_and_leaks_no_secret(fake_alpaca: Any) -> None:
    src = AlpacaSource(
        {"api_key": "PKTEST", "api_secret": "wrong-secret-value", "data_url": fake_alpaca.url}
    )
    with pytest.raises(SourceAuthError, match="401") as err:
        src.fetch_daily_bars([r("ACME", "2024-01-02", "2024-01-05")])
    assert "wrong-secret-value" not in str(err.value) and not is_retryable(err.value)
    assert "wrong-secret-value" not in repr(src)
    assert len(fake_alpaca.seen("/v2/stocks/bars")) == 1


def test_feed_not_permitted_names_the_feed_option(fakes: ModuleType, fake_alpaca: Any) -> None:
    fake_alpaca.fail_next(
        "/v2/stocks/bars",
        fakes.Scripted(403, {"message": "subscription does not permit querying recent SIP data"}),
    )
    with pytest.raises(SourceConfigError) as err:
        source(fake_alpaca, feed="sip").fetch_daily_bars([r("ACME", "2024-01-02", "2024-01-05")])
    assert err.value.option == "feed" and not isinstance(err.value, SourceAuthError)


def test_unknown_and_invalid_symbols_are_failures(fake_alpaca: Any) -> None:
    fake_alpaca.add_bars("ACME", ACME)
    result = source(fake_alpaca).fetch_daily_bars(
        [
            r("ACME", "2024-01-02", "2024-01-05"),
            r("NOPE", "2024-01-02", "2024-01-05"),
            r("bad!", "2024-01-02", "2024-01-05"),
        ]
    )
    assert set(result.bars["symbol"]) == {"ACME"}
    assert set(result.failures) == {"NOPE", "bad!"}
    assert "no bars" in result.failures["NOPE"]
    assert result.failures["bad!"] == "HTTP 400: invalid symbol: bad!"
    # The refused symbol was named: one retry of the rest as a batch, not one call per symbol.
    sent = [q.args["symbols"] for q in fake_alpaca.seen("/v2/stocks/bars")]
    assert sent == ["ACME,NOPE,bad!", "ACME,NOPE"]


def test_a_refused_batch_without_culprit_is_split(fakes: ModuleType, fake_alpaca: Any) -> None:
    fake_alpaca.add_bars("ACME", ACME)
    fake_alpaca.add_bars("BOLT", ACME)
    fake_alpaca.fail_next(
        "/v2/stocks/bars", fakes.Scripted(422, {"code": 42210000, "message": "invalid request"})
    )
    result = source(fake_alpaca).fetch_daily_bars(
        [r("ACME", "2024-01-02", "2024-01-05"), r("BOLT", "2024-01-02", "2024-01-05")]
    )
    assert result.failures == {} and len(result.bars) == 8
    sent = [q.args["symbols"] for q in fake_alpaca.seen("/v2/stocks/bars")]
    assert sent == ["ACME,BOLT", "ACME", "BOLT"]


def test_requests_time_out(fakes: ModuleType, fake_alpaca: Any, sleeps: Any) -> None:
    fake_alpaca.add_bars("ACME", ACME)
    fake_alpaca.fail_next("/v2/stocks/bars", fakes.Scripted(200, {"bars": {}}, delay=2.0))
    src = source(fake_alpaca, sleeps, timeout=0.2, max_retries=1)
    result = src.fetch_daily_bars([r("ACME", "2024-01-02", "2024-01-05")])
    assert len(result.bars) == 4  # the stalled answer timed out, the retry succeeded
    assert sleeps.calls == [1.0]


def test_options_are_checked_without_io() -> None:
    with pytest.raises(SourceConfigError, match="api_key"):
        AlpacaSource({"api_secret": "x"})
    with pytest.raises(SourceConfigError, match="adjustment"):
        AlpacaSource({"api_key": "k", "api_secret": "s", "adjustment": "some"})
    raw = AlpacaSource(
        {
            "api_key": "k",
            "api_secret": "s",
            "adjustment": "raw",
            "data_url": "http://127.0.0.1:9/v2",
        }
    )
    assert raw.adjusted is False and "127.0.0.1:9'" in repr(raw)


def test_splits_bonus_issues_and_dividends_from_the_corporate_actions_endpoint(
    fake_alpaca: Any,
) -> None:
    fake_alpaca.add_bars("ACME", ACME)
    fake_alpaca.add_bars("BOLT", BOLT)
    fake_alpaca.add_corporate_action(
        "forward_splits", symbol="ACME", new_rate=4, old_rate=1, ex_date="2024-01-03"
    )
    fake_alpaca.add_corporate_action(
        "reverse_splits", symbol="BOLT", new_rate=1, old_rate=10, ex_date="2024-01-04"
    )
    fake_alpaca.add_corporate_action(
        "stock_dividends", symbol="BOLT", rate=0.5, ex_date="2024-01-03"
    )
    fake_alpaca.add_corporate_action(
        "cash_dividends", symbol="ACME", rate=0.24, ex_date="2024-01-04"
    )
    fake_alpaca.add_corporate_action(  # another symbol, and outside the range: not ours
        "cash_dividends", symbol="ZZZ", rate=1, ex_date="2024-01-04"
    )
    fake_alpaca.add_corporate_action(
        "cash_dividends", symbol="ACME", rate=0.3, ex_date="2023-06-01"
    )

    result = source(fake_alpaca).fetch_daily_bars(
        [
            BarRequest("ACME", "NASDAQ", date(2024, 1, 2), date(2024, 1, 5)),
            BarRequest("BOLT", "NASDAQ", date(2024, 1, 2), date(2024, 1, 5)),
        ]
    )

    found = {(a.symbol, a.action_type): a for a in result.actions}
    assert set(found) == {
        ("ACME", "split"),
        ("BOLT", "reverse_split"),
        ("BOLT", "bonus"),
        ("ACME", "dividend"),
    }
    assert found[("ACME", "split")].ratio == Decimal(4)
    assert found[("BOLT", "reverse_split")].ratio == Decimal("0.1")
    assert found[("BOLT", "bonus")].ratio == Decimal("1.5")
    assert found[("ACME", "dividend")].cash_amount == Decimal("0.24")
    (call,) = fake_alpaca.seen("/v1/corporate-actions")
    assert set(call.args["symbols"].split(",")) == {"ACME", "BOLT"}


def test_bars_still_come_when_corporate_actions_are_refused(
    fakes: ModuleType, fake_alpaca: Any
) -> None:
    fake_alpaca.add_bars("ACME", ACME)
    fake_alpaca.fail_next("/v1/corporate-actions", fakes.Scripted(403, {"message": "forbidden"}))
    result = source(fake_alpaca).fetch_daily_bars(
        [BarRequest("ACME", "NASDAQ", date(2024, 1, 2), date(2024, 1, 5))]
    )
    assert result.failures == {} and result.actions == [] and len(result.bars) > 0
