"""Rebalancing a smallcase for all its investors: compose, check, plan, write, approve.

Planning is vectorised: one query per kind of state (positions, open orders, cash) for every
active investment of the smallcase, one ``plan_batch`` per broker rule set, and one bulk write
of runs and orders (COPY on PostgreSQL). Execution lives in ``services.execution``.
"""

from __future__ import annotations

import hashlib
import io
import json
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
import uuid_utils
from sqlalchemy import Connection, Engine, Numeric, case, cast, delete, func, select, update
from sqlalchemy.orm import Session

from models import (
    Asset,
    PriceHistory,
    Smallcase,
    SmallcaseConstituent,
    SmallcaseExecutionOrder,
    SmallcaseExecutionRun,
    UserBrokerConnection,
    UserSmallcaseInvestment,
)
from models.base import utcnow
from saras.brokers.errors import BrokerError, FatalBrokerError
from saras.domain.enums import (
    UNFINISHED_RUN_STATUSES,
    BrokerType,
    ConnectionStatus,
    InvestmentStatus,
    OrderSide,
    OrderStatus,
    RunStatus,
    RunType,
)
from saras.domain.orders import RunEvent, transition_run
from saras.domain.rebalance import (
    SKIP_REASONS,
    BatchPlan,
    BatchState,
    BrokerRules,
    Instrument,
    PlanningPolicy,
    plan_batch,
)
from saras.errors import InvalidInputError
from saras.marketdata import calendars
from saras.repositories import corporate_actions as ca_repo
from saras.repositories.execution import current_orders_hash, orders_hash, qty_text
from saras.services import admin
from saras.services.brokers import mark_connection, open_broker

US_EXCHANGES = {"NYSE", "NASDAQ", "ARCA", "AMEX", "US", "BATS"}
INDIAN_EXCHANGES = {"NSE", "BSE"}
_OPEN_ORDER = (
    OrderStatus.SUBMITTING,
    OrderStatus.SUBMITTED,
    OrderStatus.PARTIALLY_FILLED,
    OrderStatus.UNKNOWN,
)


class StalePricesError(InvalidInputError):
    """Needed prices are missing or older than their exchange calendar allows."""


# --- composition ------------------------------------------------------------------------------


def broker_can_trade(broker_type: str, exchange: str) -> bool:
    """Tell whether a broker type trades on an exchange."""
    match BrokerType(broker_type):
        case BrokerType.ZERODHA:
            return exchange in INDIAN_EXCHANGES
        case BrokerType.ALPACA:
            return exchange in US_EXCHANGES
        case BrokerType.PAPER:
            return True


def apply_constituents(
    session: Session, smallcase: Smallcase, rows: Sequence[Mapping[str, Any]], *, persist: bool
) -> list[tuple[Asset, admin.ConstituentInput]]:
    """Validate a new composition; when ``persist``, replace the old one and keep it in metadata."""
    inputs = []
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping) or "symbol" not in row or "weight" not in row:
            raise InvalidInputError(f"constituent #{i + 1} needs a symbol and a weight: {row!r}")
        try:
            weight = Decimal(str(row["weight"]))
        except ArithmeticError as exc:
            raise InvalidInputError(
                f"weight {row['weight']!r} of {row['symbol']!r} is not a number"
            ) from exc
        inputs.append(
            admin.ConstituentInput(
                str(row["symbol"]), weight, row.get("rationale"), row.get("exchange")
            )
        )
    resolved = admin.validate_constituents(session, inputs)
    brokers = set(
        session.scalars(
            select(UserBrokerConnection.broker_type)
            .join(
                UserSmallcaseInvestment,
                UserSmallcaseInvestment.broker_connection_id == UserBrokerConnection.id,
            )
            .where(
                UserSmallcaseInvestment.smallcase_id == smallcase.id,
                UserSmallcaseInvestment.status == InvestmentStatus.ACTIVE.value,
            )
        )
    )
    for asset, _ in resolved:
        for broker in brokers:
            if not broker_can_trade(broker, asset.exchange):
                raise InvalidInputError(
                    f"{asset.symbol} ({asset.exchange}) cannot be traded through {broker}, "
                    f"which investors of {smallcase.name!r} use"
                )
    if persist:
        previous = session.execute(
            select(
                Asset.symbol,
                Asset.exchange,
                SmallcaseConstituent.weight_percentage,
                SmallcaseConstituent.rationale,
            )
            .join(Asset)
            .where(SmallcaseConstituent.smallcase_id == smallcase.id)
            .order_by(Asset.symbol)
        ).all()
        metadata = dict(smallcase.metadata_ or {})
        history = list(metadata.get("compositions", []))
        history.append(
            {
                "replaced_at": utcnow().isoformat(),
                "constituents": [
                    {
                        "symbol": s,
                        "exchange": e,
                        "weight": f"{Decimal(str(w)).normalize():f}",
                        "rationale": r,
                    }
                    for s, e, w, r in previous
                ],
            }
        )
        metadata["compositions"] = history
        smallcase.metadata_ = metadata
        session.execute(
            delete(SmallcaseConstituent).where(SmallcaseConstituent.smallcase_id == smallcase.id)
        )
        session.add_all(
            SmallcaseConstituent(
                smallcase_id=smallcase.id,
                asset_id=asset.id,
                weight_percentage=row.weight,
                rationale=row.rationale,
            )
            for asset, row in resolved
        )
        session.flush()
    return resolved


# --- the state of every investment ------------------------------------------------------------


@dataclass
class InvestmentRow:
    """An investment as planning needs it."""

    id: uuid.UUID
    user_id: uuid.UUID
    portfolio_id: uuid.UUID
    connection_id: uuid.UUID
    connection_alias: str
    broker_type: str
    connection_status: str
    connection_metadata: dict[str, Any]
    amount: Decimal
    status: str


def load_investments(
    conn: Connection, smallcase_id: uuid.UUID, investment_ids: Sequence[uuid.UUID] | None = None
) -> list[InvestmentRow]:
    """Return the smallcase's active investments (or the given ones) with their connections."""
    query = (
        select(
            UserSmallcaseInvestment.id,
            UserSmallcaseInvestment.user_id,
            UserSmallcaseInvestment.portfolio_id,
            UserBrokerConnection.id,
            UserBrokerConnection.alias,
            UserBrokerConnection.broker_type,
            UserBrokerConnection.status,
            UserBrokerConnection.connection_metadata,
            UserSmallcaseInvestment.investment_amount,
            UserSmallcaseInvestment.status,
        )
        .join(
            UserBrokerConnection,
            UserBrokerConnection.id == UserSmallcaseInvestment.broker_connection_id,
        )
        .where(UserSmallcaseInvestment.smallcase_id == smallcase_id)
        .order_by(UserSmallcaseInvestment.id)
    )
    if investment_ids is not None:
        query = query.where(UserSmallcaseInvestment.id.in_(list(investment_ids)))
    else:
        query = query.where(UserSmallcaseInvestment.status == InvestmentStatus.ACTIVE.value)
    return [
        InvestmentRow(
            r[0], r[1], r[2], r[3], r[4], r[5], r[6], dict(r[7] or {}), Decimal(str(r[8])), r[9]
        )
        for r in conn.execute(query)
    ]


def _filled_expr() -> Any:
    return cast(
        SmallcaseExecutionOrder.order_metadata["filled_quantity"].as_string(), Numeric(24, 9)
    )


def _avg_expr() -> Any:
    return cast(
        SmallcaseExecutionOrder.order_metadata["average_fill_price"].as_string(), Numeric(20, 6)
    )


def _fees_expr() -> Any:
    return cast(SmallcaseExecutionOrder.order_metadata["fees"].as_string(), Numeric(20, 4))


def _dec(value: Any) -> Decimal:
    """Return a database number as Decimal (SQLite hands back floats: take their short repr)."""
    if isinstance(value, Decimal):
        return value
    return Decimal(str(value or 0))


def load_state(
    conn: Connection, smallcase_id: uuid.UUID, investment_ids: Sequence[uuid.UUID]
) -> tuple[
    dict[tuple[uuid.UUID, str], Decimal],
    dict[tuple[uuid.UUID, str], Decimal],
    dict[uuid.UUID, Decimal],
]:
    """Return positions, open orders (signed) and spent cash per investment, set-based."""
    run = SmallcaseExecutionRun
    order = SmallcaseExecutionOrder
    invest_filter = (
        run.investment_id.in_(list(investment_ids))
        if len(investment_ids) < 1000
        else run.investment_id.in_(
            select(UserSmallcaseInvestment.id).where(
                UserSmallcaseInvestment.smallcase_id == smallcase_id
            )
        )
    )
    filled = func.coalesce(_filled_expr(), 0)
    sign = case((order.side == OrderSide.BUY.value, 1), else_=-1)
    gross = filled * func.coalesce(_avg_expr(), 0)
    fees = func.coalesce(_fees_expr(), 0)
    # net quantity per leg, and cash spent per investment: two grouped queries
    rows = conn.execute(
        select(run.investment_id, Asset.symbol, func.sum(sign * filled))
        .join(order, order.execution_run_id == run.id)
        .join(Asset, Asset.id == order.asset_id)
        .where(invest_filter)
        .group_by(run.investment_id, Asset.symbol)
    ).all()
    positions = {(inv, symbol): _dec(qty) for inv, symbol, qty in rows}
    spent_rows = conn.execute(
        select(run.investment_id, func.sum(sign * gross + fees))
        .join(order, order.execution_run_id == run.id)
        .where(invest_filter)
        .group_by(run.investment_id)
    ).all()
    spent = {inv: _dec(value) for inv, value in spent_rows}
    open_rows = conn.execute(
        select(run.investment_id, Asset.symbol, order.side, func.sum(order.quantity - filled))
        .join(order, order.execution_run_id == run.id)
        .join(Asset, Asset.id == order.asset_id)
        .where(invest_filter, order.status.in_([s.value for s in _OPEN_ORDER]))
        .group_by(run.investment_id, Asset.symbol, order.side)
    ).all()
    open_orders: dict[tuple[uuid.UUID, str], Decimal] = defaultdict(Decimal)
    for inv, symbol, side, remaining in open_rows:
        remaining = _dec(remaining)
        open_orders[(inv, symbol)] += remaining if side == OrderSide.BUY.value else -remaining
    return positions, dict(open_orders), spent


# --- quality gate -----------------------------------------------------------------------------


def latest_prices(
    conn: Connection, asset_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, tuple[Decimal, Any]]:
    """Return each asset's latest close and its date."""
    ids = list(asset_ids)
    if not ids:
        return {}
    latest = (
        select(PriceHistory.asset_id, func.max(PriceHistory.price_date).label("d"))
        .where(PriceHistory.asset_id.in_(ids))
        .group_by(PriceHistory.asset_id)
        .subquery()
    )
    rows = conn.execute(
        select(PriceHistory.asset_id, PriceHistory.close_price, PriceHistory.price_date).join(
            latest,
            (latest.c.asset_id == PriceHistory.asset_id) & (latest.c.d == PriceHistory.price_date),
        )
    ).all()
    return {uuid.UUID(str(a)): (Decimal(str(c)), d) for a, c, d in rows}


def check_prices(
    assets: Sequence[Asset],
    prices: Mapping[uuid.UUID, tuple[Decimal, Any]],
    now: datetime,
    max_age_sessions: int,
) -> None:
    """Raise StalePricesError naming every asset whose latest close is missing or too old."""
    problems = []
    for asset in assets:
        last = calendars.last_completed_session(asset.exchange, now)
        window = calendars.sessions(
            asset.exchange, last - timedelta(days=10 + 3 * max_age_sessions), last
        )
        oldest_ok = window[-1 - max_age_sessions] if len(window) > max_age_sessions else window[0]
        found = prices.get(asset.id)
        if found is None:
            problems.append(f"{asset.symbol} ({asset.exchange}): no price at all")
        elif found[1] < oldest_ok:
            problems.append(
                f"{asset.symbol} ({asset.exchange}): latest close {found[1]}, expected {last}"
            )
    if problems:
        raise StalePricesError(
            "stale or missing prices, nothing was planned: " + "; ".join(problems)
        )


def check_connections(engine: Engine, investments: Sequence[InvestmentRow]) -> dict[uuid.UUID, str]:
    """Find unusable connections now (an expired Kite token), not mid-basket: id -> reason."""
    bad: dict[uuid.UUID, str] = {}
    seen: set[uuid.UUID] = set()
    for inv in investments:
        if inv.connection_id in seen:
            continue
        seen.add(inv.connection_id)
        if inv.connection_status != ConnectionStatus.ACTIVE.value:
            bad[inv.connection_id] = f"connection {inv.connection_alias} is {inv.connection_status}"
            continue
        if inv.broker_type == BrokerType.PAPER.value:
            continue  # the built-in paper broker cannot expire
        with Session(engine) as session:
            row = session.get(UserBrokerConnection, inv.connection_id)
            assert row is not None
            try:
                open_broker(engine, row).get_account()
            except FatalBrokerError as exc:
                if inv.broker_type != BrokerType.ZERODHA.value:
                    mark_connection(
                        engine, inv.connection_id, ConnectionStatus.ERROR.value, str(exc)
                    )
                bad[inv.connection_id] = f"connection {inv.connection_alias}: {exc}"
            except BrokerError as exc:
                bad[inv.connection_id] = f"connection {inv.connection_alias} unreachable: {exc}"
    return bad


# --- planning ---------------------------------------------------------------------------------


def rules_for(inv: InvestmentRow) -> BrokerRules:
    """Return the planning rules of an investment's broker (paper as configured)."""
    if inv.broker_type == BrokerType.PAPER.value:
        fractional = str(inv.connection_metadata.get("paper_fractional", "true")).lower() not in (
            "false",
            "0",
            "no",
        )
        return BrokerRules.paper(fractional=fractional)
    return BrokerRules.for_broker(inv.broker_type)


@dataclass
class PlannedRun:
    """One investment's run as written."""

    run_id: uuid.UUID
    investment: InvestmentRow
    order_count: int
    plan_hash: str
    est_buy: Decimal
    est_sell: Decimal


@dataclass
class SmallcasePlan:
    """Everything a rebalance planned, ready for the report and the approval."""

    smallcase_id: uuid.UUID
    smallcase_name: str
    run_type: RunType
    runs: list[PlannedRun] = field(default_factory=list)
    skipped: dict[str, list[str]] = field(default_factory=dict)  # reason -> investment ids
    per_asset: dict[tuple[str, str], list[Decimal]] = field(
        default_factory=dict
    )  # (symbol, side) -> [qty, value, orders]
    order_count: int = 0
    plan_hash: str = ""
    problems: list[str] = field(default_factory=list)  # e.g. unusable connections, by name

    def summary_rows(self) -> list[dict[str, Any]]:
        """Return the plan's totals per asset and side (for the table artifact)."""
        return [
            {
                "symbol": s,
                "side": side,
                "orders": int(v[2]),
                "quantity": f"{v[0]:f}",
                "est_value": f"{v[1].quantize(Decimal('0.01')):f}",
            }
            for (s, side), v in sorted(
                self.per_asset.items(), key=lambda kv: (kv[0][1] != "sell", kv[0][0])
            )
        ]

    def summary(self) -> dict[str, Any]:
        """Return the headline figures (also shown in the approval form)."""
        return {
            "smallcase": self.smallcase_name,
            "run_type": self.run_type.value,
            "investments_changed": len(self.runs),
            "investments_skipped": sum(len(v) for v in self.skipped.values()),
            "skipped_by_reason": {k: len(v) for k, v in sorted(self.skipped.items())},
            "orders": self.order_count,
            "est_buy_value": _money(sum((r.est_buy for r in self.runs), Decimal(0))),
            "est_sell_value": _money(sum((r.est_sell for r in self.runs), Decimal(0))),
            "plan_hash": self.plan_hash,
            "problems": list(self.problems),
        }


def _money(value: Decimal) -> str:
    return f"{value.quantize(Decimal('0.01')):f}"


def _fixed9(units: np.ndarray, decimals: int) -> list[str]:
    """Format int64 quantity units as 9-decimal strings (exact)."""
    scale = 10 ** (9 - decimals)
    scaled = units.astype(np.int64) * scale
    whole, frac = np.divmod(scaled, 10**9)
    return [f"{w}.{f:09d}" for w, f in zip(whole.tolist(), frac.tolist(), strict=True)]


def plan_smallcase(
    engine: Engine,
    smallcase: Smallcase,
    *,
    run_type: RunType = RunType.REBALANCE,
    policy: PlanningPolicy | None = None,
    investment_ids: Sequence[uuid.UUID] | None = None,
    amounts: Mapping[uuid.UUID, Decimal] | None = None,
    targets_override: Mapping[str, tuple[Asset, Decimal]] | None = None,
    now: datetime | None = None,
    max_price_age_sessions: int = 1,
    check_brokers: bool = True,
) -> tuple[SmallcasePlan, dict[str, Any]]:
    """Plan every active investment of a smallcase at once; return the plan and what to write."""
    now = now or utcnow()
    policy = policy or PlanningPolicy()
    with Session(engine) as session:
        conn = session.connection()
        if targets_override is None:
            constituents = session.execute(
                select(Asset, SmallcaseConstituent.weight_percentage)
                .join(SmallcaseConstituent, SmallcaseConstituent.asset_id == Asset.id)
                .where(SmallcaseConstituent.smallcase_id == smallcase.id)
            ).all()
            targets = {a.symbol: (a, Decimal(str(w))) for a, w in constituents}
        else:
            targets = dict(targets_override)
        investments = load_investments(conn, smallcase.id, investment_ids)
        ids = [i.id for i in investments]
        positions, open_orders, spent = load_state(conn, smallcase.id, ids)
        # corporate actions and reconciliation (paper): adjustments, then the gates
        positions, spent = ca_repo.adjust_planning_state(conn, ids, positions, spent)
        gates = ca_repo.planning_gates(conn, ids, [a.id for a, _ in targets.values()])
        held_symbols = {s for (_, s), q in positions.items() if q}
        assets = {a.symbol: a for a, _ in targets.values()}
        missing = held_symbols - set(assets)
        if missing:
            for a in session.scalars(select(Asset).where(Asset.symbol.in_(missing))):
                assets[a.symbol] = a
        prices = latest_prices(conn, [a.id for a in assets.values()])
    check_prices(list(assets.values()), prices, now, max_price_age_sessions)
    plan = SmallcasePlan(smallcase.id, smallcase.name, run_type)
    bad = check_connections(engine, investments) if check_brokers else {}
    plan.problems.extend(sorted(set(bad.values())))
    usable = []
    for inv in investments:
        if inv.connection_id in bad:
            plan.skipped.setdefault("connection_unusable", []).append(str(inv.id))
        else:
            usable.append(inv)
    with engine.connect() as conn:
        busy = {
            uuid.UUID(str(i))
            for i in conn.execute(
                select(SmallcaseExecutionRun.investment_id)
                .join(
                    UserSmallcaseInvestment,
                    UserSmallcaseInvestment.id == SmallcaseExecutionRun.investment_id,
                )
                .where(
                    UserSmallcaseInvestment.smallcase_id == smallcase.id,
                    SmallcaseExecutionRun.status == RunStatus.EXECUTING.value,
                )
            ).scalars()
        }
    groups: dict[tuple[bool, int, Decimal], list[InvestmentRow]] = defaultdict(list)
    for inv in usable:
        if inv.id in gates:  # corporate_action_pending / reconciliation_difference (paper)
            for reason in sorted({g.reason for g in gates[inv.id]}):
                plan.skipped.setdefault(reason, []).append(str(inv.id))
            plan.problems.extend(g.detail for g in gates[inv.id] if g.detail not in plan.problems)
            continue
        if inv.id in busy:
            plan.skipped.setdefault("run_in_progress", []).append(str(inv.id))
            continue
        rules = rules_for(inv)
        groups[(rules.fractional, rules.quantity_decimals, rules.min_order_value)].append(inv)
    target_weights = {s: w for s, (_, w) in targets.items()}
    instruments = {
        s: Instrument(
            s,
            prices[a.id][0] if a.id in prices else None,
            int((a.metadata_ or {}).get("lot_size", 1)),
            bool((a.metadata_ or {}).get("fractionable", False)),
        )
        for s, a in assets.items()
    }
    writes: dict[str, Any] = {"runs": [], "orders": []}
    overall = hashlib.sha256()
    for (fractional, decimals, minimum), members in groups.items():
        rules = BrokerRules(fractional, decimals, minimum)
        d = rules.unit_decimals
        index = {m.id: k for k, m in enumerate(members)}
        in_group = {s for (i, s), q in {**positions, **open_orders}.items() if q and i in index}
        symbols = tuple(sorted(set(target_weights) | in_group))
        col = {s: j for j, s in enumerate(symbols)}
        held = np.zeros((len(members), len(symbols)), dtype=np.int64)
        opn = np.zeros_like(held)
        for (inv_id, s), q in positions.items():
            k = index.get(inv_id)
            if k is not None and q:
                held[k, col[s]] = int((q * (10**d)).to_integral_value(rounding="ROUND_FLOOR"))
        reserved = defaultdict(Decimal)
        for (inv_id, s), q in open_orders.items():
            k = index.get(inv_id)
            if k is not None and q:
                opn[k, col[s]] = int((q * (10**d)).to_integral_value(rounding="ROUND_FLOOR"))
                if q > 0 and instruments[s].price:
                    reserved[inv_id] += q * instruments[s].price  # open buys hold cash
        cash = tuple(
            max(m.amount - spent.get(m.id, Decimal(0)) - reserved[m.id], Decimal(0)).quantize(
                Decimal("0.0001")
            )
            for m in members
        )
        state = BatchState(tuple(str(m.id) for m in members), symbols, cash, held, opn, d)
        group_amounts = None
        if run_type in (RunType.INVEST, RunType.TOPUP):
            group_amounts = [Decimal((amounts or {}).get(m.id, m.amount)) for m in members]
        batch = plan_batch(
            run_type, target_weights, instruments, rules, policy, state, group_amounts
        )
        _collect(plan, batch, members, assets, writes, overall, decimals=d)
    plan.plan_hash = overall.hexdigest()
    return plan, writes


def _collect(
    plan: SmallcasePlan,
    batch: BatchPlan,
    members: list[InvestmentRow],
    assets: Mapping[str, Asset],
    writes: dict[str, Any],
    overall: Any,
    *,
    decimals: int,
) -> None:
    """Turn a batch plan's columns into run and order rows, hashes and the report's totals."""
    for k in np.flatnonzero(~batch.changed):
        code = int(batch.status_reason[k])
        plan.skipped.setdefault(SKIP_REASONS[code].value if code >= 0 else "no_orders", []).append(
            str(members[k].id)
        )
    n_orders = batch.order_count
    if n_orders == 0:
        for k in np.flatnonzero(batch.changed):
            plan.skipped.setdefault("no_orders", []).append(str(members[k].id))
        return
    symbols = batch.symbols
    qty_text = _fixed9(batch.order_units, decimals)
    legs = batch.order_leg
    values = batch.order_est_value
    is_buy = batch.order_is_buy
    # totals per asset and side, vectorised
    priced = ~np.isnan(values)
    slot = legs * 2 + is_buy.astype(np.int64)
    n_slots = 2 * len(symbols)
    counts = np.bincount(slot[priced], minlength=n_slots)
    value_sums = np.bincount(slot[priced], weights=values[priced], minlength=n_slots)
    unit_sums = np.bincount(slot, weights=batch.order_units.astype(np.float64), minlength=n_slots)
    for code in np.flatnonzero(np.bincount(slot, minlength=n_slots)):
        leg, buy = divmod(int(code), 2)
        key = (symbols[leg], "buy" if buy else "sell")
        bucket = plan.per_asset.setdefault(key, [Decimal(0), Decimal(0), Decimal(0)])
        bucket[0] += Decimal(repr(float(unit_sums[code]))) / (10**decimals)
        bucket[1] += Decimal(repr(float(value_sums[code]))).quantize(Decimal("0.0001"))
        bucket[2] += int(counts[code])
    # per-order estimated price = the leg's planning price (one string per leg, not per order)
    unit_value = np.where(batch.order_units > 0, values / np.maximum(batch.order_units, 1), np.nan)
    leg_price = {}
    for leg in np.unique(legs):
        sample = unit_value[legs == leg]
        sample = sample[~np.isnan(sample)]
        leg_price[int(leg)] = (
            f"{Decimal(repr(float(sample[0]) * 10**decimals)).quantize(Decimal('0.000001')):f}"
            if sample.size
            else ""
        )
    skips: dict[int, list[dict[str, str]]] = defaultdict(list)
    for j, r, i in zip(
        batch.skip_leg.tolist(),
        batch.skip_reason.tolist(),
        batch.skip_investment.tolist(),
        strict=True,
    ):
        skips[i].append({"symbol": symbols[j], "reason": SKIP_REASONS[r].value})
    sides = np.where(is_buy, "buy", "sell").tolist()
    leg_list = legs.tolist()
    value_list = np.nan_to_num(values).tolist()
    asset_ids = {j: str(assets[sym].id) for j, sym in enumerate(symbols)}
    boundaries = np.flatnonzero(np.diff(batch.order_investment)) + 1
    starts = [0, *boundaries.tolist()]
    ends = [*boundaries.tolist(), n_orders]
    invs = batch.order_investment
    now = utcnow().isoformat()
    orders_out = writes["orders"]
    for lo, hi in zip(starts, ends, strict=True):
        k = int(invs[lo])
        inv = members[k]
        run_id = str(uuid_utils.uuid7())
        lines = []
        est_buy = est_sell = 0.0
        for idx in range(lo, hi):
            order_id = str(uuid_utils.uuid7())
            leg = leg_list[idx]
            side = sides[idx]
            if side == "buy":
                est_buy += value_list[idx]
            else:
                est_sell += value_list[idx]
            lines.append(f"{order_id}|{symbols[leg]}|{side}|{qty_text[idx]}")
            orders_out.append(
                (order_id, run_id, asset_ids[leg], side, qty_text[idx], leg_price[leg], now)
            )
        lines.sort()
        run_hash = hashlib.sha256(("run:" + run_id + "\n" + "\n".join(lines)).encode()).hexdigest()
        overall.update(run_hash.encode())
        buy_dec = Decimal(repr(est_buy)).quantize(Decimal("0.0001"))
        sell_dec = Decimal(repr(est_sell)).quantize(Decimal("0.0001"))
        plan.runs.append(PlannedRun(uuid.UUID(run_id), inv, hi - lo, run_hash, buy_dec, sell_dec))
        plan.order_count += hi - lo
        writes["runs"].append(
            {
                "id": run_id,
                "investment": inv,
                "plan": {
                    "smallcase_id": str(plan.smallcase_id),
                    "smallcase": plan.smallcase_name,
                    "run_type": plan.run_type.value,
                    "orders": hi - lo,
                    "est_buy_value": f"{buy_dec:f}",
                    "est_sell_value": f"{sell_dec:f}",
                    "drift_pct": round(float(batch.drift_pct[k]), 4),
                    "cash_limited": bool(batch.cash_limited[k]),
                    "skipped_legs": skips.get(k, []),
                    "plan_hash": run_hash,
                },
                "total": buy_dec + sell_dec,
            }
        )
    with_orders = set(invs.tolist())
    for k in np.flatnonzero(batch.changed):
        if int(k) not in with_orders:
            plan.skipped.setdefault("no_orders", []).append(str(members[k].id))


# --- writing ----------------------------------------------------------------------------------


#: ids per statement: PostgreSQL takes at most 65,535 bound parameters
ID_CHUNK = 10_000


def supersede_unfinished(conn: Connection, investment_ids: Sequence[uuid.UUID]) -> int:
    """Cancel runs of these investments that were planned but never started."""
    waiting = [s.value for s in UNFINISHED_RUN_STATUSES if s is not RunStatus.EXECUTING]
    cancelled = 0
    ids = list(investment_ids)
    for lo in range(0, len(ids), ID_CHUNK):
        chunk = ids[lo : lo + ID_CHUNK]
        stale = select(SmallcaseExecutionRun.id).where(
            SmallcaseExecutionRun.investment_id.in_(chunk),
            SmallcaseExecutionRun.status.in_(waiting),
        )
        conn.execute(
            update(SmallcaseExecutionOrder)
            .where(
                SmallcaseExecutionOrder.execution_run_id.in_(stale),
                SmallcaseExecutionOrder.status == OrderStatus.PLANNED.value,
            )
            .values(status=OrderStatus.CANCELLED.value)
        )
        result = conn.execute(
            update(SmallcaseExecutionRun)
            .where(
                SmallcaseExecutionRun.investment_id.in_(chunk),
                SmallcaseExecutionRun.status.in_(waiting),
            )
            .values(status=RunStatus.CANCELLED.value, completed_at=utcnow())
        )
        cancelled += int(result.rowcount or 0)
    return cancelled


def write_plan(
    conn: Connection, plan: SmallcasePlan, writes: Mapping[str, Any], *, status: RunStatus
) -> None:
    """Write the runs and orders of a plan in the caller's transaction (COPY on PostgreSQL)."""
    if not writes["runs"]:
        return
    approved = status is RunStatus.APPROVED
    now = utcnow()
    supersede_unfinished(conn, [r.investment.id for r in plan.runs])
    run_rows = []
    for r in writes["runs"]:
        body = dict(r["plan"])
        if approved:
            body["approved_hash"] = body["plan_hash"]
            body["approval"] = "auto"
        inv: InvestmentRow = r["investment"]
        run_rows.append(
            (
                str(r["id"]),
                str(inv.id),
                str(inv.connection_id),
                plan.run_type.value,
                status.value,
                f"{r['total']:f}",
                json.dumps(body, separators=(",", ":")),
                now.isoformat(),
                now.isoformat(),
            )
        )
    if conn.dialect.name == "postgresql":
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        _copy(
            cursor,
            "smallcase_execution_runs",
            (
                "id",
                "investment_id",
                "broker_connection_id",
                "run_type",
                "status",
                "total_amount",
                "execution_plan",
                "created_at",
                "updated_at",
            ),
            run_rows,
        )
        # order fields are ids, codes and numbers (no tab, newline or backslash): one f-string
        # per row is all COPY's text format needs
        planned = OrderStatus.PLANNED.value
        text = "".join(
            f"{o[0]}\t{o[1]}\t{o[2]}\t{o[3]}\t{o[4]}\t{o[5] or chr(92) + 'N'}\tmarket\t{planned}"
            f"\t{o[6]}\t{o[6]}\n"
            for o in writes["orders"]
        )
        columns = (
            "id, execution_run_id, asset_id, side, quantity, price, order_type, status, "
            "created_at, updated_at"
        )
        with cursor.copy(f"COPY smallcase_execution_orders ({columns}) FROM STDIN") as copy:
            copy.write(text)
    else:
        conn.execute(
            SmallcaseExecutionRun.__table__.insert(),
            [
                {
                    "id": uuid.UUID(r[0]),
                    "investment_id": uuid.UUID(r[1]),
                    "broker_connection_id": uuid.UUID(r[2]),
                    "run_type": r[3],
                    "status": r[4],
                    "total_amount": Decimal(r[5]),
                    "execution_plan": json.loads(r[6]),
                    "created_at": now,
                    "updated_at": now,
                }
                for r in run_rows
            ],
        )
        if writes["orders"]:
            conn.execute(
                SmallcaseExecutionOrder.__table__.insert(),
                [
                    {
                        "id": uuid.UUID(o[0]),
                        "execution_run_id": uuid.UUID(o[1]),
                        "asset_id": uuid.UUID(o[2]),
                        "side": o[3],
                        "quantity": Decimal(o[4]),
                        "price": Decimal(o[5]) if o[5] else None,
                        "order_type": "market",
                        "status": OrderStatus.PLANNED.value,
                        "order_metadata": {},
                        "created_at": now,
                        "updated_at": now,
                    }
                    for o in writes["orders"]
                ],
            )


def _copy(cursor: Any, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    buffer = io.StringIO()
    for row in rows:
        buffer.write(
            "\t".join(
                "\\N"
                if v is None
                else str(v).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
                for v in row
            )
        )
        buffer.write("\n")
    with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        copy.write(buffer.getvalue())


# --- approval ---------------------------------------------------------------------------------


def recompute_plan_hash(engine: Engine, run_ids: Sequence[uuid.UUID]) -> str:
    """Recompute a plan's hash from the orders as they are in the database now (set-based)."""
    per_run: dict[uuid.UUID, list[tuple[str, str, str, str]]] = defaultdict(list)
    order = SmallcaseExecutionOrder
    ids = [uuid.UUID(str(r)) for r in run_ids]
    with engine.connect() as conn:
        for lo in range(0, len(ids), ID_CHUNK):
            rows = conn.execute(
                select(order.execution_run_id, order.id, Asset.symbol, order.side, order.quantity)
                .join(Asset, Asset.id == order.asset_id)
                .where(order.execution_run_id.in_(ids[lo : lo + ID_CHUNK]))
            )
            for run_id, order_id, symbol, side, quantity in rows:
                per_run[run_id].append((str(order_id), symbol, side, qty_text(_dec(quantity))))
    overall = hashlib.sha256()
    for run_id in ids:
        overall.update(orders_hash(run_id, per_run.get(run_id, [])).encode())
    return overall.hexdigest()


def decide_runs(
    engine: Engine,
    run_ids: Sequence[uuid.UUID],
    event: RunEvent,
    *,
    approved_hash: str | None = None,
    note: str | None = None,
) -> int:
    """Move runs through approval (request, approve, reject, timeout); approve stamps hashes."""
    changed = 0
    with Session(engine) as session, session.begin():
        conn = session.connection()
        for run_id in run_ids:
            run = session.get_one(SmallcaseExecutionRun, run_id)
            new = transition_run(run.status, event)
            body = dict(run.execution_plan or {})
            values: dict[str, Any] = {"status": new.value}
            if event is RunEvent.APPROVE:
                current = current_orders_hash(conn, run_id)
                if current != body.get("plan_hash"):
                    raise InvalidInputError(
                        f"run {run_id} changed since it was planned: not approved"
                    )
                body["approved_hash"] = current
            if note:
                body["approval_note"] = note
            if new in (RunStatus.REJECTED, RunStatus.CANCELLED):
                values["completed_at"] = utcnow()
                conn.execute(
                    update(SmallcaseExecutionOrder)
                    .where(
                        SmallcaseExecutionOrder.execution_run_id == run_id,
                        SmallcaseExecutionOrder.status == OrderStatus.PLANNED.value,
                    )
                    .values(status=OrderStatus.CANCELLED.value)
                )
            values["execution_plan"] = body
            conn.execute(
                update(SmallcaseExecutionRun)
                .where(SmallcaseExecutionRun.id == run_id)
                .values(**values)
            )
            changed += 1
    return changed
