"""The Zerodha (Kite Connect) kit: configuration, errors, parsing, execution, data, capabilities."""

from saras.brokers.zerodha.errors import KiteMappingError
from saras.brokers.zerodha.execution import KiteRateLimiter, ZerodhaBroker, nse_market_clock
from saras.brokers.zerodha.parsing import map_kite_status

__all__ = [
    "KiteMappingError",
    "KiteRateLimiter",
    "ZerodhaBroker",
    "map_kite_status",
    "nse_market_clock",
]
