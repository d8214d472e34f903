"""The paper broker against real databases: SQLite (a file) and PostgreSQL (psycopg 3).

Each PostgreSQL test works in a schema of its own (``search_path``), dropped at teardown, so the
``paper_*`` tables never collide with other tests using the same database. When PostgreSQL is not
reachable (``SARAS_TEST_PG_URL``, default the local ``test`` database) the PostgreSQL cases
skip, unless ``CI=true`` where they fail.
"""

from __future__ import annotations

import functools
import hashlib
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import SecretStr
from sqlalchemy import exc as sa_exc

from saras.brokers.base import (
    AccountInfo,
    Broker,
    BrokerCredentials,
    BrokerOrder,
    BrokerOrderStatus,
    BrokerPosition,
    ConnectionConfig,
    OrderRequest,
)
from saras.brokers.errors import NonRetryableBrokerError, OrderNotFoundError, OrderRejectedError
from saras.brokers.paper import (
    METADATA_KEYS,
    PaperBroker,
    PaperFillMode,
    PaperMarketHours,
    PaperSettings,
    ensure_paper_schema,
    paper_fills,
    paper_metadata,
    paper_orders,
)
from saras.domain.enums import OrderSide, OrderType
from tests.support.databases import PG_URL  # the suite's PostgreSQL server

T0 = datetime(2024, 6, 3, 14, 0, tzinfo=UTC)  # a Monday, 10:00 in New York
PAPER_TABLES = sorted(paper_metadata.tables)
D = Decimal


# ---- databases ----------------------------------------------------------------------------


@functools.cache
def _postgres_problem() -> str | None:
    engine = sa.create_engine(PG_URL, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa_exc.OperationalError as exc:
        return str(exc.orig).strip().splitlines()[0]
    finally:
        engine.dispose()
    return None


def _require_postgres() -> None:
    problem = _postgres_problem()
    if problem is None:
        return
    message = f"PostgreSQL at {PG_URL} unreachable: {problem}"
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(message)
    pytest.skip(message)


class Databases:
    """Fresh, isolated databases of one backend; everything created is dropped at close."""

    def __init__(self, backend: str, tmp_path: Path) -> None:
        self.backend = backend
        self._tmp_path = tmp_path
        self._engines: list[sa.Engine] = []
        self._schemas: list[str] = []
        self._admin: sa.Engine | None = None

    def new(self) -> sa.Engine:
        """Return an engine on a new empty database (SQLite file or PostgreSQL schema)."""
        if self.backend == "sqlite":
            path = self._tmp_path / f"paper-{len(self._engines)}.db"
            engine = sa.create_engine(f"sqlite:///{path}")
        else:
            schema = f"paper_test_{uuid.uuid4().hex[:12]}"
            if self._admin is None:
                self._admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
            with self._admin.connect() as conn:
                conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
            self._schemas.append(schema)
            engine = sa.create_engine(
                PG_URL, connect_args={"options": f"-csearch_path={schema}"}, pool_size=10
            )
        self._engines.append(engine)
        return engine

    def close(self) -> None:
        """Dispose of every engine and drop every schema created."""
        for engine in self._engines:
            engine.dispose()
        if self._admin is not None:
            with self._admin.connect() as conn:
                for schema in self._schemas:
                    conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            self._admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def databases(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Databases]:
    if request.param == "postgresql":
        _require_postgres()
    dbs = Databases(request.param, tmp_path)
    try:
        yield dbs
    finally:
        dbs.close()


@pytest.fixture
def engine(databases: Databases) -> sa.Engine:
    return databases.new()


# ---- prices, clock, brokers ---------------------------------------------------------------


class Prices(dict[str, Decimal]):
    """A price table standing in for the latest stored close per symbol."""

    def __call__(self, symbol: str) -> Decimal | None:
        return self.get(symbol)


class Clock:
    """A settable clock."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def prices() -> Prices:
    return Prices({"AAPL": D("100"), "MSFT": D("300")})


@pytest.fixture
def clock() -> Clock:
    return Clock()


MakeBroker = Callable[..., PaperBroker]


@pytest.fixture
def make_broker(engine: sa.Engine, prices: Prices, clock: Clock) -> MakeBroker:
    def make(
        account: str = "acct-1",
        *,
        on: sa.Engine | None = None,
        metadata: dict[str, object] | None = None,
        **settings: Any,
    ) -> PaperBroker:
        return PaperBroker(
            ConnectionConfig(
                connection_id=account,
                broker_type="paper",
                paper_trading=True,
                metadata=metadata or {},
            ),
            BrokerCredentials(),
            engine=on or engine,
            price_lookup=prices,
            settings=PaperSettings(**settings),
            clock=clock,
        )

    return make


def order(
    client_order_id: str,
    symbol: str = "AAPL",
    side: OrderSide = OrderSide.BUY,
    *,
    quantity: str | None = None,
    notional: str | None = None,
    limit: str | None = None,
) -> OrderRequest:
    return OrderRequest(
        client_order_id=client_order_id,
        symbol=symbol,
        side=side,
        quantity=None if quantity is None else D(quantity),
        notional=None if notional is None else D(notional),
        order_type=OrderType.MARKET if limit is None else OrderType.LIMIT,
        limit_price=None if limit is None else D(limit),
    )


def holdings(broker: PaperBroker) -> dict[str, tuple[Decimal, Decimal | None]]:
    return {p.symbol: (p.quantity, p.average_price) for p in broker.get_positions()}


def count(engine: sa.Engine, table: sa.Table) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


# ---- fills, slippage, fees ----------------------------------------------------------------


def test_market_buy_and_sell_fill_with_slippage_and_fees(
    make_broker: MakeBroker, prices: Prices
) -> None:
    broker = make_broker(slippage_bps=D("7"), fee_bps=D("5"))
    prices["AAPL"] = D("123.4567")

    bought = broker.place_order(order("b1", quantity="3"))

    # 123.4567 * 1.0007 = 123.54311969 -> 123.543120; 3 x = 370.62936 -> 370.6294;
    # fee 5 bps = 0.1853147 -> 0.1853.
    assert bought.status is BrokerOrderStatus.FILLED
    assert bought.filled_quantity == D("3")
    assert bought.average_fill_price == D("123.543120")
    assert bought.fees == D("0.1853")
    assert [(f.fill_id, f.quantity, f.price, f.fees) for f in bought.fills] == [
        (f"{bought.broker_order_id}-1", D("3"), D("123.543120"), D("0.1853"))
    ]
    assert bought.fills[0].filled_at == T0
    account = broker.get_account()
    assert account.cash == account.buying_power == D("99629.1853")
    assert str(account.cash) == "99629.185300"  # exact, no float noise, on both databases
    assert account.currency == "USD"
    assert holdings(broker) == {"AAPL": (D("3"), D("123.543120"))}

    prices["AAPL"] = D("130")
    sold = broker.place_order(order("s1", side=OrderSide.SELL, quantity="2"))

    # 130 * 0.9993 = 129.909; 2 x = 259.818; fee 0.129909 -> 0.1299.
    assert sold.status is BrokerOrderStatus.FILLED
    assert sold.average_fill_price == D("129.909")
    assert sold.fees == D("0.1299")
    assert broker.get_account().cash == D("99629.1853") + D("259.818") - D("0.1299")
    assert holdings(broker) == {"AAPL": (D("1"), D("123.543120"))}


def test_minimum_fee_applies_per_order(make_broker: MakeBroker, prices: Prices) -> None:
    broker = make_broker(fee_bps=D("5"), min_fee=D("1"))
    prices["AAPL"] = D("10")

    filled = broker.place_order(order("b1", quantity="1"))

    assert filled.fees == D("1")  # 5 bps of 10 is 0.005, below the minimum
    assert broker.get_account().cash == D("99989")


def test_positions_and_cash_after_buys_and_sells_average_price(
    make_broker: MakeBroker, prices: Prices
) -> None:
    broker = make_broker()
    broker.place_order(order("b1", quantity="10"))
    prices["AAPL"] = D("110")
    broker.place_order(order("b2", quantity="10"))
    assert holdings(broker) == {"AAPL": (D("20"), D("105"))}

    prices["AAPL"] = D("120")
    broker.place_order(order("s1", side=OrderSide.SELL, quantity="5"))
    assert holdings(broker) == {"AAPL": (D("15"), D("105"))}  # selling keeps the average
    [position] = broker.get_positions()
    assert position.market_value == D("1800")

    broker.place_order(order("s2", side=OrderSide.SELL, quantity="15"))
    assert broker.get_positions() == []
    assert broker.get_account().cash == D("100000") - 1000 - 1100 + 600 + 1800


def test_notional_order_converts_at_fill_price(make_broker: MakeBroker, prices: Prices) -> None:
    broker = make_broker()
    prices["AAPL"] = D("7.77")

    filled = broker.place_order(order("n1", notional="100"))

    # 100 / 7.77 = 12.870012870012... rounded down to 9 places; 12.870012870 * 7.77 = 99.9999999999
    assert filled.status is BrokerOrderStatus.FILLED
    assert filled.quantity == filled.filled_quantity == D("12.870012870")
    assert filled.average_fill_price == D("7.77")
    assert broker.get_account().cash == D("99900.0000")


def test_notional_order_in_whole_shares(make_broker: MakeBroker, prices: Prices) -> None:
    broker = make_broker(fractional=False)
    prices["AAPL"] = D("7.77")

    filled = broker.place_order(order("n1", notional="100"))

    assert filled.filled_quantity == D("12")
    assert broker.get_account().cash == D("100000") - D("93.24")


# ---- limit orders -------------------------------------------------------------------------


def test_buy_limit_rests_until_price_reaches_it(make_broker: MakeBroker, prices: Prices) -> None:
    broker = make_broker(slippage_bps=D("10"))

    resting = broker.place_order(order("l1", quantity="2", limit="99"))
    assert resting.status is BrokerOrderStatus.OPEN
    assert resting.filled_quantity == 0 and resting.fills == ()
    assert broker.get_order(resting.broker_order_id).status is BrokerOrderStatus.OPEN
    assert broker.get_account().cash == D("100000")

    prices["AAPL"] = D("98.5")
    filled = broker.get_order(resting.broker_order_id)

    assert filled.status is BrokerOrderStatus.FILLED
    assert filled.average_fill_price == D("98.5985")  # 98.5 * 1.001
    assert broker.get_account().cash == D("100000") - D("197.197")


def test_limit_caps_the_slipped_price(make_broker: MakeBroker, prices: Prices) -> None:
    broker = make_broker(slippage_bps=D("10"))
    prices["AAPL"] = D("98.95")  # at the limit's side, but 98.95 * 1.001 = 99.04895

    buy = broker.place_order(order("l1", quantity="1", limit="99"))
    assert buy.status is BrokerOrderStatus.FILLED
    assert buy.average_fill_price == D("99")

    prices["AAPL"] = D("101.05")  # 101.05 * 0.999 = 100.94895, below the sell limit
    sell = broker.place_order(order("l2", side=OrderSide.SELL, quantity="1", limit="101"))
    assert sell.status is BrokerOrderStatus.FILLED
    assert sell.average_fill_price == D("101")


def test_sell_limit_fills_at_or_above_limit(make_broker: MakeBroker, prices: Prices) -> None:
    broker = make_broker(slippage_bps=D("10"))
    broker.set_position("AAPL", D("10"), D("90"))

    resting = broker.place_order(order("l1", side=OrderSide.SELL, quantity="4", limit="101"))
    assert resting.status is BrokerOrderStatus.OPEN

    prices["AAPL"] = D("102")
    filled = broker.get_order_by_client_id("l1")
    assert filled is not None
    assert filled.status is BrokerOrderStatus.FILLED
    assert filled.average_fill_price == D("101.898")  # 102 * 0.999
    assert holdings(broker) == {"AAPL": (D("6"), D("90"))}


# ---- rejections ---------------------------------------------------------------------------


def _tamper(request: OrderRequest, **values: object) -> OrderRequest:
    """Return a request with fields a real caller could not set (OrderRequest validates them)."""
    for name, value in values.items():
        object.__setattr__(request, name, value)
    return request


REJECTIONS = {
    "insufficient cash": (lambda b: None, order("r", quantity="11"), "insufficient cash"),
    "insufficient cash with fees": (
        lambda b: None,
        order("r", quantity="10"),  # exactly the cash, but the 1.00 minimum fee does not fit
        "insufficient cash",
    ),
    "unknown symbol": (lambda b: None, order("r", "NOPE", quantity="1"), "unknown symbol NOPE"),
    "selling more than held": (
        lambda b: b.set_position("AAPL", D("2"), D("90")),
        order("r", side=OrderSide.SELL, quantity="3"),
        "insufficient position: selling 3 AAPL, holding 2",
    ),
    "selling what is not held": (
        lambda b: None,
        order("r", side=OrderSide.SELL, quantity="1"),
        "insufficient position",
    ),
    "non-positive quantity": (
        lambda b: None,
        _tamper(order("r", quantity="1"), quantity=D("0")),
        "quantity must be positive",
    ),
    "negative quantity": (
        lambda b: None,
        _tamper(order("r", quantity="1"), quantity=D("-5")),
        "quantity must be positive",
    ),
    "too many decimals": (lambda b: None, order("r", quantity="0.0000000001"), "decimal places"),
    "non-positive limit": (
        lambda b: None,
        order("r", quantity="1", limit="-1"),
        "limit price must be positive",
    ),
}


@pytest.mark.parametrize("case", sorted(REJECTIONS))
def test_rejections_raise_and_are_persisted(make_broker: MakeBroker, case: str) -> None:
    setup, request, reason = REJECTIONS[case]
    broker = make_broker(starting_cash=D("1000"), min_fee=D("1"))
    setup(broker)
    before = holdings(broker)

    with pytest.raises(OrderRejectedError) as raised:
        broker.place_order(request)

    assert reason in (raised.value.reason or "")
    assert reason in str(raised.value)
    assert raised.value.broker == "paper"
    found = broker.get_order_by_client_id("r")
    assert found is not None
    assert found.status is BrokerOrderStatus.REJECTED
    assert found.reason == raised.value.reason
    assert found.fills == () and found.filled_quantity == 0
    assert broker.get_order(found.broker_order_id) == found
    assert broker.get_account().cash == D("1000")
    assert holdings(broker) == before
    # Placing it again finds the rejection instead of placing anything.
    assert broker.place_order(request, resume=True) == found
    assert broker.place_order(request) == found


@pytest.mark.parametrize(
    ("settings", "request_", "reason"),
    [
        ({"market_open": "never"}, order("r", quantity="1"), "market closed"),
        ({"fractional": False}, order("r", quantity="1.5"), "fractional quantity 1.5 not allowed"),
        ({"fractional": False}, order("r", notional="50"), "notional 50 buys no AAPL"),
    ],
    ids=["market closed", "fractional", "notional below one share"],
)
def test_rejections_from_settings(
    make_broker: MakeBroker, settings: dict[str, Any], request_: OrderRequest, reason: str
) -> None:
    broker = make_broker(**settings)

    with pytest.raises(OrderRejectedError, match=reason):
        broker.place_order(request_)

    found = broker.get_order_by_client_id("r")
    assert found is not None and found.status is BrokerOrderStatus.REJECTED
    assert reason in (found.reason or "")
    assert broker.get_account().cash == D("100000")


def test_market_clock(make_broker: MakeBroker, clock: Clock) -> None:
    assert make_broker().get_clock().is_open is True
    assert make_broker(market_open="never").get_clock().is_open is False

    nyse = make_broker(market_open="calendar", calendar="XNYS")
    monday = nyse.get_clock()
    assert monday.is_open is True
    assert monday.next_close == datetime(2024, 6, 3, 20, 0, tzinfo=UTC)
    clock.now = datetime(2024, 6, 1, 14, 0, tzinfo=UTC)  # a Saturday
    saturday = nyse.get_clock()
    assert saturday.is_open is False
    assert saturday.next_open == datetime(2024, 6, 3, 13, 30, tzinfo=UTC)
    with pytest.raises(OrderRejectedError, match="market closed"):
        nyse.place_order(order("weekend", quantity="1"))


# ---- idempotency and concurrency -----------------------------------------------------------


def test_place_is_idempotent_by_client_order_id(
    make_broker: MakeBroker, engine: sa.Engine, prices: Prices
) -> None:
    broker = make_broker()
    first = broker.place_order(order("same", quantity="5"))
    prices["AAPL"] = D("200")  # a second fill would show at this price

    again = broker.place_order(order("same", quantity="5"))
    resumed = broker.place_order(order("same", quantity="5"), resume=True)

    assert first == again == resumed
    assert count(engine, paper_orders) == 1
    assert count(engine, paper_fills) == 1
    assert broker.get_account().cash == D("99500")
    other = broker.place_order(order("other", quantity="5"))
    assert other.broker_order_id != first.broker_order_id


def _run_threads(n: int, work: Callable[[int], BrokerOrder]) -> list[BrokerOrder]:
    barrier = threading.Barrier(n)
    results: list[BrokerOrder | None] = [None] * n
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait()
            results[i] = work(i)
        except BaseException as exc:  # collected and re-raised by the test thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    if errors:
        raise errors[0]
    assert all(r is not None for r in results)
    return [r for r in results if r is not None]


def test_concurrent_double_placement_makes_one_order(
    make_broker: MakeBroker, engine: sa.Engine
) -> None:
    make_broker().get_account()  # the account exists; each thread has its own broker instance
    brokers = [make_broker() for _ in range(8)]

    results = _run_threads(8, lambda i: brokers[i].place_order(order("dup", quantity="3")))

    assert len({r.broker_order_id for r in results}) == 1
    assert all(r.status is BrokerOrderStatus.FILLED for r in results)
    assert count(engine, paper_orders) == 1
    assert count(engine, paper_fills) == 1
    assert brokers[0].get_account().cash == D("99700")
    assert holdings(brokers[0]) == {"AAPL": (D("3"), D("100"))}


def test_concurrent_double_placement_on_a_fresh_book(
    make_broker: MakeBroker, engine: sa.Engine
) -> None:
    brokers = [make_broker() for _ in range(6)]  # schema and account created by the race too

    results = _run_threads(6, lambda i: brokers[i].place_order(order("dup", quantity="3")))

    assert len({r.broker_order_id for r in results}) == 1
    assert count(engine, paper_orders) == 1
    assert brokers[0].get_account().cash == D("99700")


def test_unique_constraint_is_the_last_word(
    make_broker: MakeBroker, engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_broker().get_account()
    # Without the account lock, racing placements all insert and the constraint decides.
    monkeypatch.setattr(PaperBroker, "_lock_account", lambda self, conn: None)
    brokers = [make_broker() for _ in range(8)]

    results = _run_threads(8, lambda i: brokers[i].place_order(order("dup", quantity="3")))

    assert len({r.broker_order_id for r in results}) == 1
    assert count(engine, paper_orders) == 1
    assert count(engine, paper_fills) == 1
    assert brokers[0].get_account().cash == D("99700")


def test_concurrent_orders_do_not_lose_cash_updates(make_broker: MakeBroker) -> None:
    make_broker().get_account()
    brokers = [make_broker() for _ in range(8)]

    results = _run_threads(8, lambda i: brokers[i].place_order(order(f"o{i}", quantity="1")))

    assert len({r.broker_order_id for r in results}) == 8
    assert brokers[0].get_account().cash == D("100000") - 8 * D("100")
    assert holdings(brokers[0]) == {"AAPL": (D("8"), D("100"))}


# ---- partial and delayed fills ---------------------------------------------------------------


def test_partial_fill_then_remainder_after_polls(make_broker: MakeBroker, prices: Prices) -> None:
    broker = make_broker(
        fill_mode="partial",
        partial_fill_ratio=D("0.4"),
        fill_delay_polls=2,
        fee_bps=D("50"),
        min_fee=D("1"),
    )
    prices["AAPL"] = D("50")

    placed = broker.place_order(order("p1", quantity="10"))
    assert placed.status is BrokerOrderStatus.PARTIALLY_FILLED
    assert placed.filled_quantity == D("4") and placed.fees == D("1")  # 50 bps of 200 = 1.00
    assert broker.get_account().cash == D("99799")
    assert broker.get_order(placed.broker_order_id).status is BrokerOrderStatus.PARTIALLY_FILLED

    prices["AAPL"] = D("60")
    done = broker.get_order(placed.broker_order_id)  # second poll

    assert done.status is BrokerOrderStatus.FILLED
    assert done.filled_quantity == D("10")
    assert done.average_fill_price == D("56")  # (4 x 50 + 6 x 60) / 10
    # The fee is per order: 50 bps of 560 = 2.80 in all, 1.00 already charged.
    assert [(f.quantity, f.price, f.fees) for f in done.fills] == [
        (D("4"), D("50"), D("1")),
        (D("6"), D("60"), D("1.8")),
    ]
    assert [f.fill_id for f in done.fills] == [
        f"{done.broker_order_id}-1",
        f"{done.broker_order_id}-2",
    ]
    assert done.fees == D("2.8")
    assert broker.get_account().cash == D("100000") - D("560") - D("2.8")
    assert holdings(broker) == {"AAPL": (D("10"), D("56"))}


def test_partial_fill_without_delay_stays_until_cancelled(make_broker: MakeBroker) -> None:
    broker = make_broker(fill_mode="partial", partial_fill_ratio=D("0.25"), fill_delay_polls=0)

    placed = broker.place_order(order("p1", quantity="8"))
    for _ in range(5):
        polled = broker.get_order(placed.broker_order_id)
    assert polled.status is BrokerOrderStatus.PARTIALLY_FILLED
    assert polled.filled_quantity == D("2")

    broker.cancel_order(placed.broker_order_id)

    cancelled = broker.get_order(placed.broker_order_id)
    assert cancelled.status is BrokerOrderStatus.CANCELLED
    assert cancelled.filled_quantity == D("2") and len(cancelled.fills) == 1
    assert holdings(broker) == {"AAPL": (D("2"), D("100"))}
    assert broker.get_account().cash == D("99800")


def test_partial_fill_of_one_whole_share_fills_it_whole(make_broker: MakeBroker) -> None:
    broker = make_broker(fill_mode="partial", fractional=False, fill_delay_polls=0)

    placed = broker.place_order(order("p1", quantity="1"))

    assert placed.status is BrokerOrderStatus.FILLED


def test_delayed_fill_after_n_polls_at_the_price_then(
    make_broker: MakeBroker, prices: Prices, clock: Clock
) -> None:
    broker = make_broker(fill_mode="delayed", fill_delay_polls=3)
    prices["AAPL"] = D("20")

    placed = broker.place_order(order("d1", quantity="5"))
    assert placed.status is BrokerOrderStatus.OPEN and placed.fills == ()
    assert broker.get_account().cash == D("100000")

    assert broker.get_order(placed.broker_order_id).status is BrokerOrderStatus.OPEN  # poll 1
    prices["AAPL"] = D("21")
    polled = broker.get_order_by_client_id("d1")  # poll 2
    assert polled is not None and polled.status is BrokerOrderStatus.OPEN
    clock.advance(minutes=5)
    [filled] = broker.list_orders(T0)  # poll 3

    assert filled.status is BrokerOrderStatus.FILLED
    assert filled.average_fill_price == D("21")
    assert filled.updated_at == T0 + timedelta(minutes=5)
    assert filled.submitted_at == T0
    assert broker.get_account().cash == D("99895")
    # Lookups of a filled order change nothing.
    assert broker.get_order(placed.broker_order_id) == filled


def test_delayed_fill_is_rejected_when_cash_no_longer_covers_it(
    make_broker: MakeBroker, prices: Prices
) -> None:
    broker = make_broker(fill_mode="delayed", fill_delay_polls=1, starting_cash=D("1000"))
    prices["AAPL"] = D("20")
    placed = broker.place_order(order("d1", quantity="40"))  # 800 fits now
    prices["AAPL"] = D("30")  # 1200 does not at fill time

    polled = broker.get_order(placed.broker_order_id)

    assert polled.status is BrokerOrderStatus.REJECTED
    assert "insufficient cash" in (polled.reason or "")
    assert broker.get_account().cash == D("1000")


def test_delayed_order_waits_while_the_market_is_closed(make_broker: MakeBroker) -> None:
    open_market = make_broker(fill_mode="delayed", fill_delay_polls=1)
    placed = open_market.place_order(order("d1", quantity="1"))

    closed = make_broker(market_open="never")  # same book, market now closed
    assert closed.get_order(placed.broker_order_id).status is BrokerOrderStatus.OPEN

    # The order keeps the fill plan it was placed with, whatever the new instance's settings.
    assert make_broker().get_order(placed.broker_order_id).status is BrokerOrderStatus.FILLED


def test_notional_delayed_order_reports_quantity_once_filled(make_broker: MakeBroker) -> None:
    broker = make_broker(fill_mode="delayed", fill_delay_polls=1)

    placed = broker.place_order(order("n1", notional="250"))
    assert placed.quantity is None and placed.status is BrokerOrderStatus.OPEN

    filled = broker.get_order(placed.broker_order_id)
    assert filled.quantity == filled.filled_quantity == D("2.5")


# ---- other calls ----------------------------------------------------------------------------


def test_cancel_rules(make_broker: MakeBroker) -> None:
    broker = make_broker()
    filled = broker.place_order(order("f1", quantity="1"))
    resting = broker.place_order(order("l1", quantity="1", limit="50"))

    broker.cancel_order(resting.broker_order_id)
    broker.cancel_order(resting.broker_order_id)  # again: nothing happens
    cancelled = broker.get_order(resting.broker_order_id)
    assert cancelled.status is BrokerOrderStatus.CANCELLED
    assert cancelled.reason == "cancelled on request"

    with pytest.raises(NonRetryableBrokerError, match="filled and cannot be cancelled"):
        broker.cancel_order(filled.broker_order_id)
    with pytest.raises(OrderNotFoundError):
        broker.cancel_order("P-NOPE")
    assert broker.get_account().cash == D("99900")


def test_lookups_of_unknown_orders(make_broker: MakeBroker) -> None:
    broker = make_broker()
    assert broker.get_order_by_client_id("missing") is None
    with pytest.raises(OrderNotFoundError, match="P-MISSING"):
        broker.get_order("P-MISSING")


def test_list_orders_since(make_broker: MakeBroker, clock: Clock) -> None:
    broker = make_broker()
    broker.place_order(order("a", quantity="1"))
    clock.advance(hours=1)
    broker.place_order(order("b", quantity="1"))
    clock.advance(hours=1)
    broker.place_order(order("c", quantity="1"))

    assert [o.client_order_id for o in broker.list_orders(T0)] == ["a", "b", "c"]
    later = T0 + timedelta(minutes=30)
    assert [o.client_order_id for o in broker.list_orders(later)] == ["b", "c"]
    # Any zone works: the same instant in New York.
    ny = later.astimezone(timezone(timedelta(hours=-4)))
    assert [o.client_order_id for o in broker.list_orders(ny)] == ["b", "c"]
    with pytest.raises(ValueError, match="aware"):
        broker.list_orders(datetime(2024, 6, 3))


def test_deposit_and_starting_cash(make_broker: MakeBroker) -> None:
    broker = make_broker(starting_cash=D("250.5"), currency="inr")

    assert broker.get_account().cash == D("250.5")
    assert broker.deposit(D("49.5")).cash == D("300")
    assert broker.get_account().currency == "INR"
    with pytest.raises(ValueError, match="positive"):
        broker.deposit(D("0"))


def test_set_position_simulates_outside_trades(make_broker: MakeBroker, prices: Prices) -> None:
    broker = make_broker()
    broker.place_order(order("b1", quantity="2"))

    drift = broker.set_position("MSFT", D("5"), D("290.1234567"))
    assert drift is not None
    assert (drift.quantity, drift.average_price, drift.market_value) == (
        D("5"),
        D("290.123457"),
        D("1500"),
    )
    assert broker.set_position("AAPL", D("7")) is not None  # keeps the average price
    assert holdings(broker) == {"AAPL": (D("7"), D("100")), "MSFT": (D("5"), D("290.123457"))}
    assert broker.get_account().cash == D("99800")  # drift never moves cash

    broker.place_order(order("s1", "MSFT", OrderSide.SELL, quantity="5"))
    assert broker.set_position("AAPL", D("0")) is None
    assert broker.get_positions() == []
    with pytest.raises(ValueError, match="negative"):
        broker.set_position("AAPL", D("-1"))
    del prices["MSFT"]
    broker.set_position("MSFT", D("1"), D("10"))
    [unpriced] = broker.get_positions()
    assert unpriced.market_value is None


# ---- persistence and determinism ----------------------------------------------------------


def test_a_new_instance_sees_the_same_book(make_broker: MakeBroker) -> None:
    first = make_broker(fill_mode="delayed", fill_delay_polls=2)
    filled_now = make_broker().place_order(order("b1", quantity="3"))
    pending = first.place_order(order("d1", quantity="1"))
    first.get_order(pending.broker_order_id)  # poll 1, through the first instance

    second = make_broker(starting_cash=D("5"))  # an existing account keeps its cash
    assert second.get_order(pending.broker_order_id).status is BrokerOrderStatus.FILLED
    assert second.get_order_by_client_id("b1") == filled_now
    assert holdings(second) == {"AAPL": (D("4"), D("100"))}
    assert second.get_account().cash == D("99600")
    assert [o.client_order_id for o in second.list_orders(T0)] == ["b1", "d1"]

    stranger = make_broker("acct-2")
    assert stranger.get_account().cash == D("100000")
    assert stranger.get_positions() == []
    assert stranger.list_orders(T0) == []
    assert stranger.get_order_by_client_id("b1") is None
    with pytest.raises(OrderNotFoundError):
        stranger.get_order(filled_now.broker_order_id)
    # The same client id in another account is another order.
    assert stranger.place_order(order("b1", quantity="3")).broker_order_id != (
        filled_now.broker_order_id
    )


Book = tuple[tuple[BrokerOrder, ...], AccountInfo, tuple[BrokerPosition, ...]]


def _scenario(broker: PaperBroker, prices: Prices) -> Book:
    prices["AAPL"] = D("101.37")
    broker.place_order(order("c1", quantity="3.5"))
    broker.place_order(order("c2", "MSFT", notional="1234.56"))
    broker.place_order(order("c3", side=OrderSide.SELL, quantity="1.25"))
    with pytest.raises(OrderRejectedError):
        broker.place_order(order("c4", "NOPE", quantity="1"))
    broker.place_order(order("c5", quantity="2", limit="90"))
    return (tuple(broker.list_orders(T0)), broker.get_account(), tuple(broker.get_positions()))


def test_two_fresh_books_are_identical(databases: Databases) -> None:
    books: list[Book] = []
    for _ in range(2):
        prices = Prices({"MSFT": D("301.11")})
        broker = PaperBroker(
            ConnectionConfig("acct-1", "paper", True),
            BrokerCredentials(),
            engine=databases.new(),
            price_lookup=prices,
            settings=PaperSettings(slippage_bps=D("3"), fee_bps=D("2.5"), min_fee=D("0.5")),
            clock=Clock(),
        )
        books.append(_scenario(broker, prices))

    assert books[0] == books[1]
    orders = {o.client_order_id: o for o in books[0][0]}
    assert {cid: o.status for cid, o in orders.items()} == {
        "c1": BrokerOrderStatus.FILLED,
        "c2": BrokerOrderStatus.FILLED,
        "c3": BrokerOrderStatus.FILLED,
        "c4": BrokerOrderStatus.REJECTED,
        "c5": BrokerOrderStatus.OPEN,
    }
    expected_id = "P-" + hashlib.sha256(b"acct-1\nc1").hexdigest()[:24].upper()
    assert orders["c1"].broker_order_id == expected_id
    assert orders["c1"].fills[0].fill_id == f"{expected_id}-1"


# ---- schema, settings, construction ----------------------------------------------------------


def test_ensure_schema_is_idempotent_and_race_safe(databases: Databases) -> None:
    engine = databases.new()
    barrier = threading.Barrier(6)
    errors: list[BaseException] = []

    def create() -> None:
        try:
            barrier.wait()
            ensure_paper_schema(engine)
        except BaseException as exc:  # collected and re-raised by the test thread
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    ensure_paper_schema(engine)
    assert sorted(sa.inspect(engine).get_table_names()) == PAPER_TABLES
    assert all(name.startswith("paper_") for name in PAPER_TABLES)


def test_settings_from_connection_metadata(make_broker: MakeBroker) -> None:
    broker = make_broker(
        slippage_bps=D("1"),
        metadata={
            "paper_slippage_bps": "12.5",
            "paper_fee_bps": 3,
            "paper_min_fee": 0.25,
            "paper_fill_mode": "Delayed",
            "paper_fill_delay_polls": "4",
            "paper_fractional": "false",
            "paper_currency": "inr",
            "paper_market_open": "never",
            "base_url": "http://127.0.0.1:1",  # not ours: ignored
        },
    )
    settings = broker.settings
    assert settings.slippage_bps == D("12.5")
    assert settings.fee_bps == D("3") and settings.min_fee == D("0.25")
    assert settings.fill_mode is PaperFillMode.DELAYED and settings.fill_delay_polls == 4
    assert settings.fractional is False and settings.currency == "INR"
    assert settings.market_open is PaperMarketHours.NEVER
    assert set(METADATA_KEYS) >= {
        "paper_slippage_bps",
        "paper_fee_bps",
        "paper_min_fee",
        "paper_starting_cash",
        "paper_currency",
        "paper_fill_mode",
        "paper_fill_delay_polls",
        "paper_partial_fill_ratio",
        "paper_market_open",
    }


@pytest.mark.parametrize(
    ("metadata", "culprit"),
    [
        ({"paper_fill_mode": "sometimes"}, "paper_fill_mode"),
        ({"paper_fee_bps": "lots"}, "paper_fee_bps"),
        ({"paper_fee_bps": True}, "paper_fee_bps"),
        ({"paper_fill_delay_polls": 1.5}, "paper_fill_delay_polls"),
        ({"paper_fractional": "maybe"}, "paper_fractional"),
        ({"paper_slipage_bps": "1"}, "paper_slipage_bps"),
        ({"paper_partial_fill_ratio": "1"}, "partial_fill_ratio"),
        ({"paper_starting_cash": "-1"}, "starting_cash"),
    ],
)
def test_bad_settings_name_the_culprit(metadata: dict[str, object], culprit: str) -> None:
    with pytest.raises(ValueError, match=culprit):
        PaperSettings.from_metadata(metadata)


def test_constructor_does_no_io_and_hides_credentials(prices: Prices, tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'missing' / 'dir' / 'paper.db'}")
    broker = PaperBroker(
        ConnectionConfig("acct-1", "paper", True),
        BrokerCredentials(api_key=SecretStr("sekrit-key"), api_secret=SecretStr("sekrit")),
        engine=engine,
        price_lookup=prices,
    )
    assert isinstance(broker, Broker)
    assert broker.broker_type == "paper"
    assert "sekrit" not in repr(broker)
    with pytest.raises(sa_exc.OperationalError):
        broker.get_account()  # the first call is the first I/O
    engine.dispose()


def test_naive_clock_is_refused(engine: sa.Engine, prices: Prices) -> None:
    broker = PaperBroker(
        ConnectionConfig("acct-1", "paper", True),
        BrokerCredentials(),
        engine=engine,
        price_lookup=prices,
        clock=lambda: datetime(2024, 6, 3, 14, 0),
    )
    with pytest.raises(ValueError, match="naive"):
        broker.get_account()


# ---- assets are (symbol, exchange) pairs --------------------------------------------------


class VenuePrices(dict[tuple[str, str | None], Decimal]):
    """Latest closes per (symbol, exchange): INFY on NSE and on NYSE are two assets."""

    def __call__(self, symbol: str, exchange: str | None) -> Decimal | None:
        return self.get((symbol, exchange))


def test_one_symbol_on_two_exchanges_is_two_assets(engine: sa.Engine, clock: Clock) -> None:
    prices = VenuePrices({("INFY", "NSE"): D("1500"), ("INFY", "NYSE"): D("18")})
    broker = PaperBroker(
        ConnectionConfig("acct-venues", "paper", True),
        BrokerCredentials(),
        engine=engine,
        price_lookup=prices,
        settings=PaperSettings(starting_cash=D("100000")),
        clock=clock,
    )

    def infy(cid: str, exchange: str, side: OrderSide, qty: str) -> BrokerOrder:
        return broker.place_order(OrderRequest(cid, "INFY", side, D(qty), exchange=exchange))

    nse = infy("nse-buy", "NSE", OrderSide.BUY, "10")
    nyse = infy("nyse-buy", "NYSE", OrderSide.BUY, "100")
    assert (nse.average_fill_price, nyse.average_fill_price) == (D("1500"), D("18"))
    held = {(p.exchange, p.quantity, p.average_price) for p in broker.get_positions()}
    assert held == {("NSE", D("10"), D("1500")), ("NYSE", D("100"), D("18"))}
    assert broker.get_account().cash == D("100000") - D("15000") - D("1800")

    # selling NYSE shares sells them at the NYSE price and leaves the NSE position alone
    sold = infy("nyse-sell", "NYSE", OrderSide.SELL, "40")
    assert sold.average_fill_price == D("18")
    left = {(p.exchange, p.quantity) for p in broker.get_positions()}
    assert left == {("NSE", D("10")), ("NYSE", D("60"))}
    # and more than the NSE holding cannot be sold on NSE, whatever NYSE holds
    with pytest.raises(OrderRejectedError, match="insufficient position"):
        infy("nse-oversell", "NSE", OrderSide.SELL, "11")
    values = {p.exchange: p.market_value for p in broker.get_positions()}
    assert values == {"NSE": D("15000"), "NYSE": D("1080")}


def test_corporate_actions_apply_to_the_book_once(make_broker: MakeBroker, prices: Prices) -> None:
    from saras.brokers.paper import PaperCorporateAction

    broker = make_broker(fractional=False)
    broker.place_order(order("b1", quantity="15"))  # 15 AAPL at 100
    split = PaperCorporateAction("split-1", "AAPL", None, "split", ratio=D("4"))
    first = broker.apply_corporate_action(split)
    again = broker.apply_corporate_action(split)
    assert (first.quantity_after, first.applied, again.applied) == (D("60"), True, False)
    assert holdings(broker) == {"AAPL": (D("60"), D("25"))}
    cash = broker.get_account().cash

    # a 1:4 reverse split of 60 whole shares leaves 15; of 62, 15 and cash in lieu of 0.5
    broker.set_position("AAPL", D("62"))
    prices["AAPL"] = D("100")
    reverse = PaperCorporateAction("rs-1", "AAPL", None, "reverse_split", ratio=D("0.25"))
    result = broker.apply_corporate_action(reverse)
    assert (result.quantity_after, result.cash) == (D("15"), D("50"))
    assert broker.get_account().cash == cash + D("50")

    dividend = PaperCorporateAction("div-1", "AAPL", None, "dividend", cash_per_share=D("0.24"))
    assert broker.apply_corporate_action(dividend).cash == D("3.6")
    assert broker.apply_corporate_action(dividend).applied is False
    assert broker.get_account().cash == cash + D("53.6")


def test_a_legacy_book_without_exchanges_is_upgraded_in_place(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE TABLE paper_accounts (account_id VARCHAR(64) PRIMARY KEY, "
                "currency VARCHAR(8) NOT NULL, cash NUMERIC(20, 6) NOT NULL, "
                "created_at TIMESTAMP WITH TIME ZONE NOT NULL, "
                "updated_at TIMESTAMP WITH TIME ZONE NOT NULL)"
            )
        )
        conn.execute(
            sa.text(
                "CREATE TABLE paper_positions (account_id VARCHAR(64) NOT NULL "
                "REFERENCES paper_accounts (account_id), symbol VARCHAR(32) NOT NULL, "
                "quantity NUMERIC(24, 9) NOT NULL, average_price NUMERIC(20, 6), "
                "updated_at TIMESTAMP WITH TIME ZONE NOT NULL, "
                "CONSTRAINT pk_paper_positions PRIMARY KEY (account_id, symbol))"
            )
        )
        conn.execute(
            sa.text("INSERT INTO paper_accounts VALUES ('old', 'USD', 1000, :t, :t)"),
            {"t": T0},
        )
        conn.execute(
            sa.text("INSERT INTO paper_positions VALUES ('old', 'AAPL', 5, 90, :t)"), {"t": T0}
        )
    prices = VenuePrices({("AAPL", "NASDAQ"): D("100")})
    broker = PaperBroker(
        ConnectionConfig("old", "paper", True),
        BrokerCredentials(),
        engine=engine,
        price_lookup=prices,
        clock=Clock(),
    )
    assert [(p.symbol, p.exchange, p.quantity) for p in broker.get_positions()] == [
        ("AAPL", None, D("5"))
    ]
    # the first order naming the exchange claims the legacy position
    broker.place_order(OrderRequest("s1", "AAPL", OrderSide.SELL, D("2"), exchange="NASDAQ"))
    assert [(p.symbol, p.exchange, p.quantity) for p in broker.get_positions()] == [
        ("AAPL", "NASDAQ", D("3"))
    ]


def test_the_market_feed_of_corporate_actions_reaches_the_book_once(
    engine: sa.Engine, prices: Prices, clock: Clock
) -> None:
    from saras.brokers.paper import PaperCorporateAction

    feed: list[PaperCorporateAction] = []
    broker = PaperBroker(
        ConnectionConfig("acct-feed", "paper", True),
        BrokerCredentials(),
        engine=engine,
        price_lookup=prices,
        clock=clock,
        corporate_actions=lambda: list(feed),
    )
    broker.place_order(order("b1", quantity="10"))
    feed.append(PaperCorporateAction("split-aapl", "AAPL", None, "split", ratio=D("4")))
    assert holdings(broker) == {"AAPL": (D("40"), D("25"))}
    assert holdings(broker) == {"AAPL": (D("40"), D("25"))}  # once
    # a position bought after the action is not split again
    broker.place_order(order("b2", quantity="2"))
    assert holdings(broker)["AAPL"][0] == D("42")
