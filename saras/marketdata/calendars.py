"""Trading calendars for our exchange codes, from ``exchange_calendars``.

A calendar is the expectation, not the truth: validation flags bars on days the calendar lacks
(special sessions) and reports sessions the source lacks (gaps).

Exchange codes map to calendars through the exchange table (``saras.domain.exchanges``): the US
venues (``NYSE``, ``NASDAQ``, ``ARCA``, ``NYSEARCA``, ``AMEX``, ``BATS``, and the legacy ``US``)
use ``XNYS`` (they share its sessions); ``NSE`` and ``BSE`` both use ``XBOM`` (the only Indian
calendar ``exchange_calendars`` provides; NSE and BSE keep the same holidays).
Calendar names themselves (``XNYS``, ``XBOM``) are accepted too. Codes are case-insensitive.

Range: calendars are built lazily (never at import) from 1990-01-01, or the earliest year the
library records holidays for (XBOM: 1997), to the library's last known session (XNYS: about a
year ahead of today; XBOM: the last year whose holidays the library ships, currently
2026-12-31; upgrade ``exchange_calendars`` yearly). Outside that range:

* ``sessions`` clamps: it returns only the sessions the calendar knows (so gap reports and the
  simulated source stop at the edge, they never invent sessions);
* the point queries (``is_session``, ``last_completed_session``, ``next_open``, ``is_open``)
  raise ``CalendarRangeError`` naming the exchange and the known range.
"""

from __future__ import annotations

import functools
from datetime import date, datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from saras.domain.exchanges import EXCHANGES, LEGACY_ALIASES
from saras.marketdata.base import CalendarRangeError, UnknownExchangeError

if TYPE_CHECKING:
    import exchange_calendars as xcals

#: Our exchange codes (and legacy codes still found in old rows) to calendar names, read from
#: the exchange table ``saras.domain.exchanges``.
EXCHANGE_CALENDARS: dict[str, str] = {
    **{code: e.calendar for code, e in EXCHANGES.items()},
    **{alias: EXCHANGES[code].calendar for alias, code in LEGACY_ALIASES.items()},
}
_CALENDAR_NAMES = frozenset(EXCHANGE_CALENDARS.values())
_EARLIEST_START = pd.Timestamp("1990-01-01")
# XBOM holidays are only recorded from 1997 (``bound_min``); asking earlier raises.
_CALENDAR_START: dict[str, pd.Timestamp] = {"XBOM": pd.Timestamp("1997-01-01")}


def calendar_for(exchange: str) -> str:
    """Return the exchange_calendars name (``XNYS``, ``XBOM``) for one of our exchange codes."""
    code = exchange.strip().upper() if isinstance(exchange, str) else exchange
    if isinstance(code, str):
        if code in EXCHANGE_CALENDARS:
            return EXCHANGE_CALENDARS[code]
        if code in _CALENDAR_NAMES:
            return code
    known = ", ".join(sorted(EXCHANGE_CALENDARS))
    raise UnknownExchangeError(f"unknown exchange {exchange!r}: known exchanges are {known}")


@functools.cache
def _calendar(name: str) -> xcals.ExchangeCalendar:
    import exchange_calendars as xcals

    start = _CALENDAR_START.get(name, _EARLIEST_START)
    try:
        return xcals.get_calendar(name, start=start)
    except ValueError:  # the library moved its earliest recorded year: use its default range
        return xcals.get_calendar(name)


@functools.cache
def _session_days(name: str) -> np.ndarray:
    sessions = _calendar(name).sessions
    return sessions.values.astype("datetime64[D]")


@functools.cache
def _session_dates(name: str) -> np.ndarray:
    return np.array([d.date() for d in _calendar(name).sessions], dtype=object)


@functools.cache
def _opens_closes(name: str) -> tuple[np.ndarray, np.ndarray]:
    cal = _calendar(name)
    opens = cal.opens.values.astype("datetime64[ns]").astype(np.int64)
    closes = cal.closes.values.astype("datetime64[ns]").astype(np.int64)
    return opens, closes


def session_days(exchange: str) -> np.ndarray:
    """Return every session the exchange calendar knows as a sorted ``datetime64[D]`` array."""
    return _session_days(calendar_for(exchange))


def session_dates(exchange: str) -> np.ndarray:
    """Return every known session as an object array of ``date`` (aligned with session_days)."""
    return _session_dates(calendar_for(exchange))


def calendar_range(exchange: str) -> tuple[date, date]:
    """Return the first and last session the exchange calendar knows."""
    days = session_days(exchange)
    return _as_date(days[0]), _as_date(days[-1])


def exchange_timezone(exchange: str) -> ZoneInfo:
    """Return the exchange's local time zone."""
    return ZoneInfo(str(_calendar(calendar_for(exchange)).tz))


def sessions(exchange: str, start: date, end: date) -> list[date]:
    """List the sessions from ``start`` to ``end`` inclusive (clamped to the known range)."""
    name = calendar_for(exchange)
    days = _session_days(name)
    lo = int(np.searchsorted(days, np.datetime64(start, "D"), side="left"))
    hi = int(np.searchsorted(days, np.datetime64(end, "D"), side="right"))
    if hi <= lo:
        return []
    return list(_session_dates(name)[lo:hi])


def covers(exchange: str, start: date, end: date) -> bool:
    """Tell whether the calendar knows every day from ``start`` to ``end``."""
    first, last = calendar_range(exchange)
    return first <= start and end <= last


def is_session(exchange: str, day: date) -> bool:
    """Tell whether ``day`` is a regular session of the exchange."""
    name = calendar_for(exchange)
    _check_day(exchange, name, day)
    days = _session_days(name)
    target = np.datetime64(day, "D")
    idx = int(np.searchsorted(days, target))
    return idx < len(days) and days[idx] == target


def last_completed_session(exchange: str, now: datetime) -> date:
    """Return the latest session whose close is at or before ``now`` (an aware datetime)."""
    name = calendar_for(exchange)
    ns = _instant_ns(exchange, name, now)
    _, closes = _opens_closes(name)
    idx = int(np.searchsorted(closes, ns, side="right")) - 1
    if idx < 0:
        raise CalendarRangeError(
            f"{exchange}: no session of the {name} calendar closed by {now.isoformat()}"
        )
    return _session_dates(name)[idx]


def next_open(exchange: str, now: datetime) -> datetime:
    """Return the next market open strictly after ``now``, as an aware UTC datetime."""
    name = calendar_for(exchange)
    ns = _instant_ns(exchange, name, now)
    opens, _ = _opens_closes(name)
    idx = int(np.searchsorted(opens, ns, side="right"))
    if idx >= len(opens):
        raise CalendarRangeError(
            f"{exchange}: the {name} calendar knows no open after {now.isoformat()}"
        )
    return pd.Timestamp(int(opens[idx]), tz="UTC").to_pydatetime()


def is_open(exchange: str, now: datetime) -> bool:
    """Tell whether the exchange is in a regular session at ``now`` (open <= now < close)."""
    name = calendar_for(exchange)
    ns = _instant_ns(exchange, name, now)
    opens, closes = _opens_closes(name)
    idx = int(np.searchsorted(opens, ns, side="right")) - 1
    return idx >= 0 and ns < int(closes[idx])


def _as_date(day: np.datetime64) -> date:
    return date.fromisoformat(str(day.astype("datetime64[D]")))


def _check_day(exchange: str, name: str, day: date) -> None:
    if isinstance(day, datetime) or not isinstance(day, date):
        raise TypeError(f"expected a datetime.date, got {day!r}")
    days = _session_days(name)
    first, last = _as_date(days[0]), _as_date(days[-1])
    if not first <= day <= last:
        raise CalendarRangeError(
            f"{exchange}: {day} is outside the {name} calendar's known range {first}..{last}"
        )


def _instant_ns(exchange: str, name: str, now: datetime) -> int:
    if not isinstance(now, datetime) or now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"expected an aware datetime, got {now!r}")
    ts = pd.Timestamp(now).tz_convert("UTC")
    days = _session_days(name)
    first, last = _as_date(days[0]), _as_date(days[-1])
    local_day = ts.tz_convert(exchange_timezone(exchange)).date()
    if not first <= local_day <= last:
        raise CalendarRangeError(
            f"{exchange}: {now.isoformat()} is outside the {name} calendar's known range "
            f"{first}..{last}"
        )
    return int(ts.value)


def next_close(exchange: str, now: datetime) -> datetime:
    """Return the next market close strictly after ``now``, as an aware UTC datetime."""
    name = calendar_for(exchange)
    ns = _instant_ns(exchange, name, now)
    _, closes = _opens_closes(name)
    idx = int(np.searchsorted(closes, ns, side="right"))
    if idx >= len(closes):
        raise CalendarRangeError(
            f"{exchange}: the {name} calendar knows no close after {now.isoformat()}"
        )
    return pd.Timestamp(int(closes[idx]), tz="UTC").to_pydatetime()
