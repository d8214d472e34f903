"""Broker error classes: retryable, non-retryable, fatal, and the ambiguous outcome.

Prefect retries only ``RetryableBrokerError`` (see ``is_retryable``). Messages never carry
secrets: adapters build them from status codes and the broker's reason text only.
"""

from __future__ import annotations


class BrokerError(Exception):
    """Base class of every broker failure."""

    def __init__(self, message: str, *, broker: str | None = None, status_code: int | None = None):
        super().__init__(message)
        self.broker = broker
        self.status_code = status_code


class RetryableBrokerError(BrokerError):
    """Nothing happened at the broker and trying again later may work (network, 429, 5xx)."""

    def __init__(
        self,
        message: str,
        *,
        broker: str | None = None,
        status_code: int | None = None,
        retry_after: float | None = None,
    ):
        super().__init__(message, broker=broker, status_code=status_code)
        self.retry_after = retry_after


class RateLimitedError(RetryableBrokerError):
    """The broker throttled us (HTTP 429 or Kite's 'Too many requests')."""


class NonRetryableBrokerError(BrokerError):
    """The broker refused this request for good: rejected, invalid, insufficient funds."""

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        broker: str | None = None,
        status_code: int | None = None,
    ):
        super().__init__(message, broker=broker, status_code=status_code)
        self.reason = reason or message


class OrderRejectedError(NonRetryableBrokerError):
    """The broker rejected an order; ``reason`` is the broker's own text."""


class OrderNotFoundError(NonRetryableBrokerError):
    """The broker has no order with that id."""


class FatalBrokerError(BrokerError):
    """The connection itself is unusable (bad credentials, expired Kite token): stop the run."""


class AmbiguousOrderError(RetryableBrokerError):
    """The order may or may not exist at the broker; resolve with ``place_order(resume=True)``."""

    def __init__(self, message: str, *, client_order_id: str, broker: str | None = None):
        super().__init__(message, broker=broker)
        self.client_order_id = client_order_id

    def __reduce__(self) -> tuple[object, ...]:
        # keyword-only arguments do not survive the default pickling of exceptions
        return (_ambiguous, (str(self), self.client_order_id, self.broker))


def _ambiguous(message: str, client_order_id: str, broker: str | None) -> AmbiguousOrderError:
    return AmbiguousOrderError(message, client_order_id=client_order_id, broker=broker)


def is_retryable(exc: BaseException) -> bool:
    """Tell whether an exception is worth retrying (for Prefect's ``retry_condition_fn``)."""
    return isinstance(exc, RetryableBrokerError)
