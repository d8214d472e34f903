"""The Alpaca kit: configuration, errors, parsing, execution, market data and capabilities."""

from saras.brokers.alpaca.errors import AlpacaResponseError
from saras.brokers.alpaca.execution import AlpacaBroker, AlpacaRateLimiter
from saras.brokers.alpaca.parsing import map_order_status

__all__ = ["AlpacaBroker", "AlpacaRateLimiter", "AlpacaResponseError", "map_order_status"]
