"""Paper kit: the paper book's refusals as our error classes.

The paper broker has no network, so nothing it does is retryable or ambiguous: an order it
refuses is rejected (``OrderRejectedError``, with the reason a real broker would give), an id it
does not know is ``OrderNotFoundError``, and a cancel of a finished order is non-retryable.
"""

from __future__ import annotations

from saras.brokers.errors import NonRetryableBrokerError, OrderNotFoundError, OrderRejectedError
from saras.brokers.paper.config import BROKER


def not_found(broker_order_id: str) -> OrderNotFoundError:
    """Return the error for an order id the paper book does not hold."""
    return OrderNotFoundError(f"paper order {broker_order_id} not found", broker=BROKER)


def rejected(client_order_id: str, reason: str | None) -> OrderRejectedError:
    """Return the error for an order the paper book refused."""
    return OrderRejectedError(
        f"paper order {client_order_id} rejected: {reason}", reason=reason, broker=BROKER
    )


def refused(broker_order_id: str, reason: str) -> NonRetryableBrokerError:
    """Return the error for a request on an order that cannot be honoured (e.g. cancel filled)."""
    return NonRetryableBrokerError(
        f"paper order {broker_order_id}: {reason}", reason=reason, broker=BROKER
    )
