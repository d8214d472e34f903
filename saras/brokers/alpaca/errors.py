"""Alpaca kit: venue failures sorted into our error classes (explicit ``match`` on HTTP status).

Retryable (nothing happened), non-retryable (refused for good), fatal (the connection is
unusable), and ambiguous for an order submission whose outcome is unknown.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from enum import Enum

import requests
import urllib3.exceptions
from alpaca.common.exceptions import APIError

from saras.brokers.alpaca.config import BROKER, CODE_DUPLICATE_CLIENT_ORDER_ID, CODE_INSUFFICIENT
from saras.brokers.errors import (
    BrokerError,
    FatalBrokerError,
    NonRetryableBrokerError,
    OrderNotFoundError,
    OrderRejectedError,
    RateLimitedError,
    RetryableBrokerError,
)

_TRANSPORT_ERRORS = (APIError, requests.RequestException)


class AlpacaResponseError(NonRetryableBrokerError):
    """Alpaca answered something this adapter cannot read (unknown status, missing field)."""


class _BadPayload(ValueError):
    """A response body that does not have the shape of Alpaca's entities."""


class _Kind(Enum):
    RETRY = "retry"  # nothing happened; trying again may work
    RATE_LIMITED = "rate_limited"
    AMBIGUOUS = "ambiguous"  # an order submission may or may not have been placed
    DUPLICATE = "duplicate"  # 422 40010001: an order with this client_order_id exists
    NOT_FOUND = "not_found"
    REJECTED = "rejected"
    FATAL = "fatal"
    INVALID = "invalid"


@dataclass(frozen=True)
class _Failure:
    kind: _Kind
    detail: str
    status: int | None = None
    reason: str | None = None
    retry_after: float | None = None


def classify(
    exc: Exception, *, order_submit: bool, timeout: float, clock: Callable[[], float]
) -> _Failure:
    """Sort an SDK or transport exception into one of our outcomes."""
    unknown = _Kind.AMBIGUOUS if order_submit else _Kind.RETRY
    if isinstance(exc, requests.exceptions.JSONDecodeError):
        return _Failure(unknown, "the answer is not valid JSON")
    if isinstance(exc, APIError):
        return classify_http(exc, order_submit=order_submit, clock=clock)
    if isinstance(
        exc,
        requests.exceptions.InvalidURL
        | requests.exceptions.MissingSchema
        | requests.exceptions.InvalidSchema,
    ):
        return _Failure(_Kind.FATAL, f"the base URL is not usable ({type(exc).__name__})")
    if _never_sent(exc):
        return _Failure(_Kind.RETRY, f"could not connect ({_connect_reason(exc)})")
    if isinstance(exc, requests.Timeout):
        return _Failure(unknown, f"no answer within {timeout:g} s")
    return _Failure(unknown, f"connection lost before the answer ({_connect_reason(exc)})")


def classify_http(exc: APIError, *, order_submit: bool, clock: Callable[[], float]) -> _Failure:
    """Sort an HTTP error answer into one of our outcomes (explicit ``match`` on the status)."""
    status = exc.status_code  # safe: unlike .code/.message it does not parse the body
    response = exc.response
    text = response.text if response is not None else str(exc)
    code, message = _error_body(text)
    headers: Mapping[str, str] = response.headers if response is not None else {}
    detail = f"HTTP {status}"
    detail += f" {message}" if message else " (no JSON error body)"
    if code is not None:
        detail += f" (code {code})"
    lowered = (message or "").lower()
    unknown = _Kind.AMBIGUOUS if order_submit else _Kind.RETRY
    match status:
        case 429:
            retry_after = _retry_after(headers, clock())
            return _Failure(_Kind.RATE_LIMITED, detail, 429, retry_after=retry_after)
        case 401:
            return _Failure(_Kind.FATAL, detail, 401)
        case 403 if code == CODE_INSUFFICIENT or "insufficient" in lowered:
            return _Failure(_Kind.REJECTED, detail, 403, reason=message or detail)
        case 403:
            return _Failure(_Kind.FATAL, detail, 403)
        case 404:
            return _Failure(_Kind.NOT_FOUND, detail, 404, reason=message or "not found")
        case 422 if order_submit and (
            code == CODE_DUPLICATE_CLIENT_ORDER_ID or "client_order_id must be unique" in lowered
        ):
            return _Failure(_Kind.DUPLICATE, detail, 422)
        case 400 | 422:
            return _Failure(_Kind.REJECTED, detail, status, reason=message or detail)
        case 408 | None:
            return _Failure(unknown, detail, status)
        case int() if status >= 500:
            return _Failure(unknown, detail, status)
    return _Failure(_Kind.INVALID, detail, status, reason=message or detail)


def to_error(
    what: str, failure: _Failure, *, order: bool = False, scrub: Callable[[str], str]
) -> BrokerError:
    """Turn a failure into one of our exceptions (secrets scrubbed)."""
    message = scrub(f"alpaca {what}: {failure.detail}")
    reason = scrub(failure.reason) if failure.reason else None
    status = failure.status
    match failure.kind:
        case _Kind.RATE_LIMITED:
            return RateLimitedError(
                message, broker=BROKER, status_code=status, retry_after=failure.retry_after
            )
        case _Kind.RETRY | _Kind.AMBIGUOUS:
            return RetryableBrokerError(message, broker=BROKER, status_code=status)
        case _Kind.FATAL:
            return FatalBrokerError(message, broker=BROKER, status_code=status)
        case _Kind.NOT_FOUND:
            return OrderNotFoundError(message, reason=reason, broker=BROKER, status_code=status)
        case _Kind.REJECTED if order:
            return OrderRejectedError(message, reason=reason, broker=BROKER, status_code=status)
        case _Kind.REJECTED | _Kind.INVALID | _Kind.DUPLICATE:
            return NonRetryableBrokerError(
                message, reason=reason, broker=BROKER, status_code=status
            )
    raise AssertionError(f"unhandled failure kind {failure.kind}")  # pragma: no cover


def scrub(text: str, secrets: Sequence[str]) -> str:
    """Mask the credentials in text that came from outside (defence in depth)."""
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, "**********")
    return text


def _never_sent(exc: Exception) -> bool:
    """Tell whether a transport error happened before the request left (safe to send again)."""
    if isinstance(exc, requests.exceptions.ConnectTimeout | requests.exceptions.ProxyError):
        return True
    if isinstance(exc, requests.exceptions.SSLError):
        return True  # the TLS handshake precedes the request
    if isinstance(exc, requests.exceptions.ConnectionError) and not isinstance(
        exc, requests.exceptions.ReadTimeout
    ):
        reason: object = exc.args[0] if exc.args else None
        if isinstance(reason, urllib3.exceptions.MaxRetryError):
            reason = reason.reason
        return isinstance(
            reason, urllib3.exceptions.NewConnectionError | urllib3.exceptions.ConnectTimeoutError
        )
    return False


def _connect_reason(exc: Exception) -> str:
    reason: object = exc.args[0] if exc.args else None
    if isinstance(reason, urllib3.exceptions.MaxRetryError):
        reason = reason.reason
    return type(reason).__name__ if isinstance(reason, Exception) else type(exc).__name__


def _error_body(text: str) -> tuple[int | None, str | None]:
    """Read Alpaca's ``{"code": ..., "message": ...}`` error body; (None, None) if it is not one."""
    try:
        data = json.loads(text)
    except (TypeError, ValueError):
        return None, None
    if not isinstance(data, dict):
        return None, None
    raw_code = data.get("code")
    code: int | None = None
    if isinstance(raw_code, int) and not isinstance(raw_code, bool):
        code = raw_code
    elif isinstance(raw_code, str) and raw_code.isdigit():
        code = int(raw_code)
    message = data.get("message")
    return code, (message.strip()[:300] or None) if isinstance(message, str) else None


def _header_number(headers: Mapping[str, str], name: str) -> float | None:
    value = headers.get(name)
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _retry_after(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds to wait after a 429: ``Retry-After`` if sent, else ``X-RateLimit-Reset``.

    Alpaca sends ``X-RateLimit-Reset`` (epoch seconds); a proxy in front may send the more
    specific ``Retry-After`` (seconds or an HTTP date).
    """
    value = headers.get("Retry-After")
    if value is not None:
        seconds = _header_number(headers, "Retry-After")
        if seconds is not None:
            return max(seconds, 0.0)
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            when = None
        if when is not None:
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            return max(when.timestamp() - now, 0.0)
    reset = _header_number(headers, "X-RateLimit-Reset")
    if reset is not None:
        return max(reset - now, 0.0)
    return None
