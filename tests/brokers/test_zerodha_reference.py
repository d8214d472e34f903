"""ZerodhaBroker against recorded Kite payloads (``<repo>/../shared/reference``), when present.

The recordings are served as canned responses by the fake Kite server, so they travel through the
real SDK exactly as Kite's answers would. Skipped cleanly where the reference tree is absent.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from pydantic import SecretStr

from saras.brokers.base import BrokerCredentials, BrokerOrderStatus, ConnectionConfig, OrderRequest
from saras.brokers.errors import (
    AmbiguousOrderError,
    FatalBrokerError,
    NonRetryableBrokerError,
    OrderRejectedError,
    RateLimitedError,
    RetryableBrokerError,
)
from saras.brokers.zerodha import KiteRateLimiter, ZerodhaBroker, map_kite_status
from saras.domain.enums import OrderSide
from tests.fakes.fake_kite import FakeKite, at_ist, ist_datetime
from tests.support.reference import REFERENCE_DIR

REFERENCE = REFERENCE_DIR
KITE = REFERENCE / "wire" / "kite"
ERRORS = REFERENCE / "wire" / "errors"

pytestmark = pytest.mark.skipif(
    not (KITE / "ROUTES.json").is_file(), reason="no shared/reference/wire/kite here"
)


def load(name: str) -> Any:
    return json.loads((KITE / name).read_text())


def route(name: str) -> dict[str, str]:
    routes = {r["route"]: r for r in load("ROUTES.json")["routes"]}
    return routes[name]


def serve(fake: FakeKite, name: str, **url_args: str) -> None:
    """Answer a Kite route with its recorded file, as ROUTES.json maps it."""
    r = route(name)
    fake.set_canned(
        r["method"],
        r["path"].format(**url_args),
        (KITE / r["file"]).read_bytes(),
        content_type=r["content_type"],
    )


@pytest.fixture
def fake() -> Iterator[FakeKite]:
    with FakeKite(prices={"INFY": "1500"}) as server:
        yield server


@pytest.fixture
def broker(fake: FakeKite) -> ZerodhaBroker:
    config = ConnectionConfig("conn-ref", "zerodha", False, fake.connection_metadata())
    creds = BrokerCredentials(
        api_key=SecretStr(fake.api_key), access_token=SecretStr(fake.access_token)
    )
    return ZerodhaBroker(
        config,
        creds,
        timeout=0.5,
        clock=lambda: at_ist(2026, 11, 25, 11, 0),
        sleep=lambda _: None,
        rate_limiter=KiteRateLimiter.create(),
    )


def test_recorded_order_book_maps(fake: FakeKite, broker: ZerodhaBroker) -> None:
    serve(fake, "orders")
    serve(fake, "trades")

    orders = {o.broker_order_id: o for o in broker.list_orders(datetime(2000, 1, 1, tzinfo=UTC))}

    assert len(orders) == len(load("orders.json")["data"])
    cancelled = orders["100000000000000"]
    assert cancelled.status is BrokerOrderStatus.CANCELLED
    assert cancelled.client_order_id is None
    assert cancelled.submitted_at == ist_datetime("2021-05-31 09:18:57")
    assert cancelled.updated_at == ist_datetime("2021-05-31 09:18:58")
    assert cancelled.average_fill_price is None

    bought = orders["300000000000000"]
    assert (bought.status, bought.side, bought.symbol) == (
        BrokerOrderStatus.FILLED,
        OrderSide.BUY,
        "IOC",
    )
    assert bought.average_fill_price == Decimal("109.4")
    assert bought.submitted_at == datetime(2021, 5, 31, 9, 50, 28, tzinfo=UTC)

    sold = orders["500000000000000"]
    assert sold.side is OrderSide.SELL
    (fill,) = sold.fills  # trades.json carries one trade for this order id
    assert (fill.fill_id, fill.quantity, fill.price) == ("40000000", 1, Decimal("72.755"))
    assert fill.filled_at == ist_datetime("2021-05-31 11:18:27")

    rejected = orders["220524001859672"]
    assert rejected.status is BrokerOrderStatus.REJECTED
    assert rejected.reason is not None and rejected.reason.startswith("Insufficient funds")
    assert rejected.client_order_id == "icebergord"

    assert orders["700000000000000"].client_order_id == "connect test order1"
    assert orders["1953367517686685697"].quantity == Decimal("150")

    recent = broker.list_orders(datetime(2025, 1, 1, tzinfo=UTC))
    assert {o.broker_order_id for o in recent} == {
        "250117800776785",
        "1953341975595868160",
        "1953367517686685697",
    }


def test_recorded_order_history_maps(fake: FakeKite, broker: ZerodhaBroker) -> None:
    serve(fake, "order.info", order_id="171229000724687")

    order = broker.get_order("171229000724687")

    assert order.status is BrokerOrderStatus.OPEN
    assert (order.symbol, order.quantity, order.filled_quantity) == ("SBIN", 1, 0)
    assert order.submitted_at == ist_datetime("2017-12-29 11:08:16")
    assert order.updated_at == ist_datetime("2017-12-29 11:08:16")
    for step in load("order_info.json")["data"]:  # every intermediate status is known
        map_kite_status(step["status"], Decimal(step["filled_quantity"]))


def test_recorded_order_trades_become_fills(fake: FakeKite, broker: ZerodhaBroker) -> None:
    complete = next(o for o in load("orders.json")["data"] if o["order_id"] == "300000000000000")
    fake.set_canned("GET", "/orders/300000000000000", {"status": "success", "data": [complete]})
    serve(fake, "order.trades", order_id="300000000000000")

    order = broker.get_order("300000000000000")

    (fill,) = order.fills
    assert (fill.fill_id, fill.quantity, fill.price, fill.fees) == ("10000000", 1, 4852, 0)
    assert fill.filled_at == datetime(2021, 5, 31, 10, 30, 36, tzinfo=UTC)


def test_recorded_holdings_and_positions_map(fake: FakeKite, broker: ZerodhaBroker) -> None:
    serve(fake, "portfolio.holdings")
    serve(fake, "portfolio.positions")

    positions = {p.symbol: p for p in broker.get_positions()}

    # positions.json holds only NRML and CO products: nothing CNC to add
    assert set(positions) == {"AARON", "SBIN"}
    aaron, sbin = positions["AARON"], positions["SBIN"]
    assert (aaron.quantity, aaron.average_price, aaron.market_value, aaron.exchange) == (
        1,
        Decimal("161"),
        Decimal("352.95"),
        "NSE",
    )
    assert (sbin.quantity, sbin.average_price, sbin.market_value, sbin.exchange) == (
        16,
        Decimal("801.78125"),
        Decimal("12199.20"),
        "BSE",
    )


def test_recorded_margins_map(fake: FakeKite, broker: ZerodhaBroker) -> None:
    serve(fake, "user.margins")

    account = broker.get_account()

    assert account.cash == Decimal("99725.05")
    assert account.buying_power == Decimal("99725.05")
    assert account.currency == "INR"


PLACEMENT_ERRORS = [
    ("kite_400_input_tag.json", OrderRejectedError, 0),
    ("kite_400_margin_exception.json", OrderRejectedError, 1),
    ("kite_400_market_protection_required.json", OrderRejectedError, 0),
    ("kite_400_order_enter_valid_price.json", OrderRejectedError, 0),
    ("kite_403_token_expired.json", FatalBrokerError, 0),
    ("kite_429_too_many_requests.json", RateLimitedError, 0),
    ("kite_502_html_gateway.json", AmbiguousOrderError, 3),
    ("kite_503_oms_unreachable.json", AmbiguousOrderError, 3),
]
READ_ERRORS = {
    OrderRejectedError: NonRetryableBrokerError,
    FatalBrokerError: FatalBrokerError,
    RateLimitedError: RateLimitedError,
    AmbiguousOrderError: RetryableBrokerError,
}


def serve_error(fake: FakeKite, method: str, path: str, name: str) -> None:
    spec = json.loads((ERRORS / name).read_text())
    body = spec["body_text"] if "body_text" in spec else json.dumps(spec["body"])
    content_type = spec.get("content_type", "application/json")
    fake.set_canned(method, path, body, status=spec["status"], content_type=content_type)


@pytest.mark.parametrize(("name", "expected", "lookups"), PLACEMENT_ERRORS)
def test_recorded_error_bodies_classify(
    fake: FakeKite, broker: ZerodhaBroker, name: str, expected: type[Exception], lookups: int
) -> None:
    serve_error(fake, "POST", "/orders/regular", name)

    with pytest.raises(expected) as info:
        broker.place_order(OrderRequest("saras-x", "INFY", OrderSide.BUY, quantity=Decimal(1)))

    assert type(info.value) is expected
    assert [r.path for r in fake.requests].count("/orders") == lookups


@pytest.mark.parametrize(("name", "expected", "lookups"), PLACEMENT_ERRORS)
def test_recorded_error_bodies_on_reads(
    fake: FakeKite, broker: ZerodhaBroker, name: str, expected: type[Exception], lookups: int
) -> None:
    serve_error(fake, "GET", "/user/margins", name)

    with pytest.raises(READ_ERRORS[expected]) as info:
        broker.get_account()

    if READ_ERRORS[expected] is RetryableBrokerError:
        assert not isinstance(info.value, RateLimitedError | AmbiguousOrderError)


def test_fake_payloads_carry_every_recorded_field(fake: FakeKite) -> None:
    """The fake's own answers have at least the fields real Kite answers have."""
    fake.add_holding("TCS", 2, "3000")
    from kiteconnect import KiteConnect

    kite = KiteConnect(fake.api_key, access_token=fake.access_token, root=fake.url)
    kite.place_order(
        variety="regular", exchange="NSE", tradingsymbol="INFY", transaction_type="BUY",
        quantity=1, product="CNC", order_type="MARKET", market_protection=-1, tag="abc",
    )  # fmt: skip

    recorded_order = next(
        o for o in load("orders.json")["data"] if o["order_id"] == "1953341975595868160"
    )
    assert set(recorded_order) <= set(fake.orders()[0])
    assert set(load("trades.json")["data"][0]) <= set(kite.trades()[0])
    assert set(load("holdings.json")["data"][0]) <= set(fake.holdings()[0])
    recorded_positions = load("positions.json")["data"]
    assert set(recorded_positions["net"][0]) <= set(fake.positions()["net"][0])
    recorded_margins = load("margins.json")["data"]["equity"]
    ours = kite.margins()["equity"]
    assert set(recorded_margins) <= set(ours)
    assert set(recorded_margins["available"]) <= set(ours["available"])
    assert set(recorded_margins["utilised"]) <= set(ours["utilised"])
    assert set(load("order_response.json")["data"]) <= {"order_id"}

    recorded_header = next(csv.reader(io.StringIO((KITE / "instruments_nse.csv").read_text())))
    assert list(kite.instruments("NSE")[0]) == recorded_header
