"""``PaperBroker.place_orders``: a batch placed in one transaction books exactly what placing the
same orders one by one books (fills, fees, cash, positions, rejections), and places nothing twice.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from saras.brokers.base import BrokerOrder, OrderRequest
from saras.brokers.errors import OrderRejectedError
from saras.domain.enums import OrderSide, OrderType
from tests.brokers import test_paper
from tests.brokers.test_paper import MakeBroker

# the fixtures of test_paper, used here as they are
databases, engine, prices, clock = (
    test_paper.databases,
    test_paper.engine,
    test_paper.prices,
    test_paper.clock,
)
make_broker = test_paper.make_broker

D = Decimal


def _requests(tag: str) -> list[OrderRequest]:
    def req(i: int, symbol: str, side: OrderSide, quantity: str) -> OrderRequest:
        return OrderRequest(
            client_order_id=f"{tag}-{i}",
            symbol=symbol,
            side=side,
            quantity=D(quantity),
            order_type=OrderType.MARKET,
            exchange="NYSE",
        )

    return [
        req(0, "MSFT", OrderSide.SELL, "1.5"),  # held 2: fills
        req(1, "AAPL", OrderSide.BUY, "3.25"),  # fills
        req(2, "ZZZZ", OrderSide.BUY, "1"),  # no price: rejected
        req(3, "IBM", OrderSide.BUY, "100"),  # more than the cash left: rejected
        req(4, "GOOG", OrderSide.SELL, "1"),  # not held: rejected
        req(5, "NVDA", OrderSide.BUY, "2"),  # fills with what is left
    ]


def _outcome(result: BrokerOrder | Exception) -> tuple[object, ...]:
    if isinstance(result, Exception):
        return ("rejected", type(result).__name__, getattr(result, "reason", None))
    fills = tuple((f.quantity, f.price, f.fees) for f in result.fills)
    return (
        result.status.value,
        result.filled_quantity,
        result.average_fill_price,
        result.fees,
        result.reason,
        fills,
    )


def _book(broker: object) -> tuple[object, ...]:
    account = broker.get_account()  # type: ignore[attr-defined]
    positions = broker.get_positions()  # type: ignore[attr-defined]
    return account.cash, [(p.symbol, p.exchange, p.quantity, p.average_price) for p in positions]


@pytest.mark.parametrize("fill_mode", ["immediate", "delayed"])
def test_a_batch_books_what_one_by_one_books(
    make_broker: MakeBroker,
    prices: dict[str, Decimal],
    fill_mode: str,
) -> None:
    prices.update({"IBM": D("170.25"), "NVDA": D("95.5"), "GOOG": D("140")})
    settings = {
        "starting_cash": D("2000"),
        "fee_bps": D("12"),
        "min_fee": D("1"),
        "slippage_bps": D("7"),
        "fill_mode": fill_mode,
    }
    one, batch = make_broker("acct-one", **settings), make_broker("acct-batch", **settings)
    for broker in (one, batch):
        broker.set_position("MSFT", D("2"), D("250"), exchange="NYSE")

    singles: list[BrokerOrder | Exception] = []
    for request in _requests("one"):
        try:
            singles.append(one.place_order(request))
        except OrderRejectedError as exc:
            singles.append(exc)
    batched = batch.place_orders(_requests("batch"))

    assert [_outcome(r) for r in batched] == [_outcome(r) for r in singles]
    kinds = [_outcome(r)[0] for r in batched]
    if fill_mode == "immediate":
        assert kinds == ["filled", "filled", "rejected", "rejected", "rejected", "filled"]
    assert _book(batch) == _book(one)


def test_a_batch_sent_again_places_nothing_twice(make_broker: MakeBroker) -> None:
    broker = make_broker("acct-again", starting_cash=D("2000"))
    requests = _requests("again")[1:3]  # one fill, one rejection
    first = broker.place_orders(requests)
    assert isinstance(first[0], BrokerOrder) and isinstance(first[1], OrderRejectedError)
    cash = broker.get_account().cash

    again = broker.place_orders(requests)
    # as place_order: the orders already in the book come back, the rejection as an order
    assert [type(r).__name__ for r in again] == ["BrokerOrder", "BrokerOrder"]
    assert again[0] == first[0]
    assert broker.get_account().cash == cash
    assert len(broker.list_orders(since=first[0].submitted_at)) == 2  # type: ignore[union-attr]


def test_a_batch_is_priced_in_one_call_when_the_lookup_can(engine: object) -> None:
    from saras.brokers.base import BrokerCredentials, ConnectionConfig
    from saras.brokers.paper import PaperBroker

    asked: list[set[tuple[str, str | None]]] = []

    def lookup(symbol: str, exchange: str | None = None) -> Decimal | None:
        raise AssertionError("a batch is priced through many(), not one symbol at a time")

    def many(pairs: set[tuple[str, str | None]]) -> dict[tuple[str, str | None], Decimal]:
        asked.append(set(pairs))
        return {p: D("10") if p[0] == "AAPL" else D("-1") for p in pairs}

    lookup.many = many  # type: ignore[attr-defined]
    broker = PaperBroker(
        ConnectionConfig(connection_id="acct-many", broker_type="paper", paper_trading=True),
        BrokerCredentials(),
        engine=engine,  # type: ignore[arg-type]
        price_lookup=lookup,
    )
    filled, rejected = broker.place_orders(_requests("many")[1:3])
    assert asked == [{("AAPL", "NYSE"), ("ZZZZ", "NYSE")}]
    assert isinstance(filled, BrokerOrder) and filled.average_fill_price == D("10")
    assert isinstance(rejected, OrderRejectedError)  # a price <= 0 is no price
    assert "no price" in str(rejected.reason)
