"""Broker connections: creation with generated aliases, and the broker selection query."""

from __future__ import annotations

import re
import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from models import UserBrokerConnection
from saras.brokers.base import ConnectionConfig
from saras.brokers.registry import broker_capabilities, capabilities
from saras.domain.enums import ConnectionStatus
from saras.errors import ConnectionSelectionError, InvalidInputError

_ALIAS_RE = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,99}$")


def next_alias(session: Session, user_id: uuid.UUID, broker_type: str) -> str:
    """Return the next free alias for a user's broker: ``<broker>_primary``, then ``_2``, ..."""
    taken = set(
        session.scalars(
            select(UserBrokerConnection.alias).where(UserBrokerConnection.user_id == user_id)
        )
    )
    candidate = f"{broker_type}_primary"
    n = 1
    while candidate in taken:
        n += 1
        candidate = f"{broker_type}_{n}"
    return candidate


def create_connection(
    session: Session,
    *,
    user_id: uuid.UUID,
    broker_type: str,
    paper_trading: bool | None = None,
    alias: str | None = None,
    api_key: str | None = None,
    api_secret: str | None = None,
    credentials: dict[str, Any] | None = None,
    connection_metadata: dict[str, Any] | None = None,
) -> UserBrokerConnection:
    """Add a connection; secrets must already be encrypted (see ``saras.services.admin``)."""
    if alias is None:
        alias = next_alias(session, user_id, broker_type)
    elif not _ALIAS_RE.match(alias):
        raise InvalidInputError(
            f"alias {alias!r}: use lower-case letters, digits, '_' or '-' (at most 100)"
        )
    connection = UserBrokerConnection(
        user_id=user_id,
        broker_type=broker_type,
        alias=alias,
        # None: the broker's nature (Kite has no paper environment), a capability of its kit
        paper_trading=(
            broker_capabilities(broker_type).paper_environment
            if paper_trading is None
            else paper_trading
        ),
        api_key=api_key,
        api_secret=api_secret,
        credentials=credentials,
        connection_metadata=connection_metadata or {},
        status=ConnectionStatus.ACTIVE.value,
    )
    session.add(connection)
    session.flush()
    return connection


def reaches_real_money(connection: UserBrokerConnection) -> bool:
    """Tell whether orders through a connection can reach a real account (its capability).

    Not the row's ``paper_trading`` flag alone: a "paper" Alpaca row whose ``base_url`` names
    the live endpoint reaches real money.
    """
    return capabilities(connection_config(connection)).real_money


def connection_config(connection: UserBrokerConnection) -> ConnectionConfig:
    """Return what an adapter needs to know about a connection (no secrets)."""
    return ConnectionConfig(
        connection_id=str(connection.id),
        broker_type=connection.broker_type,
        paper_trading=connection.paper_trading,
        metadata=dict(connection.connection_metadata or {}),
    )


def select_connection(
    session: Session,
    user_id: uuid.UUID,
    *,
    alias: str | None = None,
    broker_type: str | None = None,
    paper_trading: bool | None = None,
) -> UserBrokerConnection:
    """Pick a user's connection: by alias, or the single active one of a broker type.

    With ``alias`` the user's connection of that alias (another user's never matches) must be
    active. Otherwise ``broker_type`` is required and exactly one active (``status = 'active'``)
    connection of that type must exist, paper or live as ``paper_trading`` says (either, when
    None). Raises ``ConnectionSelectionError`` naming what was asked and what was found.
    """
    query = select(UserBrokerConnection).where(UserBrokerConnection.user_id == user_id)
    if alias is not None:
        connection = session.scalars(query.where(UserBrokerConnection.alias == alias)).first()
        if connection is None:
            raise ConnectionSelectionError(f"user {user_id} has no broker connection {alias!r}")
        if connection.status != ConnectionStatus.ACTIVE.value:
            raise ConnectionSelectionError(
                f"connection {alias!r} of user {user_id} is {connection.status}, not active"
            )
        if broker_type is not None and connection.broker_type != broker_type:
            raise ConnectionSelectionError(
                f"connection {alias!r} is a {connection.broker_type} connection, not {broker_type}"
            )
        if paper_trading is not None and reaches_real_money(connection) == paper_trading:
            kind, asked = ("a live account", "paper") if paper_trading else ("paper", "live")
            raise ConnectionSelectionError(f"connection {alias!r} reaches {kind}, not {asked}")
        return connection
    if broker_type is None:
        raise ConnectionSelectionError("select a connection by alias or by broker type")
    query = query.where(
        UserBrokerConnection.broker_type == broker_type,
        UserBrokerConnection.status == ConnectionStatus.ACTIVE.value,
    )
    mode = "paper or live"
    found = list(session.scalars(query.order_by(UserBrokerConnection.alias)))
    if paper_trading is not None:
        found = [c for c in found if reaches_real_money(c) != paper_trading]
        mode = "paper" if paper_trading else "live"
    if not found:
        raise ConnectionSelectionError(
            f"user {user_id} has no active {mode} {broker_type} connection"
        )
    if len(found) > 1:
        aliases = ", ".join(c.alias for c in found)
        raise ConnectionSelectionError(
            f"user {user_id} has {len(found)} active {mode} {broker_type} connections "
            f"({aliases}): choose one by alias"
        )
    return found[0]
