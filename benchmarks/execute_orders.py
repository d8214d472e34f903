"""Benchmark: order execution rates against local fake brokers that answer in 50 ms.

Everything runs through the production code path against the stateful fakes of
``tests.fakes`` (real HTTP on 127.0.0.1, the real SDKs, rate limits enforced by the fakes):

1. **Alpaca, one connection**: a ``FakeAlpaca`` with ``latency_ms=50`` and
   ``rate_limit_per_minute=200`` (429 beyond that, per rolling minute), and one Alpaca connection
   (encrypted keys, ``base_url`` pointing at the fake) with approved invest runs of
   ``--orders-per-run`` orders, planned by the real planner in a throwaway PostgreSQL database.
   The runs execute through ``tasks.execution.execute_connection_runs`` (the flow's task body:
   ``open_broker`` then ``execute_run`` per run, so the process-wide ``AlpacaRateLimiter`` of
   the account paces every request: ``GET /v2/clock`` per run, ``POST /v2/orders`` per order,
   polls if any). Enough runs are planned to keep the connection busy for about ``--seconds``.
   Reported from what the fake saw: requests in the busiest rolling minute / 200 (target >=
   0.9), the steady rate after the initial burst, and 429s (target 0).
   ``--alpaca-utilisation``/``--alpaca-burst`` run the same with a differently tuned limiter
   (``execute_run`` with an adapter built by hand) to measure a tuning.
2. **Kite, one connection**: a ``FakeKite`` with ``latency_ms=50`` and its default enforced
   limits (orders 10/s and 400/min, other calls 10/s); ``ZerodhaBroker.place_order`` in a loop
   for ``--kite-seconds`` (market hours, regular CNC market orders that fill at once). Reported:
   orders/s / 10 (target >= 0.9), requests by kind, 429s (target 0). A what-if line shows the
   same loop when the adapter does not read the order back after placing it.
3. **Many connections**: ``--connections`` Alpaca connections, each its own fake server and
   account, each with ``--orders-per-connection`` orders, executed with a thread pool of size C
   for every C in ``--concurrency`` (one ``execute_connection_runs`` call per connection, as the
   flow's tasks do). Reported: aggregate orders/s and the speedup over C=1 (it should grow about
   linearly with C while every connection stays under its own limit), 429s, failures.

Usage::

    python benchmarks/execute_orders.py                 # about 5 minutes
    python benchmarks/execute_orders.py --smoke         # seconds
    python benchmarks/execute_orders.py --seconds 120 --concurrency 1,4,16,32

Exit status: 0 when every correctness check held (every order filled, no task failed; targets
are PASS/MISS, ``--strict`` turns a MISS into 2), 1 when a check failed.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import sys
import tempfile
import time
import uuid
from bisect import bisect_left
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import SecretStr
from sqlalchemy import Engine, insert, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session
from uuid_utils.compat import uuid7

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere in the clone
    sys.path.insert(0, str(ROOT))

import throwaway  # noqa: E402 - benchmarks/throwaway.py, beside this script

from models import (  # noqa: E402
    Asset,
    Portfolio,
    PriceHistory,
    Smallcase,
    SmallcaseConstituent,
    User,
    UserBrokerConnection,
    UserSmallcaseInvestment,
)
from models.base import utcnow  # noqa: E402
from saras.brokers.alpaca import AlpacaBroker, AlpacaRateLimiter  # noqa: E402
from saras.brokers.base import (  # noqa: E402
    BrokerCredentials,
    ConnectionConfig,
    OrderRequest,
)
from saras.brokers.ids import client_order_id  # noqa: E402
from saras.brokers.zerodha import ZerodhaBroker  # noqa: E402
from saras.db import make_engine  # noqa: E402
from saras.domain.enums import OrderSide, OrderType, RunType  # noqa: E402
from saras.marketdata import calendars  # noqa: E402
from tests.fakes.fake_alpaca import PROXY_ENVIRONMENT, FakeAlpaca  # noqa: E402
from tests.fakes.fake_kite import FakeKite  # noqa: E402

DEFAULT_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
LATENCY_MS = 50.0
ALPACA_LIMIT = 200  # requests per rolling minute per account
KITE_ORDER_LIMIT = 10  # orders per second per API key
KITE_READ_LIMIT = 10  # other requests per second per API key
UTILISATION_TARGET = 0.9
IST = ZoneInfo("Asia/Kolkata")
PRICE_RANGE = (2_000, 40_000)  # cents
AMOUNT = Decimal(20_000)  # per investment: every leg of the smallcase gets a buy
PAPER_CONSTITUENTS = 20  # orders per paper investment


def out(line: str = "") -> None:
    """Print one result line right away."""
    print(line, flush=True)


def verdict(ok: bool) -> str:
    """Return PASS or MISS."""
    return "PASS" if ok else "MISS"


def load_note() -> str:
    """Describe the machine's load: figures from a busy machine are noisy."""
    cpus = os.cpu_count() or 1
    one, five, _ = os.getloadavg()
    busy = "  (busy: other work competes for the CPUs, figures are noisy)" if five > 0.5 else ""
    return f"{cpus} CPUs, load average {one:.2f} (1 min) {five:.2f} (5 min){busy}"


def busiest_window(times: Sequence[float], window: float) -> int:
    """Return the most events in any half-open window of ``window`` seconds."""
    ordered = sorted(times)
    best = 0
    for i, t in enumerate(ordered):
        j = bisect_left(ordered, t + window, lo=i)
        best = max(best, j - i)
    return best


def steady_rate(times: Sequence[float], skip: int) -> float:
    """Return events per second after the first ``skip`` events (the initial burst)."""
    ordered = sorted(times)[skip:]
    if len(ordered) < 2 or ordered[-1] <= ordered[0]:
        return 0.0
    return (len(ordered) - 1) / (ordered[-1] - ordered[0])


# --- settings and database --------------------------------------------------------------------


def point_settings_at(url: str, data_dir: Path) -> None:
    """Make ``get_settings``/``get_engine`` (used by the tasks) use the benchmark database."""
    from saras import db as saras_db
    from saras.secrets import generate_key
    from saras.settings import get_settings

    os.environ["SARAS_DATABASE_URL"] = url
    os.environ["SARAS_DATA_DIR"] = str(data_dir)
    os.environ["SARAS_SECRET_KEYS"] = generate_key()
    os.environ.pop("SARAS_LIVE_TRADING", None)
    get_settings.cache_clear()
    saras_db._engine_for.cache_clear()


@dataclass
class Database:
    """The database the benchmark runs in, and how to clean it up."""

    url: str
    admin_url: str | None  # set when the database is throwaway (dropped at the end)
    name: str

    def close(self) -> None:
        """Dispose of the engines and drop a throwaway database (a given one is left as is)."""
        from saras import db as saras_db

        for engine in _engines:
            engine.dispose()
        saras_db._engine_for.cache_clear()
        if self.admin_url is None:
            return
        throwaway.drop_database(self.admin_url, self.name)


_engines: list[Engine] = []


def open_database(database_url: str | None, admin_url: str) -> Database:
    """Use ``database_url`` as is, or create and migrate a throwaway database on ``admin_url``."""
    if database_url:
        return Database(database_url, None, make_url(database_url).database or "")
    url, name = throwaway.create_database(admin_url)
    return Database(url, admin_url, name)


# --- the platform -----------------------------------------------------------------------------


@dataclass
class Platform:
    """Assets with fresh prices and ``smallcases`` smallcases over them (same weights)."""

    engine: Engine
    symbols: list[str]
    prices: dict[str, Decimal]
    smallcase_ids: list[uuid.UUID]
    tag: str


def build_platform(engine: Engine, constituents: int, smallcases: int) -> Platform:
    """Create NYSE assets (fractionable) with closes for the last sessions, and smallcases."""
    tag = uuid.uuid4().hex[:6].upper()
    now = utcnow()
    last = calendars.last_completed_session("NYSE", now)
    days = calendars.sessions("NYSE", last - timedelta(days=10), last)[-5:]
    symbols = [f"X{tag}{j:03d}"[:10] for j in range(constituents)]
    step = (PRICE_RANGE[1] - PRICE_RANGE[0]) // max(constituents, 1)
    prices = {s: Decimal(PRICE_RANGE[0] + j * step) / 100 for j, s in enumerate(symbols)}
    base = (Decimal(100) / constituents).quantize(Decimal("0.0001"), rounding=ROUND_DOWN)
    weights = [base] * (constituents - 1) + [Decimal(100) - base * (constituents - 1)]
    asset_ids = [uuid.UUID(str(uuid7())) for _ in symbols]
    smallcase_ids = [uuid.UUID(str(uuid7())) for _ in range(smallcases)]
    with engine.begin() as conn:
        conn.execute(
            insert(Asset),
            [
                {
                    "id": a,
                    "symbol": s,
                    "name": f"Bench {s}",
                    "exchange": "NYSE",
                    "currency": "USD",
                    "metadata_": {"fractionable": True},
                }
                for a, s in zip(asset_ids, symbols, strict=True)
            ],
        )
        conn.execute(
            insert(PriceHistory),
            [
                {
                    "asset_id": a,
                    "open_price": prices[s],
                    "high_price": prices[s] + 1,
                    "low_price": prices[s] - 1,
                    "close_price": prices[s],
                    "volume": 100_000,
                    "price_date": d,
                }
                for a, s in zip(asset_ids, symbols, strict=True)
                for d in days
            ],
        )
        conn.execute(
            insert(Smallcase),
            [{"id": sc, "name": f"bench-exec-{tag}-{i}"} for i, sc in enumerate(smallcase_ids)],
        )
        conn.execute(
            insert(SmallcaseConstituent),
            [
                {"smallcase_id": sc, "asset_id": a, "weight_percentage": w}
                for sc in smallcase_ids
                for a, w in zip(asset_ids, weights, strict=True)
            ],
        )
    return Platform(engine, symbols, prices, smallcase_ids, tag)


def start_alpaca(platform: Platform, index: int) -> FakeAlpaca:
    """Start a fake Alpaca account: 50 ms per request, 200 requests per rolling minute."""
    fake = FakeAlpaca(
        key_id=f"PKBENCH{platform.tag}{index:06d}",
        secret_key=f"bench-secret-{platform.tag}-{index}",
        cash=Decimal(10) ** 12,
        latency_ms=LATENCY_MS,
        rate_limit_per_minute=ALPACA_LIMIT,
    )
    fake.market_open = True
    for symbol, price in platform.prices.items():
        fake.add_asset(symbol, price=price, fractionable=True, exchange="NYSE")
    return fake.start()


@dataclass
class Account:
    """One connection to one fake Alpaca, with approved runs waiting."""

    fake: FakeAlpaca
    connection_id: uuid.UUID
    run_ids: list[uuid.UUID] = field(default_factory=list)
    orders: int = 0


def add_account(platform: Platform, fake: FakeAlpaca, runs: int, orders_per_run: int) -> Account:
    """Create a user, an Alpaca connection to ``fake`` and ``runs`` approved invest runs."""
    from saras.secrets import get_secret_box
    from saras.services.rebalance import plan_and_write

    if runs > len(platform.smallcase_ids):
        raise ValueError("not enough smallcases for that many runs")
    box = get_secret_box()
    user_id, connection_id, portfolio_id = (uuid.UUID(str(uuid7())) for _ in range(3))
    investments = [uuid.UUID(str(uuid7())) for _ in range(runs)]
    engine = platform.engine
    with engine.begin() as conn:
        conn.execute(
            insert(User).values(id=user_id, email=f"x{user_id.hex}@bench.example", first_name="B")
        )
        conn.execute(
            insert(UserBrokerConnection).values(
                id=connection_id,
                user_id=user_id,
                broker_type="alpaca",
                alias="alpaca_primary",
                api_key=box.encrypt(fake.key_id),
                api_secret=box.encrypt(SecretStr(fake._secret)),
                paper_trading=True,
                status="active",
                connection_metadata={"base_url": fake.url},
            )
        )
        conn.execute(
            insert(Portfolio).values(
                id=portfolio_id,
                user_id=user_id,
                name="bench",
                currency="USD",
                cash_balance=Decimal(10) ** 9,  # buys are sized on the cash there is
            )
        )
        conn.execute(
            insert(UserSmallcaseInvestment),
            [
                {
                    "id": inv,
                    "user_id": user_id,
                    "smallcase_id": sc,
                    "portfolio_id": portfolio_id,
                    "broker_connection_id": connection_id,
                    "investment_amount": AMOUNT,
                    "status": "pending",
                    "execution_mode": "paper",
                }
                for inv, sc in zip(investments, platform.smallcase_ids, strict=False)
            ],
        )
    account = Account(fake, connection_id)
    for inv, sc_id in zip(investments, platform.smallcase_ids, strict=False):
        plan = plan_and_write(
            engine,
            str(sc_id),
            run_type=RunType.INVEST,
            investment_ids=[inv],
            amounts={inv: AMOUNT},
            require_approval=False,
            check_brokers=False,
        )
        if len(plan.runs) != 1 or plan.runs[0].order_count != orders_per_run:
            raise RuntimeError(
                f"expected one run of {orders_per_run} orders for investment {inv}: "
                f"{[r.order_count for r in plan.runs]}, skipped {plan.skipped}"
            )
        account.run_ids.append(plan.runs[0].run_id)
        account.orders += orders_per_run
    return account


# --- 1. Alpaca, one connection ----------------------------------------------------------------


@dataclass
class Execution:
    """What executing some accounts' runs did."""

    seconds: float
    outcomes: list[dict[str, Any]]
    errors: list[str]

    def count(self, status: str) -> int:
        """Count orders that ended with ``status`` over every outcome."""
        return sum(int(o.get("orders", {}).get(status, 0)) for o in self.outcomes)

    @property
    def not_completed(self) -> list[dict[str, Any]]:
        """Outcomes of runs that did not complete."""
        return [o for o in self.outcomes if o.get("status") != "completed"]


def execute_accounts(accounts: Sequence[Account], concurrency: int) -> Execution:
    """Run one ``execute_connection_runs`` per account on a pool of ``concurrency`` threads."""
    from tasks.execution import execute_connection_runs

    def job(i: int, account: Account) -> list[dict[str, Any]]:
        group = {str(account.connection_id): [str(r) for r in account.run_ids]}
        return execute_connection_runs.fn(group, f"{i + 1}-of-{len(accounts)}", None)

    outcomes: list[dict[str, Any]] = []
    errors: list[str] = []
    began = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="bench-exec") as pool:
        futures = [pool.submit(job, i, a) for i, a in enumerate(accounts)]
        for future in futures:
            try:
                outcomes.extend(future.result())
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
    return Execution(time.perf_counter() - began, outcomes, errors)


def execute_with_limiter(account: Account, utilisation: float, burst: int) -> Execution:
    """Execute an account's runs with an adapter whose limiter is tuned by hand."""
    from saras.secrets import get_secret_box
    from saras.services.brokers import connection_config, connection_credentials
    from saras.services.execution import execute_run

    engine = _engines[0]
    with Session(engine, expire_on_commit=False) as session:
        row = session.get_one(UserBrokerConnection, account.connection_id)
    limiter = AlpacaRateLimiter(ALPACA_LIMIT, utilisation=utilisation, burst=burst)
    broker = AlpacaBroker(
        connection_config(row),
        connection_credentials(row, get_secret_box()),
        rate_limiter=limiter,
    )
    outcomes = []
    began = time.perf_counter()
    for run_id in account.run_ids:
        outcomes.append(execute_run(engine, run_id, broker=broker).as_dict())
    return Execution(time.perf_counter() - began, outcomes, [])


def alpaca_one(
    platform: Platform,
    seconds: float,
    orders_per_run: int,
    problems: list[str],
    misses: list[str],
    tuning: tuple[float, int] | None,
) -> None:
    """Measure one Alpaca connection's sustained request rate through ``execute_run``."""
    requests_per_run = orders_per_run + 1  # GET /v2/clock, then one POST per order
    utilisation, burst = tuning or (0.9, 10)
    planned_rate = ALPACA_LIMIT * utilisation / 60
    runs = max(1, math.ceil((seconds * planned_rate + burst) / requests_per_run))
    fake = start_alpaca(platform, 0)
    try:
        account = add_account(platform, fake, runs, orders_per_run)
        fake.clear_requests()
        if tuning is None:
            result = execute_accounts([account], 1)
            how = "execute_connection_runs (open_broker, shared limiter), execute_run per run"
        else:
            result = execute_with_limiter(account, utilisation, burst)
            how = f"execute_run with AlpacaRateLimiter(utilisation={utilisation}, burst={burst})"
        seen = fake.requests
    finally:
        fake.stop()
    times = [r.at for r in seen]
    too_many = sum(1 for r in seen if r.status == 429)
    by_kind = Counter(
        f"{r.method} {'/v2/orders' if r.path.startswith('/v2/orders') else r.path}" for r in seen
    )
    filled = result.count("filled")
    span = (max(times) - min(times)) if len(times) > 1 else 0.0
    window = span >= 59.0
    busiest = busiest_window(times, 60.0)
    per_minute = busiest if window else (len(times) / result.seconds * 60 if result.seconds else 0)
    ratio = per_minute / ALPACA_LIMIT
    steady = steady_rate(times, burst) * 60
    ok = ratio >= UTILISATION_TARGET
    label = "alpaca 1" if tuning is None else "alpaca 1*"
    out(
        f"{label:<10} {len(seen):,} requests in {result.seconds:.1f} s "
        f"({', '.join(f'{k} {v}' for k, v in sorted(by_kind.items()))}), "
        f"{filled:,} orders filled in {len(account.run_ids)} runs via {how}"
    )
    if window:
        measure = f"{per_minute:,.0f} requests in the busiest rolling minute / {ALPACA_LIMIT}"
    else:
        measure = (
            f"{per_minute:,.1f} requests/min over a {result.seconds:.1f} s run, burst "
            f"included (shorter than a minute) / {ALPACA_LIMIT}"
        )
    out(
        f"           utilisation {ratio:.3f}  ({measure}; target >= {UTILISATION_TARGET})  "
        f"{verdict(ok)}"
    )
    out(
        f"           steady rate after the first {burst} requests {steady:,.1f}/min "
        f"({steady / ALPACA_LIMIT:.3f} of the limit); 429s {too_many} (target 0)  "
        f"{verdict(too_many == 0)}"
    )
    if tuning is None and not ok:
        misses.append("alpaca utilisation")
    if too_many:
        misses.append("alpaca 429s")
    if result.errors or result.not_completed or filled != account.orders:
        problems.append(
            f"alpaca: {filled} of {account.orders} orders filled; errors {result.errors[:2]}; "
            f"runs not completed {[o.get('reason') for o in result.not_completed[:2]]}"
        )


# --- 2. Kite, one connection ------------------------------------------------------------------


def kite_market_time() -> datetime:
    """Return 10:30 IST on the last completed NSE session: the market is open then."""
    day = calendars.last_completed_session("NSE", datetime.now(UTC))
    return datetime(day.year, day.month, day.day, 10, 30, tzinfo=IST).astimezone(UTC)


def kite_one(
    seconds: float,
    confirm_placement: bool,
    label: str,
    problems: list[str],
    misses: list[str] | None,
) -> None:
    """Place Kite orders through the adapter for ``seconds``; report orders/s and 429s."""
    symbols = {f"KB{j:02d}": Decimal(100 + 37 * j) for j in range(10)}
    fake = FakeKite(prices=symbols, cash=Decimal(10) ** 12)
    fake.latency_ms = LATENCY_MS
    fake.start()
    placed = 0
    failures: list[str] = []
    try:
        config = ConnectionConfig(
            connection_id=f"kite-bench-{uuid.uuid4().hex[:8]}",
            broker_type="zerodha",
            paper_trading=False,
            metadata={"root": fake.url},
        )
        credentials = BrokerCredentials(
            api_key=SecretStr(fake.api_key), access_token=SecretStr(fake.access_token)
        )
        market = kite_market_time()
        broker = ZerodhaBroker(
            config, credentials, clock=lambda: market, confirm_placement=confirm_placement
        )
        names = list(symbols)
        began = time.perf_counter()
        while time.perf_counter() - began < seconds:
            request = OrderRequest(
                client_order_id=client_order_id(uuid.UUID(str(uuid7()))),
                symbol=names[placed % len(names)],
                side=OrderSide.BUY,
                quantity=Decimal(1),
                order_type=OrderType.MARKET,
                exchange="NSE",
            )
            try:
                broker.place_order(request)
            except Exception as exc:
                failures.append(f"{type(exc).__name__}: {exc}")
            placed += 1
        elapsed = time.perf_counter() - began
        seen = fake.requests
    finally:
        fake.stop()
    posts = [r for r in seen if r.method == "POST" and r.path.startswith("/orders")]
    reads = [r for r in seen if not (r.method == "POST" and r.path.startswith("/orders"))]
    too_many = sum(1 for r in seen if r.status == 429)
    ok_posts = sum(1 for r in posts if r.status == 200)
    rate = ok_posts / elapsed if elapsed else 0.0
    # the physical limit: 10 order POSTs a second, and, when each placement is read back,
    # Kite's 10 other calls a second shared by its reads
    reads_per_order = len(reads) / ok_posts if ok_posts else 0.0
    limit = float(KITE_ORDER_LIMIT)
    if reads_per_order > 0:
        limit = min(limit, KITE_READ_LIMIT / reads_per_order)
    ratio = rate / limit
    busiest = busiest_window([r.received_at for r in posts], 1.0)
    ok = ratio >= UTILISATION_TARGET
    bound = "orders" if limit == KITE_ORDER_LIMIT else f"reads, {reads_per_order:.1f} per order"
    out(
        f"{label:<10} {ok_posts:,} orders in {elapsed:.1f} s = {rate:.2f} orders/s -> "
        f"{ratio:.2f} of the limit {limit:.2f}/s ({bound}) (target >= {UTILISATION_TARGET})  "
        f"{verdict(ok)}"
    )
    out(
        f"           requests: {len(posts):,} order POSTs ({len(posts) / elapsed:.2f}/s, busiest "
        f"second {busiest}), {len(reads):,} reads ({len(reads) / elapsed:.2f}/s; Kite allows "
        f"10/s); 429s {too_many} (target 0)  {verdict(too_many == 0)}"
    )
    if misses is not None:
        if not ok:
            misses.append("kite orders/s")
        if too_many:
            misses.append("kite 429s")
    if failures:
        problems.append(f"kite ({label.strip()}): {len(failures)} placements failed: {failures[0]}")


# --- 3. many connections ----------------------------------------------------------------------


def many_connections(
    platform: Platform,
    connections: int,
    orders_per_connection: int,
    orders_per_run: int,
    concurrency: Sequence[int],
    problems: list[str],
    misses: list[str],
) -> None:
    """Execute ``connections`` accounts with pools of each size; report aggregate rates."""
    runs = math.ceil(orders_per_connection / orders_per_run)
    base_rate: float | None = None
    for c in concurrency:
        fakes = [start_alpaca(platform, 1000 * c + k) for k in range(connections)]
        try:
            accounts = [add_account(platform, f, runs, orders_per_run) for f in fakes]
            for fake in fakes:
                fake.clear_requests()
            result = execute_accounts(accounts, c)
            seen = [r for f in fakes for r in f.requests]
            busiest = max(busiest_window([r.at for r in f.requests], 60.0) for f in fakes)
        finally:
            for fake in fakes:
                fake.stop()
        orders = sum(a.orders for a in accounts)
        filled = result.count("filled")
        too_many = sum(1 for r in seen if r.status == 429)
        rate = filled / result.seconds if result.seconds else 0.0
        if base_rate is None:
            base_rate = rate if c == 1 else None
        speedup = f"{rate / base_rate:5.2f}" if base_rate else "  n/a"
        ideal = min(c, connections)
        out(
            f"C={c:<3}      {filled:,}/{orders:,} orders on {connections} connections in "
            f"{result.seconds:6.1f} s = {rate:6.2f} orders/s, speedup {speedup} "
            f"(ideal {ideal}); busiest connection minute {busiest} requests, 429s {too_many}"
            + (f", {len(result.errors)} tasks FAILED" if result.errors else "")
        )
        if too_many:
            misses.append(f"429s at C={c}")
        if base_rate and rate / base_rate < 0.8 * ideal:
            misses.append(f"speedup at C={c}")
        if result.errors or filled != orders:
            problems.append(
                f"C={c}: {filled} of {orders} orders filled; "
                f"{len(result.errors)} tasks failed: {result.errors[:1]}; runs not completed: "
                f"{[o.get('reason') for o in result.not_completed[:1]]}"
            )


# --- 4. many paper investments ------------------------------------------------------------------


@dataclass
class PaperBook:
    """``investments`` paper investments (own user, connection, portfolio), planned and approved."""

    runs_by_connection: dict[str, list[str]]
    orders: int
    smallcase_id: uuid.UUID
    build_seconds: float
    plan_seconds: float


def build_paper(platform: Platform, investments: int) -> PaperBook:
    """Create ``investments`` paper investments in ``platform``'s first smallcase and plan them.

    Each investment has its own user, paper connection (fractional, market always open) and
    portfolio, as in a real rebalance over many accounts; one invest run buys every constituent.
    """
    from saras.services.rebalance import plan_and_write

    engine = platform.engine
    smallcase_id = platform.smallcase_ids[0]
    began = time.perf_counter()
    ids = [[uuid.UUID(str(uuid7())) for _ in range(4)] for _ in range(investments)]
    with engine.begin() as conn:
        for start in range(0, investments, 2_000):
            chunk = ids[start : start + 2_000]
            conn.execute(
                insert(User),
                [
                    {"id": u, "email": f"p{u.hex}@bench.example", "first_name": "P"}
                    for u, _, _, _ in chunk
                ],
            )
            conn.execute(
                insert(UserBrokerConnection),
                [
                    {
                        "id": c,
                        "user_id": u,
                        "broker_type": "paper",
                        "alias": "paper_primary",
                        "paper_trading": True,
                        "status": "active",
                        "connection_metadata": {
                            "paper_fractional": True,
                            "paper_market_open": "always",
                        },
                    }
                    for u, c, _, _ in chunk
                ],
            )
            conn.execute(
                insert(Portfolio),
                [
                    {
                        "id": p,
                        "user_id": u,
                        "name": "bench",
                        "currency": "USD",
                        "cash_balance": AMOUNT * 2,
                    }
                    for u, _, p, _ in chunk
                ],
            )
            conn.execute(
                insert(UserSmallcaseInvestment),
                [
                    {
                        "id": i,
                        "user_id": u,
                        "smallcase_id": smallcase_id,
                        "portfolio_id": p,
                        "broker_connection_id": c,
                        "investment_amount": AMOUNT,
                        "status": "pending",
                        "execution_mode": "paper",
                    }
                    for u, c, p, i in chunk
                ],
            )
    built = time.perf_counter()
    plan = plan_and_write(
        engine,
        str(smallcase_id),
        run_type=RunType.INVEST,
        investment_ids=[i for *_, i in ids],
        amounts={i: AMOUNT for *_, i in ids},
        require_approval=False,
        check_brokers=False,
    )
    planned = time.perf_counter()
    orders = sum(r.order_count for r in plan.runs)
    if len(plan.runs) != investments or orders != investments * len(platform.symbols):
        raise RuntimeError(
            f"expected {investments} runs of {len(platform.symbols)} orders: {len(plan.runs)} "
            f"runs, {orders} orders, skipped {plan.skipped}"
        )
    return PaperBook(
        {str(k): [str(r) for r in v] for k, v in plan.runs_by_connection().items()},
        orders,
        smallcase_id,
        built - began,
        planned - built,
    )


def execute_paper(book: PaperBook, threads: int) -> Execution:
    """Execute the book's runs as the rebalance flow does: 32 tasks of connections, in parallel."""
    from flows.kit.review import MAX_EXECUTION_TASKS
    from tasks.execution import execute_connection_runs

    groups: list[dict[str, list[str]]] = [{} for _ in range(MAX_EXECUTION_TASKS)]
    for i, (connection, runs) in enumerate(sorted(book.runs_by_connection.items())):
        groups[i % MAX_EXECUTION_TASKS][connection] = runs
    groups = [g for g in groups if g]
    outcomes: list[dict[str, Any]] = []
    errors: list[str] = []
    began = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="bench-paper") as pool:
        futures = [
            pool.submit(execute_connection_runs.fn, g, f"{i + 1}-of-{len(groups)}", None)
            for i, g in enumerate(groups)
        ]
        for future in futures:
            try:
                outcomes.extend(future.result())
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
    return Execution(time.perf_counter() - began, outcomes, errors)


def paper_ledger_check(engine: Engine, book: PaperBook) -> str | None:
    """Return what is wrong with the books after the run, None when ledger and broker agree."""
    with engine.connect() as conn:
        row = conn.execute(
            text(
                """
                SELECT
                  (SELECT count(*) FROM trading_transactions t
                     JOIN user_smallcase_investments i ON i.portfolio_id = t.portfolio_id
                    WHERE i.smallcase_id = :sc) AS ledger_rows,
                  (SELECT count(*) FROM paper_fills f
                     JOIN paper_orders o ON o.broker_order_id = f.broker_order_id
                     JOIN user_smallcase_investments i
                       ON CAST(i.broker_connection_id AS text) = o.account_id
                    WHERE i.smallcase_id = :sc) AS broker_fills,
                  (SELECT count(*) FROM smallcase_execution_orders o
                     JOIN smallcase_execution_runs r ON r.id = o.execution_run_id
                     JOIN user_smallcase_investments i ON i.id = r.investment_id
                    WHERE i.smallcase_id = :sc AND o.status = 'filled') AS filled,
                  (SELECT coalesce(sum(p.cash_balance), 0) FROM portfolios p
                     JOIN user_smallcase_investments i ON i.portfolio_id = p.id
                    WHERE i.smallcase_id = :sc) AS ledger_cash,
                  (SELECT coalesce(sum(a.cash - 100000), 0) FROM paper_accounts a
                     JOIN user_smallcase_investments i
                       ON CAST(i.broker_connection_id AS text) = a.account_id
                    WHERE i.smallcase_id = :sc) AS broker_spent
                """
            ),
            {"sc": book.smallcase_id},
        ).one()
    investments = len(book.runs_by_connection)
    spent_ledger = Decimal(str(row.ledger_cash)) - AMOUNT * 2 * investments
    problems = []
    if not (row.ledger_rows == row.broker_fills == row.filled == book.orders):
        problems.append(
            f"{row.filled} orders filled, {row.ledger_rows} ledger rows, {row.broker_fills} "
            f"broker fills for {book.orders} orders"
        )
    if spent_ledger != Decimal(str(row.broker_spent)):
        problems.append(f"ledger cash moved {spent_ledger}, broker cash {row.broker_spent}")
    return "; ".join(problems) or None


def commit_floor(engine: Engine, orders: int) -> tuple[int, float]:
    """Time one single-row UPDATE + commit per order (the old per-order design's floor).

    Returns (rows, seconds) over a sample of at most 5,000 orders' rows, on one connection.
    """
    sample = min(orders, 5_000)
    with engine.connect() as conn:
        conn.execute(text("DROP TABLE IF EXISTS bench_floor_t"))
        conn.execute(text("CREATE TABLE bench_floor_t (id int PRIMARY KEY, s text)"))
        conn.execute(
            text("INSERT INTO bench_floor_t SELECT g, 'planned' FROM generate_series(1, :n) g"),
            {"n": sample},
        )
        conn.commit()
        began = time.perf_counter()
        for k in range(1, sample + 1):
            conn.execute(
                text("UPDATE bench_floor_t SET s = 'submitting' WHERE id = :k AND s = 'planned'"),
                {"k": k},
            )
            conn.commit()
        seconds = time.perf_counter() - began
        conn.execute(text("DROP TABLE bench_floor_t"))
        conn.commit()
    return sample, seconds


def raw_copy_orders(engine: Engine, book: PaperBook) -> tuple[int, float]:
    """COPY the run's order rows (as they ended) into an identical empty table; time it."""
    with engine.connect() as conn:
        conn.execute(text("DROP TABLE IF EXISTS bench_copy_orders"))
        conn.execute(
            text("CREATE TABLE bench_copy_orders (LIKE smallcase_execution_orders INCLUDING ALL)")
        )
        conn.commit()
        raw: Any = conn.connection.driver_connection  # psycopg's own connection: COPY
        buffer = io.BytesIO()
        with (
            raw.cursor() as cur,
            cur.copy(
                "COPY (SELECT o.* FROM smallcase_execution_orders o "
                "JOIN smallcase_execution_runs r ON r.id = o.execution_run_id "
                "JOIN user_smallcase_investments i ON i.id = r.investment_id "
                f"WHERE i.smallcase_id = '{book.smallcase_id}') TO STDOUT"
            ) as copy,
        ):
            for chunk in copy:
                buffer.write(chunk)
        raw.commit()
        data = buffer.getvalue()
        began = time.perf_counter()
        with raw.cursor() as cur, cur.copy("COPY bench_copy_orders FROM STDIN") as copy:
            copy.write(data)
        raw.commit()
        seconds = time.perf_counter() - began
        rows = conn.execute(text("SELECT count(*) FROM bench_copy_orders")).scalar_one()
        conn.execute(text("DROP TABLE bench_copy_orders"))
        conn.commit()
    return int(rows), seconds


def paper_section(
    platform: Platform,
    database: str,
    investments: int,
    threads: int,
    problems: list[str],
) -> None:
    """Execute ``investments`` paper investments end to end; report orders/s against limits."""
    from ingest_prices import CpuMeter, fmt_cpu

    engine = platform.engine
    book = build_paper(platform, investments)
    out(
        f"paper     {investments:,} investments x {len(platform.symbols)} buys = {book.orders:,} "
        f"orders, each investment its own paper connection and portfolio (built in "
        f"{book.build_seconds:.1f} s, planned in {book.plan_seconds:.1f} s)"
    )
    meter = CpuMeter(engine, database)
    meter.start()
    result = execute_paper(book, threads)
    python_cpu, server_cpu = meter.stop()
    filled = result.count("filled")
    rate = filled / result.seconds if result.seconds else 0.0
    cores = os.cpu_count() or 1
    cpu = python_cpu + (server_cpu or 0.0)
    per_cpu = f"{filled / cpu:,.0f}" if cpu and server_cpu is not None else "n/a"
    out(
        f"ours      {filled:,}/{book.orders:,} orders filled in {result.seconds:.1f} s = "
        f"{rate:,.0f} orders/s with {threads} threads = {rate / cores:,.0f} orders/s per core "
        f"({cores} cores)"
    )
    out(f"          cpu {fmt_cpu(python_cpu, server_cpu)}: {per_cpu} orders per CPU-second")
    floor_rows, floor_seconds = commit_floor(engine, book.orders)
    floor_rate = floor_rows / floor_seconds if floor_seconds else 0.0
    copy_rows, copy_seconds = raw_copy_orders(engine, book)
    copy_rate = copy_rows / copy_seconds if copy_seconds else 0.0
    out(
        f"floor     one single-row UPDATE + commit per order (the per-order design's limit, "
        f"{floor_rows:,} on one connection): {floor_rate:,.0f}/s; ours / that "
        f"{rate / floor_rate if floor_rate else 0:.2f}"
    )
    out(
        f"raw COPY  the same {copy_rows:,} order rows COPYed into an identical empty table: "
        f"{copy_rate:,.0f} rows/s; ours / that {rate / copy_rate if copy_rate else 0:.3f}"
    )
    wrong = paper_ledger_check(engine, book)
    out(f"books     ledger rows = broker fills = filled orders; cash equal: {wrong or 'yes'}")
    if wrong or result.errors or result.not_completed or filled != book.orders:
        reasons = [o.get("reason") for o in result.not_completed[:2]]
        problems.append(
            f"paper {investments}: {filled} of {book.orders} orders filled; {wrong}; errors "
            f"{result.errors[:2]}; not completed {reasons}"
        )


# --- main -------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument(
        "--seconds",
        type=float,
        default=60.0,
        help="how long one Alpaca connection is kept busy (default 60)",
    )
    p.add_argument(
        "--kite-seconds",
        type=float,
        default=10.0,
        help="how long orders are placed through the Kite adapter (default 10)",
    )
    p.add_argument("--orders-per-run", type=int, default=20, help="orders per run (default 20)")
    p.add_argument("--connections", type=int, default=8, help="connections executed together")
    p.add_argument(
        "--orders-per-connection",
        type=int,
        default=40,
        help="orders each of --connections executes (default 40)",
    )
    p.add_argument(
        "--concurrency",
        default="1,2,4,8",
        help="thread pool sizes to try, comma-separated (default 1,2,4,8)",
    )
    p.add_argument(
        "--alpaca-utilisation",
        type=float,
        default=None,
        help="also run the one-connection Alpaca test with this limiter utilisation",
    )
    p.add_argument(
        "--alpaca-burst", type=int, default=10, help="burst of that tuned limiter (default 10)"
    )
    p.add_argument(
        "--only",
        default="alpaca,kite,many,paper",
        help="sections to run, comma-separated (default alpaca,kite,many,paper)",
    )
    p.add_argument(
        "--investments",
        default="1000",
        help="paper section: investments to execute (20 orders each), comma-separated sizes "
        "run one after the other (default 1000; 10000 takes minutes)",
    )
    p.add_argument(
        "--paper-threads",
        type=int,
        default=8,
        help="paper section: groups executing at once (default 8; the flow runs its 32 tasks "
        "at once, two database connections each, which on 2 cores is no faster)",
    )
    p.add_argument(
        "--database-url",
        default=None,
        help="an existing database migrated to head (default: a throwaway database created on "
        "--admin-url and dropped at the end); what the benchmark adds is left in it",
    )
    p.add_argument(
        "--admin-url",
        default=os.environ.get("SARAS_BENCH_ADMIN_URL")
        or os.environ.get("SARAS_TEST_PG_URL")
        or DEFAULT_ADMIN_URL,
        help="server URL used to create/drop the throwaway database",
    )
    p.add_argument("--smoke", action="store_true", help="short windows, small counts: seconds")
    p.add_argument(
        "--pool-size",
        type=int,
        default=None,
        help="what-if: give the execution tasks an engine with this pool size (no overflow) "
        "instead of get_engine()'s",
    )
    p.add_argument("--strict", action="store_true", help="exit 2 when a target is missed")
    args = p.parse_args(argv)
    if args.smoke:
        args.seconds, args.kite_seconds = 2.0, 2.0
        args.orders_per_run, args.connections, args.orders_per_connection = 4, 3, 4
        args.concurrency = "1,3"
        args.investments = "20"
    try:
        args.concurrency = [int(c) for c in str(args.concurrency).split(",") if c.strip()]
    except ValueError:
        p.error("--concurrency takes comma-separated integers")
    args.only = {s.strip() for s in str(args.only).split(",") if s.strip()}
    try:
        args.investments = [int(n) for n in str(args.investments).split(",") if n.strip()]
    except ValueError:
        p.error("--investments takes comma-separated integers")
    if (
        args.seconds <= 0
        or args.kite_seconds <= 0
        or args.orders_per_run < 1
        or args.connections < 1
        or args.orders_per_connection < 1
        or not args.concurrency
        or min(args.concurrency) < 1
        or not args.investments
        or min(args.investments) < 1
        or args.paper_threads < 1
    ):
        p.error("durations, counts and pool sizes must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; return the process exit status."""
    args = parse_args(argv)
    for name in PROXY_ENVIRONMENT:  # the fakes are on 127.0.0.1: never through a proxy
        os.environ.pop(name, None)
    problems: list[str] = []
    misses: list[str] = []
    db = open_database(args.database_url, args.admin_url)
    try:
        with tempfile.TemporaryDirectory(prefix="saras_bench_") as data_dir:
            point_settings_at(db.url, Path(data_dir))
            from saras.db import get_engine

            engine = get_engine()  # the engine the tasks use (production pool settings)
            if args.pool_size:
                # what-if: the tasks get an engine with a larger pool than get_engine() builds
                import tasks.execution

                engine = make_engine(db.url, pool_size=args.pool_size, max_overflow=0)
                tasks.execution.get_engine = lambda *_: engine
            _engines.append(engine)
            out(
                f"database  {make_url(db.url).render_as_string()}  "
                f"({'throwaway' if db.admin_url else 'given'}); pool size "
                f"{getattr(engine.pool, 'size', lambda: '?')()} + overflow "
                f"{getattr(engine.pool, '_max_overflow', '?')}"
            )
            out(f"machine   {load_note()}")
            out(
                f"fakes     {LATENCY_MS:g} ms per request; Alpaca {ALPACA_LIMIT} requests per "
                f"rolling minute per account; Kite orders 10/s + 400/min, other calls 10/s"
            )
            burst = max(10, args.alpaca_burst)
            alpaca_runs = math.ceil(
                (args.seconds * ALPACA_LIMIT / 60 + burst) / (args.orders_per_run + 1)
            )
            many_runs = math.ceil(args.orders_per_connection / args.orders_per_run)
            # one constituent per order of a run: an invest run buys every one of them
            platform = build_platform(engine, args.orders_per_run, max(alpaca_runs, many_runs))
            out()
            if "alpaca" in args.only:
                alpaca_one(platform, args.seconds, args.orders_per_run, problems, misses, None)
                if args.alpaca_utilisation is not None:
                    tuning = (args.alpaca_utilisation, args.alpaca_burst)
                    alpaca_one(
                        platform, args.seconds, args.orders_per_run, problems, misses, tuning
                    )
            if "kite" in args.only:
                # the executor's mode: no read-back after placing (it polls every order anyway)
                kite_one(args.kite_seconds, False, "kite 1", problems, misses)
                kite_one(args.kite_seconds, True, "kite read-back", problems, None)
                out("           (read-back: each placement confirmed by two reads, as a lone call)")
            if "many" in args.only:
                many_connections(
                    platform,
                    args.connections,
                    args.orders_per_connection,
                    args.orders_per_run,
                    args.concurrency,
                    problems,
                    misses,
                )
            if "paper" in args.only:
                for size in args.investments:
                    out()
                    paper = build_platform(engine, PAPER_CONSTITUENTS, 1)
                    paper_section(
                        paper, make_url(db.url).database or "", size, args.paper_threads, problems
                    )
    finally:
        db.close()
    out(f"machine   {load_note()} at the end")
    out()
    for problem in problems:
        out(f"FAILED: {problem}")
    if misses:
        out(f"targets missed: {', '.join(misses)}")
    if problems:
        return 1
    return 2 if misses and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
