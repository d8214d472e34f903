"""A fourth broker, for tests: one package and one ``registry.register`` line make it tradable.

``ToyVenue`` is the venue (an in-memory order book that fills market orders at its own prices);
``ToyBroker`` is its kit, built like the real ones on the shared kit (``place_once``,
``RateLimiter``) and declaring its capabilities. Nothing outside this package knows it exists.
"""

from tests.toy_broker.execution import ToyBroker
from tests.toy_broker.venue import ToyVenue

__all__ = ["ToyBroker", "ToyVenue"]
