"""Paper kit: market data of the paper broker, the latest stored price of an asset."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from decimal import Decimal

#: ``(symbol, exchange) -> latest stored price``; a one-argument ``symbol -> price`` callable is
#: accepted too (it cannot tell two exchanges apart, so use it only with unique symbols).
PriceLookup = Callable[[str, str | None], Decimal | None] | Callable[[str], Decimal | None]


def _by_asset(lookup: PriceLookup) -> Callable[[str, str | None], Decimal | None]:
    """Return ``lookup`` as a (symbol, exchange) callable, wrapping a symbol-only one."""
    try:
        parameters = list(inspect.signature(lookup).parameters.values())
    except (TypeError, ValueError):  # no signature to read: call it as it always was
        parameters = []
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if sum(p.kind in positional for p in parameters) >= 2 or any(
        p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters
    ):
        return lookup  # type: ignore[return-value]
    by_symbol = lookup

    def by_asset(symbol: str, exchange: str | None) -> Decimal | None:
        return by_symbol(symbol)  # type: ignore[call-arg]

    return by_asset
