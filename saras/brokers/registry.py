"""The broker registry: ``broker_type`` -> adapter, imported only when first used.

Another broker is one new package (a kit of the same shape as ``saras/brokers/alpaca``) plus one
``register`` call or one line in ``_BUILTIN``; ``tests/toy_broker`` is one.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from saras.brokers.base import (
    Broker,
    BrokerCapabilities,
    BrokerCredentials,
    ConnectionConfig,
    undeclared_capabilities,
)

BrokerFactory = Callable[..., Broker]

_BUILTIN: dict[str, str] = {
    "paper": "saras.brokers.paper:PaperBroker",
    "alpaca": "saras.brokers.alpaca:AlpacaBroker",
    "zerodha": "saras.brokers.zerodha:ZerodhaBroker",
}
_registered: dict[str, BrokerFactory] = {}
_generation = 0  # counts registrations, so callers may memoise what a broker type answers


def generation() -> int:
    """Return how many registrations there have been (a memo of capabilities keys on it)."""
    return _generation


class UnknownBrokerError(LookupError):
    """No adapter is registered for a broker type."""


def register(broker_type: str, factory: BrokerFactory | str) -> None:
    """Register an adapter class or factory (or its ``module:attr`` path) for a broker type."""
    global _generation
    _generation += 1
    if isinstance(factory, str):
        _BUILTIN[broker_type] = factory
        _registered.pop(broker_type, None)
    else:
        _registered[broker_type] = factory


def broker_types() -> list[str]:
    """Return every broker type Saras can open."""
    return sorted(set(_BUILTIN) | set(_registered))


def factory_for(broker_type: str) -> BrokerFactory:
    """Return the adapter factory for a broker type, importing its module on first use."""
    if broker_type in _registered:
        return _registered[broker_type]
    path = _BUILTIN.get(broker_type)
    if path is None:
        raise UnknownBrokerError(
            f"no broker adapter for {broker_type!r}; known: {', '.join(broker_types())}"
        )
    module, _, attr = path.partition(":")
    factory: BrokerFactory = getattr(importlib.import_module(module), attr)
    _registered[broker_type] = factory
    return factory


def capabilities(config: ConnectionConfig) -> BrokerCapabilities:
    """Return what a connection's broker can do (see ``BrokerCapabilities``).

    An adapter declares them with a ``capabilities(config)`` classmethod. One that does not (the
    built-in paper broker, third-party adapters) never reaches real money only when its row says
    ``paper_trading``; its sizing follows the ``paper_fractional`` setting of the connection.
    """
    declared = getattr(factory_for(config.broker_type), "capabilities", None)
    if callable(declared):
        result = declared(config)
        if not isinstance(result, BrokerCapabilities):
            raise TypeError(f"{config.broker_type}.capabilities must return BrokerCapabilities")
        return result
    return undeclared_capabilities(config)


def check_config(config: ConnectionConfig) -> None:
    """Refuse a connection's settings its broker cannot use (ValueError naming the setting).

    An adapter declares the check with a ``check_config(config)`` classmethod; one that does
    not accepts any metadata here (and refuses what it cannot use when it opens).
    """
    declared = getattr(factory_for(config.broker_type), "check_config", None)
    if callable(declared):
        declared(config)


def broker_capabilities(
    broker_type: str,
    *,
    paper_trading: bool = True,
    metadata: Mapping[str, object] | None = None,
) -> BrokerCapabilities:
    """Return the capabilities of a broker type for a connection not (yet) at hand."""
    config = ConnectionConfig("", broker_type, paper_trading, dict(metadata or {}))
    return capabilities(config)


def create_broker(
    config: ConnectionConfig,
    credentials: BrokerCredentials,
    *,
    offered: Mapping[str, Any] | None = None,
    **dependencies: Any,
) -> Broker:
    """Build the adapter for a connection (no I/O: adapters connect lazily).

    ``offered`` are the platform's services an adapter may take (the database engine, a price
    lookup, a hook that marks the connection...): each adapter gets those its constructor names,
    so the caller never asks which broker it is. ``dependencies`` are passed as given.
    """
    factory = factory_for(config.broker_type)
    taken = {k: v for k, v in (offered or {}).items() if _accepts(factory, k)}
    return factory(config, credentials, **taken, **dependencies)


def _accepts(factory: BrokerFactory, name: str) -> bool:
    """Tell whether a factory takes a keyword argument ``name`` (or any keyword)."""
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return True
    parameter = parameters.get(name)
    return parameter is not None and parameter.kind is not inspect.Parameter.POSITIONAL_ONLY
