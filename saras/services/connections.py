"""Broker sessions: renew a connection's secrets, and check every live connection before the open.

An expired Kite token (Kite expires them at 06:00 IST) or revoked Alpaca keys are found by a
cheap authenticated call (the account: Alpaca's account, Kite's margins) and marked, Kite
``expired``, the others ``error``, so that no run starts on them; ``renew_connection`` stores
the new secrets and makes the connection ``active`` again. Secrets never appear in a reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import CursorResult, Engine, select, update
from sqlalchemy.orm import Session

from models import User, UserBrokerConnection
from models.base import utcnow
from saras.brokers.errors import BrokerError, FatalBrokerError
from saras.brokers.registry import capabilities
from saras.domain.enums import BrokerType, ConnectionStatus
from saras.errors import InvalidInputError, NotFoundError
from saras.secrets import SecretBox
from saras.services import admin
from saras.services.brokers import connection_config, mark_connection, open_broker

#: the secrets a connection may carry; api_key and api_secret have their own columns
SECRET_FIELDS = ("api_key", "api_secret", "access_token")


class CheckOutcome(StrEnum):
    """What a check of one connection found."""

    OK = "ok"
    EXPIRED = "expired"  # the broker refused our credentials: the connection is marked
    UNREACHABLE = "unreachable"  # no answer we can judge (network, 5xx): left as it is


@dataclass(frozen=True)
class ConnectionCheck:
    """One connection's check: who, which, and what the broker said."""

    connection_id: str
    user: str
    alias: str
    broker_type: str
    outcome: CheckOutcome
    status: str  # the connection's status after the check
    reason: str | None = None

    @property
    def needs_login(self) -> bool:
        """Tell whether the user must renew this connection's secrets."""
        return self.outcome is CheckOutcome.EXPIRED

    def as_row(self) -> dict[str, str]:
        """Return the check as a table row (no secrets: there are none here)."""
        return {
            "user": self.user,
            "alias": self.alias,
            "broker": self.broker_type,
            "outcome": self.outcome.value,
            "status": self.status,
            "reason": self.reason or "",
        }


def find_connection(session: Session, user: str, alias: str) -> UserBrokerConnection:
    """Return a user's connection by alias, or raise naming both."""
    owner = admin.get_user(session, user)
    connection = session.scalars(
        select(UserBrokerConnection).where(
            UserBrokerConnection.user_id == owner.id, UserBrokerConnection.alias == alias
        )
    ).first()
    if connection is None:
        raise NotFoundError(f"user {user!r} has no connection with alias {alias!r}")
    return connection


def renew_connection(
    session: Session, box: SecretBox, user: str, alias: str, secrets: Mapping[str, str]
) -> UserBrokerConnection:
    """Store new secrets for a connection and make it active again (reason cleared).

    Only the secrets given change (a Kite login renews ``access_token`` alone); the others stay.
    """
    unknown = sorted(set(secrets) - set(SECRET_FIELDS))
    if unknown:
        raise InvalidInputError(f"secret {unknown[0]!r}: expected one of {list(SECRET_FIELDS)}")
    given = {k: v for k, v in secrets.items() if v}
    if not given:
        raise InvalidInputError(
            "no secrets given: set SARAS_BROKER_API_KEY, SARAS_BROKER_API_SECRET or "
            "SARAS_BROKER_ACCESS_TOKEN, or pass a JSON object on stdin"
        )
    connection = find_connection(session, user, alias)
    if not capabilities(connection_config(connection)).needs_credentials:
        raise InvalidInputError(f"connection {alias!r} is a paper connection: it has no secrets")
    if connection.status == ConnectionStatus.REVOKED.value:
        raise InvalidInputError(f"connection {alias!r} is revoked: add a new connection instead")
    extra = {k: v.get_secret_value() for k, v in box.decrypt_json(connection.credentials).items()}
    extra.update({k: v for k, v in given.items() if k not in ("api_key", "api_secret")})
    values: dict[str, object] = {
        "credentials": box.encrypt_json(extra) if extra else None,
        "status": ConnectionStatus.ACTIVE.value,
        "connection_metadata": _cleared(connection.connection_metadata),
    }
    if "api_key" in given:
        values["api_key"] = box.encrypt(given["api_key"])
    if "api_secret" in given:
        values["api_secret"] = box.encrypt(given["api_secret"])
    old_status = connection.status
    result: CursorResult[Any] = session.execute(  # type: ignore[assignment]
        update(UserBrokerConnection)
        .where(
            UserBrokerConnection.id == connection.id,
            UserBrokerConnection.status == old_status,
        )
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        raise InvalidInputError(
            f"connection {alias!r} changed status while being renewed: try again"
        )
    session.refresh(connection)
    return connection


def _cleared(metadata: Mapping[str, object] | None) -> dict[str, object]:
    kept = {k: v for k, v in (metadata or {}).items() if k != "status_reason"}
    kept["status_changed_at"] = utcnow().isoformat()
    kept["renewed_at"] = kept["status_changed_at"]
    return kept


def check_connections(
    engine: Engine,
    *,
    box: SecretBox | None = None,
    broker_types: list[str] | None = None,
) -> list[ConnectionCheck]:
    """Call every active connection once (its account) and mark those the broker refuses.

    Kite marks itself ``expired`` (the adapter's fatal hook); any other broker refusing our
    credentials (Alpaca's 401/403) is marked ``error``. A broker that does not answer is
    reported ``unreachable`` and left as it is.
    """
    known = {b.value for b in BrokerType}
    for broker_type in broker_types or []:
        if broker_type not in known:
            raise InvalidInputError(f"broker type {broker_type!r}: expected one of {sorted(known)}")
    query = (
        select(UserBrokerConnection, User.email)
        .join(User, User.id == UserBrokerConnection.user_id)
        .where(UserBrokerConnection.status == ConnectionStatus.ACTIVE.value)
        .order_by(User.email, UserBrokerConnection.alias)
    )
    if broker_types:
        query = query.where(UserBrokerConnection.broker_type.in_(broker_types))
    with Session(engine, expire_on_commit=False) as session:
        connections = list(session.execute(query).tuples())
    return [_check_one(engine, connection, email, box) for connection, email in connections]


def _check_one(
    engine: Engine, connection: UserBrokerConnection, email: str, box: SecretBox | None
) -> ConnectionCheck:
    outcome, reason = CheckOutcome.OK, None
    try:
        open_broker(engine, connection, box=box).get_account()
    except FatalBrokerError as exc:  # our own key failing (SecretKeyError) is not: it raises
        outcome, reason = CheckOutcome.EXPIRED, str(exc)
        if not capabilities(connection_config(connection)).marks_connection_on_fatal:
            mark_connection(engine, connection.id, ConnectionStatus.ERROR.value, reason)
    except BrokerError as exc:  # retryable or a malformed answer: not the credentials' fault
        outcome, reason = CheckOutcome.UNREACHABLE, str(exc)
    with Session(engine) as session:
        status = session.scalar(
            select(UserBrokerConnection.status).where(UserBrokerConnection.id == connection.id)
        )
    if outcome is CheckOutcome.EXPIRED and status == ConnectionStatus.ACTIVE.value:
        # the adapter's own hook did not mark it (a Kite adapter built without it): mark it here
        status = ConnectionStatus.EXPIRED.value
        mark_connection(engine, connection.id, status, reason or "refused")
    return ConnectionCheck(
        connection_id=str(connection.id),
        user=email,
        alias=connection.alias or "",
        broker_type=connection.broker_type,
        outcome=outcome,
        status=str(status),
        reason=reason,
    )
