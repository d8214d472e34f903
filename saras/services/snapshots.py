"""Nightly position snapshot: value our ledger's positions, write them, reconcile with brokers.

The flow calls ``write_snapshot`` once (one set-based write for every active investment), then
``reconcile_batch`` once per batch of broker connections (one ``get_positions()`` call per
connection), and ``reconcile_connection`` again only for a connection whose broker answered with
a retryable error. Task runs grow with connection batches, never with investments or rows.

Choices:

* Stale prices are reported, never papered over. An asset is stale when its latest close on or
  before the snapshot day is older than its exchange's last session on or before that day (and
  already closed at run time), or when it has no close at all. A stale asset is still valued at
  its old close (the row says what the position was worth at the last price we know; the report
  says how old that price is); an asset without any close is written with quantity and average
  price, and ``market_value`` / ``unrealized_pnl`` NULL. An exchange without a calendar cannot be
  judged fresh, so its assets are reported too.
* Reconciliation compares what the broker holds now with the sum of our fills so far over every
  order placed through the connection (any investment status), per symbol. Differences are
  reported (artifact, ``audit_logs``), never written over our ledger.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.orm import Session

from models import (
    Asset,
    SmallcaseExecutionOrder,
    SmallcaseExecutionRun,
    UserBrokerConnection,
)
from saras.brokers.base import AccountInfo, Broker
from saras.brokers.errors import (
    FatalBrokerError,
    NonRetryableBrokerError,
    RetryableBrokerError,
)
from saras.brokers.registry import UnknownBrokerError, broker_capabilities
from saras.domain.enums import (
    ConnectionStatus,
    CorporateActionStatus,
    DifferenceClass,
    DifferenceKind,
    OrderStatus,
)
from saras.marketdata import calendars
from saras.marketdata.base import MarketDataError
from saras.repositories import corporate_actions as ca_repo
from saras.repositories import positions as repo
from saras.repositories.audit import write_audit
from saras.secrets import SecretKeyError
from saras.services.brokers import mark_connection, open_broker

log = logging.getLogger(__name__)

DIFFERENCE_EVENT = "reconciliation.difference"
#: how far back to look for an exchange's last session (longest market closure plus margin)
_SESSION_LOOKBACK = timedelta(days=14)
_QUANTITY_Q = Decimal("1e-9")
#: our order statuses whose fills may still be on their way to the ledger
_WORKING = (
    OrderStatus.SUBMITTING,
    OrderStatus.SUBMITTED,
    OrderStatus.PARTIALLY_FILLED,
    OrderStatus.UNKNOWN,
)


# --- the snapshot -----------------------------------------------------------------------------


@dataclass
class StaleAsset:
    """An asset valued at an old close, or at none; one row of the stale report."""

    symbol: str
    exchange: str
    last_close_date: date | None
    expected_session: date | None
    positions: int
    reason: str

    def as_row(self) -> dict[str, Any]:
        """Return the row shown in the artifact."""
        return {
            "symbol": self.symbol,
            "exchange": self.exchange,
            "last_close_date": str(self.last_close_date or "none"),
            "expected_session": str(self.expected_session or ""),
            "positions": self.positions,
            "reason": self.reason,
        }


@dataclass
class SnapshotReport:
    """What the snapshot of one day did."""

    snapshot_date: date
    investments: int = 0
    positions: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    stale: list[StaleAsset] = field(default_factory=list)

    def totals(self) -> dict[str, Any]:
        """Return the summary figures (one row of the summary artifact)."""
        return {
            "snapshot_date": str(self.snapshot_date),
            "investments": self.investments,
            "positions": self.positions,
            "inserted": self.inserted,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "removed": self.removed,
            "stale_assets": len(self.stale),
        }


def default_snapshot_date(now: datetime) -> date:
    """Return the day a snapshot run at ``now`` is for: the UTC date."""
    return now.astimezone(UTC).date()


def expected_session(exchange: str, day: date, now: datetime) -> date | None:
    """Return the exchange's last session on or before ``day`` that had closed at ``now``.

    None when the calendar cannot tell (unknown exchange, or outside the calendar's range).
    """
    try:
        days = calendars.sessions(exchange, day - _SESSION_LOOKBACK, day)
        completed = calendars.last_completed_session(exchange, now)
    except MarketDataError:
        return None
    if not days:
        return None
    return min(days[-1], completed)


def find_stale(
    closes: dict[uuid.UUID, repo.AssetClose],
    positions_by_asset: dict[uuid.UUID, int],
    day: date,
    now: datetime,
) -> list[StaleAsset]:
    """Return the held assets whose valuation close is missing or older than expected."""
    stale = []
    for asset_id, count in positions_by_asset.items():
        close = closes.get(asset_id)
        if close is None:  # pragma: no cover - every held asset is in the asset master
            continue
        expected = expected_session(close.exchange, day, now)
        if close.close is None:
            reason = f"no close on or before {day}: market value and P&L left empty"
        elif expected is None:
            reason = f"no trading calendar for {close.exchange} on {day}: freshness unknown"
        elif close.price_date is not None and close.price_date < expected:
            reason = f"valued at the {close.price_date} close; the {expected} session is missing"
        else:
            continue
        stale.append(
            StaleAsset(close.symbol, close.exchange, close.price_date, expected, count, reason)
        )
    return sorted(stale, key=lambda s: (s.exchange, s.symbol))


def write_snapshot(engine: Engine, day: date, *, now: datetime) -> SnapshotReport:
    """Write every active investment's positions for ``day`` (one transaction) and report."""
    with engine.begin() as conn:
        counts = repo.write_snapshot(conn, day)
        investments = repo.count_active_investments(conn)
    return SnapshotReport(
        snapshot_date=day,
        investments=investments,
        positions=counts.positions,
        inserted=counts.inserted,
        updated=counts.updated,
        unchanged=counts.unchanged,
        removed=counts.removed,
        stale=find_stale(counts.closes, counts.positions_by_asset, day, now),
    )


# --- reconciliation ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ConnectionRef:
    """A connection to reconcile (JSON-able for task parameters; no secrets)."""

    connection_id: str
    user_id: str
    alias: str
    broker_type: str
    status: str


@dataclass(frozen=True)
class Difference:
    """An asset (symbol, exchange) whose quantity at the broker differs from our ledger's.

    ``exchange`` is None when the broker did not say and our ledger has no such symbol.
    """

    alias: str
    symbol: str
    ours: Decimal
    broker: Decimal
    exchange: str | None = None
    kind: DifferenceKind = DifferenceKind.POSITION
    #: why, where Saras can tell (``DifferenceClass``); empty until classified
    classification: str = ""
    currency: str | None = None
    detail: str = ""

    @property
    def difference(self) -> Decimal:
        """Return broker minus ours (positive: the broker holds more than we recorded)."""
        return self.broker - self.ours

    def as_row(self) -> dict[str, Any]:
        """Return the row shown in the reconciliation artifact."""
        return {
            "connection": self.alias,
            "kind": self.kind.value,
            "symbol": self.symbol,
            "exchange": self.exchange or "",
            "currency": self.currency or "",
            "ours": _text(self.ours),
            "broker": _text(self.broker),
            "difference": _text(self.difference),
            "classification": self.classification,
            "detail": self.detail,
        }


@dataclass
class ConnectionResult:
    """How one connection's reconciliation ended."""

    connection_id: str
    alias: str
    broker_type: str
    symbols: int = 0
    differences: list[Difference] = field(default_factory=list)
    error: str | None = None
    #: the broker answered with a retryable error: try this connection again on its own
    retry: bool = False

    @property
    def failed(self) -> bool:
        """Whether the connection could not be reconciled."""
        return self.error is not None

    def as_row(self) -> dict[str, Any]:
        """Return a summary row for this connection."""
        status = "failed" if self.failed else ("differences" if self.differences else "matched")
        return {
            "connection": self.alias,
            "broker_type": self.broker_type,
            "status": status,
            "symbols": self.symbols,
            "differences": len(self.differences),
            "error": self.error or "",
        }


def _text(value: Decimal) -> str:
    return f"{value.normalize():f}" if value else "0"


def plan_reconciliation(engine: Engine) -> list[ConnectionRef]:
    """List the connections active investments use, by alias."""
    with engine.connect() as conn:
        rows = repo.connections_with_active_investments(conn)
    return [
        ConnectionRef(str(r.connection_id), str(r.user_id), r.alias, r.broker_type, r.status)
        for r in rows
    ]


def batches(refs: Sequence[ConnectionRef], size: int) -> list[list[ConnectionRef]]:
    """Cut connections into batches of at most ``size``."""
    if size < 1:
        raise ValueError(f"batch size must be positive, got {size}")
    return [list(refs[i : i + size]) for i in range(0, len(refs), size)]


#: an asset as reconciliation keys it: (symbol, exchange); exchange "" when nobody knows it
AssetKey = tuple[str, str]


def compare(
    alias: str, ours: dict[AssetKey, Decimal], broker: dict[AssetKey, Decimal]
) -> list[Difference]:
    """Return the assets whose quantities differ (zero on one side counts), in key order."""
    out = []
    for symbol, exchange in sorted(set(ours) | set(broker)):
        mine = ours.get((symbol, exchange), Decimal(0))
        theirs = broker.get((symbol, exchange), Decimal(0))
        if mine != theirs:
            out.append(Difference(alias, symbol, mine, theirs, exchange or None))
    return out


def _open(engine: Engine, ref: ConnectionRef) -> Broker:
    with Session(engine) as session:
        row = session.scalars(
            select(UserBrokerConnection).where(
                UserBrokerConnection.id == uuid.UUID(ref.connection_id)
            )
        ).one()
        session.expunge(row)
    return open_broker(engine, row)


def _book(broker: Broker, ours: dict[AssetKey, Decimal]) -> dict[AssetKey, Decimal]:
    """Ask the broker for its positions (one call); sum them per (symbol, exchange).

    A position the broker reports without an exchange (or on a venue name of its own, e.g.
    Alpaca's primary exchange) is matched to our asset when our ledger has exactly one asset of
    that symbol on this connection; otherwise it keeps the broker's exchange ('' when none).
    """
    by_symbol: dict[str, list[AssetKey]] = {}
    for key in ours:
        by_symbol.setdefault(key[0], []).append(key)
    book: dict[AssetKey, Decimal] = {}
    for position in broker.get_positions():
        quantity = Decimal(str(position.quantity)).quantize(_QUANTITY_Q)
        key = (position.symbol, position.exchange or "")
        if key not in ours and len(by_symbol.get(position.symbol, [])) == 1:
            key = by_symbol[position.symbol][0]
        book[key] = book.get(key, Decimal(0)) + quantity
    return {k: q for k, q in book.items() if q != 0}


def reconcile_connection(
    engine: Engine,
    ref: ConnectionRef,
    *,
    ours: dict[AssetKey, Decimal] | None = None,
    request_id: str | None = None,
    day: date | None = None,
) -> ConnectionResult:
    """Reconcile one connection; raises ``RetryableBrokerError`` for the task to retry.

    A fatal broker error marks the connection (Kite marks itself ``expired``; others become
    ``error``) and ends as a failed result; so does a connection that cannot be opened.
    """
    result = ConnectionResult(ref.connection_id, ref.alias, ref.broker_type)
    if ref.status != ConnectionStatus.ACTIVE.value:
        result.error = f"connection {ref.alias} is {ref.status}: not contacted"
        return result
    if ours is None:
        key = uuid.UUID(ref.connection_id)
        with engine.connect() as conn:
            ours = repo.ledger_quantities_by_connection(conn, [key])[key]
    try:
        broker = _open(engine, ref)
    except (SecretKeyError, UnknownBrokerError, ValueError) as exc:
        result.error = f"connection {ref.alias} cannot be opened: {exc}"
        return result
    try:
        book = _book(broker, ours)
        account = broker.get_account()
    except FatalBrokerError as exc:
        if not broker_capabilities(ref.broker_type).marks_connection_on_fatal:
            mark_connection(engine, ref.connection_id, ConnectionStatus.ERROR.value, str(exc))
        result.error = f"connection {ref.alias} failed: {exc}"
        return result
    except NonRetryableBrokerError as exc:
        result.error = f"connection {ref.alias}: the broker refused the positions call: {exc}"
        return result
    ours = {s: q for s, q in ours.items() if q != 0}
    result.symbols = len(set(ours) | set(book))
    result.differences = compare(ref.alias, ours, book)
    result.differences = _record(
        engine, ref, result.differences, account, day or datetime.now(UTC).date()
    )
    if result.differences:
        _audit_differences(engine, ref, result.differences, request_id)
    return result


def _record(
    engine: Engine,
    ref: ConnectionRef,
    differences: list[Difference],
    account: AccountInfo,
    day: date,
) -> list[Difference]:
    """Classify the differences, reconcile cash, and store the day's reconciliation.

    Cash: the broker's cash should have moved since the connection's first reconciliation (its
    anchor) as our ledger's cash flows through the connection moved; the first reconciliation
    only sets the anchor.
    """
    connection_id = uuid.UUID(ref.connection_id)
    cash = Decimal(str(account.cash)).quantize(Decimal("0.0001"))
    with engine.begin() as conn:
        flow = ca_repo.ledger_cash_flows(conn, [connection_id])[connection_id]
        anchor = ca_repo.cash_anchor(conn, connection_id)
        classified = [_classify(conn, connection_id, d) for d in differences]
        if anchor is not None and anchor.snapshot_date != day:
            expected = anchor.broker_cash + (flow - anchor.ledger_cash_flow)
            if abs(cash - expected) > ca_repo.CASH_TOLERANCE:
                classified.append(
                    Difference(
                        ref.alias,
                        "",
                        expected,
                        cash,
                        None,
                        DifferenceKind.CASH,
                        DifferenceClass.CASH.value,
                        account.currency,
                        f"broker cash moved by {_text(cash - anchor.broker_cash)} since "
                        f"{anchor.snapshot_date}, our ledger by "
                        f"{_text(flow - anchor.ledger_cash_flow)} {account.currency}",
                    )
                )
        ca_repo.record_reconciliation(
            conn,
            connection_id,
            day,
            broker_cash=cash,
            ledger_cash_flow=flow,
            currency=account.currency,
            differences=[
                ca_repo.StoredDifference(
                    kind=d.kind,
                    symbol=d.symbol,
                    exchange=d.exchange or "",
                    asset_id=_asset_id(conn, d),
                    ours=d.ours,
                    broker=d.broker,
                    classification=d.classification,
                    detail=d.detail,
                    currency=d.currency,
                )
                for d in classified
            ],
        )
    return classified


def _asset_id(conn: Connection, d: Difference) -> uuid.UUID | None:
    if d.kind is not DifferenceKind.POSITION or not d.exchange:
        return None
    found = conn.execute(
        select(Asset.id).where(Asset.symbol == d.symbol, Asset.exchange == d.exchange)
    ).scalar()
    return None if found is None else uuid.UUID(str(found))


def _classify(conn: Connection, connection_id: uuid.UUID, d: Difference) -> Difference:
    """Say why a position differs, where Saras can tell."""
    asset_id = _asset_id(conn, d)
    if asset_id is not None:
        pending = ca_repo.list_actions(
            conn, status=CorporateActionStatus.DETECTED, asset_ids=[asset_id]
        )
        ratio = Decimal(1)
        for action in pending:
            if action.ratio is not None:
                ratio *= action.ratio
        if pending and ratio != 1 and abs(d.ours * ratio - d.broker) <= max(ratio, Decimal(1)):
            names = ", ".join(f"{a.action_type.value} of {a.ex_date}" for a in pending)
            return replace(
                d,
                classification=DifferenceClass.SPLIT_NOT_APPLIED.value,
                detail=f"the broker applied {names} (x{_text(ratio)}); our ledger has not yet",
            )
        orders = SmallcaseExecutionOrder.__table__
        runs = SmallcaseExecutionRun.__table__
        working = conn.execute(
            select(func.count())
            .select_from(orders)
            .join(runs, runs.c.id == orders.c.execution_run_id)
            .where(
                runs.c.broker_connection_id == connection_id,
                orders.c.asset_id == asset_id,
                orders.c.status.in_([s.value for s in _WORKING]),
            )
        ).scalar_one()
        if working:
            return replace(
                d,
                classification=DifferenceClass.FILL_NOT_RECORDED.value,
                detail=f"{working} order(s) of ours in this asset are still working or in doubt",
            )
    return replace(
        d,
        classification=DifferenceClass.EXTERNAL_TRADE.value,
        detail="nothing of ours explains it: traded outside Saras (accept it to book it)",
    )


def reconcile_batch(
    engine: Engine,
    refs: Sequence[ConnectionRef],
    *,
    request_id: str | None = None,
    day: date | None = None,
) -> list[ConnectionResult]:
    """Reconcile a batch of connections, one positions call each; failures stay per connection.

    A connection whose broker answers with a retryable error comes back with ``retry`` set,
    for the flow to retry on its own (the others are not called again).
    """
    if not refs:
        return []
    ids = [uuid.UUID(r.connection_id) for r in refs]
    with engine.connect() as conn:
        ours = repo.ledger_quantities_by_connection(conn, ids)
    results = []
    for ref, connection_id in zip(refs, ids, strict=True):
        try:
            results.append(
                reconcile_connection(
                    engine, ref, ours=ours.get(connection_id, {}), request_id=request_id, day=day
                )
            )
        except RetryableBrokerError as exc:
            results.append(
                ConnectionResult(
                    ref.connection_id, ref.alias, ref.broker_type, error=str(exc), retry=True
                )
            )
    return results


def failed_result(ref: ConnectionRef, message: str) -> ConnectionResult:
    """Report a connection whose reconciliation could not run at all."""
    return ConnectionResult(ref.connection_id, ref.alias, ref.broker_type, error=message)


def _audit_differences(
    engine: Engine, ref: ConnectionRef, differences: Sequence[Difference], request_id: str | None
) -> None:
    shown = "; ".join(
        (
            f"cash ({d.currency}): ours {_text(d.ours)}, broker {_text(d.broker)}"
            if d.kind is DifferenceKind.CASH
            else f"{d.symbol} ({d.exchange or '?'}): ours {_text(d.ours)}, "
            f"broker {_text(d.broker)} [{d.classification}]"
        )
        for d in differences[:20]
    )
    more = f" (+{len(differences) - 20} more)" if len(differences) > 20 else ""
    message = (
        f"connection {ref.alias} ({ref.broker_type}): {len(differences)} symbol(s) differ "
        f"from our ledger: {shown}{more}"
    )
    with engine.begin() as conn:
        write_audit(
            conn,
            event_type=DIFFERENCE_EVENT,
            success=False,
            request_id=request_id,
            user_id=uuid.UUID(ref.user_id),
            error_message=message,
            path="flows/position_snapshot.py:snapshot_positions",
        )
    log.warning("%s", message)


__all__ = [
    "DIFFERENCE_EVENT",
    "ConnectionRef",
    "ConnectionResult",
    "Difference",
    "SnapshotReport",
    "StaleAsset",
    "batches",
    "compare",
    "default_snapshot_date",
    "expected_session",
    "failed_result",
    "find_stale",
    "plan_reconciliation",
    "reconcile_batch",
    "reconcile_connection",
    "write_snapshot",
]
