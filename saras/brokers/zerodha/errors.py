"""Zerodha kit: Kite SDK exceptions sorted into our outcomes (see the table in ``execution``)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from enum import Enum

import requests
import urllib3.exceptions

from saras.brokers.errors import (
    BrokerError,
)


class KiteMappingError(BrokerError):
    """Kite sent a value we have no mapping for (an unknown order status or side).

    Neither retryable nor a rejection: the order's state is unknown to us, so a caller must not
    mark it rejected, and must not place it again.
    """


class _Kind(Enum):
    FATAL = "fatal"  # credentials: stop, never retry
    CONFIG = "config"  # the connection's settings are unusable
    REJECTED = "rejected"  # Kite refused this request (4xx, input/order error)
    REJECTED_5XX = "rejected_5xx"  # a rejection type, but a 5xx status: check the book first
    RATE_LIMITED = "rate_limited"  # 429: nothing happened
    NOT_SENT = "not_sent"  # the request never left (connection refused, connect timeout)
    AMBIGUOUS = "ambiguous"  # it may have reached Kite


@dataclass(frozen=True)
class _Outcome:
    kind: _Kind
    message: str
    status_code: int | None = None
    token: bool = False  # a TokenException (expired / revoked access token)


def _never_sent(exc: requests.RequestException) -> bool:
    """Tell whether the request failed before any byte reached the server."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    for arg in exc.args:
        reason = getattr(arg, "reason", arg)
        if isinstance(reason, urllib3.exceptions.ConnectTimeoutError):  # incl. NewConnectionError
            return True
    return False


def _short(text: object, limit: int = 200) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _classify(exc: BaseException) -> _Outcome:
    """Sort an SDK or transport exception into one of the outcomes above."""
    from kiteconnect import exceptions as kex

    if isinstance(exc, kex.KiteException):
        return _classify_kite(exc)
    if isinstance(
        exc,
        requests.exceptions.InvalidURL
        | requests.exceptions.MissingSchema
        | requests.exceptions.InvalidSchema,
    ):
        return _Outcome(_Kind.CONFIG, f"invalid Kite root URL ({type(exc).__name__})")
    if isinstance(exc, requests.RequestException):
        if _never_sent(exc):
            return _Outcome(_Kind.NOT_SENT, f"could not connect to Kite ({type(exc).__name__})")
        return _Outcome(_Kind.AMBIGUOUS, f"no usable answer from Kite ({type(exc).__name__})")
    # The SDK trips over a body it cannot read (no content type, JSON that is not an object...).
    return _Outcome(_Kind.AMBIGUOUS, f"unreadable answer from Kite ({type(exc).__name__})")


def _classify_kite(exc: Exception) -> _Outcome:
    """Sort a Kite SDK exception by its class (explicit ``match``), then by its HTTP code."""
    from kiteconnect import exceptions as kex

    code = getattr(exc, "code", None)
    text = _short(exc)
    throttled = code == 429 or "too many requests" in text.lower()
    match exc:
        case kex.TokenException():
            return _Outcome(_Kind.FATAL, text, code, token=True)
        case kex.PermissionException():
            return _Outcome(_Kind.FATAL, text, code)
        case _ if throttled:
            return _Outcome(_Kind.RATE_LIMITED, text, code)
        case kex.InputException() | kex.OrderException():
            kind = _Kind.REJECTED_5XX if code is not None and code >= 500 else _Kind.REJECTED
            return _Outcome(kind, text, code)
        case kex.NetworkException() | kex.DataException():
            return _Outcome(_Kind.AMBIGUOUS, text, code)
        case _ if code is not None and 400 <= code < 500:
            # GeneralException and unknown error types (e.g. MarginException)
            return _Outcome(_Kind.REJECTED_5XX, text, code)
        case _:
            return _Outcome(_Kind.AMBIGUOUS, text, code)


@functools.cache
def _sdk_errors() -> tuple[type[BaseException], ...]:
    """Return what an SDK call may raise; anything else is a bug and propagates untouched.

    Besides Kite's own exceptions and raw ``requests`` errors, the SDK trips over bodies it
    cannot read with KeyError (no Content-Type), AttributeError (JSON that is not an object),
    UnboundLocalError (``data: null``) and the like: all of them mean "no usable answer".
    """
    from kiteconnect import exceptions as kex  # imports twisted: keep it off our import path

    return (
        kex.KiteException,
        requests.RequestException,
        KeyError,
        TypeError,
        AttributeError,
        ValueError,
        UnboundLocalError,
    )
