"""The one market clock of every broker kit, read from the exchange calendars.

``market_clock(exchange, now)`` answers from ``saras.marketdata.calendars`` (the exchange table's
calendar for an exchange code such as ``NSE`` or ``NYSE``, or a calendar name such as ``XNYS``).
Beyond the years a calendar records, ``fallback`` regular hours (weekdays, local time) answer
instead when given; otherwise the calendar's range error is raised.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from zoneinfo import ZoneInfo

from saras.brokers.base import MarketClock


@dataclass(frozen=True)
class RegularHours:
    """Weekday session hours in an exchange's time zone (a fallback beyond the calendar)."""

    timezone: str
    opens: dtime
    closes: dtime

    def clock(self, now: datetime) -> MarketClock:
        """Tell open/closed from weekdays and these hours only (no holidays)."""
        zone = ZoneInfo(self.timezone)
        local = now.astimezone(zone)

        def session(day: date) -> tuple[datetime, datetime]:
            return (
                datetime.combine(day, self.opens, tzinfo=zone),
                datetime.combine(day, self.closes, tzinfo=zone),
            )

        day = local.date()
        opens, closes = session(day)
        is_open = day.weekday() < 5 and opens <= local < closes
        if day.weekday() >= 5 or local >= opens:
            day += timedelta(days=1)
            while day.weekday() >= 5:
                day += timedelta(days=1)
        next_open, next_open_close = session(day)
        return MarketClock(
            is_open=is_open,
            next_open=next_open.astimezone(UTC),
            next_close=(closes if is_open else next_open_close).astimezone(UTC),
        )


def market_clock(
    exchange: str, now: datetime, *, fallback: RegularHours | None = None
) -> MarketClock:
    """Return whether ``exchange`` is in a regular session at ``now`` and its next open/close."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    from saras.marketdata import calendars  # pandas and exchange_calendars: on first use
    from saras.marketdata.base import CalendarRangeError

    try:
        is_open = calendars.is_open(exchange, now)
        next_open = calendars.next_open(exchange, now)
        next_close = calendars.next_close(exchange, now)
    except CalendarRangeError:
        if fallback is None:
            raise
        return fallback.clock(now)
    return MarketClock(is_open=is_open, next_open=next_open, next_close=next_close)
