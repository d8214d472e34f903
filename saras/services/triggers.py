"""Which smallcases are due for a rebalance: the data behind ``saras.domain.triggers``.

For each active smallcase: its stored policy, its exchange's sessions, the day of its last
approved rebalance, and the drift of each active investment from the ledger (positions from
the fills recorded on execution orders, cash = investment amount - what the fills cost),
valued at the latest close on or before the evaluation day.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.orm import Session

from models import (
    Asset,
    Smallcase,
    SmallcaseConstituent,
    SmallcaseExecutionOrder,
    SmallcaseExecutionRun,
    UserSmallcaseInvestment,
)
from saras.domain.enums import InvestmentStatus, OrderSide, RunStatus, RunType
from saras.domain.policy import RebalancePolicy
from saras.domain.triggers import AssetKey, DriftMeasure, TriggerDecision, decide_due, measure_drift
from saras.errors import InvalidInputError
from saras.marketdata import calendars
from saras.marketdata.base import UnknownExchangeError
from saras.repositories.positions import latest_closes, ledger_positions
from saras.services.policy import stored_policy

#: runs whose rebalance was decided: the cooldown and calendar count from them
DECIDED = (
    RunStatus.APPROVED,
    RunStatus.EXECUTING,
    RunStatus.COMPLETED,
    RunStatus.PARTIALLY_COMPLETED,
)
#: sessions looked back for calendar reviews (a quarter and then some)
_LOOKBACK = timedelta(days=200)
#: sessions looked ahead, to place a review whose nominal day is still to come
_LOOKAHEAD = timedelta(days=40)


@dataclass(frozen=True)
class SmallcaseEvaluation:
    """One smallcase's trigger decision, with what it was decided on."""

    smallcase_id: uuid.UUID
    name: str
    exchange: str | None
    day: date
    policy: RebalancePolicy
    decision: TriggerDecision
    investments: int
    last_rebalanced: date | None

    @property
    def due(self) -> bool:
        """Whether a rebalance should start."""
        return self.decision.due

    def as_row(self) -> dict[str, str]:
        """Return the evaluation as one row of the trigger artifact."""
        return {
            "smallcase": self.name,
            "exchange": self.exchange or "-",
            "day": self.day.isoformat(),
            "due": "yes" if self.due else "no",
            "reasons": "; ".join(self.decision.reasons),
            "trigger": self.policy.calendar_trigger.value,
            "investments": str(self.investments),
            "last_rebalance": self.last_rebalanced.isoformat() if self.last_rebalanced else "-",
        }


def _dec(value: object) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value or 0))


def _spent(conn: Connection, investment_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Decimal]:
    """Return what each investment's fills cost (buys + fees - sells), from the ledger."""
    orders, runs = SmallcaseExecutionOrder, SmallcaseExecutionRun
    spent: dict[uuid.UUID, Decimal] = defaultdict(Decimal)
    rows = conn.execute(
        select(runs.investment_id, orders.side, orders.order_metadata)
        .join(orders, orders.execution_run_id == runs.id)
        .where(runs.investment_id.in_(list(investment_ids)))
    )
    for investment_id, side, metadata in rows:
        meta = metadata or {}
        filled = _dec(meta.get("filled_quantity"))
        if filled <= 0:
            continue
        gross = filled * _dec(meta.get("average_fill_price"))
        fees = _dec(meta.get("fees"))
        spent[investment_id] += (gross if side == OrderSide.BUY.value else -gross) + fees
    return spent


def _last_rebalanced(conn: Connection, smallcase_id: uuid.UUID) -> datetime | None:
    value = conn.execute(
        select(func.max(SmallcaseExecutionRun.created_at))
        .join(
            UserSmallcaseInvestment,
            UserSmallcaseInvestment.id == SmallcaseExecutionRun.investment_id,
        )
        .where(
            UserSmallcaseInvestment.smallcase_id == smallcase_id,
            SmallcaseExecutionRun.run_type == RunType.REBALANCE.value,
            SmallcaseExecutionRun.status.in_([s.value for s in DECIDED]),
        )
    ).scalar()
    if value is None:
        return None
    if isinstance(value, str):  # SQLite aggregates hand back text
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def evaluate_smallcase(
    conn: Connection, smallcase: Smallcase, now: datetime
) -> SmallcaseEvaluation:
    """Decide whether one smallcase is due at ``now`` (an aware datetime)."""
    policy = stored_policy(smallcase)
    targets_rows = conn.execute(
        select(Asset.id, Asset.symbol, Asset.exchange, SmallcaseConstituent.weight_percentage)
        .join(SmallcaseConstituent, SmallcaseConstituent.asset_id == Asset.id)
        .where(SmallcaseConstituent.smallcase_id == smallcase.id)
    ).all()
    exchanges = sorted({row.exchange for row in targets_rows})

    def verdict(reason: str, exchange: str | None, day: date, n: int = 0) -> SmallcaseEvaluation:
        return SmallcaseEvaluation(
            smallcase.id,
            smallcase.name,
            exchange,
            day,
            policy,
            TriggerDecision(False, (reason,)),
            n,
            None,
        )

    if not exchanges:
        return verdict("no constituents", None, now.date())
    exchange = exchanges[0]
    try:
        calendars_used = {calendars.calendar_for(e) for e in exchanges}
    except UnknownExchangeError as exc:
        return verdict(f"no trading calendar: {exc}", exchange, now.date())
    if len(calendars_used) > 1:
        return verdict(
            f"constituents trade on several calendars ({', '.join(exchanges)})",
            exchange,
            now.date(),
        )
    zone = calendars.exchange_timezone(exchange)
    today = now.astimezone(zone).date()
    investments = conn.execute(
        select(UserSmallcaseInvestment.id, UserSmallcaseInvestment.investment_amount).where(
            UserSmallcaseInvestment.smallcase_id == smallcase.id,
            UserSmallcaseInvestment.status == InvestmentStatus.ACTIVE.value,
        )
    ).all()
    if not investments:
        return verdict("no active investment", exchange, today)
    ids = [row.id for row in investments]
    targets = {AssetKey(r.symbol, r.exchange): _dec(r.weight_percentage) for r in targets_rows}
    positions = ledger_positions(conn, investment_ids=ids)
    asset_ids = {r.id for r in targets_rows} | {p.asset_id for p in positions}
    closes = latest_closes(conn, today, sorted(asset_ids, key=str))
    key_of = {a: AssetKey(c.symbol, c.exchange) for a, c in closes.items()}
    prices = {key_of[a]: c.close for a, c in closes.items()}
    held: dict[uuid.UUID, dict[AssetKey, Decimal]] = defaultdict(dict)
    for p in positions:
        held[p.investment_id][key_of[p.asset_id]] = p.quantity
    spent = _spent(conn, ids)
    drifts: list[DriftMeasure] = []
    for row in investments:
        cash = _dec(row.investment_amount) - spent.get(row.id, Decimal(0))
        measure = measure_drift(
            str(row.id), targets, held[row.id], prices, cash, policy.cash_buffer_pct
        )
        if measure is not None:
            drifts.append(measure)
    last = _last_rebalanced(conn, smallcase.id)
    last_day = last.astimezone(zone).date() if last else None
    sessions = calendars.sessions(exchange, today - _LOOKBACK, today + _LOOKAHEAD)
    decision = decide_due(policy, today, sessions, last_day, drifts)
    return SmallcaseEvaluation(
        smallcase.id, smallcase.name, exchange, today, policy, decision, len(ids), last_day
    )


def _trades_on(conn: Connection, smallcase_id: uuid.UUID, wanted: set[str]) -> bool:
    codes = conn.execute(
        select(Asset.exchange)
        .join(SmallcaseConstituent, SmallcaseConstituent.asset_id == Asset.id)
        .where(SmallcaseConstituent.smallcase_id == smallcase_id)
        .distinct()
    ).scalars()
    for code in codes:
        try:
            if calendars.calendar_for(code) in wanted:
                return True
        except UnknownExchangeError:
            continue
    return False


def evaluate_smallcases(
    engine: Engine,
    now: datetime,
    names: Sequence[str] | None = None,
    exchanges: Sequence[str] | None = None,
) -> list[SmallcaseEvaluation]:
    """Evaluate every active smallcase (or the named ones, active or not), by name.

    ``exchanges`` keeps only the smallcases whose constituents trade on the calendar of one of
    these exchanges (so each market's schedule evaluates its own smallcases after its close).
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise InvalidInputError(f"as_of must be an aware datetime, got {now!r}")
    wanted: set[str] = set()
    for code in exchanges or []:
        try:
            wanted.add(calendars.calendar_for(code))
        except ValueError as exc:
            raise InvalidInputError(f"exchanges: {exc}") from exc
    with engine.connect() as conn:
        query = select(Smallcase).order_by(Smallcase.name)
        if names:
            query = query.where(Smallcase.name.in_(list(names)))
        else:
            query = query.where(Smallcase.is_active.is_(True))
        with Session(bind=conn) as session:
            rows = list(session.scalars(query))
            missing = sorted(set(names or []) - {r.name for r in rows})
            if missing:
                raise InvalidInputError(f"smallcases: no smallcase named {', '.join(missing)}")
            if wanted:
                rows = [r for r in rows if _trades_on(conn, r.id, wanted)]
            return [evaluate_smallcase(conn, row, now) for row in rows]
