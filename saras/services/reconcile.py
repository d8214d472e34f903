"""Reconciliation differences: list them, and accept one into the ledger by explicit command.

A difference found by the nightly reconciliation stays ``open`` (and stops the next plan of every
investment on its connection) until a later reconciliation no longer sees it (``resolved``) or an
analyst accepts it (``saras reconcile accept``): the broker is then taken as the truth, and the
ledger moves to it with an ``adjustment`` transaction and a ``position_adjustments`` row (shares),
or a cash adjustment (cash). Nothing is ever accepted silently; every acceptance writes an
``audit_logs`` row.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import Connection, Engine, Table, select

from models import PriceHistory, UserBrokerConnection, UserSmallcaseInvestment
from models.base import utcnow
from saras.domain.enums import (
    AdjustmentKind,
    CorporateActionStatus,
    DifferenceKind,
    DifferenceStatus,
    InvestmentStatus,
    TransactionType,
)
from saras.errors import InvalidInputError, NotFoundError
from saras.repositories import corporate_actions as repo
from saras.repositories.audit import write_audit
from saras.repositories.positions import ledger_positions
from saras.services.corporate_actions import (
    credit_cash,
    move_holding,
    write_adjustment,
    write_transaction,
)

ACCEPT_EVENT = "reconciliation.accept"
_HOLDING_STATUSES = (InvestmentStatus.ACTIVE.value, InvestmentStatus.EXITING.value)


@dataclass(frozen=True)
class DifferenceView:
    """A stored difference as the CLI shows it."""

    id: str
    connection: str
    snapshot_date: str
    kind: str
    symbol: str
    exchange: str
    ours: str
    broker: str
    difference: str
    classification: str
    status: str
    detail: str

    def as_row(self) -> dict[str, Any]:
        """Return the row printed by the CLI."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class Accepted:
    """What accepting a difference wrote."""

    difference_id: str
    investment_id: str
    kind: str
    quantity_delta: Decimal
    cash_delta: Decimal


def _text(value: Decimal) -> str:
    return f"{value.normalize():f}" if value else "0"


def _aliases(conn: Connection, ids: set[uuid.UUID]) -> dict[uuid.UUID, str]:
    rows = conn.execute(
        select(UserBrokerConnection.id, UserBrokerConnection.alias).where(
            UserBrokerConnection.id.in_(ids)
        )
    )
    return {uuid.UUID(str(i)): a for i, a in rows}


def list_differences(engine: Engine, *, include_closed: bool = False) -> list[DifferenceView]:
    """Return the open differences (every one with ``include_closed``)."""
    with engine.connect() as conn:
        rows = repo.list_differences(conn, status=None if include_closed else DifferenceStatus.OPEN)
        aliases = _aliases(conn, {r.connection_id for r in rows})
    return [
        DifferenceView(
            id=str(r.id),
            connection=aliases.get(r.connection_id, str(r.connection_id)),
            snapshot_date=str(r.snapshot_date),
            kind=r.kind.value,
            symbol=r.symbol or (r.currency or ""),
            exchange=r.exchange,
            ours=_text(r.ours),
            broker=_text(r.broker),
            difference=_text(r.difference),
            classification=r.classification,
            status=r.status.value,
            detail=r.detail or "",
        )
        for r in rows
    ]


def list_actions(engine: Engine, *, pending_only: bool = False) -> list[dict[str, Any]]:
    """Return stored corporate actions (only the detected ones with ``pending_only``)."""
    with engine.connect() as conn:
        rows = repo.list_actions(
            conn, status=CorporateActionStatus.DETECTED if pending_only else None
        )
    return [
        {
            "id": str(a.id),
            "symbol": a.symbol,
            "exchange": a.exchange,
            "action": a.action_type.value,
            "ex_date": str(a.ex_date),
            "ratio": "" if a.ratio is None else _text(a.ratio),
            "cash_amount": "" if a.cash_amount is None else _text(a.cash_amount),
            "source": a.source,
            "status": a.status.value,
        }
        for a in rows
    ]


def _parse_id(value: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(value.strip())
    except ValueError:
        raise InvalidInputError(f"{what} {value!r} is not an id") from None


def _investment(
    conn: Connection,
    difference: repo.DifferenceRow,
    requested: uuid.UUID | None,
) -> uuid.UUID:
    """Pick the investment a difference is booked to: the one named, or the only candidate."""
    investments = cast(Table, UserSmallcaseInvestment.__table__)
    on_connection = [
        uuid.UUID(str(i))
        for i in conn.execute(
            select(investments.c.id).where(
                investments.c.broker_connection_id == difference.connection_id,
                investments.c.status.in_(_HOLDING_STATUSES),
            )
        ).scalars()
    ]
    if requested is not None:
        if requested not in on_connection:
            raise InvalidInputError(
                f"investment {requested} is not an active investment on the difference's connection"
            )
        return requested
    candidates = on_connection
    if difference.kind is DifferenceKind.POSITION and difference.asset_id is not None:
        holders = {
            p.investment_id
            for p in ledger_positions(conn, investment_ids=on_connection, active_only=False)
            if p.asset_id == difference.asset_id and p.quantity != 0
        }
        if holders:
            candidates = sorted(holders, key=str)
    if len(candidates) != 1:
        names = ", ".join(str(c) for c in candidates) or "none"
        raise InvalidInputError(
            f"difference {difference.id}: say which investment takes it with --investment "
            f"(candidates: {names})"
        )
    return candidates[0]


def accept(
    engine: Engine,
    difference_id: str,
    *,
    investment_id: str | None = None,
    accepted_by: str = "cli",
    now: datetime | None = None,
) -> Accepted:
    """Accept an open difference into the ledger: the broker's figure becomes ours.

    A position difference moves the investment's shares by broker - ours (at its average price,
    or the latest close when it holds none); a cash difference moves its cash. Refused, with
    nothing written, when the difference is not open, names an asset that is not in the asset
    master, would leave a negative position, or cannot be attributed to one investment.
    """
    now = now or utcnow()
    key = _parse_id(difference_id, "difference")
    requested = None if investment_id is None else _parse_id(investment_id, "investment")
    with engine.begin() as conn:
        found = repo.list_differences(conn, status=None, ids=[key])
        if not found:
            raise NotFoundError(f"reconciliation difference {difference_id} does not exist")
        difference = found[0]
        if difference.status is not DifferenceStatus.OPEN:
            raise InvalidInputError(
                f"reconciliation difference {difference_id} is {difference.status.value}, "
                "not open: nothing to accept"
            )
        inv_id = _investment(conn, difference, requested)
        portfolio_id = conn.execute(
            select(UserSmallcaseInvestment.portfolio_id).where(UserSmallcaseInvestment.id == inv_id)
        ).scalar_one()
        if difference.kind is DifferenceKind.CASH:
            result = _accept_cash(conn, difference, inv_id, portfolio_id, now)
        else:
            result = _accept_position(conn, difference, inv_id, portfolio_id, now)
        repo.mark_accepted(conn, difference.id, accepted_by, now)
        _audit_accept(conn, difference, result, accepted_by, now)
    return result


def _accept_cash(
    conn: Connection,
    difference: repo.DifferenceRow,
    inv_id: uuid.UUID,
    portfolio_id: uuid.UUID,
    now: datetime,
) -> Accepted:
    """Move the investment's cash by the difference (ledger row, adjustment, cash)."""
    amount = difference.difference.quantize(Decimal("0.0001"))
    tx = write_transaction(
        conn,
        portfolio_id=portfolio_id,
        asset_id=None,
        kind=TransactionType.ADJUSTMENT,
        quantity=Decimal(0),
        price=abs(amount),
        reference=f"rec:{difference.id}:{inv_id}",
        when=now,
        now=now,
    )
    write_adjustment(
        conn,
        investment_id=inv_id,
        asset_id=None,
        action_id=None,
        difference_id=difference.id,
        kind=AdjustmentKind.ACCEPTED_DIFFERENCE,
        cash_delta=amount,
        transaction_id=tx,
        when=now,
        now=now,
    )
    credit_cash(conn, portfolio_id, amount, now)
    return Accepted(str(difference.id), str(inv_id), "cash", Decimal(0), amount)


def _accept_position(
    conn: Connection,
    difference: repo.DifferenceRow,
    inv_id: uuid.UUID,
    portfolio_id: uuid.UUID,
    now: datetime,
) -> Accepted:
    """Move the investment's shares by the difference, refusing a negative position."""
    delta = difference.difference
    if difference.asset_id is None:
        raise InvalidInputError(
            f"{difference.symbol} ({difference.exchange or 'no exchange'}) is not in the "
            "asset master: add the asset first, then accept the difference"
        )
    held = {
        p.asset_id: p for p in ledger_positions(conn, investment_ids=[inv_id], active_only=False)
    }.get(difference.asset_id)
    quantity = held.quantity if held else Decimal(0)
    if quantity + delta < 0:
        raise InvalidInputError(
            f"difference {difference.id}: investment {inv_id} holds {_text(quantity)} "
            f"{difference.symbol}; taking {_text(-delta)} would leave it negative"
        )
    average = held.average_price if held and held.average_price is not None else None
    if average is None:
        close = conn.execute(
            select(PriceHistory.close_price)
            .where(PriceHistory.asset_id == difference.asset_id)
            .order_by(PriceHistory.price_date.desc())
            .limit(1)
        ).scalar()
        average = None if close is None else Decimal(str(close))
    tx = write_transaction(
        conn,
        portfolio_id=portfolio_id,
        asset_id=difference.asset_id,
        kind=TransactionType.ADJUSTMENT,
        quantity=abs(delta),
        price=average,
        reference=f"rec:{difference.id}:{inv_id}",
        when=now,
        now=now,
    )
    write_adjustment(
        conn,
        investment_id=inv_id,
        asset_id=difference.asset_id,
        action_id=None,
        difference_id=difference.id,
        kind=AdjustmentKind.ACCEPTED_DIFFERENCE,
        quantity_delta=delta,
        average_price=average,
        transaction_id=tx,
        when=now,
        now=now,
    )
    move_holding(conn, portfolio_id, difference.asset_id, delta, now)
    return Accepted(str(difference.id), str(inv_id), "position", delta, Decimal(0))


def _audit_accept(
    conn: Connection,
    difference: repo.DifferenceRow,
    result: Accepted,
    accepted_by: str,
    now: datetime,
) -> None:
    """Write the audit row naming who accepted what into which investment."""
    user_id = conn.execute(
        select(UserSmallcaseInvestment.user_id).where(
            UserSmallcaseInvestment.id == uuid.UUID(result.investment_id)
        )
    ).scalar_one()
    what = (
        f"cash {_text(result.cash_delta)} {difference.currency or ''}".strip()
        if result.kind == "cash"
        else f"{_text(result.quantity_delta)} {difference.symbol} ({difference.exchange})"
    )
    write_audit(
        conn,
        event_type=ACCEPT_EVENT,
        success=True,
        user_id=user_id,
        error_message=(
            f"difference {difference.id} ({difference.classification}) accepted by "
            f"{accepted_by} into investment {result.investment_id}: {what}"
        ),
        path="saras reconcile accept",
    )


__all__ = [
    "ACCEPT_EVENT",
    "Accepted",
    "DifferenceView",
    "accept",
    "list_actions",
    "list_differences",
]
