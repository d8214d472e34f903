"""The built-in paper broker: fills against stored prices and keeps its own book.

The paper broker is a broker, not a view of our ledger: it keeps its own accounts, orders, fills,
positions and cash in tables prefixed ``paper_`` (its own ``MetaData``, never the platform's
models, and ignored by the platform's Alembic), so that reconciling our ledger against it means
something, exactly as it would against Alpaca or Kite.

How it behaves:

- Every asset is a (symbol, exchange) pair: positions are kept per (symbol, exchange) (INFY on NSE
  and INFY on NYSE are two positions) and prices are asked for as ``price_lookup(symbol,
  exchange)`` (a one-argument ``symbol -> price`` callable still works, for unique symbols).
  Orders without an exchange book under ''; books made before exchanges were recorded are
  upgraded in place, and a legacy position is claimed by the first order naming its exchange.
- Corporate actions: ``apply_corporate_action`` applies a split, reverse split, bonus issue or
  dividend to the book once per action id (quantity x ratio, average / ratio, cash in lieu of
  the fraction the account cannot hold; dividends credit cash). Given a ``corporate_actions``
  feed (Saras passes the stored actions), the book catches up with the market on its own.
- Market orders fill at ``price_lookup(symbol, exchange)`` (the latest stored close) moved
  by the slippage (buys pay more, sells receive less) and charged fees in basis points with
  a minimum per order. Prices are kept to 6 decimal places, money (gross, fees, cash) to 4,
  quantities to 9. Limit orders fill only when the price is at or better than the limit, and never
  beyond it; one that is not marketable rests OPEN and is re-checked whenever it is looked up.
  Notional orders become a quantity at the fill price (rounded down to 9 places, or to whole
  shares when fractional trading is off).
- It rejects what a real broker would (insufficient cash, unknown symbol, selling more than held,
  non-positive or fractional quantity, market closed) with ``OrderRejectedError`` AND a persisted
  REJECTED order, so that a later lookup by our id finds the rejection.
- Idempotency: ``place_order`` with a ``client_order_id`` already in the book returns the order
  already there (whatever its status; a rejected order is returned, not raised again). With or
  without ``resume`` it never places twice; concurrent placements of one id end in one order
  (the account row is locked first, and the UNIQUE (account_id, client_order_id) constraint is
  the last word).
- Fill modes for tests: ``immediate``; ``delayed`` (the order stays OPEN until it has been looked
  up ``fill_delay_polls`` times through ``get_order``, ``get_order_by_client_id`` or
  ``list_orders``: the N-th lookup returns it filled); ``partial`` (a ``partial_fill_ratio`` of
  the quantity fills at once, the rest after ``fill_delay_polls`` lookups, or never when that is
  0, leaving the order PARTIALLY_FILLED until cancelled). An order keeps the fill plan it was
  placed with. Cash and holdings are checked at placement and again at each fill; a fill that no
  longer fits ends the order (REJECTED, or CANCELLED when part of it had filled).
- Deterministic: broker order ids are a hash of (account id, client order id), fill ids are the
  order id plus a sequence number, time comes from the injected clock, nothing is random.
- Every change an order makes to the book (order row, fills, position, cash) happens in one
  database transaction that starts by locking the account row.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine

from saras.brokers.base import (
    AccountInfo,
    BrokerCapabilities,
    BrokerCredentials,
    BrokerOrder,
    BrokerOrderStatus,
    BrokerPosition,
    ConnectionConfig,
    Fill,
    MarketClock,
    OrderRequest,
)
from saras.brokers.errors import OrderRejectedError
from saras.brokers.kit.clock import market_clock
from saras.brokers.paper.capabilities import capabilities as paper_capabilities
from saras.brokers.paper.capabilities import check_config as paper_check_config
from saras.brokers.paper.config import (
    _BPS,
    _MONEY_Q,
    _PRICE_Q,
    _QTY_Q,
    _ZERO,
    BROKER,
    QUANTITY_SCALE,
    PaperFillMode,
    PaperMarketHours,
    PaperSettings,
)
from saras.brokers.paper.costs import order_fee
from saras.brokers.paper.data import PriceLookup, _by_asset
from saras.brokers.paper.errors import not_found, refused, rejected
from saras.brokers.paper.parsing import _money_type, _Order, _quantity_type, _UTCDateTime
from saras.domain.enums import OrderSide, OrderType

__all__ = [
    "PaperActionResult",
    "PaperBroker",
    "PaperCorporateAction",
    "PaperFillMode",
    "PaperMarketHours",
    "PaperSettings",
    "ensure_paper_schema",
    "paper_accounts",
    "paper_corporate_actions",
    "paper_fills",
    "paper_metadata",
    "paper_orders",
    "paper_positions",
]


# --------------------------------------------------------------------------------------------
# Storage
# --------------------------------------------------------------------------------------------


paper_metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

paper_accounts = sa.Table(
    "paper_accounts",
    paper_metadata,
    sa.Column("account_id", sa.String(64), primary_key=True),
    sa.Column("currency", sa.String(8), nullable=False),
    sa.Column("cash", _money_type(), nullable=False),
    sa.Column("created_at", _UTCDateTime(), nullable=False),
    sa.Column("updated_at", _UTCDateTime(), nullable=False),
)

paper_orders = sa.Table(
    "paper_orders",
    paper_metadata,
    sa.Column("broker_order_id", sa.String(40), primary_key=True),
    sa.Column(
        "account_id", sa.String(64), sa.ForeignKey("paper_accounts.account_id"), nullable=False
    ),
    sa.Column("client_order_id", sa.String(128), nullable=False),
    sa.Column("symbol", sa.String(32), nullable=False),
    # The exchange the order was sent for (NULL: not given, for orders older than the column).
    sa.Column("exchange", sa.String(16), nullable=True),
    sa.Column("side", sa.String(4), nullable=False),
    sa.Column("quantity", _quantity_type(), nullable=True),  # None: notional, not yet filled
    sa.Column("notional", _money_type(), nullable=True),
    sa.Column("order_type", sa.String(8), nullable=False),
    sa.Column("limit_price", _money_type(), nullable=True),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("filled_quantity", _quantity_type(), nullable=False),
    sa.Column("average_fill_price", _money_type(), nullable=True),
    sa.Column("fees", _money_type(), nullable=False),
    sa.Column("reason", sa.Text(), nullable=True),
    sa.Column("polls_seen", sa.Integer(), nullable=False),
    # The fill plan the order was placed with, so a later instance with other settings keeps it.
    sa.Column("fill_mode", sa.String(10), nullable=False),
    sa.Column("fill_delay_polls", sa.Integer(), nullable=False),
    sa.Column("fill_ratio", _money_type(), nullable=False),
    sa.Column("fractional", sa.Boolean(), nullable=False),
    sa.Column("submitted_at", _UTCDateTime(), nullable=False),
    sa.Column("updated_at", _UTCDateTime(), nullable=False),
    sa.UniqueConstraint("account_id", "client_order_id"),
    sa.CheckConstraint("side IN ('buy', 'sell')", name="side"),
    sa.CheckConstraint("order_type IN ('market', 'limit')", name="order_type"),
    sa.CheckConstraint(
        "status IN ('pending', 'open', 'partially_filled', 'filled', 'cancelled', 'rejected', "
        "'expired')",
        name="status",
    ),
    sa.CheckConstraint("filled_quantity >= 0", name="filled_quantity"),
    sa.Index(None, "account_id", "submitted_at"),
)

paper_fills = sa.Table(
    "paper_fills",
    paper_metadata,
    sa.Column("fill_id", sa.String(48), primary_key=True),
    sa.Column(
        "broker_order_id",
        sa.String(40),
        sa.ForeignKey("paper_orders.broker_order_id"),
        nullable=False,
    ),
    sa.Column("sequence", sa.Integer(), nullable=False),
    sa.Column("quantity", _quantity_type(), nullable=False),
    sa.Column("price", _money_type(), nullable=False),
    sa.Column("fees", _money_type(), nullable=False),
    sa.Column("filled_at", _UTCDateTime(), nullable=False),
    sa.UniqueConstraint("broker_order_id", "sequence"),
    sa.CheckConstraint("quantity > 0", name="quantity"),
)

paper_positions = sa.Table(
    "paper_positions",
    paper_metadata,
    sa.Column(
        "account_id",
        sa.String(64),
        sa.ForeignKey("paper_accounts.account_id"),
        primary_key=True,
    ),
    sa.Column("symbol", sa.String(32), primary_key=True),
    # '' when the exchange is not known (positions booked before the column existed, or orders
    # sent without one): an asset is a (symbol, exchange) pair, so INFY on NSE and INFY on NYSE
    # are two positions.
    sa.Column("exchange", sa.String(16), primary_key=True, server_default=""),
    sa.Column("quantity", _quantity_type(), nullable=False),
    sa.Column("average_price", _money_type(), nullable=True),
    sa.Column("updated_at", _UTCDateTime(), nullable=False),
    sa.CheckConstraint("quantity >= 0", name="quantity"),
)

paper_corporate_actions = sa.Table(
    "paper_corporate_actions",
    paper_metadata,
    sa.Column(
        "account_id",
        sa.String(64),
        sa.ForeignKey("paper_accounts.account_id"),
        primary_key=True,
    ),
    # The caller's id of the action (Saras passes its corporate_actions row id): applying the
    # same action twice finds this row and changes nothing.
    sa.Column("action_id", sa.String(64), primary_key=True),
    sa.Column("symbol", sa.String(32), nullable=False),
    sa.Column("exchange", sa.String(16), nullable=False),
    sa.Column("action_type", sa.String(16), nullable=False),
    sa.Column("quantity_before", _quantity_type(), nullable=False),
    sa.Column("quantity_after", _quantity_type(), nullable=False),
    sa.Column("cash", _money_type(), nullable=False),  # dividend or cash in lieu credited
    sa.Column("applied_at", _UTCDateTime(), nullable=False),
)

# pg_advisory_xact_lock key serializing concurrent schema creation (any stable 63-bit number).
_SCHEMA_LOCK_KEY = int.from_bytes(hashlib.sha256(b"saras.paper_schema").digest()[:8], "big") >> 1
# SQLSTATEs of losing a CREATE TABLE race on PostgreSQL: duplicate_table, unique_violation (on
# pg_type), duplicate_object.
_DUPLICATE_DDL_SQLSTATES = frozenset({"42P07", "23505", "42710"})


def _is_duplicate_ddl(error: sa_exc.DBAPIError) -> bool:
    sqlstate = getattr(error.orig, "sqlstate", None) or getattr(error.orig, "pgcode", None)
    if sqlstate in _DUPLICATE_DDL_SQLSTATES:
        return True
    return "already exists" in str(error.orig).lower()


def _upgrade_legacy_schema(conn: Connection) -> None:
    """Give paper tables made before assets were (symbol, exchange) pairs their exchange column.

    ``paper_orders`` gains a nullable ``exchange``; ``paper_positions`` gains ``exchange`` ('' for
    the rows already there) as part of its primary key. Rows are kept; a legacy position is
    claimed by the first order that names its exchange (see ``PaperBroker._position``).
    """
    inspector = sa.inspect(conn)
    order_columns = {c["name"] for c in inspector.get_columns("paper_orders")}
    if "exchange" not in order_columns:
        conn.execute(sa.text("ALTER TABLE paper_orders ADD COLUMN exchange VARCHAR(16)"))
    position_columns = {c["name"] for c in inspector.get_columns("paper_positions")}
    if "exchange" in position_columns:
        return
    if conn.dialect.name == "sqlite":
        # SQLite cannot change a primary key in place: rebuild the table, keeping its rows.
        conn.execute(sa.text("ALTER TABLE paper_positions RENAME TO paper_positions_legacy"))
        paper_positions.create(conn)
        conn.execute(
            sa.text(
                "INSERT INTO paper_positions "
                "(account_id, symbol, exchange, quantity, average_price, updated_at) "
                "SELECT account_id, symbol, '', quantity, average_price, updated_at "
                "FROM paper_positions_legacy"
            )
        )
        conn.execute(sa.text("DROP TABLE paper_positions_legacy"))
        return
    conn.execute(
        sa.text("ALTER TABLE paper_positions ADD COLUMN exchange VARCHAR(16) NOT NULL DEFAULT ''")
    )
    conn.execute(sa.text("ALTER TABLE paper_positions DROP CONSTRAINT pk_paper_positions"))
    conn.execute(
        sa.text(
            "ALTER TABLE paper_positions ADD CONSTRAINT pk_paper_positions "
            "PRIMARY KEY (account_id, symbol, exchange)"
        )
    )


def ensure_paper_schema(engine: Engine) -> None:
    """Create the paper broker's tables if they are missing (idempotent, safe to race)."""
    # Losing a race means another creator made a table we had not seen, so each retry sees
    # strictly more tables: one attempt per table plus one always suffices. PostgreSQL also
    # serializes creators on an advisory lock; SQLite runs DDL outside transactions.
    attempts = len(paper_metadata.tables) + 1
    for attempt in range(1, attempts + 1):
        try:
            with engine.begin() as conn:
                if conn.dialect.name == "postgresql":
                    conn.execute(
                        sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK_KEY}
                    )
                paper_metadata.create_all(conn, checkfirst=True)
                _upgrade_legacy_schema(conn)
            return
        except (sa_exc.ProgrammingError, sa_exc.IntegrityError, sa_exc.OperationalError) as exc:
            # Another process created a table between our check and our CREATE: check again.
            if attempt == attempts or not _is_duplicate_ddl(exc):
                raise


# --------------------------------------------------------------------------------------------
# Arithmetic
# --------------------------------------------------------------------------------------------


def _money(value: Decimal) -> Decimal:
    return value.quantize(_MONEY_Q, rounding=ROUND_HALF_UP)


def _price(value: Decimal) -> Decimal:
    return value.quantize(_PRICE_Q, rounding=ROUND_HALF_UP)


def _floor_quantity(value: Decimal, fractional: bool) -> Decimal:
    """Round a quantity down to what can be traded: 9 places, or whole shares."""
    quantum = _QTY_Q if fractional else Decimal(1)
    return value.quantize(quantum, rounding=ROUND_DOWN).quantize(_QTY_Q)


def _broker_order_id(account_id: str, client_order_id: str) -> str:
    digest = hashlib.sha256(f"{account_id}\n{client_order_id}".encode()).hexdigest()
    return "P-" + digest[:24].upper()


def _fill_id(broker_order_id: str, sequence: int) -> str:
    return f"{broker_order_id}-{sequence}"


# --------------------------------------------------------------------------------------------
# The broker
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PaperCorporateAction:
    """A corporate action for the paper book: exactly one of ``ratio`` and ``cash_per_share``.

    ``ratio`` is the number of shares held after the action per share held before (a 4:1 split
    is 4, a 1:10 reverse split 0.1, a 1:1 bonus issue 2).
    """

    action_id: str
    symbol: str
    exchange: str | None
    action_type: str
    ratio: Decimal | None = None
    cash_per_share: Decimal | None = None
    cash_in_lieu_price: Decimal | None = None

    def __post_init__(self) -> None:
        if (self.ratio is None) == (self.cash_per_share is None):
            raise ValueError(f"action {self.action_id}: give exactly one of ratio, cash_per_share")
        if self.ratio is not None and self.ratio <= 0:
            raise ValueError(f"action {self.action_id}: ratio must be positive, got {self.ratio}")
        if self.cash_per_share is not None and self.cash_per_share < 0:
            raise ValueError(f"action {self.action_id}: a dividend cannot be negative")


@dataclass(frozen=True)
class PaperActionResult:
    """What applying a corporate action did to the paper book."""

    action_id: str
    quantity_before: Decimal
    quantity_after: Decimal
    cash: Decimal
    applied: bool  # False: the action had been applied before, nothing changed


class PaperBroker:
    """A simulated broker account with its own persistent book, filling at stored prices.

    The account id is ``config.connection_id``; ``settings`` (or the defaults) are overridden by
    ``paper_*`` keys of ``config.metadata``. The account is created on first use with
    ``settings.starting_cash`` credited as a deposit; an existing account keeps its own currency
    and cash. Credentials are accepted for symmetry with real brokers and never used.
    """

    broker_type: str = BROKER

    @classmethod
    def capabilities(cls, config: ConnectionConfig) -> BrokerCapabilities:
        """Return the paper broker's capabilities (see ``capabilities.py``)."""
        return paper_capabilities(config)

    @classmethod
    def check_config(cls, config: ConnectionConfig) -> None:
        """Refuse connection settings this broker cannot use (see ``capabilities.py``)."""
        paper_check_config(config)

    def __init__(
        self,
        config: ConnectionConfig,
        credentials: BrokerCredentials,
        *,
        engine: Engine,
        price_lookup: PriceLookup,
        settings: PaperSettings | None = None,
        clock: Callable[[], datetime] | None = None,
        corporate_actions: Callable[[], Sequence[PaperCorporateAction]] | None = None,
    ) -> None:
        account_id = str(config.connection_id)
        if not account_id or len(account_id) > 64:
            raise ValueError("paper account id (connection_id) must be 1 to 64 characters")
        self.account_id = account_id
        self.settings = PaperSettings.from_metadata(config.metadata, base=settings)
        self._credentials = credentials
        self._engine = engine
        self._price_lookup = _by_asset(price_lookup)
        # optional ``many(pairs) -> {pair: price}``: a batch priced in one query
        self._price_many: Callable[..., Mapping[Any, Any]] | None = getattr(
            price_lookup, "many", None
        )
        self._clock = clock or _utc_now
        self._corporate_actions = corporate_actions
        self._caught_up = False
        self._schema_ready = False
        self._account_ready = False

    def __repr__(self) -> str:
        return f"PaperBroker(account_id={self.account_id!r})"

    # ---- the Broker protocol ----------------------------------------------------------------

    def get_account(self) -> AccountInfo:
        """Return cash, buying power (the cash) and currency."""
        self._prepare()
        self._catch_up()
        with self._engine.connect() as conn:
            row = conn.execute(
                sa.select(paper_accounts.c.cash, paper_accounts.c.currency).where(
                    paper_accounts.c.account_id == self.account_id
                )
            ).one()
        return AccountInfo(cash=row.cash, buying_power=row.cash, currency=row.currency)

    def get_positions(self) -> Sequence[BrokerPosition]:
        """Return every non-zero position, valued at the latest stored price when there is one."""
        self._prepare()
        self._catch_up()
        with self._engine.connect() as conn:
            rows = conn.execute(
                sa.select(paper_positions)
                .where(
                    paper_positions.c.account_id == self.account_id,
                    paper_positions.c.quantity != 0,
                )
                .order_by(paper_positions.c.symbol, paper_positions.c.exchange)
            ).all()
        positions = []
        for row in rows:
            exchange = row.exchange or None
            price = self._lookup_price(row.symbol, exchange)
            positions.append(
                BrokerPosition(
                    symbol=row.symbol,
                    quantity=row.quantity,
                    average_price=row.average_price,
                    market_value=None if price is None else _money(row.quantity * price),
                    exchange=exchange,
                )
            )
        return positions

    def place_order(self, request: OrderRequest, *, resume: bool = False) -> BrokerOrder:
        """Place an order exactly once; an id already in the book returns that order.

        ``resume`` changes nothing here: the paper broker always looks the id up first, under
        the account lock, so a retry or a concurrent duplicate gets the order already placed.
        A rejection is persisted, then raised as ``OrderRejectedError``.
        """
        self._prepare()
        existing = self._find(client_order_id=request.client_order_id)
        if existing is not None:
            return self._to_broker_orders([existing])[0]
        if not self._caught_up:  # once per instance: an execution run places many orders
            self._catch_up()
        price = self._lookup_price(request.symbol, request.exchange)
        now = self._now()
        market_open = self._is_market_open(now)
        order = self._new_order(request, now)
        placed = True
        try:
            with self._engine.begin() as conn:
                self._lock_account(conn)
                row = (
                    conn.execute(
                        sa.select(paper_orders).where(
                            paper_orders.c.account_id == self.account_id,
                            paper_orders.c.client_order_id == request.client_order_id,
                        )
                    )
                    .mappings()
                    .first()
                )
                if row is not None:
                    order, placed = _Order.from_row(row), False
                else:
                    self._open(conn, order, request, price, market_open, now)
        except sa_exc.IntegrityError:
            # The UNIQUE (account_id, client_order_id) constraint: someone placed it first.
            existing = self._find(client_order_id=request.client_order_id)
            if existing is None:
                raise
            return self._to_broker_orders([existing])[0]
        result = self._load(order.broker_order_id)
        if placed and result.status is BrokerOrderStatus.REJECTED:
            raise rejected(request.client_order_id, result.reason)
        return result

    def place_orders(self, requests: Sequence[OrderRequest]) -> list[BrokerOrder | Exception]:
        """Place many orders in one transaction; per request, its order or its rejection.

        The same rules as ``place_order`` (an id already in the book returns that order, never a
        second one; a rejection is persisted and returned as ``OrderRejectedError``), with the
        account locked once for the whole batch: an executor's batch costs one commit.
        """
        self._prepare()
        if not self._caught_up:
            self._catch_up()
        now = self._now()
        market_open = self._is_market_open(now)
        pairs = {(r.symbol, r.exchange) for r in requests}
        if self._price_many is None:
            prices = {pair: self._lookup_price(*pair) for pair in pairs}
        else:
            found = self._price_many(pairs)
            prices = {pair: self._usable_price(found.get(pair)) for pair in pairs}
        with self._engine.begin() as conn:
            self._lock_account(conn)
            known = {
                row.client_order_id: row.broker_order_id
                for row in conn.execute(
                    sa.select(paper_orders.c.client_order_id, paper_orders.c.broker_order_id).where(
                        paper_orders.c.account_id == self.account_id,
                        paper_orders.c.client_order_id.in_([r.client_order_id for r in requests]),
                    )
                )
            }
            fresh = list(
                {r.client_order_id: r for r in requests if r.client_order_id not in known}.values()
            )
            batch = [(r, prices[(r.symbol, r.exchange)]) for r in fresh]
            if market_open and self._fill_at_once(conn, batch, now):
                fresh = []
            for request in fresh:
                order = self._new_order(request, now)
                price = prices[(request.symbol, request.exchange)]
                self._open(conn, order, request, price, market_open, now)
            for request in requests:
                known[request.client_order_id] = _broker_order_id(
                    self.account_id, request.client_order_id
                )
            placed = {r.client_order_id for r, _ in batch}
            rows = conn.execute(
                sa.select(paper_orders).where(paper_orders.c.broker_order_id.in_(known.values()))
            ).mappings()
            stored = {o.client_order_id: o for o in map(_Order.from_row, rows)}
        reports = {r.client_order_id: r for r in self._to_broker_orders(list(stored.values()))}
        results: list[BrokerOrder | Exception] = []
        for request in requests:
            report = reports[request.client_order_id]
            if request.client_order_id in placed and report.status is BrokerOrderStatus.REJECTED:
                results.append(
                    OrderRejectedError(
                        f"paper order {request.client_order_id} rejected: {report.reason}",
                        reason=report.reason,
                        broker=BROKER,
                    )
                )
            else:
                results.append(report)
        return results

    def _fill_at_once(
        self, conn: Connection, batch: Sequence[tuple[OrderRequest, Decimal | None]], now: datetime
    ) -> bool:
        """Place and fill a batch of new market orders set-based; False when it does not apply.

        The common case of an executor's batch (immediate fills, market orders by quantity, one
        order per asset, no position booked without an exchange), with the same checks, prices,
        fees and book changes as placing them one by one, in order, under the caller's lock.
        """
        venues = {(r.symbol, r.exchange or "") for r, _ in batch}
        if (
            not batch
            or self.settings.fill_mode is not PaperFillMode.IMMEDIATE
            or len(venues) != len(batch)
            or any(r.order_type is not OrderType.MARKET or r.quantity is None for r, _ in batch)
        ):
            return False
        mine = paper_positions.c.account_id == self.account_id
        held = {
            (row.symbol, row.exchange): (row.quantity, row.average_price)
            for row in conn.execute(
                sa.select(paper_positions).where(
                    mine, paper_positions.c.symbol.in_({s for s, _ in venues})
                )
            )
        }
        if any(e and (s, "") in held for s, e in venues):
            return False  # a legacy position to claim: the one-by-one path does that
        cash = start = self._cash(conn)
        orders, fills, moved = [], [], {}
        for request, price in batch:
            order = self._new_order(request, now)
            orders.append(order)
            key = (request.symbol, request.exchange or "")
            quantity, average = held.get(key, (_ZERO, None))
            q = order.quantity
            assert q is not None
            executed = None if price is None else self._fill_price(order, price)
            reason = self._batch_problem(order, q, executed, cash, quantity)
            if reason is not None or executed is None:
                order.status, order.reason = BrokerOrderStatus.REJECTED, reason
                continue
            gross = _money(q * executed)
            fee = self._order_fee(gross)
            if order.side is OrderSide.BUY:
                cash -= gross + fee
                cost = quantity * (average or executed) + q * executed
                moved[key] = (quantity + q, _price(cost / (quantity + q)))
            else:
                cash += gross - fee
                moved[key] = (quantity - q, average)
            order.filled_quantity, order.average_fill_price = q, _price(executed)
            order.fees, order.status = fee, BrokerOrderStatus.FILLED
            fills.append(
                {
                    "fill_id": _fill_id(order.broker_order_id, 1),
                    "broker_order_id": order.broker_order_id,
                    "sequence": 1,
                    "quantity": q,
                    "price": executed,
                    "fees": fee,
                    "filled_at": now,
                }
            )
        self._write_batch(conn, orders, fills, moved, set(held), now)
        if cash != start:
            self._set_cash(conn, cash, now)
        return True

    def _batch_problem(
        self,
        order: _Order,
        quantity: Decimal,
        executed: Decimal | None,
        cash: Decimal,
        held: Decimal,
    ) -> str | None:
        """Return why a market order of a batch is rejected (as ``place_order`` would), or None."""
        problem = self._quantity_problem(order, quantity)
        if problem is not None:
            return problem
        if executed is None:
            return f"unknown symbol {order.symbol}: no price available"
        gross = _money(quantity * executed)
        need = gross + self._order_fee(gross)
        currency = self.settings.currency
        if order.side is OrderSide.BUY and need > cash:
            return (
                f"insufficient cash: buying {quantity} {order.symbol} needs {need} {currency}"
                f" including fees, cash is {cash} {currency}"
            )
        if order.side is OrderSide.SELL and quantity > held:
            return f"insufficient position: selling {quantity} {order.symbol}, holding {held}"
        return None

    def _write_batch(
        self,
        conn: Connection,
        orders: Sequence[_Order],
        fills: Sequence[dict[str, Any]],
        moved: Mapping[tuple[str, str], tuple[Decimal, Decimal | None]],
        existing: set[tuple[str, str]],
        now: datetime,
    ) -> None:
        """Write a batch's orders, fills and positions (multi-row statements)."""
        conn.execute(sa.insert(paper_orders), [o.values() for o in orders])
        if fills:
            conn.execute(sa.insert(paper_fills), list(fills))
        new = [k for k in moved if k not in existing and moved[k][0] > 0]
        if new:
            conn.execute(
                sa.insert(paper_positions),
                [
                    {
                        "account_id": self.account_id,
                        "symbol": s,
                        "exchange": e,
                        "quantity": moved[(s, e)][0],
                        "average_price": moved[(s, e)][1],
                        "updated_at": now,
                    }
                    for s, e in new
                ],
            )
        for (symbol, venue), (quantity, average) in moved.items():
            if (symbol, venue) in existing:
                self._write_position(
                    conn, symbol, venue or None, quantity, average, now, exists=True
                )

    def get_order_by_client_id(self, client_order_id: str) -> BrokerOrder | None:
        """Look an order up by our id (counts as a poll); None when the book has no such order."""
        self._prepare()
        order = self._find(client_order_id=client_order_id)
        if order is None:
            return None
        return self._poll([order])[0]

    def get_order(self, broker_order_id: str) -> BrokerOrder:
        """Look an order up by the paper broker's id (counts as a poll)."""
        self._prepare()
        order = self._find(broker_order_id=broker_order_id)
        if order is None:
            raise not_found(broker_order_id)
        return self._poll([order])[0]

    def list_orders(self, since: datetime) -> Sequence[BrokerOrder]:
        """List the account's orders submitted since ``since`` (each open one counts a poll)."""
        if since.tzinfo is None:
            raise ValueError("list_orders needs an aware datetime")
        self._prepare()
        with self._engine.connect() as conn:
            rows = (
                conn.execute(
                    sa.select(paper_orders)
                    .where(
                        paper_orders.c.account_id == self.account_id,
                        paper_orders.c.submitted_at >= since.astimezone(UTC),
                    )
                    .order_by(paper_orders.c.submitted_at, paper_orders.c.broker_order_id)
                )
                .mappings()
                .all()
            )
        return self._poll([_Order.from_row(row) for row in rows])

    def cancel_order(self, broker_order_id: str) -> None:
        """Cancel a working order; cancelling a cancelled order again does nothing.

        Cash moves only on fills, so cancelling releases nothing; fills already made stay.
        """
        self._prepare()
        now = self._now()
        with self._engine.begin() as conn:
            self._lock_account(conn)
            order = self._select_order(conn, broker_order_id=broker_order_id)
            if order is None:
                raise not_found(broker_order_id)
            if order.status is BrokerOrderStatus.CANCELLED:
                return
            if order.terminal:
                reason = f"order is {order.status.value} and cannot be cancelled"
                raise refused(broker_order_id, reason)
            order.status, order.reason, order.updated_at = (
                BrokerOrderStatus.CANCELLED,
                "cancelled on request",
                now,
            )
            self._save(conn, order)

    def get_clock(self) -> MarketClock:
        """Return whether the paper market is open and when it next opens and closes."""
        now = self._now()
        match self.settings.market_open:
            case PaperMarketHours.ALWAYS:
                return MarketClock(is_open=True, next_open=None, next_close=None)
            case PaperMarketHours.NEVER:
                return MarketClock(is_open=False, next_open=None, next_close=None)
            case PaperMarketHours.CALENDAR:
                return market_clock(self.settings.calendar, now)

    # ---- helpers for tests and the demo -----------------------------------------------------

    def deposit(self, amount: Decimal) -> AccountInfo:
        """Credit cash to the account (a positive amount)."""
        amount = Decimal(str(amount))
        if not amount.is_finite() or amount <= 0:
            raise ValueError(f"deposit amount must be positive, got {amount}")
        self._prepare()
        now = self._now()
        with self._engine.begin() as conn:
            self._lock_account(conn)
            self._set_cash(conn, self._cash(conn) + _money(amount), now)
        return self.get_account()

    def set_position(
        self,
        symbol: str,
        quantity: Decimal,
        average_price: Decimal | None = None,
        *,
        exchange: str | None = None,
    ) -> BrokerPosition | None:
        """Set a position as if traded outside Saras (for reconciliation drift); 0 removes it.

        Cash is untouched. Without ``average_price`` an existing position keeps its average.
        ``exchange`` names the asset's venue (None: the position booked without one).
        """
        quantity = Decimal(str(quantity))
        if not quantity.is_finite() or quantity < 0:
            raise ValueError(f"paper position quantity must not be negative, got {quantity}")
        if quantity != quantity.quantize(_QTY_Q, rounding=ROUND_DOWN):
            raise ValueError("paper position quantity has more than 9 decimal places")
        if average_price is not None:
            average_price = _price(Decimal(str(average_price)))
        self._prepare()
        now = self._now()
        with self._engine.begin() as conn:
            self._lock_account(conn)
            held, held_average = self._position(conn, symbol, exchange)
            if average_price is None:
                average_price = held_average
            self._write_position(
                conn, symbol, exchange, quantity, average_price, now, exists=held is not None
            )
        return next(
            (p for p in self.get_positions() if (p.symbol, p.exchange) == (symbol, exchange)),
            None,
        )

    def apply_corporate_action(self, action: PaperCorporateAction) -> PaperActionResult:
        """Apply a split, reverse split, bonus issue or dividend to the book, once per action id.

        A ratio action multiplies the held quantity by ``ratio`` and divides the average price
        by it, cash unchanged; a fraction the account cannot hold (whole shares when fractional
        trading is off, beyond 9 places otherwise) is paid as cash in lieu at
        ``cash_in_lieu_price`` (the post-action price; the latest stored price when not given).
        A dividend credits ``cash_per_share`` x the held quantity. Applying an action id already
        applied returns the first result and changes nothing.
        """
        self._prepare()
        now = self._now()
        venue = action.exchange or ""
        with self._engine.begin() as conn:
            self._lock_account(conn)
            done = conn.execute(
                sa.select(paper_corporate_actions).where(
                    paper_corporate_actions.c.account_id == self.account_id,
                    paper_corporate_actions.c.action_id == action.action_id,
                )
            ).first()
            if done is not None:
                return PaperActionResult(
                    action.action_id, done.quantity_before, done.quantity_after, done.cash, False
                )
            held, average = self._position(conn, action.symbol, action.exchange)
            before = held or _ZERO
            after, cash = before, _ZERO
            if action.cash_per_share is not None:
                cash = _money(before * action.cash_per_share)
            elif before > 0:
                assert action.ratio is not None
                exact = before * action.ratio
                after = _floor_quantity(exact, self.settings.fractional)
                remainder = exact - after
                if remainder > 0:
                    price = action.cash_in_lieu_price or self._lookup_price(
                        action.symbol, action.exchange
                    )
                    if price is None:
                        raise ValueError(
                            f"{action.symbol}: cash in lieu of {remainder} shares needs a price"
                        )
                    cash = _money(remainder * price)
                new_average = None if average is None else _price(average / action.ratio)
                self._write_position(
                    conn, action.symbol, action.exchange, after, new_average, now, exists=True
                )
            if cash:
                self._set_cash(conn, self._cash(conn) + cash, now)
            conn.execute(
                sa.insert(paper_corporate_actions).values(
                    account_id=self.account_id,
                    action_id=action.action_id,
                    symbol=action.symbol,
                    exchange=venue,
                    action_type=action.action_type,
                    quantity_before=before,
                    quantity_after=after,
                    cash=cash,
                    applied_at=now,
                )
            )
        return PaperActionResult(action.action_id, before, after, cash, True)

    # ---- internals --------------------------------------------------------------------------

    def _catch_up(self) -> None:
        """Apply the market's corporate actions this book has not seen yet (each once)."""
        if self._corporate_actions is None:
            return
        self._caught_up = True
        actions = self._corporate_actions()
        if not actions:
            return
        with self._engine.connect() as conn:
            seen = set(
                conn.execute(
                    sa.select(paper_corporate_actions.c.action_id).where(
                        paper_corporate_actions.c.account_id == self.account_id
                    )
                ).scalars()
            )
        for action in actions:
            if action.action_id not in seen:
                self.apply_corporate_action(action)

    def _prepare(self) -> None:
        """Create the schema and the account (with its starting-cash deposit) on first use."""
        if not self._schema_ready:
            ensure_paper_schema(self._engine)
            self._schema_ready = True
        if self._account_ready:
            return
        now = self._now()
        values = {
            "account_id": self.account_id,
            "currency": self.settings.currency,
            "cash": _money(self.settings.starting_cash),
            "created_at": now,
            "updated_at": now,
        }
        with self._engine.begin() as conn:
            _insert_ignoring_conflict(conn, paper_accounts, values)
        self._account_ready = True

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None:
            raise ValueError("the paper broker's clock returned a naive datetime")
        return now.astimezone(UTC)

    def _lookup_price(self, symbol: str, exchange: str | None) -> Decimal | None:
        """Return the latest stored price of an asset, or None when unknown or unusable."""
        return self._usable_price(self._price_lookup(symbol, exchange))

    def _usable_price(self, value: Any) -> Decimal | None:
        """Return a looked-up price at the stored scale, None when missing or unusable."""
        if value is None:
            return None
        price = value if isinstance(value, Decimal) else Decimal(str(value))
        if not price.is_finite() or price <= 0:
            return None
        return _price(price)

    def _is_market_open(self, now: datetime) -> bool:
        match self.settings.market_open:
            case PaperMarketHours.ALWAYS:
                return True
            case PaperMarketHours.NEVER:
                return False
            case PaperMarketHours.CALENDAR:
                return market_clock(self.settings.calendar, now).is_open

    def _lock_account(self, conn: Connection) -> None:
        """Lock the account row: every writer goes through it, so book changes serialize."""
        where = paper_accounts.c.account_id == self.account_id
        if conn.dialect.name == "sqlite":
            # A write takes SQLite's RESERVED lock at once (SELECT ... FOR UPDATE does not exist).
            conn.execute(sa.update(paper_accounts).where(where).values(cash=paper_accounts.c.cash))
        else:
            conn.execute(sa.select(paper_accounts.c.account_id).where(where).with_for_update())

    def _cash(self, conn: Connection) -> Decimal:
        cash: Decimal = conn.execute(
            sa.select(paper_accounts.c.cash).where(paper_accounts.c.account_id == self.account_id)
        ).scalar_one()
        return cash

    def _set_cash(self, conn: Connection, cash: Decimal, now: datetime) -> None:
        conn.execute(
            sa.update(paper_accounts)
            .where(paper_accounts.c.account_id == self.account_id)
            .values(cash=_money(cash), updated_at=now)
        )

    def _position(
        self, conn: Connection, symbol: str, exchange: str | None
    ) -> tuple[Decimal | None, Decimal | None]:
        """Return the held quantity and average price of (symbol, exchange); None when none.

        A position booked before exchanges were recorded ('') is claimed by the first caller
        that names an exchange for its symbol (the caller holds the account lock).
        """
        venue = exchange or ""
        columns = (paper_positions.c.quantity, paper_positions.c.average_price)
        mine = paper_positions.c.account_id == self.account_id
        row = conn.execute(
            sa.select(*columns).where(
                mine, paper_positions.c.symbol == symbol, paper_positions.c.exchange == venue
            )
        ).first()
        if row is None and venue:
            legacy = (paper_positions.c.symbol == symbol) & (paper_positions.c.exchange == "")
            row = conn.execute(sa.select(*columns).where(mine, legacy)).first()
            if row is not None:
                conn.execute(sa.update(paper_positions).where(mine, legacy).values(exchange=venue))
        if row is None:
            return None, None
        return row.quantity, row.average_price

    def _write_position(
        self,
        conn: Connection,
        symbol: str,
        exchange: str | None,
        quantity: Decimal,
        average_price: Decimal | None,
        now: datetime,
        *,
        exists: bool,
    ) -> None:
        venue = exchange or ""
        where = (
            (paper_positions.c.account_id == self.account_id)
            & (paper_positions.c.symbol == symbol)
            & (paper_positions.c.exchange == venue)
        )
        if quantity == 0:
            if exists:
                conn.execute(sa.delete(paper_positions).where(where))
            return
        values = {"quantity": quantity, "average_price": average_price, "updated_at": now}
        if exists:
            conn.execute(sa.update(paper_positions).where(where).values(**values))
        else:
            conn.execute(
                sa.insert(paper_positions).values(
                    account_id=self.account_id, symbol=symbol, exchange=venue, **values
                )
            )

    def _select_order(
        self,
        conn: Connection,
        *,
        broker_order_id: str | None = None,
        client_order_id: str | None = None,
    ) -> _Order | None:
        query = sa.select(paper_orders).where(paper_orders.c.account_id == self.account_id)
        if broker_order_id is not None:
            query = query.where(paper_orders.c.broker_order_id == broker_order_id)
        if client_order_id is not None:
            query = query.where(paper_orders.c.client_order_id == client_order_id)
        row = conn.execute(query).mappings().first()
        return None if row is None else _Order.from_row(row)

    def _find(
        self, *, broker_order_id: str | None = None, client_order_id: str | None = None
    ) -> _Order | None:
        with self._engine.connect() as conn:
            return self._select_order(
                conn, broker_order_id=broker_order_id, client_order_id=client_order_id
            )

    def _save(self, conn: Connection, order: _Order) -> None:
        values = order.values()
        for key in ("broker_order_id", "account_id", "client_order_id"):
            values.pop(key)
        conn.execute(
            sa.update(paper_orders)
            .where(paper_orders.c.broker_order_id == order.broker_order_id)
            .values(**values)
        )

    def _fills(self, conn: Connection, broker_order_ids: Iterable[str]) -> dict[str, list[Fill]]:
        ids = list(broker_order_ids)
        result: dict[str, list[Fill]] = {order_id: [] for order_id in ids}
        if not ids:
            return result
        rows = conn.execute(
            sa.select(paper_fills)
            .where(paper_fills.c.broker_order_id.in_(ids))
            .order_by(paper_fills.c.broker_order_id, paper_fills.c.sequence)
        ).all()
        for row in rows:
            result[row.broker_order_id].append(
                Fill(
                    fill_id=row.fill_id,
                    quantity=row.quantity,
                    price=row.price,
                    fees=row.fees,
                    filled_at=row.filled_at,
                )
            )
        return result

    def _load(self, broker_order_id: str) -> BrokerOrder:
        order = self._find(broker_order_id=broker_order_id)
        if order is None:  # pragma: no cover - the order was just written
            raise not_found(broker_order_id)
        return self._to_broker_orders([order])[0]

    def _to_broker_orders(self, orders: Sequence[_Order]) -> list[BrokerOrder]:
        with self._engine.connect() as conn:
            fills = self._fills(conn, (o.broker_order_id for o in orders))
        return [
            BrokerOrder(
                broker_order_id=o.broker_order_id,
                client_order_id=o.client_order_id,
                symbol=o.symbol,
                side=o.side,
                quantity=o.quantity,
                filled_quantity=o.filled_quantity,
                average_fill_price=o.average_fill_price,
                status=o.status,
                submitted_at=o.submitted_at,
                updated_at=o.updated_at,
                reason=o.reason,
                fees=o.fees,
                fills=tuple(fills[o.broker_order_id]),
            )
            for o in orders
        ]

    def _poll(self, orders: Sequence[_Order]) -> list[BrokerOrder]:
        """Count a lookup of each working order, fill those that are due, return them all."""
        working = [o for o in orders if not o.terminal]
        if working:
            assets = sorted({(o.symbol, o.exchange or "") for o in working})
            prices = {(s, e): self._lookup_price(s, e or None) for s, e in assets}
            now = self._now()
            market_open = self._is_market_open(now)
            with self._engine.begin() as conn:
                self._lock_account(conn)
                for stale in working:
                    order = self._select_order(conn, broker_order_id=stale.broker_order_id)
                    if order is None or order.terminal:
                        continue
                    order.polls_seen += 1
                    price = prices[(order.symbol, order.exchange or "")]
                    self._advance(conn, order, price, market_open, now)
                    self._save(conn, order)
            with self._engine.connect() as conn:
                fresh = {
                    o.broker_order_id: o
                    for o in (
                        self._select_order(conn, broker_order_id=w.broker_order_id) for w in working
                    )
                    if o is not None
                }
            orders = [fresh.get(o.broker_order_id, o) for o in orders]
        return self._to_broker_orders(orders)

    def _new_order(self, request: OrderRequest, now: datetime) -> _Order:
        settings = self.settings
        return _Order(
            broker_order_id=_broker_order_id(self.account_id, request.client_order_id),
            account_id=self.account_id,
            client_order_id=request.client_order_id,
            symbol=request.symbol,
            exchange=request.exchange,
            side=request.side,
            quantity=request.quantity,
            notional=request.notional,
            order_type=request.order_type,
            limit_price=request.limit_price,
            status=BrokerOrderStatus.OPEN,
            filled_quantity=_ZERO,
            average_fill_price=None,
            fees=_ZERO,
            reason=None,
            polls_seen=0,
            fill_mode=settings.fill_mode,
            fill_delay_polls=settings.fill_delay_polls,
            fill_ratio=settings.partial_fill_ratio,
            fractional=settings.fractional,
            submitted_at=now,
            updated_at=now,
        )

    def _open(
        self,
        conn: Connection,
        order: _Order,
        request: OrderRequest,
        price: Decimal | None,
        market_open: bool,
        now: datetime,
    ) -> None:
        """Book a new order: rejected with its reason, or accepted and filled as it may be."""
        reason = self._check_new_order(conn, order, request, price, market_open)
        if reason is not None:
            order.status, order.reason = BrokerOrderStatus.REJECTED, reason
        conn.execute(sa.insert(paper_orders).values(**order.values()))
        if reason is None:
            self._advance(conn, order, price, market_open, now)
            self._save(conn, order)

    def _check_new_order(
        self,
        conn: Connection,
        order: _Order,
        request: OrderRequest,
        price: Decimal | None,
        market_open: bool,
    ) -> str | None:
        """Return why a real broker would reject this new order, or None."""
        quantity, notional = request.quantity, request.notional
        if quantity is not None:
            problem = self._quantity_problem(order, quantity)
            if problem is not None:
                return problem
        elif notional is None or notional <= 0:
            return f"notional must be positive, got {notional}"
        if request.order_type is OrderType.LIMIT and (
            request.limit_price is None or request.limit_price <= 0
        ):
            return f"limit price must be positive, got {request.limit_price}"
        if not market_open:
            return "market closed"
        if price is None:
            return f"unknown symbol {request.symbol}: no price available"
        # A resting limit order is judged at its limit, the worst price it can fill at.
        estimate = self._fill_price(order, price) or order.limit_price
        assert estimate is not None
        if quantity is None:
            assert notional is not None
            quantity = _floor_quantity(notional / estimate, order.fractional)
            if quantity <= 0:
                return f"notional {notional} buys no {request.symbol} at {estimate}"
        return self._check_funds(conn, order, quantity, estimate, already_charged=_ZERO)

    def _quantity_problem(self, order: _Order, quantity: Decimal) -> str | None:
        """Return why a real broker would reject this quantity, or None."""
        if quantity <= 0:
            return f"quantity must be positive, got {quantity}"
        if quantity != quantity.quantize(_QTY_Q, rounding=ROUND_DOWN):
            return f"quantity {quantity} has more than {QUANTITY_SCALE} decimal places"
        if not order.fractional and quantity != quantity.to_integral_value():
            return f"fractional quantity {quantity} not allowed: whole shares only"
        return None

    def _check_funds(
        self,
        conn: Connection,
        order: _Order,
        quantity: Decimal,
        price: Decimal,
        *,
        already_charged: Decimal,
        gross_so_far: Decimal = _ZERO,
    ) -> str | None:
        """Return why the account cannot afford (or deliver) ``quantity`` at ``price``, or None."""
        if order.side is OrderSide.BUY:
            gross = _money(quantity * price)
            need = gross + self._order_fee(gross_so_far + gross) - already_charged
            cash = self._cash(conn)
            if need > cash:
                currency = self.settings.currency
                return (
                    f"insufficient cash: buying {quantity} {order.symbol} needs {need} {currency}"
                    f" including fees, cash is {cash} {currency}"
                )
            return None
        held, _ = self._position(conn, order.symbol, order.exchange)
        held = held or _ZERO
        if quantity > held:
            return f"insufficient position: selling {quantity} {order.symbol}, holding {held}"
        return None

    def _order_fee(self, gross: Decimal) -> Decimal:
        """Return an order's total fee on its cumulative gross (bps, at least the minimum)."""
        return order_fee(self.settings, gross)

    def _fill_price(self, order: _Order, price: Decimal) -> Decimal | None:
        """Return the price the order fills at now, or None when a limit is not reached."""
        slip = self.settings.slippage_bps / _BPS
        if order.side is OrderSide.BUY:
            executed = _price(price * (1 + slip))
            if order.order_type is OrderType.LIMIT:
                assert order.limit_price is not None
                if price > order.limit_price:
                    return None
                executed = min(executed, order.limit_price)
        else:
            executed = _price(price * (1 - slip))
            if order.order_type is OrderType.LIMIT:
                assert order.limit_price is not None
                if price < order.limit_price:
                    return None
                executed = max(executed, order.limit_price)
        return executed

    def _fill_due(self, order: _Order) -> bool:
        match order.fill_mode:
            case PaperFillMode.IMMEDIATE:
                return True
            case PaperFillMode.DELAYED:
                return order.polls_seen >= order.fill_delay_polls
            case PaperFillMode.PARTIAL:
                if order.filled_quantity == 0:
                    return True
                return order.fill_delay_polls > 0 and order.polls_seen >= order.fill_delay_polls

    def _end(self, order: _Order, reason: str, now: datetime) -> None:
        """End a working order that can no longer fill (rejected, or cancelled after fills)."""
        filled = order.filled_quantity > 0
        order.status = BrokerOrderStatus.CANCELLED if filled else BrokerOrderStatus.REJECTED
        order.reason = reason
        order.updated_at = now

    def _advance(
        self,
        conn: Connection,
        order: _Order,
        price: Decimal | None,
        market_open: bool,
        now: datetime,
    ) -> None:
        """Fill the order now if it is due, the market open, and the price good enough."""
        if order.terminal or not self._fill_due(order) or not market_open or price is None:
            return
        executed = self._fill_price(order, price)
        if executed is None:
            return
        if order.quantity is None:
            assert order.notional is not None
            total = _floor_quantity(order.notional / executed, order.fractional)
            if total <= 0:
                self._end(order, f"notional {order.notional} buys no {order.symbol}", now)
                return
            order.quantity = total
        remaining = order.quantity - order.filled_quantity
        chunk = remaining
        if order.fill_mode is PaperFillMode.PARTIAL and order.filled_quantity == 0:
            first = _floor_quantity(order.quantity * order.fill_ratio, order.fractional)
            if 0 < first < remaining:
                chunk = first
        previous = self._fills(conn, [order.broker_order_id])[order.broker_order_id]
        gross_so_far = sum((_money(f.quantity * f.price) for f in previous), _ZERO)
        reason = self._check_funds(
            conn, order, chunk, executed, already_charged=order.fees, gross_so_far=gross_so_far
        )
        if reason is not None:
            self._end(order, reason, now)
            return

        gross = _money(chunk * executed)
        fee = self._order_fee(gross_so_far + gross) - order.fees
        sequence = len(previous) + 1
        conn.execute(
            sa.insert(paper_fills).values(
                fill_id=_fill_id(order.broker_order_id, sequence),
                broker_order_id=order.broker_order_id,
                sequence=sequence,
                quantity=chunk,
                price=executed,
                fees=fee,
                filled_at=now,
            )
        )
        cash = self._cash(conn)
        cash = cash - gross - fee if order.side is OrderSide.BUY else cash + gross - fee
        self._set_cash(conn, cash, now)

        self._book_position(conn, order, chunk, executed, now)

        filled_value = sum((f.quantity * f.price for f in previous), _ZERO) + chunk * executed
        order.filled_quantity += chunk
        order.average_fill_price = _price(filled_value / order.filled_quantity)
        order.fees += fee
        order.status = (
            BrokerOrderStatus.FILLED
            if order.filled_quantity == order.quantity
            else BrokerOrderStatus.PARTIALLY_FILLED
        )
        order.updated_at = now

    def _book_position(
        self, conn: Connection, order: _Order, chunk: Decimal, executed: Decimal, now: datetime
    ) -> None:
        """Move the account's position by one fill (average cost on buys)."""
        held, held_average = self._position(conn, order.symbol, order.exchange)
        held_quantity = held or _ZERO
        if order.side is OrderSide.BUY:
            new_quantity = held_quantity + chunk
            cost = held_quantity * (held_average or executed) + chunk * executed
            new_average: Decimal | None = _price(cost / new_quantity)
        else:
            new_quantity = held_quantity - chunk
            new_average = held_average
        self._write_position(
            conn,
            order.symbol,
            order.exchange,
            new_quantity,
            new_average,
            now,
            exists=held is not None,
        )


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _insert_ignoring_conflict(conn: Connection, table: sa.Table, values: dict[str, Any]) -> None:
    """Insert a row unless its primary key exists (first writer wins)."""
    match conn.dialect.name:
        case "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            conn.execute(pg_insert(table).values(**values).on_conflict_do_nothing())
        case "sqlite":
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            conn.execute(sqlite_insert(table).values(**values).on_conflict_do_nothing())
        case _:
            try:
                with conn.begin_nested():
                    conn.execute(sa.insert(table).values(**values))
            except sa_exc.IntegrityError:
                pass
