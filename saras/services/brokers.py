"""Open a broker adapter for a connection row: decrypt its secrets, wire its dependencies."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, func, select, update

from models import Asset, PriceHistory, UserBrokerConnection
from models.base import utcnow
from saras.brokers.base import Broker, BrokerCredentials
from saras.brokers.registry import create_broker
from saras.domain.enums import ConnectionStatus
from saras.repositories.connections import connection_config, reaches_real_money
from saras.secrets import SecretBox, get_secret_box
from saras.settings import get_settings

log = logging.getLogger(__name__)

#: how an adapter is built for each broker type beyond config and credentials
BrokerExtras = Callable[[Engine, UserBrokerConnection], dict[str, Any]]


def connection_credentials(
    connection: UserBrokerConnection, box: SecretBox | None
) -> BrokerCredentials:
    """Decrypt a connection's secrets; every value stays masked."""
    if not (connection.api_key or connection.api_secret or connection.credentials):
        return BrokerCredentials()
    box = box or get_secret_box()
    extra = box.decrypt_json(connection.credentials)
    access_token = extra.pop("access_token", None)
    api_key = box.decrypt(connection.api_key) if connection.api_key else extra.pop("api_key", None)
    api_secret = (
        box.decrypt(connection.api_secret)
        if connection.api_secret
        else extra.pop("api_secret", None)
    )
    return BrokerCredentials(
        api_key=api_key, api_secret=api_secret, access_token=access_token, extra=extra
    )


def latest_close_lookup(
    engine: Engine, exchange: str | None = None
) -> Callable[[str, str | None], Decimal | None]:
    """Return ``(symbol, exchange) -> latest stored close`` from price_history (paper broker).

    The asset is the (symbol, exchange) pair: INFY on NSE and INFY on NYSE have their own
    prices. Without an exchange (neither here nor in the call) the symbol alone decides.
    """

    def lookup(symbol: str, venue: str | None = None) -> Decimal | None:
        query = (
            select(PriceHistory.close_price)
            .join(Asset, Asset.id == PriceHistory.asset_id)
            .where(Asset.symbol == symbol)
            .order_by(PriceHistory.price_date.desc())
            .limit(1)
        )
        if venue or exchange:
            query = query.where(Asset.exchange == (venue or exchange))
        with engine.connect() as conn:
            value = conn.execute(query).scalar()
        return None if value is None else Decimal(str(value))

    def many(pairs: Iterable[tuple[str, str | None]]) -> dict[tuple[str, str | None], Any]:
        """Return the latest close of many (symbol, exchange) pairs in one query."""
        wanted = {(s, v or exchange): (s, v) for s, v in pairs}
        if not wanted or any(v is None for _, v in wanted):
            return {key: lookup(*key) for key in wanted.values()}
        latest = (
            select(PriceHistory.asset_id, func.max(PriceHistory.price_date).label("day"))
            .join(Asset, Asset.id == PriceHistory.asset_id)
            .where(Asset.symbol.in_({s for s, _ in wanted}))
            .group_by(PriceHistory.asset_id)
            .subquery()
        )
        query = (
            select(Asset.symbol, Asset.exchange, PriceHistory.close_price)
            .join(PriceHistory, PriceHistory.asset_id == Asset.id)
            .join(
                latest,
                (latest.c.asset_id == PriceHistory.asset_id)
                & (latest.c.day == PriceHistory.price_date),
            )
            .where(Asset.symbol.in_({s for s, _ in wanted}))
        )
        with engine.connect() as conn:
            found = {(r.symbol, r.exchange): r.close_price for r in conn.execute(query)}
        return {
            asked: None if found.get(key) is None else Decimal(str(found[key]))
            for key, asked in wanted.items()
        }

    lookup.many = many  # type: ignore[attr-defined]  # the paper broker prices a batch at once
    return lookup


def mark_connection(
    engine: Engine, connection_id: uuid.UUID | str, status: str, reason: str
) -> None:
    """Set a connection's status (e.g. ``expired``) and keep the reason in its metadata."""
    with engine.begin() as conn:
        row = conn.execute(
            select(UserBrokerConnection.connection_metadata).where(
                UserBrokerConnection.id == uuid.UUID(str(connection_id))
            )
        ).scalar()
        metadata = dict(row or {})
        metadata["status_reason"] = reason
        metadata["status_changed_at"] = utcnow().isoformat()
        conn.execute(
            update(UserBrokerConnection)
            .where(UserBrokerConnection.id == uuid.UUID(str(connection_id)))
            .values(status=status, connection_metadata=metadata)
        )
    log.warning("connection %s marked %s: %s", connection_id, status, reason)


def open_broker(
    engine: Engine,
    connection: UserBrokerConnection,
    *,
    box: SecretBox | None = None,
    for_trading: bool = False,
    lookup_horizon: float | None = None,
    **overrides: Any,
) -> Broker:
    """Build the adapter for a connection row; live orders need SARAS_LIVE_TRADING.

    ``lookup_horizon`` (the run's own, when its ``execution`` parameter sets one) goes to an
    adapter that keeps its own in-process horizon (Kite), so adapter and executor wait alike.
    """
    real_money = reaches_real_money(connection)
    if for_trading and real_money and not get_settings().live_trading:
        from saras.errors import ConnectionSelectionError

        raise ConnectionSelectionError(
            f"connection {connection.alias!r} can reach a live account and SARAS_LIVE_TRADING "
            "is off"
        )
    from saras.services.corporate_actions import paper_action_feed

    connection_id = connection.id

    def on_fatal(message: str) -> None:
        mark_connection(engine, connection_id, ConnectionStatus.EXPIRED.value, message)

    # What the platform offers any adapter; each takes what its constructor names (the paper
    # broker the database, prices and corporate actions; Kite the hook that marks its
    # connection expired, and no read-back after each placement when the executor polls).
    offered: dict[str, Any] = {
        "engine": engine,
        "price_lookup": latest_close_lookup(engine),
        "corporate_actions": paper_action_feed(engine),  # the market's splits, dividends
        "on_fatal": on_fatal,
        "confirm_placement": not for_trading,
    }
    if lookup_horizon is not None:
        offered["lookup_horizon"] = lookup_horizon
    for name in overrides:
        offered.pop(name, None)
    return create_broker(
        connection_config(connection),
        connection_credentials(connection, box),
        offered=offered,
        **overrides,
    )


__all__ = ["connection_config", "connection_credentials", "mark_connection", "open_broker"]
