"""Corporate actions: capture them at ingestion, apply them to the ledger once, feed the paper book.

Capture. Sources that report actions (yfinance's ``Stock Splits`` and ``Dividends``, Alpaca's
corporate-actions endpoint) hand them over with their bars; ingestion stores them in
``corporate_actions`` (one per asset, type and ex-date, status ``detected``). A source that gives
only adjusted prices still betrays a split: its re-fetched history is rewritten by the split's
factor, which ingestion detects; a factor close to a simple ratio (4, 1/10, 3/2) is recorded as
an *inferred* split (source ``inferred:<source>``), which is never applied on its own: an analyst
confirms it (``saras reconcile apply-action``). Dividend adjustments (a factor of a few percent)
are not splits and are not inferred.

Application. ``apply_due_actions`` applies every reported action whose ex-date has come, once:
for each investment holding the asset before the ex-date (fills before the ex-date's 00:00 UTC,
plus earlier adjustments) it writes a ``trading_transactions`` row (``split`` or ``bonus``: the
holding after the action, quantity x ratio at average price / ratio, cash unchanged) and a
``position_adjustments`` row (the shares added or taken), moves the portfolio holding, and pays
the fraction the broker cannot hold as cash in lieu at the latest close (whole shares on Kite and
on paper accounts without fractional trading; 9 decimals elsewhere), as a ``cash_in_lieu``
transaction. A dividend credits quantity x amount to the portfolio's cash as a ``dividend``
transaction. Everything for one action is one transaction; the action row goes from ``detected``
to ``applied`` with ``WHERE status = 'detected'`` and the adjustments are unique per action,
investment and kind, so applying twice changes nothing.

The paper broker learns of actions like a real broker does, from the market: it is given a feed
of the stored actions (``paper_action_feed``) and applies each to its own book once, whatever our
ledger did (so that reconciliation can catch a ledger that did not follow).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal
from fractions import Fraction
from typing import Any, Protocol, cast

from sqlalchemy import Connection, Engine, Table, select, union, update
from uuid_utils.compat import uuid7

from models import (
    Portfolio,
    PortfolioHolding,
    PositionAdjustment,
    PriceHistory,
    SmallcaseExecutionOrder,
    SmallcaseExecutionRun,
    TradingTransaction,
    UserBrokerConnection,
    UserSmallcaseInvestment,
)
from models.base import utcnow
from saras.brokers.paper import PaperCorporateAction
from saras.brokers.registry import UnknownBrokerError, broker_capabilities
from saras.domain.enums import (
    AdjustmentKind,
    CorporateActionStatus,
    CorporateActionType,
    TransactionType,
)
from saras.marketdata.base import SourceAction
from saras.repositories import corporate_actions as repo
from saras.repositories.positions import LedgerPosition, ledger_positions

log = logging.getLogger(__name__)

QUANTITY_Q = Decimal("1e-9")
PRICE_Q = Decimal("1e-6")
MONEY_Q = Decimal("1e-4")
INFERRED_PREFIX = "inferred:"
#: a rewrite factor within this relative distance of a simple ratio is taken for a split
_RATIO_TOLERANCE = 0.002
#: the largest denominator (and, for reverse splits, numerator) of the ratios splits use
_MAX_TERM = 10
#: factors closer to 1 than this are dividend (or data) adjustments, not splits
_MIN_SPLIT_FACTOR = 1.2


class _Item(Protocol):
    """An ingestion item: the asset and its exchange."""

    @property
    def asset_id(self) -> str: ...

    @property
    def exchange(self) -> str: ...


# --- capture ----------------------------------------------------------------------------------


def _reported(item: _Item, symbol: str, action: SourceAction, source: str) -> repo.ReportedAction:
    return repo.ReportedAction(
        symbol=symbol,
        exchange=item.exchange,
        action_type=CorporateActionType(action.action_type),
        ex_date=action.ex_date,
        source=source,
        ratio=action.ratio,
        cash_amount=action.cash_amount,
        currency=action.currency,
    )


def record_source_actions(
    conn: Connection,
    items: Mapping[str, _Item],
    actions: Sequence[SourceAction],
    source: str,
) -> dict[str, int]:
    """Store the actions a source reported for the batch's symbols; return new ones per symbol."""
    out: dict[str, int] = {}
    for action in actions:
        item = items.get(action.symbol)
        if item is None:
            continue
        reported = _reported(item, action.symbol, action, source)
        assets = {(action.symbol, item.exchange): uuid.UUID(item.asset_id)}
        new = repo.record_actions(conn, assets, [reported])
        if new:
            out[action.symbol] = out.get(action.symbol, 0) + new
    return out


def simple_ratio(factor: float) -> Fraction | None:
    """Return the split ratio a rewrite factor stands for (4, 3/2, 1/10, ...), or None.

    Only ratios of small terms count (larger at most 20, smaller at most 10), within 0.2%:
    1.018 (a dividend adjustment) or 1.37 (a vendor's data fix) are not splits.
    """
    if factor <= 0 or 1 / _MIN_SPLIT_FACTOR < factor < _MIN_SPLIT_FACTOR:
        return None
    forward = factor >= 1
    ratio = Fraction(factor if forward else 1 / factor).limit_denominator(_MAX_TERM)
    if ratio.numerator > 2 * _MAX_TERM:
        return None  # 79/10 is a coincidence, not a split
    if not forward:
        ratio = 1 / ratio
    if abs(float(ratio) - factor) / factor > _RATIO_TOLERANCE:
        return None
    return ratio


def infer_from_rewrite(
    items: Mapping[str, Any],
    factors: Mapping[str, float],
    reported: Sequence[SourceAction],
) -> list[SourceAction]:
    """Infer splits from rewritten histories the source did not explain with a reported split.

    The ex-date is taken as the first day fetched after the stored history (the split happened
    between the last stored day and then).
    """
    explained = {a.symbol for a in reported if a.action_type != "dividend"}
    out = []
    for symbol, factor in sorted(factors.items()):
        if symbol in explained:
            continue
        ratio = simple_ratio(factor)
        if ratio is None:
            continue
        value = (Decimal(ratio.numerator) / Decimal(ratio.denominator)).quantize(Decimal("1e-12"))
        kind = "split" if value > 1 else "reverse_split"
        out.append(SourceAction(symbol, kind, items[symbol].start, ratio=value))
        log.warning(
            "%s: history rewritten by %.6f: recorded as an inferred %s of %s", symbol, factor,
            kind, value,
        )  # fmt: skip
    return out


# --- application ------------------------------------------------------------------------------


@dataclass(frozen=True)
class AppliedAction:
    """What applying one action did."""

    action_id: uuid.UUID
    symbol: str
    exchange: str
    action_type: str
    ex_date: date
    investments: int
    quantity_added: Decimal
    cash: Decimal


def _t(value: Any) -> Table:
    return cast(Table, value)


def _whole_shares(broker_type: str, metadata: Mapping[str, Any] | None) -> bool:
    """Whether a connection's broker can hold fractions of a share (else cash in lieu)."""
    try:
        return not broker_capabilities(broker_type, metadata=metadata).fractional
    except UnknownBrokerError:
        return True  # a broker we know nothing about: whole shares


def _holders(conn: Connection, asset_id: uuid.UUID) -> list[uuid.UUID]:
    orders = _t(SmallcaseExecutionOrder.__table__)
    runs = _t(SmallcaseExecutionRun.__table__)
    adjustments = _t(PositionAdjustment.__table__)
    query = union(
        select(runs.c.investment_id)
        .join(orders, orders.c.execution_run_id == runs.c.id)
        .where(orders.c.asset_id == asset_id),
        select(adjustments.c.investment_id).where(adjustments.c.asset_id == asset_id),
    )
    return sorted(conn.execute(query).scalars(), key=str)


def _latest_close(conn: Connection, asset_id: uuid.UUID) -> Decimal | None:
    value = conn.execute(
        select(PriceHistory.close_price)
        .where(PriceHistory.asset_id == asset_id)
        .order_by(PriceHistory.price_date.desc())
        .limit(1)
    ).scalar()
    return None if value is None else Decimal(str(value))


def write_transaction(
    conn: Connection,
    *,
    portfolio_id: uuid.UUID,
    asset_id: uuid.UUID | None,
    kind: TransactionType,
    quantity: Decimal,
    price: Decimal | None,
    reference: str,
    when: datetime,
    now: datetime,
) -> uuid.UUID:
    """Insert one ledger row (``reference`` is its unique broker transaction id); return its id."""
    new_id = uuid.UUID(str(uuid7()))
    conn.execute(
        _t(TradingTransaction.__table__)
        .insert()
        .values(
            id=new_id,
            portfolio_id=portfolio_id,
            asset_id=asset_id,
            transaction_type=kind.value,
            quantity=quantity,
            price=price,
            fees=Decimal(0),
            broker_transaction_id=reference,
            transaction_date=when,
            created_at=now,
            updated_at=now,
        )
    )
    return new_id


def write_adjustment(
    conn: Connection,
    *,
    investment_id: uuid.UUID,
    asset_id: uuid.UUID | None,
    action_id: uuid.UUID | None,
    difference_id: uuid.UUID | None = None,
    kind: AdjustmentKind,
    quantity_delta: Decimal = Decimal(0),
    average_price: Decimal | None = None,
    cash_delta: Decimal = Decimal(0),
    transaction_id: uuid.UUID,
    when: datetime,
    now: datetime,
) -> None:
    """Insert one position adjustment of an investment (shares and/or cash)."""
    conn.execute(
        _t(PositionAdjustment.__table__)
        .insert()
        .values(
            id=uuid7(),
            investment_id=investment_id,
            asset_id=asset_id,
            corporate_action_id=action_id,
            difference_id=difference_id,
            kind=kind.value,
            quantity_delta=quantity_delta,
            average_price=average_price,
            cash_delta=cash_delta,
            transaction_id=transaction_id,
            effective_at=when,
            created_at=now,
            updated_at=now,
        )
    )


def move_holding(
    conn: Connection,
    portfolio_id: uuid.UUID,
    asset_id: uuid.UUID,
    delta: Decimal,
    now: datetime,
    *,
    ratio: Decimal | None = None,
) -> None:
    """Move a portfolio holding by ``delta`` shares (and divide its average by ``ratio``)."""
    holdings = _t(PortfolioHolding.__table__)
    row = conn.execute(
        select(holdings.c.id, holdings.c.quantity, holdings.c.average_price)
        .where(holdings.c.portfolio_id == portfolio_id, holdings.c.asset_id == asset_id)
        .with_for_update()
    ).first()
    if row is None:
        return  # the portfolio's holdings are derived from fills; none to move
    values: dict[str, Any] = {
        "quantity": max(Decimal(str(row.quantity)) + delta, Decimal(0)),
        "updated_at": now,
    }
    if ratio is not None and row.average_price is not None:
        values["average_price"] = (Decimal(str(row.average_price)) / ratio).quantize(PRICE_Q)
    conn.execute(holdings.update().where(holdings.c.id == row.id).values(**values))


def credit_cash(conn: Connection, portfolio_id: uuid.UUID, amount: Decimal, now: datetime) -> None:
    """Add ``amount`` (may be negative) to a portfolio's cash."""
    conn.execute(
        update(Portfolio)
        .where(Portfolio.id == portfolio_id)
        .values(cash_balance=Portfolio.cash_balance + amount, updated_at=now)
    )


def _credit_cash_row(
    conn: Connection,
    portfolio_id: uuid.UUID,
    investment_id: uuid.UUID,
    action: repo.ActionRow,
    tx_kind: TransactionType,
    adj_kind: AdjustmentKind,
    *,
    quantity: Decimal,
    price: Decimal,
    cash: Decimal,
    reference: str,
    when: datetime,
    now: datetime,
) -> None:
    """Credit ``cash`` from an action to a portfolio: a ledger row, its adjustment, the cash."""
    tx = write_transaction(
        conn,
        portfolio_id=portfolio_id,
        asset_id=action.asset_id,
        kind=tx_kind,
        quantity=quantity,
        price=price,
        reference=reference,
        when=when,
        now=now,
    )
    write_adjustment(
        conn,
        investment_id=investment_id,
        asset_id=action.asset_id,
        action_id=action.id,
        kind=adj_kind,
        cash_delta=cash,
        transaction_id=tx,
        when=when,
        now=now,
    )
    credit_cash(conn, portfolio_id, cash, now)


def _apply(conn: Connection, action: repo.ActionRow, now: datetime) -> AppliedAction:
    """Apply one action to every holder's ledger, in the caller's transaction."""
    holders = _holders(conn, action.asset_id)
    cutoff = datetime.combine(action.ex_date, time(0), tzinfo=UTC)
    positions = [
        p
        for p in ledger_positions(conn, as_of=cutoff, investment_ids=holders, active_only=False)
        if p.asset_id == action.asset_id and p.quantity > 0
    ]
    info = _holder_rows(conn, [p.investment_id for p in positions])
    price = _latest_close(conn, action.asset_id)
    added = Decimal(0)
    cash_total = Decimal(0)
    for p in positions:
        if action.action_type is CorporateActionType.DIVIDEND:
            cash_total += _pay_dividend(conn, action, p, info[p.investment_id], cutoff, now)
            continue
        more, cash = _split_position(conn, action, p, info[p.investment_id], price, cutoff, now)
        added += more
        cash_total += cash
    repo.mark_applied(conn, action.id, now)
    return AppliedAction(
        action.id,
        action.symbol,
        action.exchange,
        action.action_type.value,
        action.ex_date,
        len(positions),
        added,
        cash_total,
    )


def _holder_rows(conn: Connection, investment_ids: list[uuid.UUID]) -> dict[uuid.UUID, Any]:
    """Return each holding investment's portfolio and broker (for its share quantum)."""
    investments = _t(UserSmallcaseInvestment.__table__)
    connections = _t(UserBrokerConnection.__table__)
    return {
        r.id: r
        for r in conn.execute(
            select(
                investments.c.id,
                investments.c.portfolio_id,
                connections.c.broker_type,
                connections.c.connection_metadata,
            )
            .join(connections, connections.c.id == investments.c.broker_connection_id)
            .where(investments.c.id.in_(investment_ids))
        )
    }


def _pay_dividend(
    conn: Connection,
    action: repo.ActionRow,
    p: LedgerPosition,
    inv: Any,
    cutoff: datetime,
    now: datetime,
) -> Decimal:
    """Credit one holder's dividend once; return the cash credited (zero if already paid)."""
    if repo.adjustment_exists(
        conn,
        investment_id=p.investment_id,
        kind=AdjustmentKind.DIVIDEND.value,
        corporate_action_id=action.id,
    ):
        return Decimal(0)
    assert action.cash_amount is not None
    cash = (p.quantity * action.cash_amount).quantize(MONEY_Q, ROUND_HALF_UP)
    _credit_cash_row(
        conn,
        inv.portfolio_id,
        p.investment_id,
        action,
        TransactionType.DIVIDEND,
        AdjustmentKind.DIVIDEND,
        quantity=p.quantity,
        price=action.cash_amount,
        cash=cash,
        reference=f"div:{action.id}:{p.investment_id}",
        when=cutoff,
        now=now,
    )
    return cash


def _split_position(
    conn: Connection,
    action: repo.ActionRow,
    p: LedgerPosition,
    inv: Any,
    price: Decimal | None,
    cutoff: datetime,
    now: datetime,
) -> tuple[Decimal, Decimal]:
    """Apply a split or bonus to one holder once; return (shares added, cash in lieu)."""
    kind = (
        AdjustmentKind.BONUS
        if action.action_type is CorporateActionType.BONUS
        else AdjustmentKind.SPLIT
    )
    if repo.adjustment_exists(
        conn, investment_id=p.investment_id, kind=kind.value, corporate_action_id=action.id
    ):
        return Decimal(0), Decimal(0)
    assert action.ratio is not None
    exact = p.quantity * action.ratio
    quantum = Decimal(1) if _whole_shares(inv.broker_type, inv.connection_metadata) else QUANTITY_Q
    after = exact.quantize(quantum, rounding=ROUND_DOWN).quantize(QUANTITY_Q)
    remainder = exact - after
    average = (
        (p.average_price / action.ratio).quantize(PRICE_Q, ROUND_HALF_UP)
        if p.average_price is not None
        else price
    )
    tx = write_transaction(
        conn,
        portfolio_id=inv.portfolio_id,
        asset_id=action.asset_id,
        kind=TransactionType.BONUS if kind is AdjustmentKind.BONUS else TransactionType.SPLIT,
        quantity=after,
        price=average,
        reference=f"ca:{action.id}:{p.investment_id}",
        when=cutoff,
        now=now,
    )
    write_adjustment(
        conn,
        investment_id=p.investment_id,
        asset_id=action.asset_id,
        action_id=action.id,
        kind=kind,
        quantity_delta=after - p.quantity,
        average_price=average,
        transaction_id=tx,
        when=cutoff,
        now=now,
    )
    move_holding(
        conn, inv.portfolio_id, action.asset_id, after - p.quantity, now, ratio=action.ratio
    )
    if remainder <= 0:
        return after - p.quantity, Decimal(0)
    if price is None:
        raise ValueError(
            f"{action.symbol} ({action.exchange}): cash in lieu of {remainder} shares "
            "needs a close, and there is none"
        )
    cash = (remainder * price).quantize(MONEY_Q, ROUND_HALF_UP)
    _credit_cash_row(
        conn,
        inv.portfolio_id,
        p.investment_id,
        action,
        TransactionType.CASH_IN_LIEU,
        AdjustmentKind.CASH_IN_LIEU,
        quantity=remainder.quantize(QUANTITY_Q),
        price=price,
        cash=cash,
        reference=f"cil:{action.id}:{p.investment_id}",
        when=cutoff,
        now=now,
    )
    return after - p.quantity, cash


def apply_due_actions(
    engine: Engine, *, as_of: date, now: datetime | None = None
) -> list[AppliedAction]:
    """Apply every reported action due by ``as_of`` to the ledger, each once, oldest first.

    Inferred actions wait for an analyst (``apply_action``); each action is its own transaction.
    """
    now = now or utcnow()
    with engine.connect() as conn:
        due = [
            a
            for a in repo.list_actions(conn, status=CorporateActionStatus.DETECTED, due_by=as_of)
            if not a.source.startswith(INFERRED_PREFIX)
        ]
    out = []
    for action in due:
        with engine.begin() as conn:
            out.append(_apply(conn, action, now))
        log.info("applied %s %s (%s) of %s", action.action_type.value, action.symbol,
                 action.exchange, action.ex_date)  # fmt: skip
    return out


def apply_action(
    engine: Engine, action_id: uuid.UUID, now: datetime | None = None
) -> AppliedAction:
    """Apply one detected action (an inferred one, confirmed by an analyst) to the ledger."""
    now = now or utcnow()
    with engine.begin() as conn:
        found = [a for a in repo.list_actions(conn) if a.id == action_id]
        if not found:
            from saras.errors import InvalidInputError

            raise InvalidInputError(f"corporate action {action_id}: no such action")
        action = found[0]
        if action.status is not CorporateActionStatus.DETECTED:
            from saras.errors import InvalidInputError

            raise InvalidInputError(
                f"corporate action {action_id} is {action.status.value}: nothing to apply"
            )
        return _apply(conn, action, now)


def dismiss_action(engine: Engine, action_id: uuid.UUID, now: datetime | None = None) -> None:
    """Dismiss a detected action that is not one (e.g. an inferred split that was a data fix)."""
    from saras.errors import InvalidInputError

    now = now or utcnow()
    with engine.begin() as conn:
        found = [a for a in repo.list_actions(conn) if a.id == action_id]
        if not found:
            raise InvalidInputError(f"corporate action {action_id}: no such action")
        if found[0].status is not CorporateActionStatus.DETECTED:
            raise InvalidInputError(
                f"corporate action {action_id} is {found[0].status.value}: only a detected "
                "action can be dismissed"
            )
        repo.mark_dismissed(conn, action_id, now)


# --- the paper broker's market feed -----------------------------------------------------------


def paper_action_feed(engine: Engine) -> Callable[[], list[PaperCorporateAction]]:
    """Return a feed of every stored action due today, as the paper broker applies them."""

    def feed() -> list[PaperCorporateAction]:
        with engine.connect() as conn:
            actions = repo.list_actions(conn, due_by=utcnow().date())
        out = []
        for a in actions:
            if a.status is CorporateActionStatus.DISMISSED:
                continue
            out.append(
                PaperCorporateAction(
                    action_id=str(a.id),
                    symbol=a.symbol,
                    exchange=a.exchange,
                    action_type=a.action_type.value,
                    ratio=a.ratio,
                    cash_per_share=a.cash_amount,
                )
            )
        return out

    return feed


__all__ = [
    "AppliedAction",
    "apply_action",
    "apply_due_actions",
    "credit_cash",
    "dismiss_action",
    "infer_from_rewrite",
    "move_holding",
    "paper_action_feed",
    "record_source_actions",
    "simple_ratio",
    "write_adjustment",
    "write_transaction",
]
