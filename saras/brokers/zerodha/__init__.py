"""The Zerodha (Kite Connect) kit: configuration, errors, parsing, execution, data, capabilities."""

from saras.brokers.zerodha.execution import (
    KiteMappingError,
    KiteRateLimiter,
    ZerodhaBroker,
    map_kite_status,
    nse_market_clock,
)

__all__ = [
    "KiteMappingError",
    "KiteRateLimiter",
    "ZerodhaBroker",
    "map_kite_status",
    "nse_market_clock",
]
