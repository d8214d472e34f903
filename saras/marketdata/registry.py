"""Pick a market-data source by name: ``yfinance``, ``alpaca``, ``kite``, ``csv``, ``simulated``.

Source modules are imported on first use (so importing Saras does not import every SDK) and
constructing a source does no I/O: options are checked, connections are made on first fetch.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from saras.marketdata.base import BarRequest, FetchResult, MarketDataSource, SourceConfigError

SOURCES: dict[str, tuple[str, str]] = {
    "yfinance": ("saras.marketdata.yfinance_source", "YFinanceSource"),
    "alpaca": ("saras.brokers.alpaca.data", "AlpacaSource"),
    "kite": ("saras.brokers.zerodha.data", "KiteSource"),
    "csv": ("saras.marketdata.csv", "CsvSource"),
    "simulated": ("saras.marketdata.simulated", "SimulatedSource"),
}


def source_names() -> list[str]:
    """List the known source names."""
    return sorted(SOURCES)


def source_class(name: str) -> type:
    """Return the class implementing the named source (importing its module now)."""
    key = name.strip().lower() if isinstance(name, str) else name
    if key not in SOURCES:
        raise SourceConfigError(
            f"unknown market-data source {name!r}; known sources: {', '.join(source_names())}",
            option="source",
        )
    module_name, class_name = SOURCES[key]
    cls: type = getattr(importlib.import_module(module_name), class_name)
    return cls


def get_source(
    name: str, options: Mapping[str, Any] | None = None, **hooks: Any
) -> MarketDataSource:
    """Build the named source from its options (no I/O).

    ``hooks`` are keyword arguments such as ``sleep`` (tests); a source that does not take one
    simply does not get it.
    """
    cls = source_class(name)
    accepted = inspect.signature(cls).parameters
    source: MarketDataSource = cls(options, **{k: v for k, v in hooks.items() if k in accepted})
    return source


def iter_fetch(
    source: MarketDataSource, requests: Sequence[BarRequest], batch_size: int = 200
) -> Iterator[FetchResult]:
    """Fetch in batches of ``batch_size`` symbols, yielding one result per batch (streaming)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for i in range(0, len(requests), batch_size):
        yield source.fetch_daily_bars(requests[i : i + batch_size])
