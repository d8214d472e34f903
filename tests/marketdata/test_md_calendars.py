"""Trading calendars: exchange mapping, sessions, holidays, special days, instants, range."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from saras.marketdata import calendars
from saras.marketdata.base import CalendarRangeError, UnknownExchangeError

NY = ZoneInfo("America/New_York")
IST = ZoneInfo("Asia/Kolkata")


@pytest.mark.parametrize(
    ("exchange", "name"),
    [
        ("NYSE", "XNYS"),
        ("nasdaq", "XNYS"),
        ("ARCA", "XNYS"),
        ("AMEX", "XNYS"),
        ("US", "XNYS"),
        ("NSE", "XBOM"),
        ("BSE", "XBOM"),
        (" xnys ", "XNYS"),
    ],
)
def test_exchange_codes_map_to_calendars(exchange: str, name: str) -> None:
    assert calendars.calendar_for(exchange) == name


def test_unknown_exchange_is_a_clear_error() -> None:
    with pytest.raises(UnknownExchangeError, match=r"'LSE'.*NASDAQ.*NSE"):
        calendars.calendar_for("LSE")
    with pytest.raises(ValueError, match="LSE"):
        calendars.sessions("LSE", date(2024, 1, 1), date(2024, 1, 5))


def test_sessions_skip_weekends_and_holidays() -> None:
    # 2024-07-04 (Independence Day) is a NYSE holiday; 6th and 7th are a weekend.
    got = calendars.sessions("NYSE", date(2024, 7, 1), date(2024, 7, 9))
    assert got == [date(2024, 7, d) for d in (1, 2, 3, 5, 8, 9)]
    assert all(type(d) is date for d in got)
    assert calendars.sessions("NYSE", date(2024, 7, 6), date(2024, 7, 7)) == []


def test_nse_holidays_and_special_sessions() -> None:
    # 2024-01-26 Republic Day is closed; 2024-01-20 was a special Saturday session.
    assert not calendars.is_session("NSE", date(2024, 1, 26))
    assert calendars.is_session("NSE", date(2024, 1, 20))
    # Muhurat trading 2023-11-12 (a Sunday) is NOT a regular session in the calendar.
    assert not calendars.is_session("NSE", date(2023, 11, 12))
    assert calendars.is_session("BSE", date(2024, 1, 25))


def test_last_completed_session_needs_the_close() -> None:
    # 2024-07-03 closes early at 13:00 New York.
    before_close = datetime(2024, 7, 3, 12, 59, tzinfo=NY)
    after_close = datetime(2024, 7, 3, 13, 0, tzinfo=NY)
    assert calendars.last_completed_session("NYSE", before_close) == date(2024, 7, 2)
    assert calendars.last_completed_session("NYSE", after_close) == date(2024, 7, 3)
    # Over the holiday and the weekend the answer stays the 5th.
    assert calendars.last_completed_session("NYSE", datetime(2024, 7, 8, 9, tzinfo=NY)) == date(
        2024, 7, 5
    )
    # NSE closes 15:30 IST.
    assert calendars.last_completed_session("NSE", datetime(2024, 7, 1, 10, 5, tzinfo=UTC)) == date(
        2024, 7, 1
    )


def test_instants_must_be_aware() -> None:
    with pytest.raises(ValueError, match="aware"):
        calendars.last_completed_session("NYSE", datetime(2024, 7, 3, 12))
    with pytest.raises(ValueError, match="aware"):
        calendars.is_open("NYSE", datetime(2024, 7, 3, 12))


def test_next_open_and_is_open() -> None:
    friday_evening = datetime(2024, 7, 5, 18, tzinfo=NY)
    nxt = calendars.next_open("NYSE", friday_evening)
    assert nxt == datetime(2024, 7, 8, 13, 30, tzinfo=UTC)
    assert nxt.tzinfo is not None and nxt.utcoffset() == timedelta(0)
    assert calendars.is_open("NYSE", datetime(2024, 7, 8, 10, tzinfo=NY))
    assert not calendars.is_open("NYSE", datetime(2024, 7, 8, 16, tzinfo=NY))  # close excluded
    assert not calendars.is_open("NYSE", datetime(2024, 7, 4, 11, tzinfo=NY))  # holiday
    assert calendars.is_open("NSE", datetime(2024, 7, 8, 9, 15, tzinfo=IST))
    assert not calendars.is_open("NSE", datetime(2024, 7, 8, 9, 14, tzinfo=IST))


def test_exchange_timezone() -> None:
    assert calendars.exchange_timezone("NASDAQ") == NY
    assert calendars.exchange_timezone("NSE") == IST


def test_outside_the_calendar_range_clamps_or_raises() -> None:
    first, last = calendars.calendar_range("NSE")
    assert first.year == 1997
    beyond = last + timedelta(days=400)
    # sessions() clamps to what the calendar knows...
    got = calendars.sessions("NSE", last - timedelta(days=10), beyond)
    assert got and got[-1] == last
    assert calendars.sessions("NSE", last + timedelta(days=1), beyond) == []
    assert not calendars.covers("NSE", last, beyond)
    # ...point queries raise a clear error.
    with pytest.raises(CalendarRangeError, match="outside the XBOM calendar"):
        calendars.is_session("NSE", beyond)
    with pytest.raises(CalendarRangeError):
        calendars.last_completed_session("NSE", datetime.combine(beyond, datetime.min.time(), IST))
    with pytest.raises(CalendarRangeError):
        calendars.is_session("NYSE", date(1980, 1, 2))
