"""Replay Alpaca's recorded bodies (../shared/reference/wire) through the SDK and the adapter.

The fake serves each recorded body verbatim on its route, so the bytes go through alpaca-py and
the adapter's parsing exactly as Alpaca's would. Skipped when the reference folder is absent.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from saras.brokers.alpaca import AlpacaBroker, AlpacaRateLimiter
from saras.brokers.base import BrokerOrderStatus, OrderRequest
from saras.brokers.errors import (
    AmbiguousOrderError,
    FatalBrokerError,
    OrderNotFoundError,
    OrderRejectedError,
    RateLimitedError,
)
from saras.domain.enums import OrderSide, OrderType
from tests.fakes.fake_alpaca import (
    FakeAlpaca,
    FakeClock,
    Fault,
    alpaca_connection,
)
from tests.support.reference import REFERENCE_DIR

REFERENCE = REFERENCE_DIR
WIRE = REFERENCE / "wire" / "alpaca"
SPEC = REFERENCE / "wire" / "alpaca-spec" / "data" / "webapi" / "entities"
ERRORS = REFERENCE / "wire" / "errors"

pytestmark = pytest.mark.skipif(
    not (WIRE / "INDEX.json").is_file(), reason="no ../shared/reference/wire/alpaca"
)

RECORDED_ORDER_ID = "61e69015-8549-4bfd-b9c3-01e75843f47d"
RECORDED_CLIENT_ID = "eb9e2aaa-f71a-4f51-b5b4-52a6c565dad4"


def recorded(name: str) -> str:
    return (WIRE / name).read_text()


def spec_example(entity: str) -> str:
    yaml = pytest.importorskip("yaml")
    path = SPEC / f"{entity}.yaml"
    if not path.is_file():
        pytest.skip(f"no {path.name}")
    return str(yaml.safe_load(path.read_text())["example"])


def error_fixture(name: str) -> dict[str, Any]:
    path = ERRORS / name
    if not path.is_file():
        pytest.skip(f"no {name}")
    return dict(json.loads(path.read_text()))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=1704205800.0)  # a minute before the recorded 429's reset


@pytest.fixture
def fake(clock: FakeClock) -> Iterator[FakeAlpaca]:
    with FakeAlpaca(clock=clock) as server:
        yield server


@pytest.fixture
def broker(fake: FakeAlpaca, clock: FakeClock) -> AlpacaBroker:
    config, credentials = alpaca_connection(fake)
    return AlpacaBroker(
        config,
        credentials,
        sleep=clock.sleep,
        clock=clock,
        rate_limiter=AlpacaRateLimiter(100_000, clock=clock),
    )


def serve(fake: FakeAlpaca, method: str, path: str, body: str, status: int = 200) -> None:
    fake.inject(Fault.respond(status, body), method=method, path=path, times=None)


def test_index_lists_the_files_replayed_here() -> None:
    index = json.loads(recorded("INDEX.json"))
    files = {entry["file"]: entry["method"] for entry in index["fixtures"]}
    for name, method in [
        ("account_routes__get_account.json", "GET"),
        ("position_routes__get_all_positions.json", "GET"),
        ("order_routes__get_order_by_client_id.json", "GET"),
        ("order_routes__get_order_by_id.json", "GET"),
        ("order_routes__get_orders.json", "GET"),
        ("order_routes__market_order.json", "POST"),
        ("order_routes__limit_order.json", "POST"),
    ]:
        assert files[name] == method


def test_recorded_account(broker: AlpacaBroker, fake: FakeAlpaca) -> None:
    serve(fake, "GET", "/v2/account", recorded("account_routes__get_account.json"))
    account = broker.get_account()
    assert account.cash == Decimal("-23140.2")
    assert account.buying_power == Decimal("262113.632")
    assert account.currency == "USD"


def test_spec_account_example(broker: AlpacaBroker, fake: FakeAlpaca) -> None:
    serve(fake, "GET", "/v2/account", spec_example("account"))
    account = broker.get_account()
    assert (account.cash, account.buying_power) == (Decimal("4000.32"), Decimal("4000.32"))


def test_recorded_positions(broker: AlpacaBroker, fake: FakeAlpaca) -> None:
    serve(fake, "GET", "/v2/positions", recorded("position_routes__get_all_positions.json"))
    (position,) = broker.get_positions()
    assert position.symbol == "AAPL"
    assert position.quantity == Decimal("5")
    assert position.average_price == Decimal("100.0")
    assert position.market_value == Decimal("600.0")
    assert position.exchange == "NASDAQ"


def check_recorded_order(order: Any) -> None:
    assert order.broker_order_id == RECORDED_ORDER_ID
    assert order.client_order_id == RECORDED_CLIENT_ID
    assert order.symbol == "AAPL`"  # sic: the recording's symbol carries a backtick
    assert order.side is OrderSide.BUY
    assert order.quantity == Decimal("1")
    assert order.filled_quantity == Decimal("0")
    assert order.average_fill_price is None
    assert order.status is BrokerOrderStatus.PENDING  # "accepted"
    assert order.submitted_at == datetime(2021, 3, 16, 18, 38, 1, 937734, tzinfo=UTC)
    assert order.updated_at == datetime(2021, 3, 16, 18, 38, 1, 942282, tzinfo=UTC)
    assert order.fees == Decimal("1.25")
    assert order.fills == ()


def test_recorded_order_by_client_id(broker: AlpacaBroker, fake: FakeAlpaca) -> None:
    body = recorded("order_routes__get_order_by_client_id.json")
    serve(fake, "GET", "/v2/orders:by_client_order_id", body)
    order = broker.get_order_by_client_id(RECORDED_CLIENT_ID)
    check_recorded_order(order)
    (request,) = fake.requests
    assert request.query["client_order_id"] == [RECORDED_CLIENT_ID]


def test_recorded_order_by_id(broker: AlpacaBroker, fake: FakeAlpaca) -> None:
    body = recorded("order_routes__get_order_by_id.json")
    serve(fake, "GET", f"/v2/orders/{RECORDED_ORDER_ID}", body)
    check_recorded_order(broker.get_order(RECORDED_ORDER_ID))


def test_recorded_order_list(broker: AlpacaBroker, fake: FakeAlpaca) -> None:
    serve(fake, "GET", "/v2/orders", recorded("order_routes__get_orders.json"))
    (order,) = broker.list_orders(datetime(2019, 1, 1, tzinfo=UTC))
    assert order.broker_order_id == "0b11f089-722d-4ced-9beb-e2eeed3637dc"
    assert order.symbol == "SPY"
    assert order.status is BrokerOrderStatus.OPEN  # "new"
    assert order.quantity == Decimal(1)  # a JSON number here, not a string
    assert order.filled_quantity == Decimal(0)
    assert order.average_fill_price is None  # recorded as 0 with nothing filled
    assert order.submitted_at == datetime(2019, 8, 24, 14, 15, 22, tzinfo=UTC)


def test_spec_notional_order_example(broker: AlpacaBroker, fake: FakeAlpaca) -> None:
    serve(fake, "GET", f"/v2/orders/{RECORDED_ORDER_ID}", spec_example("order-v2"))
    order = broker.get_order(RECORDED_ORDER_ID)
    assert order.quantity is None  # a notional order: "qty": null, "notional": "500"
    assert order.status is BrokerOrderStatus.PENDING


def test_recorded_market_and_limit_order_answers(broker: AlpacaBroker, fake: FakeAlpaca) -> None:
    serve(fake, "POST", "/v2/orders", recorded("order_routes__market_order.json"))
    market = OrderRequest(
        client_order_id=RECORDED_CLIENT_ID, symbol="AAPL`", side=OrderSide.BUY, quantity=Decimal(1)
    )
    check_recorded_order(broker.place_order(market))
    fake.clear_faults()
    serve(fake, "POST", "/v2/orders", recorded("order_routes__limit_order.json"))
    limit = OrderRequest(
        client_order_id=RECORDED_CLIENT_ID,
        symbol="AAPL`",
        side=OrderSide.BUY,
        quantity=Decimal(1),
        order_type=OrderType.LIMIT,
        limit_price=Decimal(300),
    )
    placed = broker.place_order(limit)
    assert placed.status is BrokerOrderStatus.PENDING
    assert [r.fault for r in fake.order_posts()] == ["respond", "respond"]


def test_spec_clock_example(broker: AlpacaBroker, fake: FakeAlpaca) -> None:
    serve(fake, "GET", "/v2/clock", spec_example("clock"))
    clock = broker.get_clock()
    assert clock.is_open is True
    assert clock.next_open == datetime(2022, 4, 29, 13, 30, tzinfo=UTC)
    assert clock.next_close == datetime(2022, 4, 28, 20, 0, tzinfo=UTC)


# --------------------------------------------------------------------------- error bodies


def inject_error(fake: FakeAlpaca, name: str, method: str, path: str) -> dict[str, Any]:
    fixture = error_fixture(name)
    if "body_text" in fixture:
        body = fixture["body_text"]
        content_type = fixture.get("content_type", "text/html")
    else:
        body, content_type = json.dumps(fixture["body"]), "application/json"
    fault = Fault.respond(
        fixture["status"], body, content_type=content_type, headers=fixture.get("headers", {})
    )
    fake.inject(fault, method=method, path=path, times=None)
    return fixture


def an_order() -> OrderRequest:
    return OrderRequest(
        client_order_id="saras-reference-order",
        symbol="AAPL",
        side=OrderSide.BUY,
        quantity=Decimal(1),
    )


def test_recorded_401_is_fatal(broker: AlpacaBroker, fake: FakeAlpaca) -> None:
    inject_error(fake, "alpaca_401_unauthorized.json", "GET", "/v2/account")
    with pytest.raises(FatalBrokerError, match="HTTP 401 unauthorized"):
        broker.get_account()


def test_recorded_403_insufficient_buying_power_is_a_rejection(
    broker: AlpacaBroker, fake: FakeAlpaca
) -> None:
    inject_error(fake, "alpaca_403_insufficient_buying_power.json", "POST", "/v2/orders")
    with pytest.raises(OrderRejectedError) as info:
        broker.place_order(an_order())
    assert info.value.reason == "insufficient buying power"


def test_recorded_403_without_code_is_fatal(broker: AlpacaBroker, fake: FakeAlpaca) -> None:
    inject_error(fake, "alpaca_403_sip_not_permitted.json", "GET", "/v2/positions")
    with pytest.raises(FatalBrokerError, match="subscription does not permit"):
        broker.get_positions()


def test_recorded_404_is_not_found(broker: AlpacaBroker, fake: FakeAlpaca) -> None:
    inject_error(fake, "alpaca_404_order_not_found.json", "GET", f"/v2/orders/{RECORDED_ORDER_ID}")
    with pytest.raises(OrderNotFoundError, match="order not found"):
        broker.get_order(RECORDED_ORDER_ID)


def test_recorded_422_duplicate_looks_the_order_up(broker: AlpacaBroker, fake: FakeAlpaca) -> None:
    inject_error(fake, "alpaca_422_duplicate_client_order_id.json", "POST", "/v2/orders")
    existing = fake.seed_order("AAPL", qty=1, status="new", client_order_id="saras-reference-order")
    placed = broker.place_order(an_order())
    assert placed.broker_order_id == existing["id"]
    fake.clear_faults()
    inject_error(fake, "alpaca_422_duplicate_client_order_id.json", "POST", "/v2/orders")
    other = OrderRequest(
        client_order_id="saras-vanished", symbol="AAPL", side=OrderSide.BUY, quantity=Decimal(1)
    )
    with pytest.raises(AmbiguousOrderError, match="40010001"):
        broker.place_order(other)  # "exists" yet not found: only a later lookup can tell


def test_recorded_422_fractional_not_day_is_a_rejection(
    broker: AlpacaBroker, fake: FakeAlpaca
) -> None:
    inject_error(fake, "alpaca_422_fractional_not_day.json", "POST", "/v2/orders")
    with pytest.raises(OrderRejectedError) as info:
        broker.place_order(an_order())
    assert info.value.reason == "fractional orders must be DAY orders"


def test_recorded_429_waits_for_its_reset(
    broker: AlpacaBroker, fake: FakeAlpaca, clock: FakeClock
) -> None:
    fixture = inject_error(fake, "alpaca_429_rate_limited.json", "GET", "/v2/clock")
    reset = float(fixture["headers"]["X-RateLimit-Reset"])
    with pytest.raises(RateLimitedError) as info:
        broker.get_clock()
    assert clock.sleeps[0] == pytest.approx(reset - 1704205800.0)  # waited until the reset
    assert info.value.retry_after == 0.0  # by then the reset has passed


def test_recorded_504_html(broker: AlpacaBroker, fake: FakeAlpaca) -> None:
    inject_error(fake, "alpaca_504_gateway_timeout_html.json", "POST", "/v2/orders")
    with pytest.raises(AmbiguousOrderError, match="HTTP 504"):
        broker.place_order(an_order())
