"""Zerodha kit: Kite constants, limits and NSE hours."""

from __future__ import annotations

from datetime import time as dtime
from zoneinfo import ZoneInfo

from saras.brokers.kit.clock import RegularHours

BROKER = "zerodha"


IST = ZoneInfo("Asia/Kolkata")


_EXCHANGES = frozenset({"NSE", "BSE"})


_SUFFIXES = {".NS": "NSE", ".BO": "BSE"}


ORDERS_PER_MINUTE = 400


ORDERS_PER_DAY = 5_000


DEFAULT_TIMEOUT = 7.0


#: NSE's regular hours: the clock's answer beyond the years the XBOM calendar records
NSE_HOURS = RegularHours("Asia/Kolkata", dtime(9, 15), dtime(15, 30))
