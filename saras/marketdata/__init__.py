"""Market data: the canonical daily-bar frame, sources behind one protocol, calendars, checks.

Typical use::

    from saras.marketdata import BarRequest, get_source, validate_bars

    source = get_source("simulated", {"seed": 7})
    result = source.fetch_daily_bars([BarRequest("AAPL", "NASDAQ", start, end)])
    checked = validate_bars(result.bars, {"AAPL": "NASDAQ"}, today=today)

The SDK-backed sources (``YFinanceSource``, ``AlpacaSource``, ``KiteSource``) are imported
lazily, on first attribute access or through ``get_source``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from saras.marketdata import calendars
from saras.marketdata.base import (
    BAR_COLUMNS,
    BarRequest,
    CalendarRangeError,
    FetchResult,
    MarketDataError,
    MarketDataSource,
    SourceAuthError,
    SourceConfigError,
    SourceUnavailableError,
    UnknownExchangeError,
    concat_bars,
    empty_bars,
    is_retryable,
    normalize_bars,
)
from saras.marketdata.calendars import (
    calendar_for,
    exchange_timezone,
    is_open,
    is_session,
    last_completed_session,
    next_open,
    sessions,
)
from saras.marketdata.csv import CsvSource
from saras.marketdata.registry import get_source, iter_fetch, source_names
from saras.marketdata.simulated import SimulatedSource
from saras.marketdata.validation import (
    REJECT_REASONS,
    ValidationResult,
    missing_sessions,
    validate_bars,
)

if TYPE_CHECKING:
    from saras.brokers.alpaca.data import AlpacaSource
    from saras.brokers.zerodha.data import KiteSource
    from saras.marketdata.yfinance_source import YFinanceSource

_LAZY = {
    "YFinanceSource": "saras.marketdata.yfinance_source",
    "AlpacaSource": "saras.brokers.alpaca.data",
    "KiteSource": "saras.brokers.zerodha.data",
}


def __getattr__(name: str) -> Any:
    """Import the SDK-backed source classes on first use."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BAR_COLUMNS",
    "REJECT_REASONS",
    "AlpacaSource",
    "BarRequest",
    "CalendarRangeError",
    "CsvSource",
    "FetchResult",
    "KiteSource",
    "MarketDataError",
    "MarketDataSource",
    "SimulatedSource",
    "SourceAuthError",
    "SourceConfigError",
    "SourceUnavailableError",
    "UnknownExchangeError",
    "ValidationResult",
    "YFinanceSource",
    "calendar_for",
    "calendars",
    "concat_bars",
    "empty_bars",
    "exchange_timezone",
    "get_source",
    "is_open",
    "is_retryable",
    "is_session",
    "iter_fetch",
    "last_completed_session",
    "missing_sessions",
    "next_open",
    "normalize_bars",
    "sessions",
    "source_names",
    "validate_bars",
]
