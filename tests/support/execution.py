"""Execution scenarios: a real platform in a committed database, fake brokers, invariants.

A scenario builds a platform through the admin and investment services (user, assets,
prices, portfolio, encrypted broker connection pointing at a fake broker, smallcase, investment),
plans an approved run with the real planner, executes it with ``execute_run`` under injected
faults, and ends with :func:`assert_invariants`:

1. exactly one broker order per planned order (by Alpaca client order id, by Kite tag);
2. our ledger equals the broker's book: per symbol the broker's position, our holding, the sum
   of our orders' filled quantities and the sum of our trading transactions agree, and the cash
   moved consistently;
3. holdings equal the sum of fills;
4. once a run is terminal, no order is ``unknown`` or ``submitting``, every order is terminal,
   and agrees with the broker's status of the same order.

Time is virtual: one :class:`Clock` drives ``execute_run`` (sleep and deadline), the adapters'
pauses and rate limiters, and the fakes' rate-limit windows, so nothing really sleeps. The
fixtures that build these (``clock``, ``alpaca_fake``, ``kite_fake``, ``alpaca``, ``kite``) are in
tests/reliability/conftest.py; tests/flows uses the same builders.
"""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session

from models import (
    Asset,
    Portfolio,
    PortfolioHolding,
    PriceHistory,
    SmallcaseConstituent,
    SmallcaseExecutionOrder,
    SmallcaseExecutionRun,
    TradingTransaction,
    UserBrokerConnection,
    UserSmallcaseInvestment,
)
from saras.brokers.alpaca import AlpacaRateLimiter
from saras.brokers.base import Broker
from saras.brokers.ids import client_order_id, kite_tag
from saras.domain.enums import (
    TERMINAL_ORDER_STATUSES,
    OrderSide,
    OrderStatus,
    RunStatus,
    RunType,
)
from saras.marketdata import calendars
from saras.repositories import execution as repo
from saras.secrets import get_secret_box
from saras.services import admin
from saras.services.brokers import open_broker
from saras.services.execution import ExecutionSettings, RunOutcome, execute_run
from saras.services.investments import open_investment
from saras.services.rebalance import plan_and_write
from saras.settings import get_settings
from tests.fakes.fake_alpaca import FAKE_KEY_ID, FAKE_SECRET
from tests.fakes.fake_alpaca import FakeClock as _FakeClock

# the adapters get a 0.5 s request timeout: an order in doubt may be concluded absent after 1 s
FAST = ExecutionSettings(
    poll_interval=0.01, deadline_seconds=5, retry_backoff=0.01, lookup_horizon=1.0
)
MONEY_Q = Decimal("0.0001")
QTY_Q = Decimal("0.000000001")
IST = ZoneInfo("Asia/Kolkata")

US_PRICES = {
    "AAPL": Decimal("187.25"),
    "GOOGL": Decimal("165.2"),
    "MSFT": Decimal("410.5"),
    "NVDA": Decimal("121.75"),
}
US_WEIGHTS = {"AAPL": "30", "GOOGL": "15", "MSFT": "30", "NVDA": "25"}
IN_PRICES = {
    "HDFCBANK": Decimal("1650.25"),
    "INFY": Decimal("1502.5"),
    "ITC": Decimal("432.1"),
    "TCS": Decimal("3890"),
}
IN_WEIGHTS = {"HDFCBANK": "25", "INFY": "30", "ITC": "15", "TCS": "30"}

RUN_TERMINAL = {RunStatus.COMPLETED, RunStatus.PARTIALLY_COMPLETED, RunStatus.FAILED}
IN_DOUBT = {OrderStatus.SUBMITTING, OrderStatus.UNKNOWN}

# How each fake names an order's status, mapped to ours, for terminal broker statuses.
ALPACA_FINAL = {
    "filled": OrderStatus.FILLED,
    "canceled": OrderStatus.CANCELLED,
    "rejected": OrderStatus.REJECTED,
    "expired": OrderStatus.EXPIRED,
}
KITE_FINAL = {
    "COMPLETE": OrderStatus.FILLED,
    "CANCELLED": OrderStatus.CANCELLED,
    "REJECTED": OrderStatus.REJECTED,
}


# --- virtual time and checkpoints ---------------------------------------------------------------


class Clock(_FakeClock):
    """A virtual epoch clock: ``sleep`` advances it, then runs the registered hooks."""

    def __init__(self) -> None:
        super().__init__(start=time.time())
        self.hooks: list[Callable[[Clock], None]] = []

    def sleep(self, seconds: float) -> None:
        """Advance the clock by ``seconds`` (no real waiting), then run the hooks."""
        super().sleep(seconds)
        for hook in list(self.hooks):
            hook(self)


class Crash(BaseException):
    """Raised from a checkpoint to stop an in-process execution dead (like a killed process)."""


class Checkpoints:
    """A checkpoint callable for ``execute_run``: records names, acts at the n-th occurrence."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self._actions: dict[tuple[str, int], Callable[[], None]] = {}

    def at(self, name: str, occurrence: int, action: Callable[[], None]) -> Checkpoints:
        """Run ``action`` when checkpoint ``name`` is reached for the ``occurrence``-th time."""
        self._actions[(name, occurrence)] = action
        return self

    def crash_at(self, name: str, occurrence: int = 1) -> Checkpoints:
        """Raise :class:`Crash` at the ``occurrence``-th ``name`` checkpoint."""

        def crash() -> None:
            raise Crash(f"{name} #{occurrence}")

        return self.at(name, occurrence, crash)

    def __call__(self, name: str) -> None:
        self.seen.append(name)
        action = self._actions.pop((name, self.seen.count(name)), None)
        if action is not None:
            action()


def kite_market_time() -> datetime:
    """Return 10:30 IST on the last completed NSE session: the market is open then."""
    day = calendars.last_completed_session("NSE", datetime.now(UTC))
    return datetime(day.year, day.month, day.day, 10, 30, tzinfo=IST).astimezone(UTC)


# --- the platform -------------------------------------------------------------------------------


@dataclass
class BookOrder:
    """One order in a fake broker's book, in neutral terms."""

    broker_order_id: str
    key: str  # client order id (Alpaca) or tag (Kite)
    symbol: str
    side: str
    status: str
    filled: Decimal
    final: OrderStatus | None  # our status for a terminal broker status, None while working


@dataclass
class Platform:
    """One user investing in one smallcase through one connection to a fake broker."""

    engine: Engine
    kind: str  # "alpaca" or "kite"
    fake: Any
    clock: Clock
    email: str
    connection_id: uuid.UUID
    portfolio_id: uuid.UUID
    smallcase_id: uuid.UUID
    investment_id: uuid.UUID
    amount: Decimal
    prices: dict[str, Decimal]
    start_cash: Decimal = Decimal(0)
    start_broker_cash: Decimal = Decimal(0)
    run_ids: list[uuid.UUID] = field(default_factory=list)

    # -- planning and executing ---------------------------------------------------------------

    def plan(self, run_type: RunType = RunType.INVEST, amount: Decimal | None = None) -> uuid.UUID:
        """Plan one run with the real planner and write it approved; return its id."""
        amounts = None
        if run_type in (RunType.INVEST, RunType.TOPUP):
            amounts = {self.investment_id: amount or self.amount}
        plan = plan_and_write(
            self.engine,
            str(self.smallcase_id),
            run_type=run_type,
            investment_ids=[self.investment_id],
            amounts=amounts,
            require_approval=False,
            check_brokers=False,
        )
        assert len(plan.runs) == 1, f"nothing planned: {plan.skipped}"
        run_id = plan.runs[0].run_id
        self.run_ids.append(run_id)
        return run_id

    def connection(self) -> UserBrokerConnection:
        """Return the connection row as it is now."""
        with Session(self.engine, expire_on_commit=False) as session:
            return session.get_one(UserBrokerConnection, self.connection_id)

    def broker(self, **overrides: Any) -> Broker:
        """Open the adapter the way the platform does, with virtual time and short timeouts."""
        options: dict[str, Any] = {"sleep": self.clock.sleep, "timeout": 0.5}
        if self.kind == "alpaca":
            # no pacing (the fake sets no limit unless a test injects 429s), but the limiter still
            # honours the fake's X-RateLimit-* headers on the virtual clock
            limiter = AlpacaRateLimiter(100_000, clock=self.clock)
            options.update(clock=self.clock, rate_limiter=limiter)
        else:
            options.update(monotonic=self.clock, clock=kite_market_time, lookup_horizon=1.0)
        options.update(overrides)
        return open_broker(self.engine, self.connection(), for_trading=True, **options)

    def execute(
        self,
        run_id: uuid.UUID,
        *,
        checkpoint: Callable[[str], None] | None = None,
        settings: ExecutionSettings = FAST,
        broker: Broker | None = None,
    ) -> RunOutcome:
        """Execute (or resume) a run through a fresh adapter, as a new executor would."""
        kwargs: dict[str, Any] = {}
        if checkpoint is not None:
            kwargs["checkpoint"] = checkpoint
        return execute_run(
            self.engine,
            run_id,
            broker=broker or self.broker(),
            settings=settings,
            sleep=self.clock.sleep,
            monotonic=self.clock,
            wall=lambda: datetime.fromtimestamp(self.clock(), UTC),
            **kwargs,
        )

    # -- reading our side ----------------------------------------------------------------------

    def orders(self, run_id: uuid.UUID | None = None) -> list[repo.OrderRow]:
        """Return the orders of one run (or of every run of the investment)."""
        with self.engine.connect() as conn:
            ids = [run_id] if run_id is not None else self._all_run_ids(conn)
            return [o for rid in ids for o in repo.load_orders(conn, rid)]

    def _all_run_ids(self, conn: Any) -> list[uuid.UUID]:
        return list(
            conn.execute(
                select(SmallcaseExecutionRun.id)
                .where(SmallcaseExecutionRun.investment_id == self.investment_id)
                .order_by(SmallcaseExecutionRun.created_at, SmallcaseExecutionRun.id)
            ).scalars()
        )

    def run_status(self, run_id: uuid.UUID) -> RunStatus:
        """Return a run's status in the database."""
        with self.engine.connect() as conn:
            return RunStatus(
                conn.execute(
                    select(SmallcaseExecutionRun.status).where(SmallcaseExecutionRun.id == run_id)
                ).scalar_one()
            )

    def investment_status(self) -> str:
        """Return the investment's status."""
        with self.engine.connect() as conn:
            return str(
                conn.execute(
                    select(UserSmallcaseInvestment.status).where(
                        UserSmallcaseInvestment.id == self.investment_id
                    )
                ).scalar_one()
            )

    def holdings(self) -> dict[str, Decimal]:
        """Return the portfolio's holdings per symbol (zero quantities dropped)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(Asset.symbol, PortfolioHolding.quantity)
                .join(Asset, Asset.id == PortfolioHolding.asset_id)
                .where(PortfolioHolding.portfolio_id == self.portfolio_id)
            ).all()
        return {s: _q(q) for s, q in rows if Decimal(str(q)) != 0}

    def cash(self) -> Decimal:
        """Return the portfolio's cash balance."""
        with self.engine.connect() as conn:
            return Decimal(
                str(
                    conn.execute(
                        select(Portfolio.cash_balance).where(Portfolio.id == self.portfolio_id)
                    ).scalar_one()
                )
            )

    def transactions(self) -> list[tuple[str, str, Decimal, Decimal, Decimal]]:
        """Return (symbol, type, quantity, price, fees) of every trading transaction."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(
                    Asset.symbol,
                    TradingTransaction.transaction_type,
                    TradingTransaction.quantity,
                    TradingTransaction.price,
                    TradingTransaction.fees,
                )
                .join(Asset, Asset.id == TradingTransaction.asset_id)
                .where(TradingTransaction.portfolio_id == self.portfolio_id)
            ).all()
        return [
            (s, t, Decimal(str(q)), Decimal(str(p)), Decimal(str(f or 0))) for s, t, q, p, f in rows
        ]

    def set_weights(self, weights: dict[str, str]) -> None:
        """Change the smallcase's target weights in place (a new composition)."""
        with Session(self.engine) as session, session.begin():
            for symbol, weight in weights.items():
                asset_id = session.scalars(select(Asset.id).where(Asset.symbol == symbol)).one()
                session.execute(
                    update(SmallcaseConstituent)
                    .where(
                        SmallcaseConstituent.smallcase_id == self.smallcase_id,
                        SmallcaseConstituent.asset_id == asset_id,
                    )
                    .values(weight_percentage=Decimal(weight))
                )

    # -- reading the broker's side ---------------------------------------------------------------

    def key(self, order: repo.OrderRow) -> str:
        """Return what identifies our order at the broker (client order id, or Kite tag)."""
        cid = client_order_id(order.id)
        return cid if self.kind == "alpaca" else kite_tag(cid)

    def book(self) -> list[BookOrder]:
        """Return every order in the fake broker's book."""
        if self.kind == "alpaca":
            return [
                BookOrder(
                    o["id"],
                    o["client_order_id"],
                    o["symbol"],
                    o["side"],
                    o["status"],
                    Decimal(o["filled_qty"] or "0"),
                    ALPACA_FINAL.get(o["status"]),
                )
                for o in self.fake.orders
            ]
        return [
            BookOrder(
                o["order_id"],
                o["tag"],
                o["tradingsymbol"],
                o["transaction_type"].lower(),
                o["status"],
                Decimal(str(o["filled_quantity"])),
                KITE_FINAL.get(o["status"]),
            )
            for o in self.fake.orders()
        ]

    def broker_positions(self) -> dict[str, Decimal]:
        """Return the fake broker's position per symbol (zero quantities dropped)."""
        if self.kind == "alpaca":
            return {s: _q(q) for s, q in self.fake.positions.items() if q}
        out: defaultdict[str, Decimal] = defaultdict(Decimal)
        for h in self.fake.holdings():
            out[h["tradingsymbol"]] += Decimal(h["quantity"]) + Decimal(h["t1_quantity"])
        for p in self.fake.positions()["net"]:
            out[p["tradingsymbol"]] += Decimal(p["quantity"])
        return {s: _q(q) for s, q in out.items() if q}

    def broker_cash(self) -> Decimal:
        """Return the fake broker account's cash."""
        return Decimal(self.fake.cash)

    def placements(self, order: repo.OrderRow) -> int:
        """Count the order placement requests the fake received for one of our orders."""
        if self.kind == "alpaca":
            return sum(
                1
                for r in self.fake.order_posts()
                if isinstance(r.body, dict) and r.body.get("client_order_id") == self.key(order)
            )
        return len(self.fake.placement_requests(self.key(order)))


def _q(value: Any) -> Decimal:
    return Decimal(str(value)).quantize(QTY_Q)


def build_platform(
    engine: Engine,
    kind: str,
    fake: Any,
    clock: Clock,
    *,
    amount: Decimal | None = None,
    portfolio_cash: Decimal | None = None,
) -> Platform:
    """Create the platform rows through the services, and prices fresh enough to plan."""
    us = kind == "alpaca"
    prices = dict(US_PRICES if us else IN_PRICES)
    weights = US_WEIGHTS if us else IN_WEIGHTS
    exchange, currency = ("NASDAQ", "USD") if us else ("NSE", "INR")
    amount = amount or (Decimal("10000") if us else Decimal("100000"))
    portfolio_cash = portfolio_cash or amount * 5
    box = get_secret_box()
    email = f"investor-{uuid.uuid4().hex[:8]}@example.com"
    with Session(engine, expire_on_commit=False) as session, session.begin():
        user = admin.add_user(session, email, "Reliability", "Tester")
        assets = {
            symbol: admin.add_asset(
                session,
                symbol,
                exchange,
                currency,
                name=f"{symbol} test listing",
                metadata={"fractionable": True}
                if us
                else {"lot_size": 1, "tick_size": "0.05", "instrument_token": 1000 + i},
            )
            for i, symbol in enumerate(sorted(prices))
        }
        portfolio = admin.add_portfolio(session, user, "main", currency, portfolio_cash)
        if us:
            connection = admin.add_connection(
                session,
                box,
                user,
                "alpaca",
                alias="alpaca-fake",
                api_key=FAKE_KEY_ID,
                api_secret=FAKE_SECRET,
                metadata={"base_url": fake.url},
            )
        else:
            connection = admin.add_connection(
                session,
                box,
                user,
                "zerodha",
                alias="kite-fake",
                api_key=fake.api_key,
                credentials={"access_token": fake.access_token},
                metadata=fake.connection_metadata(),
            )
        smallcase = admin.add_smallcase(
            session,
            f"Reliability {kind} {uuid.uuid4().hex[:6]}",
            [admin.ConstituentInput(s, Decimal(w)) for s, w in weights.items()],
        )
        now = datetime.now(UTC)
        last = calendars.last_completed_session(exchange, now)
        days = calendars.sessions(exchange, last - timedelta(days=10), last)[-4:]
        for symbol, asset in assets.items():
            for day in days:
                price = prices[symbol]
                session.add(
                    PriceHistory(
                        asset_id=asset.id,
                        open_price=price,
                        high_price=price,
                        low_price=price,
                        close_price=price,
                        volume=Decimal(100_000),
                        price_date=day,
                    )
                )
        investment, run_type = open_investment(
            session, email, smallcase.name, amount, broker_alias=connection.alias
        )
        assert run_type is RunType.INVEST
        ids = (connection.id, portfolio.id, smallcase.id, investment.id)
    for symbol, price in prices.items():
        if us:
            fake.add_asset(symbol, price=price)
        else:
            fake.set_price(symbol, price)
    platform = Platform(engine, kind, fake, clock, email, *ids, amount=amount, prices=prices)
    platform.start_cash = platform.cash()
    platform.start_broker_cash = platform.broker_cash()
    return platform


def allow_live_trading(monkeypatch: pytest.MonkeyPatch) -> None:
    """Set SARAS_LIVE_TRADING=true for this test (a Kite connection always reaches real money)."""
    monkeypatch.setenv("SARAS_LIVE_TRADING", "true")
    get_settings.cache_clear()


# --- the invariants ---------------------------------------------------------------------------


def assert_invariants(p: Platform, *, in_doubt_ok: bool = False) -> None:
    """Check the four invariants of the module docstring over every run of the investment."""
    with p.engine.connect() as conn:
        runs = {
            r.id: RunStatus(r.status)
            for r in conn.execute(
                select(SmallcaseExecutionRun.id, SmallcaseExecutionRun.status).where(
                    SmallcaseExecutionRun.investment_id == p.investment_id
                )
            )
        }
        ours = [(rid, o) for rid in runs for o in repo.load_orders(conn, rid)]
        order_count = conn.execute(
            select(func.count()).select_from(SmallcaseExecutionOrder)
        ).scalar_one()
    assert order_count == len(ours)
    book = p.book()
    by_key: dict[str, list[BookOrder]] = {}
    for b in book:
        by_key.setdefault(b.key, []).append(b)

    # 1. exactly one broker order per planned order; no foreign orders; no key used twice
    matched = 0
    unrecorded: set[str] = set()  # symbols with an order in doubt that exists at the broker
    for run_id, o in ours:
        found = by_key.get(p.key(o), [])
        if o.status in IN_DOUBT and found:
            # mid-crash state: the broker has it, our books do not yet (the resume records it)
            assert in_doubt_ok, f"{o.side.value} {o.symbol} is {o.status.value}"
            unrecorded.add(o.symbol)
            matched += len(found)
            continue
        where = f"{o.side.value} {o.symbol} ({o.status.value}, run {runs[run_id].value})"
        assert len(found) <= 1, f"{where} is {len(found)} orders at the broker"
        matched += len(found)
        if o.broker_order_id:
            assert len(found) == 1, f"{where}: our broker id {o.broker_order_id} is not in the book"
            assert found[0].broker_order_id == o.broker_order_id, where
        elif runs[run_id] in RUN_TERMINAL or o.status is OrderStatus.PLANNED:
            assert not found, f"{where} has no broker id here but exists at the broker"
        if found:
            b = found[0]
            assert (b.symbol, b.side) == (o.symbol, o.side.value), where
            assert _q(b.filled) == o.filled_quantity.quantize(QTY_Q), (
                f"{where}: the broker filled {b.filled}, we recorded {o.filled_quantity}"
            )
    assert matched == len(book), f"the book holds {len(book) - matched} orders that are not ours"

    # 2 and 3. ledger == book: positions, holdings, order fills, transactions; then cash
    signed_fills: defaultdict[str, Decimal] = defaultdict(Decimal)
    for _, o in ours:
        signed_fills[o.symbol] += (
            o.filled_quantity if o.side is OrderSide.BUY else -o.filled_quantity
        )
    transactions = p.transactions()
    signed_tx: defaultdict[str, Decimal] = defaultdict(Decimal)
    cash_change = Decimal(0)
    for symbol, kind, qty, price, fees in transactions:
        gross = (qty * price).quantize(MONEY_Q, ROUND_HALF_EVEN)
        if kind == OrderSide.BUY.value:
            signed_tx[symbol] += qty
            cash_change -= gross + fees
        else:
            signed_tx[symbol] -= qty
            cash_change += gross - fees
    positions = p.broker_positions()
    holdings = p.holdings()
    for symbol in sorted(set(positions) | set(holdings) | set(signed_fills) | set(signed_tx)):
        views = {
            "portfolio holding": holdings.get(symbol, Decimal(0)),
            "sum of order fills": _q(signed_fills.get(symbol, 0)),
            "sum of transactions": _q(signed_tx.get(symbol, 0)),
        }
        if symbol not in unrecorded:
            views["broker position"] = positions.get(symbol, Decimal(0))
        assert len(set(views.values())) == 1, f"{symbol}: {views}"
    assert p.cash() - p.start_cash == cash_change, "portfolio cash != what the fills moved"
    if not unrecorded:
        broker_change = p.broker_cash() - p.start_broker_cash
        tolerance = MONEY_Q * max(len(transactions), 1)  # our ledger rounds fills to 4 places
        assert abs(broker_change - cash_change) <= tolerance, (
            f"broker cash moved {broker_change}, our ledger {cash_change}"
        )

    # 4. a terminal run has no order in doubt, every order final and as the broker says
    for run_id, o in ours:
        status = runs[run_id]
        if status not in RUN_TERMINAL:
            assert in_doubt_ok or status is RunStatus.APPROVED, (
                f"run {run_id} is {status.value}, and this scenario expects it finished"
            )
            continue
        where = f"{o.side.value} {o.symbol} in {status.value} run"
        assert o.status not in IN_DOUBT, f"{where} is {o.status.value}"
        assert o.status in TERMINAL_ORDER_STATUSES, f"{where} is still {o.status.value}"
        found = by_key.get(p.key(o), [])
        if found:
            assert found[0].final is not None, (
                f"{where} is {o.status.value} here but still {found[0].status} at the broker"
            )
            assert found[0].final is o.status, (
                f"{where}: {o.status.value} here, {found[0].status} at the broker"
            )


def count_posts(p: Platform) -> int:
    """Count every order placement request the fake received."""
    if p.kind == "alpaca":
        return len(p.fake.order_posts())
    return len(p.fake.placement_requests())
