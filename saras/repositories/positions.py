"""Positions from our own ledger, and the nightly snapshot into ``user_smallcase_position_history``.

The ledger is what execution records on ``smallcase_execution_orders``: for an order with fills,
``order_metadata`` holds string decimals ``filled_quantity`` (cumulative), ``filled_at`` (the
latest fill, ISO-8601 aware) and ``position_average_price`` (the investment's average cost in that
asset right after the order's fills). An investment's position in an asset is therefore

* quantity: the sum over the orders of its runs of the signed ``filled_quantity`` (buys +, sells -);
* average price: ``position_average_price`` of its latest order in that asset with a fill (by
  ``filled_at``; an order without ``filled_at`` counts at its ``updated_at``).

Order status is not consulted: a fill is a fill, whatever became of the rest of the order. Two
fills of one asset at the same instant resolve to the larger average price, on both backends.
Metadata that cannot be read (``filled_quantity: "lots"``) fails the snapshot loudly
(``LedgerError``, or PostgreSQL's cast error naming the value): the ledger is never guessed at.

A snapshot of day D is the ledger *as of the end of D* (fills before D+1 00:00 UTC), so a re-run
of a past day gives the same rows even after later trades. It is valued at the latest close on or
before D; an asset without any close gets ``market_value``/``unrealized_pnl`` NULL (quantity and
average price are still written). Rows are keyed (investment, asset, ``snapshot_date`` = D at
00:00 UTC). A position whose quantity is zero is not snapshotted, and a row written earlier for
that day (before the position was closed) is removed, so the day always matches the ledger.

PostgreSQL: one statement computes the positions from the ledger, removes closed ones, drops the
positions whose stored row already holds the same values, and inserts or updates the rest with
``INSERT ... SELECT ... ON CONFLICT DO UPDATE ... WHERE (values) IS DISTINCT FROM``; counts come
from ``RETURNING (xmax = 0)``. An identical re-run writes (and locks) no row. Ids are UUIDv7 made
in SQL. SQLite: the same result computed in Python. Either way it runs in the caller's
transaction.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, cast

from sqlalchemy import (
    Connection,
    Table,
    and_,
    bindparam,
    delete,
    func,
    select,
    text,
    true,
    tuple_,
)
from uuid_utils.compat import uuid7

from models import (
    Asset,
    PositionAdjustment,
    PriceHistory,
    SmallcaseExecutionOrder,
    SmallcaseExecutionRun,
    UserBrokerConnection,
    UserSmallcaseInvestment,
    UserSmallcasePositionHistory,
)
from models.base import utcnow
from saras.domain.enums import InvestmentStatus, OrderSide

ACTIVE = InvestmentStatus.ACTIVE.value
QUANTITY_Q = Decimal("1e-9")
PRICE_Q = Decimal("1e-6")
MONEY_Q = Decimal("1e-4")

#: A UUIDv7 made in SQL (PostgreSQL < 18 has no uuidv7()): the first 48 bits of a random v4 id
#: replaced by the Unix time in milliseconds from clock_timestamp(), and the version nibble
#: turned from 4 (0100) into 7 (0111) by setting bits 52 and 53.
UUIDV7_SQL = (
    "encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid()) placing "
    "substring(int8send((extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3) "
    "FROM 1 FOR 6), 52, 1), 53, 1), 'hex')::uuid"
)


@dataclass(frozen=True)
class AssetClose:
    """An asset and the close it is valued at on a snapshot day (None: no close at all)."""

    asset_id: uuid.UUID
    symbol: str
    exchange: str
    close: Decimal | None
    price_date: date | None


@dataclass
class SnapshotCounts:
    """What one snapshot write did; ``positions`` = inserted + updated + unchanged."""

    snapshot_date: date
    positions: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    #: positions written (or kept) per asset, for reporting stale prices
    positions_by_asset: dict[uuid.UUID, int] = field(default_factory=dict)
    #: the close each held asset was valued at
    closes: dict[uuid.UUID, AssetClose] = field(default_factory=dict)


@dataclass(frozen=True)
class LedgerPosition:
    """One investment's position in one asset, from the ledger."""

    investment_id: uuid.UUID
    asset_id: uuid.UUID
    broker_connection_id: uuid.UUID
    quantity: Decimal
    average_price: Decimal | None


@dataclass(frozen=True)
class ConnectionInfo:
    """A broker connection the reconciliation contacts (no secrets)."""

    connection_id: uuid.UUID
    user_id: uuid.UUID
    alias: str
    broker_type: str
    status: str
    active_investments: int


def snapshot_timestamp(day: date) -> datetime:
    """Return the ``snapshot_date`` value of a day: 00:00 UTC."""
    return datetime.combine(day, time(0), tzinfo=UTC)


def fills_cutoff(day: date) -> datetime:
    """Return the instant a snapshot of ``day`` takes the ledger at: the next 00:00 UTC."""
    return snapshot_timestamp(day) + timedelta(days=1)


# --- closes -----------------------------------------------------------------------------------


def latest_closes(
    conn: Connection, day: date, asset_ids: Sequence[uuid.UUID] | None = None
) -> dict[uuid.UUID, AssetClose]:
    """Return each asset's latest close on or before ``day`` (every asset when ids are None)."""
    if asset_ids is not None and not asset_ids:
        return {}
    assets = Asset.__table__
    prices = PriceHistory.__table__
    if conn.dialect.name == "postgresql":
        # one backward index probe per asset on (asset_id, price_date)
        latest = (
            select(prices.c.price_date, prices.c.close_price)
            .where(prices.c.asset_id == assets.c.id, prices.c.price_date <= day)
            .order_by(prices.c.price_date.desc())
            .limit(1)
            .lateral("latest")
        )
        query = select(
            assets.c.id,
            assets.c.symbol,
            assets.c.exchange,
            latest.c.price_date,
            latest.c.close_price,
        ).outerjoin(latest, true())
    else:
        last_day = (
            select(prices.c.asset_id, func.max(prices.c.price_date).label("day"))
            .where(prices.c.price_date <= day)
            .group_by(prices.c.asset_id)
            .subquery()
        )
        query = (
            select(
                assets.c.id,
                assets.c.symbol,
                assets.c.exchange,
                prices.c.price_date,
                prices.c.close_price,
            )
            .outerjoin(last_day, last_day.c.asset_id == assets.c.id)
            .outerjoin(
                prices,
                and_(prices.c.asset_id == assets.c.id, prices.c.price_date == last_day.c.day),
            )
        )
    if asset_ids is not None:
        query = query.where(assets.c.id.in_(list(asset_ids)))
    out = {}
    for asset_id, symbol, exchange, price_date, close in conn.execute(query):
        value = None if close is None else _dec(close, PRICE_Q)
        out[asset_id] = AssetClose(asset_id, symbol, exchange, value, price_date)
    return out


# --- the snapshot write -----------------------------------------------------------------------


def write_snapshot(conn: Connection, day: date) -> SnapshotCounts:
    """Snapshot every active investment's positions for ``day``; return what changed."""
    closes = latest_closes(conn, day)
    if conn.dialect.name == "postgresql":
        counts = _write_postgres(conn, day, closes)
    else:
        counts = _write_portable(conn, day, closes)
    counts.closes = {a: closes[a] for a in counts.positions_by_asset if a in closes}
    return counts


_VALUE_COLUMNS = (
    "broker_connection_id",
    "quantity",
    "average_price",
    "market_value",
    "unrealized_pnl",
)


#: the ledger's positions per (investment, asset, connection) of active investments before
#: ``:cutoff``: fills of our orders plus quantity adjustments (splits, accepted differences),
#: the average price of the latest move; two CTEs, ``moves`` and ``positions``
_LEDGER_POSITIONS_CTE = """moves AS (
        SELECT i.id AS investment_id, o.asset_id, i.broker_connection_id,
               CASE WHEN o.side = 'sell' THEN -f.filled ELSE f.filled END AS quantity,
               f.filled_at, f.average_price
        FROM user_smallcase_investments i
        JOIN smallcase_execution_runs r ON r.investment_id = i.id
        JOIN smallcase_execution_orders o ON o.execution_run_id = r.id
        CROSS JOIN LATERAL (
            SELECT (o.order_metadata ->> 'filled_quantity')::numeric AS filled,
                   coalesce((o.order_metadata ->> 'filled_at')::timestamptz, o.updated_at)
                       AS filled_at,
                   (o.order_metadata ->> 'position_average_price')::numeric AS average_price
        ) f
        WHERE i.status = :active AND f.filled > 0 AND f.filled_at < :cutoff
        UNION ALL
        SELECT i.id, a.asset_id, i.broker_connection_id, a.quantity_delta, a.effective_at,
               a.average_price
        FROM user_smallcase_investments i
        JOIN position_adjustments a ON a.investment_id = i.id
        WHERE i.status = :active AND a.asset_id IS NOT NULL AND a.quantity_delta <> 0
          AND a.effective_at < :cutoff
    ),
    positions AS (
        SELECT investment_id, asset_id, broker_connection_id, round(sum(quantity), 9) AS quantity,
               round((max(ARRAY[extract(epoch FROM filled_at), average_price]))[2], 6)
                   AS average_price
        FROM moves
        GROUP BY investment_id, asset_id, broker_connection_id
    )
"""


def _snapshot_sql() -> str:
    values = ", ".join(f"s.{c}" for c in _VALUE_COLUMNS)
    stored = ", ".join(f"h.{c}" for c in _VALUE_COLUMNS)
    proposed = ", ".join(f"v.{c}" for c in _VALUE_COLUMNS)
    excluded = ", ".join(f"EXCLUDED.{c}" for c in _VALUE_COLUMNS)
    assignments = ", ".join(f"{c} = EXCLUDED.{c}" for c in _VALUE_COLUMNS)
    # ``joined`` pairs every position (zero ones too) with the day's stored row, once. Unchanged
    # positions are dropped before the INSERT: ON CONFLICT would lock (and so dirty) every
    # conflicting row even when its WHERE then declines the update. ON CONFLICT stays for a
    # concurrent writer of the same day.
    return f"""
    WITH {_LEDGER_POSITIONS_CTE},
    closes AS (
        SELECT * FROM unnest(CAST(:asset_ids AS uuid[]), CAST(:closes AS numeric[]))
            AS c (asset_id, close_price)
    ),
    joined AS MATERIALIZED (
        SELECT v.*, s.id AS stored_id,
               s.id IS NOT NULL AND ({values}) IS NOT DISTINCT FROM ({proposed}) AS same
        FROM (
            SELECT p.investment_id, p.asset_id, p.broker_connection_id, p.quantity,
                   p.average_price, round(p.quantity * c.close_price, 4) AS market_value,
                   round((c.close_price - p.average_price) * p.quantity, 4) AS unrealized_pnl
            FROM positions p LEFT JOIN closes c ON c.asset_id = p.asset_id
        ) v
        LEFT JOIN user_smallcase_position_history s
            ON s.investment_id = v.investment_id AND s.asset_id = v.asset_id
           AND s.snapshot_date = :day
    ),
    removed AS (
        DELETE FROM user_smallcase_position_history h
        WHERE h.id = ANY(ARRAY(
            SELECT stored_id FROM joined WHERE quantity = 0 AND stored_id IS NOT NULL
        ))
        RETURNING h.asset_id
    ),
    written AS (
        INSERT INTO user_smallcase_position_history AS h
            (id, investment_id, asset_id, {", ".join(_VALUE_COLUMNS)}, snapshot_date, created_at)
        SELECT {UUIDV7_SQL}, v.investment_id, v.asset_id, {proposed}, :day, now()
        FROM joined v
        WHERE v.quantity <> 0 AND NOT v.same
        ON CONFLICT (investment_id, asset_id, snapshot_date) DO UPDATE SET {assignments}
        WHERE ({stored}) IS DISTINCT FROM ({excluded})
        RETURNING h.asset_id, (h.xmax = 0) AS inserted
    )
    SELECT asset_id, sum(positions), sum(inserted), sum(updated), sum(removed) FROM (
        SELECT asset_id, count(*) AS positions, 0 AS inserted, 0 AS updated, 0 AS removed
        FROM joined WHERE quantity <> 0 GROUP BY asset_id
        UNION ALL
        SELECT asset_id, 0, count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted),
               0
        FROM written GROUP BY asset_id
        UNION ALL
        SELECT asset_id, 0, 0, 0, count(*) FROM removed GROUP BY asset_id
    ) AS t GROUP BY asset_id
    """


def _write_postgres(
    conn: Connection, day: date, closes: Mapping[uuid.UUID, AssetClose]
) -> SnapshotCounts:
    priced = [c for c in closes.values() if c.close is not None]
    # No nested loops for this one statement: the history table's statistics are often stale
    # (empty before the first snapshot, a day behind after it), and a nested loop over a
    # table the planner believes empty rescans it once per position (quadratic). Hash and merge
    # joins stay linear whatever the estimates. Restored at once; a failure rolls it back.
    previous = conn.execute(text("SELECT current_setting('enable_nestloop')")).scalar_one()
    conn.execute(text("SELECT set_config('enable_nestloop', 'off', true)"))
    rows = conn.execute(
        text(_snapshot_sql()),
        {
            "active": ACTIVE,
            "cutoff": fills_cutoff(day),
            "day": snapshot_timestamp(day),
            "asset_ids": [c.asset_id for c in priced],
            "closes": [c.close for c in priced],
        },
    ).all()
    conn.execute(text("SELECT set_config('enable_nestloop', :v, true)"), {"v": previous})
    counts = SnapshotCounts(day)
    for asset_id, positions, inserted, updated, removed in rows:
        counts.positions += int(positions)
        counts.inserted += int(inserted)
        counts.updated += int(updated)
        counts.removed += int(removed)
        if positions:
            counts.positions_by_asset[asset_id] = int(positions)
    counts.unchanged = counts.positions - counts.inserted - counts.updated
    return counts


def _write_portable(
    conn: Connection, day: date, closes: Mapping[uuid.UUID, AssetClose]
) -> SnapshotCounts:
    table = cast(Table, UserSmallcasePositionHistory.__table__)
    stamp = snapshot_timestamp(day)
    positions = ledger_positions(conn, as_of=fills_cutoff(day))
    active = select(UserSmallcaseInvestment.id).where(UserSmallcaseInvestment.status == ACTIVE)
    existing = {
        (r.investment_id, r.asset_id): r
        for r in conn.execute(
            select(table).where(table.c.snapshot_date == stamp, table.c.investment_id.in_(active))
        )
    }
    counts = SnapshotCounts(day)
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    removed: list[tuple[uuid.UUID, uuid.UUID]] = []
    now = utcnow()
    for p in positions:
        key = (p.investment_id, p.asset_id)
        stored = existing.get(key)
        if p.quantity == 0:
            if stored is not None:
                removed.append(key)
            continue
        close = closes[p.asset_id].close if p.asset_id in closes else None
        values = {
            "broker_connection_id": p.broker_connection_id,
            "quantity": p.quantity,
            "average_price": p.average_price,
            "market_value": None if close is None else _q(p.quantity * close, MONEY_Q),
            "unrealized_pnl": (
                None
                if close is None or p.average_price is None
                else _q((close - p.average_price) * p.quantity, MONEY_Q)
            ),
        }
        counts.positions += 1
        counts.positions_by_asset[p.asset_id] = counts.positions_by_asset.get(p.asset_id, 0) + 1
        if stored is None:
            inserts.append(
                {
                    "id": uuid7(),
                    "investment_id": p.investment_id,
                    "asset_id": p.asset_id,
                    "snapshot_date": stamp,
                    "created_at": now,
                    **values,
                }
            )
        elif _stored_values(stored) != values:
            updates.append({"b_id": stored.id, **values})
        else:
            counts.unchanged += 1
    if inserts:
        conn.execute(table.insert(), inserts)
    if updates:
        conn.execute(
            table.update()
            .where(table.c.id == bindparam("b_id"))
            .values({c: bindparam(c) for c in _VALUE_COLUMNS}),
            updates,
        )
    if removed:
        conn.execute(
            delete(table).where(
                table.c.snapshot_date == stamp,
                tuple_(table.c.investment_id, table.c.asset_id).in_(removed),
            )
        )
    counts.inserted, counts.updated, counts.removed = len(inserts), len(updates), len(removed)
    return counts


def _stored_values(row: Any) -> dict[str, Any]:
    return {
        "broker_connection_id": row.broker_connection_id,
        "quantity": _dec(row.quantity, QUANTITY_Q),
        "average_price": _dec(row.average_price, PRICE_Q),
        "market_value": _dec(row.market_value, MONEY_Q),
        "unrealized_pnl": _dec(row.unrealized_pnl, MONEY_Q),
    }


# --- ledger reads (portable) ------------------------------------------------------------------


def _q(value: Decimal, quantum: Decimal) -> Decimal:
    return value.quantize(quantum, rounding=ROUND_HALF_UP)


def _dec(value: Any, quantum: Decimal) -> Any:
    if value is None:
        return None
    return _q(Decimal(str(value)), quantum)


class LedgerError(ValueError):
    """An order's ledger metadata cannot be read (a bug in whoever wrote it): never guessed."""


def _parse_decimal(value: Any, key: str, order_id: Any) -> Decimal | None:
    if value is None:
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        number = Decimal("NaN")
    if not number.is_finite():
        raise LedgerError(f"order {order_id}: order_metadata.{key} {value!r} is not a number")
    return number


def _parse_instant(value: Any, fallback: datetime, order_id: Any) -> datetime:
    if value is None:
        return fallback
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise LedgerError(
            f"order {order_id}: order_metadata.filled_at {value!r} is not an aware ISO-8601 time"
        )
    return parsed.astimezone(UTC)


@dataclass
class _Moves:
    """Positions summed from moves: quantity, connection and latest average per key."""

    quantity: dict[tuple[uuid.UUID, uuid.UUID], Decimal] = field(
        default_factory=lambda: defaultdict(Decimal)
    )
    latest: dict[tuple[uuid.UUID, uuid.UUID], tuple[datetime, Decimal | None]] = field(
        default_factory=dict
    )
    connection: dict[uuid.UUID, uuid.UUID] = field(default_factory=dict)

    def add(
        self,
        key: tuple[uuid.UUID, uuid.UUID],
        connection_id: uuid.UUID,
        delta: Decimal,
        when: datetime,
        average: Decimal | None,
    ) -> None:
        """Add one move; ties on ``when`` keep the larger average, as the PostgreSQL path does."""
        self.connection[key[0]] = connection_id
        self.quantity[key] += delta
        candidate = (when, average)
        if key not in self.latest or _later(candidate, self.latest[key]):
            self.latest[key] = candidate

    def positions(self) -> list[LedgerPosition]:
        """Return the positions in key order."""
        out = []
        for key in sorted(self.quantity, key=lambda k: (str(k[0]), str(k[1]))):
            average = self.latest[key][1]
            out.append(
                LedgerPosition(
                    investment_id=key[0],
                    asset_id=key[1],
                    broker_connection_id=self.connection[key[0]],
                    quantity=_q(self.quantity[key], QUANTITY_Q),
                    average_price=None if average is None else _q(average, PRICE_Q),
                )
            )
        return out


def ledger_positions(
    conn: Connection,
    *,
    as_of: datetime | None = None,
    investment_ids: Iterable[uuid.UUID] | None = None,
    active_only: bool = True,
) -> list[LedgerPosition]:
    """Compute positions from the ledger in Python (zero positions included), in key order."""
    ids = None if investment_ids is None else list(investment_ids)
    moves = _Moves()
    _add_fills(conn, moves, as_of, ids, active_only)
    _add_adjustments(conn, moves, as_of, ids, active_only)
    return moves.positions()


def _add_fills(
    conn: Connection,
    moves: _Moves,
    as_of: datetime | None,
    investment_ids: list[uuid.UUID] | None,
    active_only: bool,
) -> None:
    """Add every fill of our orders before ``as_of`` (the order's metadata) to ``moves``."""
    orders = SmallcaseExecutionOrder.__table__
    runs = SmallcaseExecutionRun.__table__
    investments = UserSmallcaseInvestment.__table__
    query = (
        select(
            investments.c.id,
            investments.c.broker_connection_id,
            orders.c.asset_id,
            orders.c.id.label("order_id"),
            orders.c.side,
            orders.c.order_metadata,
            orders.c.updated_at,
        )
        .join(runs, runs.c.investment_id == investments.c.id)
        .join(orders, orders.c.execution_run_id == runs.c.id)
    )
    if active_only:
        query = query.where(investments.c.status == ACTIVE)
    if investment_ids is not None:
        query = query.where(investments.c.id.in_(investment_ids))
    for row in conn.execute(query):
        metadata = row.order_metadata or {}
        filled = _parse_decimal(metadata.get("filled_quantity"), "filled_quantity", row.order_id)
        if filled is None or filled <= 0:
            continue
        updated_at = row.updated_at
        if updated_at.tzinfo is None:
            updated_at = updated_at.replace(tzinfo=UTC)
        filled_at = _parse_instant(metadata.get("filled_at"), updated_at, row.order_id)
        if as_of is not None and filled_at >= as_of:
            continue
        average = _parse_decimal(
            metadata.get("position_average_price"), "position_average_price", row.order_id
        )
        delta = -filled if row.side == OrderSide.SELL.value else filled
        moves.add((row.id, row.asset_id), row.broker_connection_id, delta, filled_at, average)


def _add_adjustments(
    conn: Connection,
    moves: _Moves,
    as_of: datetime | None,
    investment_ids: list[uuid.UUID] | None,
    active_only: bool,
) -> None:
    """Add splits, bonus issues and accepted differences (moves without a fill) to ``moves``."""
    investments = UserSmallcaseInvestment.__table__
    adjustments = PositionAdjustment.__table__
    moved = (
        select(
            investments.c.id,
            investments.c.broker_connection_id,
            adjustments.c.asset_id,
            adjustments.c.quantity_delta,
            adjustments.c.average_price,
            adjustments.c.effective_at,
        )
        .join(adjustments, adjustments.c.investment_id == investments.c.id)
        .where(adjustments.c.asset_id.is_not(None), adjustments.c.quantity_delta != 0)
    )
    if active_only:
        moved = moved.where(investments.c.status == ACTIVE)
    if investment_ids is not None:
        moved = moved.where(investments.c.id.in_(investment_ids))
    for row in conn.execute(moved):
        effective_at = row.effective_at
        if effective_at.tzinfo is None:
            effective_at = effective_at.replace(tzinfo=UTC)
        if as_of is not None and effective_at >= as_of:
            continue
        average = None if row.average_price is None else Decimal(str(row.average_price))
        delta = Decimal(str(row.quantity_delta))
        moves.add((row.id, row.asset_id), row.broker_connection_id, delta, effective_at, average)


def _later(a: tuple[datetime, Decimal | None], b: tuple[datetime, Decimal | None]) -> bool:
    if a[0] != b[0]:
        return a[0] > b[0]
    # PostgreSQL orders NULL above any number in arrays: mirror it.
    if a[1] is None or b[1] is None:
        return a[1] is None and b[1] is not None
    return a[1] > b[1]


# --- reconciliation reads ---------------------------------------------------------------------


def connections_with_active_investments(conn: Connection) -> list[ConnectionInfo]:
    """List the connections that active investments use, by alias."""
    investments = UserSmallcaseInvestment.__table__
    connections = UserBrokerConnection.__table__
    query = (
        select(
            connections.c.id,
            connections.c.user_id,
            connections.c.alias,
            connections.c.broker_type,
            connections.c.status,
            func.count(),
        )
        .join(investments, investments.c.broker_connection_id == connections.c.id)
        .where(investments.c.status == ACTIVE)
        .group_by(connections.c.id)
        .order_by(connections.c.alias, connections.c.id)
    )
    return [
        ConnectionInfo(row[0], row[1], row[2], row[3], row[4], int(row[5]))
        for row in conn.execute(query)
    ]


#: An asset as brokers and reconciliation name it: (symbol, exchange).
AssetKey = tuple[str, str]


def ledger_quantities_by_connection(
    conn: Connection, connection_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, dict[AssetKey, Decimal]]:
    """Return, per connection, our net quantity per (symbol, exchange) over its orders.

    Every investment counts, whatever its status (an exiting investment's shares are still at
    the broker), and all fills so far count (brokers report their current book). Orders belong
    to a connection through their run's ``broker_connection_id``: where they were placed.
    """
    if not connection_ids:
        return {}
    orders = SmallcaseExecutionOrder.__table__
    runs = SmallcaseExecutionRun.__table__
    assets = Asset.__table__
    query = (
        select(
            runs.c.broker_connection_id,
            assets.c.symbol,
            assets.c.exchange,
            orders.c.side,
            orders.c.id,
            orders.c.order_metadata["filled_quantity"].as_string(),
        )
        .join(orders, orders.c.execution_run_id == runs.c.id)
        .join(assets, assets.c.id == orders.c.asset_id)
        .where(runs.c.broker_connection_id.in_(list(connection_ids)))
    )
    out: dict[uuid.UUID, dict[AssetKey, Decimal]] = {
        c: defaultdict(Decimal) for c in connection_ids
    }
    for connection_id, symbol, exchange, side, order_id, filled_text in conn.execute(query):
        filled = _parse_decimal(filled_text, "filled_quantity", order_id)
        if filled is None or filled <= 0:
            continue
        key = (symbol, exchange)
        out[connection_id][key] += -filled if side == OrderSide.SELL.value else filled
    for connection_id, key, delta in adjustment_quantities_by_connection(conn, connection_ids):
        out[connection_id][key] += delta
    return {c: {k: _q(q, QUANTITY_Q) for k, q in book.items()} for c, book in out.items()}


def count_active_investments(conn: Connection) -> int:
    """Return how many investments are active."""
    return int(
        conn.execute(
            select(func.count())
            .select_from(UserSmallcaseInvestment.__table__)
            .where(UserSmallcaseInvestment.__table__.c.status == ACTIVE)
        ).scalar_one()
    )


__all__ = [
    "UUIDV7_SQL",
    "AssetClose",
    "AssetKey",
    "ConnectionInfo",
    "LedgerError",
    "LedgerPosition",
    "SnapshotCounts",
    "adjustment_quantities_by_connection",
    "connections_with_active_investments",
    "count_active_investments",
    "fills_cutoff",
    "latest_closes",
    "ledger_positions",
    "ledger_quantities_by_connection",
    "snapshot_timestamp",
    "write_snapshot",
]


def adjustment_quantities_by_connection(
    conn: Connection, connection_ids: Sequence[uuid.UUID]
) -> list[tuple[uuid.UUID, AssetKey, Decimal]]:
    """Return the quantity moves of ``position_adjustments`` (splits, accepted differences).

    Each row is (the investment's connection, (symbol, exchange), signed quantity): positions
    are fills plus these.
    """
    if not connection_ids:
        return []
    adjustments = PositionAdjustment.__table__
    investments = UserSmallcaseInvestment.__table__
    assets = Asset.__table__
    query = (
        select(
            investments.c.broker_connection_id,
            assets.c.symbol,
            assets.c.exchange,
            func.sum(adjustments.c.quantity_delta),
        )
        .join(investments, investments.c.id == adjustments.c.investment_id)
        .join(assets, assets.c.id == adjustments.c.asset_id)
        .where(
            investments.c.broker_connection_id.in_(list(connection_ids)),
            adjustments.c.quantity_delta != 0,
        )
        .group_by(investments.c.broker_connection_id, assets.c.symbol, assets.c.exchange)
    )
    return [
        (connection_id, (symbol, exchange), _dec(delta, QUANTITY_Q))
        for connection_id, symbol, exchange, delta in conn.execute(query)
    ]
