"""The simulated source: determinism, range independence, calendars, splits, speed."""

from __future__ import annotations

import time
from datetime import date

import numpy as np
import pandas as pd
import pytest

from saras.marketdata import (
    BAR_COLUMNS,
    BarRequest,
    SourceConfigError,
    calendars,
    get_source,
    iter_fetch,
)
from saras.marketdata.simulated import SimulatedSource
from saras.marketdata.validation import missing_sessions, validate_bars


def req(symbol: str, start: str, end: str, exchange: str = "NYSE") -> BarRequest:
    return BarRequest(symbol, exchange, date.fromisoformat(start), date.fromisoformat(end))


def test_same_inputs_give_byte_identical_frames() -> None:
    reqs = [req("AAPL", "2023-01-01", "2023-12-31"), req("INFY", "2023-01-01", "2023-12-31", "NSE")]
    a = SimulatedSource({"seed": 3}).fetch_daily_bars(reqs).bars
    b = SimulatedSource({"seed": 3}).fetch_daily_bars(reqs).bars
    assert a.to_csv().encode() == b.to_csv().encode()
    assert pd.util.hash_pandas_object(a).equals(pd.util.hash_pandas_object(b))
    c = SimulatedSource({"seed": 4}).fetch_daily_bars(reqs).bars
    assert not np.allclose(a["close"], c["close"])


def test_a_day_does_not_depend_on_the_requested_range() -> None:
    src = SimulatedSource({"seed": 1})
    full = src.fetch_daily_bars([req("MSFT", "2020-01-01", "2024-12-31")]).bars
    tail = src.fetch_daily_bars([req("MSFT", "2024-06-01", "2024-06-30")]).bars
    middle = src.fetch_daily_bars([req("MSFT", "2022-03-01", "2022-03-31")]).bars
    for part in (tail, middle):
        sliced = full[full["price_date"].isin(set(part["price_date"]))].reset_index(drop=True)
        pd.testing.assert_frame_equal(sliced, part)
    # Batch composition does not matter either.
    alone = src.fetch_daily_bars([req("MSFT", "2024-06-01", "2024-06-30")]).bars
    together = src.fetch_daily_bars(
        [req("AAPL", "2024-06-01", "2024-06-30"), req("MSFT", "2024-06-01", "2024-06-30")]
    ).bars
    pd.testing.assert_frame_equal(
        together[together["symbol"] == "MSFT"].reset_index(drop=True), alone
    )


def test_bars_are_canonical_realistic_and_on_calendar_sessions() -> None:
    reqs = [
        req("AAPL", "2024-01-01", "2024-12-31"),
        req("RELIANCE", "2024-01-01", "2024-12-31", "NSE"),
    ]
    result = SimulatedSource().fetch_daily_bars(reqs)
    bars = result.bars
    assert list(bars.columns) == list(BAR_COLUMNS)
    assert bars["symbol"].dtype == object and bars["price_date"].dtype == object
    assert all(bars[c].dtype == np.float64 for c in BAR_COLUMNS[2:])
    assert (bars["low"] <= bars[["open", "close"]].min(axis=1)).all()
    assert (bars["high"] >= bars[["open", "close"]].max(axis=1)).all()
    assert (bars["volume"] == bars["volume"].round()).all() and (bars["volume"] > 0).all()
    aapl = bars[bars["symbol"] == "AAPL"]["price_date"].tolist()
    assert aapl == calendars.sessions("NYSE", date(2024, 1, 1), date(2024, 12, 31))
    assert date(2024, 7, 4) not in aapl
    rel = bars[bars["symbol"] == "RELIANCE"]["price_date"].tolist()
    assert date(2024, 1, 20) in rel  # a special Saturday session in the NSE calendar
    checked = validate_bars(bars, {"AAPL": "NYSE", "RELIANCE": "NSE"}, today=date(2025, 1, 1))
    assert len(checked.rejected) == 0 and len(checked.off_calendar) == 0
    assert missing_sessions(bars, reqs) == {}
    assert result.failures == {} and result.adjusted is True and result.source == "simulated"


def test_split_option_back_adjusts_history() -> None:
    split = {"NVDA": {"date": "2024-06-10", "ratio": 10}}
    r = req("NVDA", "2024-06-03", "2024-06-14")
    plain = SimulatedSource().fetch_daily_bars([r]).bars.set_index("price_date")
    adjusted = SimulatedSource({"split": split}).fetch_daily_bars([r])
    raw = SimulatedSource({"split": split, "adjusted": False}).fetch_daily_bars([r])
    assert adjusted.adjusted is True and raw.adjusted is False
    adj = adjusted.bars.set_index("price_date")
    unadj = raw.bars.set_index("price_date")
    before, after = date(2024, 6, 7), date(2024, 6, 10)
    # From the split date on both modes trade at a tenth of the unsplit walk.
    assert adj.loc[after, "close"] == pytest.approx(plain.loc[after, "close"] / 10, abs=0.01)
    assert unadj.loc[after, "close"] == adj.loc[after, "close"]
    assert unadj.loc[after, "volume"] == pytest.approx(plain.loc[after, "volume"] * 10, abs=10)
    # Before it: unadjusted keeps the old price, adjusted divides it by the ratio.
    assert unadj.loc[before, "close"] == plain.loc[before, "close"]
    assert adj.loc[before, "close"] == pytest.approx(plain.loc[before, "close"] / 10, abs=0.01)
    assert adj.loc[before, "volume"] == pytest.approx(plain.loc[before, "volume"] * 10, abs=10)
    jump = unadj.loc[after, "close"] / unadj.loc[before, "close"]
    assert jump < 0.2  # the raw series shows the split as a price drop
    assert 0.5 < adj.loc[after, "close"] / adj.loc[before, "close"] < 2


def test_unknown_exchange_and_out_of_range_requests_are_failures() -> None:
    result = SimulatedSource().fetch_daily_bars(
        [
            req("AAA", "2024-01-01", "2024-01-31", "LSE"),
            req("BBB", "1998-01-01", "1999-06-30"),
            req("CCC", "2024-01-06", "2024-01-07"),  # a weekend: nothing to deliver, no failure
            req("DDD", "2024-01-02", "2024-01-03"),
        ]
    )
    assert set(result.failures) == {"AAA", "BBB"}
    assert "LSE" in result.failures["AAA"] and "2000-01-03" in result.failures["BBB"]
    assert set(result.bars["symbol"]) == {"DDD"}


def test_bad_options_name_the_option() -> None:
    with pytest.raises(SourceConfigError, match="'split'") as err:
        SimulatedSource({"split": {"X": {"date": "2024-13-01", "ratio": 2}}})
    assert err.value.option == "split"
    with pytest.raises(SourceConfigError, match="seed"):
        SimulatedSource({"seed": "abc"})
    with pytest.raises(SourceConfigError, match="sede"):
        SimulatedSource({"sede": 1})
    with pytest.raises(ValueError, match="more than once"):
        SimulatedSource().fetch_daily_bars([req("A", "2024-01-02", "2024-01-05")] * 2)


def test_fast_and_streamable_in_batches() -> None:
    reqs = [req(f"SYM{i:03d}", "2015-01-01", "2024-12-31") for i in range(200)]
    calendars.sessions("NYSE", date(2024, 1, 1), date(2024, 1, 2))  # build the calendar first
    started = time.perf_counter()
    batches = list(iter_fetch(get_source("simulated", {"seed": 9}), reqs, batch_size=64))
    elapsed = time.perf_counter() - started
    assert len(batches) == 4
    total = sum(len(b.bars) for b in batches)
    assert total == 200 * len(calendars.sessions("NYSE", date(2015, 1, 1), date(2024, 12, 31)))
    assert elapsed < 5.0, f"200 symbols x 10 years took {elapsed:.2f}s"
    whole = SimulatedSource({"seed": 9}).fetch_daily_bars(reqs).bars
    streamed = pd.concat([b.bars for b in batches], ignore_index=True)
    pd.testing.assert_frame_equal(whole, streamed)
