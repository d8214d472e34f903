"""Rebalancing a smallcase for all its investors: compose, check, plan, write, approve.

Planning is vectorised: one query per kind of state (positions, open orders, cash) for every
active investment of the smallcase, one ``plan_batch`` per broker rule set, and one bulk write
of runs and orders (COPY on PostgreSQL). Execution lives in ``services.execution``.

The transaction belongs to the entry points (:func:`plan_and_write`, :func:`decide_plan`):
everything below them takes the connection they opened. Planning of an investment is serialised
from the moment its state is read until its plan is written (``repositories.runs.lock_planning``);
slow broker checks happen before that, outside the lock. Every asset is keyed by its id (a
symbol on an exchange), never by its symbol alone. A new composition travels with the plan and
becomes the smallcase's only when the plan is approved.
"""

from __future__ import annotations

import functools
import io
import json
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
import uuid_utils
from sqlalchemy import (
    Connection,
    Engine,
    Numeric,
    case,
    cast,
    delete,
    func,
    insert,
    select,
    update,
)
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
from models.smallcases import OPEN_INVESTMENT_STATUSES
from saras.brokers.base import BrokerCapabilities, ConnectionConfig
from saras.brokers.errors import BrokerError, FatalBrokerError
from saras.brokers.registry import broker_capabilities, check_config
from saras.brokers.registry import generation as registry_generation
from saras.domain import exchanges as xt
from saras.domain.enums import (
    BrokerType,
    ConnectionStatus,
    InvestmentStatus,
    OrderSide,
    OrderStatus,
    RunStatus,
    RunType,
)
from saras.domain.orders import RunEvent
from saras.domain.plan import (
    AssetRef,
    AssetTotal,
    Constituent,
    Plan,
    PlannedOrders,
    PlannedRun,
    SkippedLeg,
)
from saras.domain.plan_hash import combined_plan_hash, order_line, run_orders_hash
from saras.domain.policy import METADATA_KEY
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
from saras.repositories import runs as runs_repo
from saras.repositories.execution import orders_hash, qty_text
from saras.services import admin
from saras.services import policy as policy_service
from saras.services.brokers import mark_connection, open_broker

_OPEN_ORDER = (
    OrderStatus.SUBMITTING,
    OrderStatus.SUBMITTED,
    OrderStatus.PARTIALLY_FILLED,
    OrderStatus.UNKNOWN,
)
#: ids per statement: PostgreSQL takes at most 65,535 bound parameters
ID_CHUNK = runs_repo.ID_CHUNK


class StalePricesError(InvalidInputError):
    """Needed prices are missing or older than their exchange calendar allows."""


# --- composition ------------------------------------------------------------------------------


def broker_can_trade(broker_type: str, exchange: str) -> bool:
    """Tell whether a broker type trades on an exchange (the exchange table says who reaches it)."""
    try:
        return BrokerType(broker_type) in xt.exchange(exchange).brokers
    except ValueError:  # UnknownExchange is one
        return False  # a broker or an exchange Saras does not know reaches nothing


def stored_planning_policy(
    conn: Connection, smallcase: Smallcase, composition: tuple[Constituent, ...] | None
) -> PlanningPolicy | None:
    """Return the planner's policy from the smallcase's stored policy (None: none is stored).

    ``saras smallcases policy set`` stores it; a run's own ``policy`` parameter replaces it.
    Its minimum trade value is the one for the smallcase's currency.
    """
    if METADATA_KEY not in (smallcase.metadata_ or {}):
        return None
    stored = policy_service.stored_policy(smallcase)
    currency = composition[0].currency if composition else smallcase_currency(conn, smallcase.id)
    if currency is None:
        raise InvalidInputError(
            f"smallcase {smallcase.name!r} trades in no single currency: its stored policy's "
            "minimum trade value cannot be chosen; nothing was planned"
        )
    return stored.planning_policy(currency)


def smallcase_currency(conn: Connection, smallcase_id: uuid.UUID) -> str | None:
    """Return the one currency the smallcase's current constituents trade in (None if mixed)."""
    currencies = set(
        conn.scalars(
            select(Asset.currency)
            .join(SmallcaseConstituent, SmallcaseConstituent.asset_id == Asset.id)
            .where(SmallcaseConstituent.smallcase_id == smallcase_id)
        )
    )
    return currencies.pop() if len(currencies) == 1 else None


def validate_composition(
    session: Session, smallcase: Smallcase, rows: Sequence[Mapping[str, Any]]
) -> tuple[Constituent, ...]:
    """Check a new composition for a smallcase; return it typed. Nothing is written.

    Every asset must trade in the smallcase's currency and on an exchange that the brokers of
    its open investments reach; the error names every offending symbol with its exchange.
    """
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
    currency = smallcase_currency(session.connection(), smallcase.id)
    if currency is not None:
        # before the composition's own checks, so that the error names every culprit
        foreign: list[str] = []
        for item in inputs:
            query = select(Asset).where(Asset.symbol == item.symbol.strip().upper())
            if item.exchange:
                query = query.where(Asset.exchange == str(item.exchange).strip().upper())
            found = list(session.scalars(query))
            if found and all(a.currency != currency for a in found):
                foreign.extend(f"{a.symbol} ({a.exchange}) in {a.currency}" for a in found)
        if foreign:
            raise InvalidInputError(
                f"smallcase {smallcase.name!r} trades in {currency}: "
                + ", ".join(sorted(foreign))
                + " cannot be in it; nothing was changed"
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
                UserSmallcaseInvestment.status.in_([s.value for s in OPEN_INVESTMENT_STATUSES]),
            )
        )
    )
    unreachable = sorted(
        f"{asset.symbol} ({asset.exchange}) through {broker}"
        for asset, _ in resolved
        for broker in brokers
        if not broker_can_trade(broker, asset.exchange)
    )
    if unreachable:
        raise InvalidInputError(
            f"investors of {smallcase.name!r} cannot trade "
            + ", ".join(unreachable)
            + "; nothing was changed"
        )
    return tuple(
        Constituent(
            asset.id,
            AssetRef(asset.symbol, asset.exchange),
            asset.currency,
            row.weight,
            row.rationale,
        )
        for asset, row in resolved
    )


def apply_composition(
    conn: Connection, smallcase_id: uuid.UUID, composition: Sequence[Constituent]
) -> None:
    """Make ``composition`` the smallcase's, keeping the previous one in its metadata."""
    previous = conn.execute(
        select(
            Asset.symbol,
            Asset.exchange,
            SmallcaseConstituent.weight_percentage,
            SmallcaseConstituent.rationale,
        )
        .join(Asset, Asset.id == SmallcaseConstituent.asset_id)
        .where(SmallcaseConstituent.smallcase_id == smallcase_id)
        .order_by(Asset.symbol, Asset.exchange)
    ).all()
    metadata = dict(
        conn.scalar(select(Smallcase.metadata_).where(Smallcase.id == smallcase_id)) or {}
    )
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
    conn.execute(update(Smallcase).where(Smallcase.id == smallcase_id).values(metadata_=metadata))
    conn.execute(
        delete(SmallcaseConstituent).where(SmallcaseConstituent.smallcase_id == smallcase_id)
    )
    conn.execute(
        insert(SmallcaseConstituent),
        [
            {
                "smallcase_id": smallcase_id,
                "asset_id": c.asset_id,
                "weight_percentage": c.weight,
                "rationale": c.rationale,
            }
            for c in composition
        ],
    )


# --- the state of every investment ------------------------------------------------------------


@dataclass(frozen=True)
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


def _uuid(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def _dec(value: Any) -> Decimal:
    """Return a database number as Decimal (SQLite hands back floats: take their short repr)."""
    if isinstance(value, Decimal):
        return value
    return Decimal(str(value or 0))


def load_state(
    conn: Connection, smallcase_id: uuid.UUID, investment_ids: Sequence[uuid.UUID]
) -> tuple[
    dict[tuple[uuid.UUID, uuid.UUID], Decimal],
    dict[tuple[uuid.UUID, uuid.UUID], Decimal],
    dict[uuid.UUID, Decimal],
]:
    """Return positions and open orders (signed) per (investment, asset id), and spent cash."""
    run = SmallcaseExecutionRun
    order = SmallcaseExecutionOrder
    # many ids (a chunk of the smallcase's investments): the smallcase's investments in the
    # ids' range; what that reads beyond the ids is ignored by the caller
    invest_filter = (
        run.investment_id.in_(list(investment_ids))
        if len(investment_ids) < 1000
        else run.investment_id.in_(
            select(UserSmallcaseInvestment.id).where(
                UserSmallcaseInvestment.smallcase_id == smallcase_id,
                UserSmallcaseInvestment.id >= min(investment_ids),
                UserSmallcaseInvestment.id <= max(investment_ids),
            )
        )
    )
    filled = func.coalesce(_filled_expr(), 0)
    sign = case((order.side == OrderSide.BUY.value, 1), else_=-1)
    # net quantity per leg, and cash spent per investment: two grouped queries
    rows = conn.execute(
        select(run.investment_id, order.asset_id, func.sum(sign * filled))
        .join(order, order.execution_run_id == run.id)
        .where(invest_filter)
        .group_by(run.investment_id, order.asset_id)
    ).all()
    positions = {(_uuid(inv), _uuid(asset)): _dec(qty) for inv, asset, qty in rows}
    spent = _spent(conn, invest_filter)
    open_rows = conn.execute(
        select(run.investment_id, order.asset_id, order.side, func.sum(order.quantity - filled))
        .join(order, order.execution_run_id == run.id)
        .where(invest_filter, order.status.in_([s.value for s in _OPEN_ORDER]))
        .group_by(run.investment_id, order.asset_id, order.side)
    ).all()
    open_orders: dict[tuple[uuid.UUID, uuid.UUID], Decimal] = defaultdict(Decimal)
    for inv, asset, side, remaining in open_rows:
        remaining = _dec(remaining)
        key = (_uuid(inv), _uuid(asset))
        open_orders[key] += remaining if side == OrderSide.BUY.value else -remaining
    return positions, dict(open_orders), spent


def _spent(conn: Connection, invest_filter: Any) -> dict[uuid.UUID, Decimal]:
    run = SmallcaseExecutionRun
    order = SmallcaseExecutionOrder
    filled = func.coalesce(_filled_expr(), 0)
    sign = case((order.side == OrderSide.BUY.value, 1), else_=-1)
    gross = filled * func.coalesce(_avg_expr(), 0)
    fees = func.coalesce(_fees_expr(), 0)
    rows = conn.execute(
        select(run.investment_id, func.sum(sign * gross + fees))
        .join(order, order.execution_run_id == run.id)
        .where(invest_filter)
        .group_by(run.investment_id)
    ).all()
    return {_uuid(inv): _dec(value) for inv, value in rows}


def spent_cash(conn: Connection, investment_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Decimal]:
    """Return the net cash each investment's fills spent (buys + fees - sells)."""
    out: dict[uuid.UUID, Decimal] = {}
    ids = list(investment_ids)
    for lo in range(0, len(ids), ID_CHUNK):
        out.update(_spent(conn, SmallcaseExecutionRun.investment_id.in_(ids[lo : lo + ID_CHUNK])))
    return out


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
    assets: Sequence[PlanAsset],
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
        config = ConnectionConfig(
            str(inv.connection_id), inv.broker_type, True, dict(inv.connection_metadata or {})
        )
        try:  # settings its broker cannot use (stored before they were checked on add)
            check_config(config)
        except ValueError as exc:
            bad[inv.connection_id] = f"connection {inv.connection_alias}: {exc}"
            continue
        if not broker_capabilities(inv.broker_type).needs_credentials:
            continue  # the built-in paper broker cannot expire
        with Session(engine) as session:
            row = session.get(UserBrokerConnection, inv.connection_id)
            assert row is not None
            try:
                open_broker(engine, row).get_account()
            except FatalBrokerError as exc:
                if not broker_capabilities(inv.broker_type).marks_connection_on_fatal:
                    mark_connection(
                        engine, inv.connection_id, ConnectionStatus.ERROR.value, str(exc)
                    )
                bad[inv.connection_id] = f"connection {inv.connection_alias}: {exc}"
            except BrokerError as exc:
                bad[inv.connection_id] = f"connection {inv.connection_alias} unreachable: {exc}"
    return bad


# --- planning ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanAsset:
    """An asset as planning needs it (its planning label is its id)."""

    id: uuid.UUID
    symbol: str
    exchange: str
    currency: str
    lot_size: int
    fractionable: bool

    @property
    def label(self) -> str:
        """Return the asset's key in the planner's columns: its id, never its symbol alone."""
        return str(self.id)

    @property
    def ref(self) -> AssetRef:
        """Return the asset as people name it."""
        return AssetRef(self.symbol, self.exchange)


def load_assets(conn: Connection, asset_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, PlanAsset]:
    """Return the assets with these ids, by id."""
    ids = list(set(asset_ids))
    out: dict[uuid.UUID, PlanAsset] = {}
    for lo in range(0, len(ids), ID_CHUNK):
        for row in conn.execute(
            select(
                Asset.id,
                Asset.symbol,
                Asset.exchange,
                Asset.currency,
                Asset.metadata_.label("meta"),
            ).where(Asset.id.in_(ids[lo : lo + ID_CHUNK]))
        ):
            meta = row.meta or {}
            asset_id = _uuid(row.id)
            out[asset_id] = PlanAsset(
                asset_id,
                row.symbol,
                row.exchange,
                row.currency,
                int(meta.get("lot_size", 1)),
                bool(meta.get("fractionable", False)),
            )
    return out


def planning_capabilities(inv: InvestmentRow) -> BrokerCapabilities:
    """Return what planning reads of an investment's broker: sizing rules and costs.

    Not its paper or live nature (``real_money``, ``remote``): the connection row decides that,
    and it is not part of the memo's key. Memoised by broker type and metadata: a smallcase's
    many investments share a handful of connection shapes, and reading capabilities costs tens
    of microseconds each.
    """
    metadata = json.dumps(inv.connection_metadata or {}, sort_keys=True, default=str)
    return _capabilities(inv.broker_type, metadata, registry_generation())


@functools.lru_cache(maxsize=256)
def _capabilities(broker_type: str, metadata: str, _generation: int) -> BrokerCapabilities:
    return broker_capabilities(broker_type, metadata=json.loads(metadata))


def rules_for(inv: InvestmentRow) -> BrokerRules:
    """Return the planning rules of an investment's broker, from its capabilities."""
    caps = planning_capabilities(inv)
    return BrokerRules.of(caps)


@dataclass
class _Builder:
    """A plan while it is being built (frozen into :class:`Plan` at the end)."""

    smallcase_id: uuid.UUID
    smallcase_name: str
    run_type: RunType
    runs: list[PlannedRun] = field(default_factory=list)
    skipped: dict[str, list[str]] = field(default_factory=dict)  # reason -> investment ids
    per_asset: dict[tuple[str, str], list[Decimal]] = field(default_factory=dict)
    order_count: int = 0
    problems: list[str] = field(default_factory=list)

    def freeze(
        self,
        assets: Mapping[str, PlanAsset],
        currency: str | None,
        composition: tuple[Constituent, ...] | None,
    ) -> Plan:
        totals = tuple(
            AssetTotal(assets[label].ref, side, int(v[2]), v[0], v[1])
            for (label, side), v in self.per_asset.items()
        )
        return Plan(
            smallcase_id=self.smallcase_id,
            smallcase_name=self.smallcase_name,
            run_type=self.run_type,
            currency=currency,
            runs=tuple(self.runs),
            totals=totals,
            skipped={k: tuple(v) for k, v in self.skipped.items()},
            order_count=self.order_count,
            plan_hash=combined_plan_hash(r.plan_hash for r in self.runs),
            problems=tuple(self.problems),
            composition=composition,
        )


@dataclass(frozen=True)
class PlanDraft:
    """A plan and what writing it takes: its order rows and the waiting runs it supersedes."""

    plan: Plan
    orders: PlannedOrders
    supersedes: Mapping[uuid.UUID, RunStatus]


#: called with each batch plan, its investments and the assets by label (the plan report)
BatchHook = Callable[[BatchPlan, Sequence[InvestmentRow], Mapping[str, PlanAsset]], None]


def _fixed9(units: np.ndarray, decimals: int) -> list[str]:
    """Format int64 quantity units as 9-decimal strings (exact)."""
    scale = 10 ** (9 - decimals)
    scaled = units.astype(np.int64) * scale
    whole, frac = np.divmod(scaled, 10**9)
    return [f"{w}.{f:09d}" for w, f in zip(whole.tolist(), frac.tolist(), strict=True)]


#: Investments planned (and, by :func:`plan_and_write`, written) at a time: their state, plan
#: and order rows are in memory together, never the whole smallcase's.
PLAN_CHUNK = 10_000


@dataclass
class _Planning:
    """What planning a smallcase reads once, before its investments are planned in chunks."""

    conn: Connection
    run_type: RunType
    policy: PlanningPolicy
    amounts: Mapping[uuid.UUID, Decimal] | None
    unusable: Mapping[uuid.UUID, str]
    now: datetime
    max_price_age_sessions: int
    composition: tuple[Constituent, ...] | None
    currency: str | None
    target_rows: list[tuple[uuid.UUID, Decimal]]
    investments: list[InvestmentRow]
    waiting: dict[uuid.UUID, dict[uuid.UUID, RunStatus]]
    busy: set[uuid.UUID]
    by_id: dict[uuid.UUID, PlanAsset]
    prices: dict[uuid.UUID, tuple[Decimal, Any]]
    plan: _Builder
    #: called with each batch plan, its investments and the assets by label (the plan report)
    on_batch: BatchHook | None = None

    @property
    def target_weights(self) -> dict[str, Decimal]:
        return {str(a): w for a, w in self.target_rows}

    def add_assets(self, asset_ids: Iterable[uuid.UUID]) -> None:
        """Load the assets not seen yet with their prices, and check the prices are fresh."""
        new = [a for a in dict.fromkeys(asset_ids) if a not in self.by_id]
        if not new:
            return
        found = load_assets(self.conn, new)
        prices = latest_prices(self.conn, found)
        check_prices(list(found.values()), prices, self.now, self.max_price_age_sessions)
        self.by_id.update(found)
        self.prices.update(prices)

    def freeze(self) -> Plan:
        assets = {a.label: a for a in self.by_id.values()}
        return self.plan.freeze(assets, self.currency, self.composition)


def _start_planning(
    conn: Connection,
    smallcase_id: uuid.UUID,
    smallcase_name: str,
    *,
    run_type: RunType,
    policy: PlanningPolicy | None,
    investment_ids: Sequence[uuid.UUID] | None,
    amounts: Mapping[uuid.UUID, Decimal] | None,
    composition: tuple[Constituent, ...] | None,
    unusable: Mapping[uuid.UUID, str] | None,
    now: datetime | None,
    max_price_age_sessions: int,
    on_batch: BatchHook | None = None,
) -> _Planning:
    """Read what every chunk shares: targets, investments, waiting and busy runs, target prices."""
    if composition is None:
        target_rows = [
            (_uuid(a), Decimal(str(w)))
            for a, w in conn.execute(
                select(SmallcaseConstituent.asset_id, SmallcaseConstituent.weight_percentage).where(
                    SmallcaseConstituent.smallcase_id == smallcase_id
                )
            )
        ]
    else:
        target_rows = [(c.asset_id, c.weight) for c in composition]
    currency = composition[0].currency if composition else smallcase_currency(conn, smallcase_id)
    planning = _Planning(
        conn=conn,
        run_type=run_type,
        policy=policy or PlanningPolicy(),
        amounts=amounts,
        unusable=unusable or {},
        now=now or utcnow(),
        max_price_age_sessions=max_price_age_sessions,
        composition=composition,
        currency=currency,
        target_rows=target_rows,
        investments=load_investments(conn, smallcase_id, investment_ids),
        waiting=defaultdict(dict),
        busy=set(),
        by_id={},
        prices={},
        plan=_Builder(smallcase_id, smallcase_name, run_type),
        on_batch=on_batch,
    )
    planning.add_assets(a for a, _ in target_rows)
    planning.plan.problems.extend(sorted(set(planning.unusable.values())))
    for run_id, inv_id, status in runs_repo.open_runs(
        conn, smallcase_id, (*runs_repo.SUPERSEDABLE, *runs_repo.IN_PROGRESS)
    ):
        if status in runs_repo.IN_PROGRESS:
            planning.busy.add(inv_id)
        else:
            planning.waiting[inv_id][run_id] = status
    return planning


def _plan_chunk(
    planning: _Planning, members: Sequence[InvestmentRow]
) -> tuple[PlannedOrders, dict[uuid.UUID, RunStatus]]:
    """Plan a chunk of investments into the plan; return its order rows and what it supersedes."""
    conn, plan = planning.conn, planning.plan
    ids = [i.id for i in members]
    positions, open_orders, spent = load_state(conn, plan.smallcase_id, ids)
    # corporate actions and reconciliation: adjustments to the ledger state, then the gates
    positions, spent = ca_repo.adjust_planning_state(conn, ids, positions, spent)
    gates = ca_repo.planning_gates(conn, ids, [a for a, _ in planning.target_rows])
    planning.add_assets(a for (_, a), q in (*positions.items(), *open_orders.items()) if q)
    groups: dict[tuple[bool, int, Decimal], list[InvestmentRow]] = defaultdict(list)
    for inv in members:
        if inv.connection_id in planning.unusable:
            plan.skipped.setdefault("connection_unusable", []).append(str(inv.id))
        elif inv.id in planning.busy:
            # an approved or executing run is a commitment to trade: the next plan waits for it
            plan.skipped.setdefault("run_in_progress", []).append(str(inv.id))
        elif inv.id in gates:  # corporate_action_pending / reconciliation_difference
            for reason in sorted({g.reason for g in gates[inv.id]}):
                plan.skipped.setdefault(reason, []).append(str(inv.id))
            plan.problems.extend(g.detail for g in gates[inv.id] if g.detail not in plan.problems)
        else:
            rules = rules_for(inv)
            groups[(rules.fractional, rules.quantity_decimals, rules.min_order_value)].append(inv)
    orders = PlannedOrders()
    first_run = len(plan.runs)
    for (fractional, decimals, minimum), group in groups.items():
        rules = BrokerRules(fractional, decimals, minimum)
        batch = _plan_group(planning, rules, group, positions, open_orders, spent)
        assets = {a.label: a for a in planning.by_id.values()}
        _collect(plan, batch, group, assets, orders, decimals=rules.unit_decimals)
        if planning.on_batch is not None:  # the plan report (saras.services.plan_review)
            planning.on_batch(batch, group, assets)
    supersedes = {
        run_id: status
        for run in plan.runs[first_run:]
        for run_id, status in planning.waiting.get(run.investment_id, {}).items()
    }
    return orders, supersedes


def _plan_group(
    planning: _Planning,
    rules: BrokerRules,
    members: list[InvestmentRow],
    positions: Mapping[tuple[uuid.UUID, uuid.UUID], Decimal],
    open_orders: Mapping[tuple[uuid.UUID, uuid.UUID], Decimal],
    spent: Mapping[uuid.UUID, Decimal],
) -> BatchPlan:
    """Plan the investments of a chunk that share broker rules (one ``plan_batch``)."""
    d = rules.unit_decimals
    target_weights = planning.target_weights
    instruments = {
        a.label: Instrument(
            a.label,
            planning.prices[a.id][0] if a.id in planning.prices else None,
            a.lot_size,
            a.fractionable,
        )
        for a in planning.by_id.values()
    }
    index = {m.id: k for k, m in enumerate(members)}
    in_group = {str(a) for (i, a), q in {**positions, **open_orders}.items() if q and i in index}
    labels = tuple(sorted(set(target_weights) | in_group))
    col = {s: j for j, s in enumerate(labels)}
    held_units = np.zeros((len(members), len(labels)), dtype=np.int64)
    open_units = np.zeros_like(held_units)
    for (inv_id, a), q in positions.items():
        k = index.get(inv_id)
        if k is not None and q:
            held_units[k, col[str(a)]] = int(
                (q * (10**d)).to_integral_value(rounding="ROUND_FLOOR")
            )
    reserved: dict[uuid.UUID, Decimal] = defaultdict(Decimal)
    for (inv_id, a), q in open_orders.items():
        k = index.get(inv_id)
        if k is not None and q:
            open_units[k, col[str(a)]] = int(
                (q * (10**d)).to_integral_value(rounding="ROUND_FLOOR")
            )
            price = instruments[str(a)].price
            if q > 0 and price:
                reserved[inv_id] += q * price  # open buys hold cash
    cash = tuple(
        max(m.amount - spent.get(m.id, Decimal(0)) - reserved[m.id], Decimal(0)).quantize(
            Decimal("0.0001")
        )
        for m in members
    )
    state = BatchState(tuple(str(m.id) for m in members), labels, cash, held_units, open_units, d)
    group_amounts = None
    if planning.run_type in (RunType.INVEST, RunType.TOPUP):
        amounts = planning.amounts or {}
        group_amounts = [Decimal(amounts.get(m.id, m.amount)) for m in members]
    return plan_batch(
        planning.run_type,
        target_weights,
        instruments,
        rules,
        planning.policy,
        state,
        group_amounts,
    )


def plan_smallcase(
    conn: Connection,
    smallcase_id: uuid.UUID,
    smallcase_name: str,
    *,
    run_type: RunType = RunType.REBALANCE,
    policy: PlanningPolicy | None = None,
    investment_ids: Sequence[uuid.UUID] | None = None,
    amounts: Mapping[uuid.UUID, Decimal] | None = None,
    composition: tuple[Constituent, ...] | None = None,
    unusable: Mapping[uuid.UUID, str] | None = None,
    now: datetime | None = None,
    max_price_age_sessions: int = 1,
    chunk: int = PLAN_CHUNK,
    on_batch: BatchHook | None = None,
) -> PlanDraft:
    """Plan every active investment of a smallcase (or the given ones) from ``conn``'s view.

    Call it inside the planning lock (``lock_planning``) when the plan is to be written.
    ``unusable`` maps broker connections already found unusable to the reason. The whole
    plan's order rows are returned: :func:`plan_and_write` streams them instead.
    """
    planning = _start_planning(
        conn,
        smallcase_id,
        smallcase_name,
        run_type=run_type,
        policy=policy,
        investment_ids=investment_ids,
        amounts=amounts,
        composition=composition,
        unusable=unusable,
        now=now,
        max_price_age_sessions=max_price_age_sessions,
        on_batch=on_batch,
    )
    orders = PlannedOrders()
    supersedes: dict[uuid.UUID, RunStatus] = {}
    investments = planning.investments
    for lo in range(0, len(investments), chunk):
        part, replaced = _plan_chunk(planning, investments[lo : lo + chunk])
        for name in ("ids", "run_ids", "asset_ids", "sides", "quantities", "prices"):
            getattr(orders, name).extend(getattr(part, name))
        supersedes.update(replaced)
    return PlanDraft(planning.freeze(), orders, supersedes)


def _collect(
    plan: _Builder,
    batch: BatchPlan,
    members: list[InvestmentRow],
    assets: Mapping[str, PlanAsset],
    orders_out: PlannedOrders,
    *,
    decimals: int,
) -> None:
    """Turn a batch plan's columns into runs, order rows, hashes and the report's totals."""
    for k in np.flatnonzero(~batch.changed).tolist():
        code = int(batch.status_reason[k])
        reason = SKIP_REASONS[code].value if code >= 0 else "no_orders"
        plan.skipped.setdefault(reason, []).append(str(members[k].id))
    n_orders = batch.order_count
    if n_orders == 0:
        for k in np.flatnonzero(batch.changed).tolist():
            plan.skipped.setdefault("no_orders", []).append(str(members[k].id))
        return
    labels = batch.symbols
    qty_text = _fixed9(batch.order_units, decimals)
    legs = batch.order_leg
    values = batch.order_est_value
    is_buy = batch.order_is_buy
    _add_totals(plan, batch, decimals)
    leg_price = _leg_prices(batch, decimals)
    skips = _skipped_legs(batch, assets)
    sides = np.where(is_buy, "buy", "sell").tolist()
    leg_list = legs.tolist()
    value_list = np.nan_to_num(values).tolist()
    asset_ids = {j: assets[label].label for j, label in enumerate(labels)}
    symbols = {j: assets[label].symbol for j, label in enumerate(labels)}
    boundaries = np.flatnonzero(np.diff(batch.order_investment)) + 1
    starts = [0, *boundaries.tolist()]
    ends = [*boundaries.tolist(), n_orders]
    invs = batch.order_investment
    for lo, hi in zip(starts, ends, strict=True):
        n = int(invs[lo])
        inv = members[n]
        run_id = str(uuid_utils.uuid7())
        n_run = hi - lo
        ids = [str(uuid_utils.uuid7()) for _ in range(n_run)]
        run_legs = leg_list[lo:hi]
        run_sides = sides[lo:hi]
        run_qty = qty_text[lo:hi]
        run_values = value_list[lo:hi]
        est_buy = sum(v for v, side in zip(run_values, run_sides, strict=True) if side == "buy")
        est_sell = sum(v for v, side in zip(run_values, run_sides, strict=True) if side != "buy")
        lines = [
            order_line(i, symbols[leg], side, q)
            for i, leg, side, q in zip(ids, run_legs, run_sides, run_qty, strict=True)
        ]
        orders_out.ids.extend(ids)
        orders_out.run_ids.extend([run_id] * n_run)
        orders_out.asset_ids.extend([asset_ids[leg] for leg in run_legs])
        orders_out.sides.extend(run_sides)
        orders_out.quantities.extend(run_qty)
        orders_out.prices.extend([leg_price[leg] for leg in run_legs])
        plan.runs.append(
            PlannedRun(
                run_id=uuid.UUID(run_id),
                investment_id=inv.id,
                connection_id=inv.connection_id,
                user_id=inv.user_id,
                order_count=hi - lo,
                est_buy=Decimal(repr(est_buy)).quantize(Decimal("0.0001")),
                est_sell=Decimal(repr(est_sell)).quantize(Decimal("0.0001")),
                plan_hash=run_orders_hash(run_id, lines),
                drift_pct=round(float(batch.drift_pct[n]), 4),
                cash_limited=bool(batch.cash_limited[n]),
                skipped_legs=tuple(skips.get(n, [])),
            )
        )
        plan.order_count += hi - lo
    with_orders = set(invs.tolist())
    for k in np.flatnonzero(batch.changed).tolist():
        if int(k) not in with_orders:
            plan.skipped.setdefault("no_orders", []).append(str(members[k].id))


# --- writing ----------------------------------------------------------------------------------


def _skipped_legs(batch: BatchPlan, assets: Mapping[str, PlanAsset]) -> dict[int, list[SkippedLeg]]:
    """Return the legs a batch skipped, by investment index, with their reason."""
    skips: dict[int, list[SkippedLeg]] = defaultdict(list)
    for j, r, i in zip(
        batch.skip_leg.tolist(),
        batch.skip_reason.tolist(),
        batch.skip_investment.tolist(),
        strict=True,
    ):
        skips[i].append(SkippedLeg(assets[batch.symbols[j]].ref, SKIP_REASONS[r].value))
    return skips


def _add_totals(plan: _Builder, batch: BatchPlan, decimals: int) -> None:
    """Add a batch's quantity, value and order count per asset and side to the plan (vectorised)."""
    labels, legs, values = batch.symbols, batch.order_leg, batch.order_est_value
    priced = ~np.isnan(values)
    slot = legs * 2 + batch.order_is_buy.astype(np.int64)
    n_slots = 2 * len(labels)
    counts = np.bincount(slot[priced], minlength=n_slots)
    value_sums = np.bincount(slot[priced], weights=values[priced], minlength=n_slots)
    unit_sums = np.bincount(slot, weights=batch.order_units.astype(np.float64), minlength=n_slots)
    for code in np.flatnonzero(np.bincount(slot, minlength=n_slots)).tolist():
        leg, buy = divmod(int(code), 2)
        key = (labels[leg], "buy" if buy else "sell")
        bucket = plan.per_asset.setdefault(key, [Decimal(0), Decimal(0), Decimal(0)])
        bucket[0] += Decimal(repr(float(unit_sums[code]))) / (10**decimals)
        bucket[1] += Decimal(repr(float(value_sums[code]))).quantize(Decimal("0.0001"))
        bucket[2] += int(counts[code])


def _leg_prices(batch: BatchPlan, decimals: int) -> dict[int, str]:
    """Return each leg's planning price as text (one string per leg, not per order)."""
    values, legs = batch.order_est_value, batch.order_leg
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
    return leg_price


def write_plan(conn: Connection, draft: PlanDraft, *, auto_approve: bool) -> None:
    """Write a plan in the caller's transaction (COPY on PostgreSQL), through the state table.

    The waiting runs it replaces are superseded (``WHERE status = <old>``: a run approved in the
    meantime makes this fail, and nothing is written). New runs are born ``planned`` and moved on
    by ``auto_approve`` or ``request_approval``: the state table gives the status they are
    inserted with (no row exists to race on, and a second UPDATE of every run would double the
    cost of writing them).
    """
    plan = draft.plan
    _write_runs(
        conn,
        plan,
        plan.runs,
        draft.orders,
        draft.supersedes,
        auto_approve=auto_approve,
    )


def _write_runs(
    conn: Connection,
    plan: Plan | _Builder,
    runs: Sequence[PlannedRun],
    orders: PlannedOrders,
    supersedes: Mapping[uuid.UUID, RunStatus],
    *,
    auto_approve: bool,
) -> None:
    """Write some runs of a plan and their order rows (see :func:`write_plan`)."""
    if not runs:
        return
    if supersedes:
        runs_repo.move_runs(conn, supersedes, RunEvent.SUPERSEDED)
    now = utcnow().isoformat()
    status = runs_repo.born_status(auto_approve=auto_approve)
    run_rows: list[tuple[str, ...]] = []
    for run in runs:
        body = run.body(plan.smallcase_id, plan.smallcase_name, plan.run_type)
        if auto_approve:
            body["approved_hash"] = run.plan_hash
            body["approval"] = "auto"
        run_rows.append(
            (
                str(run.run_id),
                str(run.investment_id),
                str(run.connection_id),
                plan.run_type.value,
                status.value,
                f"{run.total:f}",
                json.dumps(body, separators=(",", ":")),
                now,
                now,
            )
        )
    if conn.dialect.name == "postgresql":
        _copy_runs(conn, run_rows, orders, now)
    else:
        _insert_runs(conn, run_rows, orders)


def _copy_runs(
    conn: Connection, run_rows: list[tuple[str, ...]], orders: PlannedOrders, now: str
) -> None:
    """COPY runs, then their orders (PostgreSQL)."""
    planned = OrderStatus.PLANNED.value
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
    null = chr(92) + "N"
    text = "".join(
        f"{i}\t{r}\t{a}\t{s}\t{q}\t{p or null}\tmarket\t{planned}\t{now}\t{now}\n"
        for i, r, a, s, q, p in zip(
            orders.ids,
            orders.run_ids,
            orders.asset_ids,
            orders.sides,
            orders.quantities,
            orders.prices,
            strict=True,
        )
    )
    columns = (
        "id, execution_run_id, asset_id, side, quantity, price, order_type, status, "
        "created_at, updated_at"
    )
    with cursor.copy(f"COPY smallcase_execution_orders ({columns}) FROM STDIN") as copy:
        copy.write(text)


def _insert_runs(conn: Connection, run_rows: list[tuple[str, ...]], orders: PlannedOrders) -> None:
    """INSERT runs, then their orders (SQLite)."""
    planned = OrderStatus.PLANNED.value
    stamp = utcnow()
    conn.execute(
        insert(SmallcaseExecutionRun),
        [
            {
                "id": uuid.UUID(r[0]),
                "investment_id": uuid.UUID(r[1]),
                "broker_connection_id": uuid.UUID(r[2]),
                "run_type": r[3],
                "status": r[4],
                "total_amount": Decimal(r[5]),
                "execution_plan": json.loads(r[6]),
                "created_at": stamp,
                "updated_at": stamp,
            }
            for r in run_rows
        ],
    )
    if len(orders):
        conn.execute(
            insert(SmallcaseExecutionOrder),
            [
                {
                    "id": uuid.UUID(i),
                    "execution_run_id": uuid.UUID(r),
                    "asset_id": uuid.UUID(a),
                    "side": s,
                    "quantity": Decimal(q),
                    "price": Decimal(p) if p else None,
                    "order_type": "market",
                    "status": planned,
                    "order_metadata": {},
                    "created_at": stamp,
                    "updated_at": stamp,
                }
                for i, r, a, s, q, p in zip(
                    orders.ids,
                    orders.run_ids,
                    orders.asset_ids,
                    orders.sides,
                    orders.quantities,
                    orders.prices,
                    strict=True,
                )
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


# --- the entry points: each owns its transaction ----------------------------------------------


def _flag(name: str, value: Any) -> bool:
    """Return a JSON boolean policy value; anything else is bad input."""
    if not isinstance(value, bool):
        raise InvalidInputError(f"policy {name} must be true or false, got {value!r}")
    return value


def parse_policy(policy: Mapping[str, Any] | None) -> PlanningPolicy:
    """Return a planning policy from JSON values; unknown keys are bad input, named."""
    values = dict(policy or {})
    known = set(PlanningPolicy.__dataclass_fields__)
    unknown = sorted(set(values) - known)
    if unknown:
        raise InvalidInputError(
            f"unknown policy key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    flags = {k for k, f in PlanningPolicy.__dataclass_fields__.items() if f.type == "bool"}
    try:
        parsed: dict[str, Any] = {
            k: _flag(k, v) if k in flags else Decimal(str(v)) for k, v in values.items()
        }
        return PlanningPolicy(**parsed)
    except (ArithmeticError, ValueError) as exc:
        raise InvalidInputError(f"bad policy {values!r}: {exc}") from exc


def plan_and_write(
    engine: Engine,
    smallcase_ref: str,
    *,
    run_type: RunType = RunType.REBALANCE,
    constituents: Sequence[Mapping[str, Any]] | None = None,
    investment_ids: Sequence[uuid.UUID] | None = None,
    amounts: Mapping[uuid.UUID, Decimal] | None = None,
    policy: PlanningPolicy | None = None,
    dry_run: bool = False,
    require_approval: bool = True,
    max_price_age_sessions: int = 1,
    check_brokers: bool = True,
    now: datetime | None = None,
    on_batch: BatchHook | None = None,
) -> Plan:
    """Plan a smallcase (or some of its investments) and, unless dry, write the plan.

    First, outside any lock: the composition is checked and the brokers are asked whether their
    connections work (slow). Then one transaction takes the planning lock, reads the state,
    plans, supersedes waiting runs and writes; an auto-approved plan applies its composition in
    that same transaction.
    """
    with Session(engine) as session:
        smallcase = admin.get_smallcase(session, smallcase_ref)
        smallcase_id, name = smallcase.id, smallcase.name
        composition = (
            None if constituents is None else validate_composition(session, smallcase, constituents)
        )
        if policy is None:
            policy = stored_planning_policy(session.connection(), smallcase, composition)
        investments = (
            load_investments(session.connection(), smallcase_id, investment_ids)
            if check_brokers
            else []
        )
    unusable = check_connections(engine, investments) if check_brokers else {}
    with engine.connect() if dry_run else engine.begin() as conn:
        if not dry_run:
            runs_repo.lock_planning(conn, smallcase_id, investment_ids)
        planning = _start_planning(
            conn,
            smallcase_id,
            name,
            run_type=run_type,
            policy=policy,
            investment_ids=investment_ids,
            amounts=amounts,
            composition=composition,
            unusable=unusable,
            now=now,
            max_price_age_sessions=max_price_age_sessions,
            on_batch=on_batch,
        )
        # a chunk of investments at a time: plan it, write its runs and orders, forget its
        # rows; one transaction and one planning lock for all of them (a dry run's connection
        # closes with a rollback: nothing written)
        investments = planning.investments
        for lo in range(0, len(investments), PLAN_CHUNK):
            first = len(planning.plan.runs)
            orders, supersedes = _plan_chunk(planning, investments[lo : lo + PLAN_CHUNK])
            if not dry_run:
                runs = planning.plan.runs[first:]
                _write_runs(
                    conn, planning.plan, runs, orders, supersedes, auto_approve=not require_approval
                )
            del orders
        if not dry_run and composition is not None and not require_approval:
            apply_composition(conn, smallcase_id, composition)
    return planning.freeze()


# --- approval ---------------------------------------------------------------------------------


def current_run_hashes(conn: Connection, run_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, str]:
    """Recompute each run's hash from its orders as they are in the database now (set-based)."""
    per_run: dict[uuid.UUID, list[tuple[str, str, str, str]]] = defaultdict(list)
    order = SmallcaseExecutionOrder
    ids = [uuid.UUID(str(r)) for r in run_ids]
    for lo in range(0, len(ids), ID_CHUNK):
        rows = conn.execute(
            select(order.execution_run_id, order.id, Asset.symbol, order.side, order.quantity)
            .join(Asset, Asset.id == order.asset_id)
            .where(order.execution_run_id.in_(ids[lo : lo + ID_CHUNK]))
        )
        for run_id, order_id, symbol, side, quantity in rows:
            per_run[_uuid(run_id)].append((str(order_id), symbol, side, qty_text(_dec(quantity))))
    return {run_id: orders_hash(run_id, per_run.get(run_id, [])) for run_id in ids}


def recompute_plan_hash(engine: Engine, run_ids: Sequence[uuid.UUID]) -> str:
    """Recompute a plan's hash from the orders as they are in the database now (set-based)."""
    with engine.connect() as conn:
        hashes = current_run_hashes(conn, run_ids)
    return combined_plan_hash(hashes[uuid.UUID(str(r))] for r in run_ids)


def decide_plan(
    engine: Engine,
    plan: Plan,
    event: RunEvent,
    *,
    note: str | None = None,
) -> int:
    """Approve, reject or time out a plan's runs in one transaction.

    Approval checks every run's orders against the hash it was planned with, and makes the
    plan's new composition (if any) the smallcase's. A plan a newer one superseded, or one
    decided elsewhere first, raises ``RunsChanged`` with the reason: nothing changes then.
    """
    with engine.begin() as conn:
        approved: dict[uuid.UUID, str] = {}
        if event is RunEvent.APPROVE:
            current = current_run_hashes(conn, plan.run_ids)
            for run in plan.runs:
                if current[run.run_id] != run.plan_hash:
                    raise InvalidInputError(
                        f"run {run.run_id} changed since it was planned: not approved"
                    )
                approved[run.run_id] = run.plan_hash
        changed = runs_repo.decide(conn, plan.run_ids, event, note=note, approved_hashes=approved)
        if event is RunEvent.APPROVE and plan.composition is not None:
            apply_composition(conn, plan.smallcase_id, plan.composition)
    return changed
