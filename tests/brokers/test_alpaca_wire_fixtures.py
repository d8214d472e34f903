"""AlpacaBroker and AlpacaSource over our own Alpaca payloads (tests/fixtures/wire/alpaca).

The payloads are hand-written from Alpaca's documented entities (see the README there) and served
from 127.0.0.1, so they go through alpaca-py and our parsing exactly as Alpaca's answers would.
Nothing here needs ``../shared/reference``.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
import requests
from pydantic import SecretStr
from werkzeug import Request, Response

from saras.brokers.alpaca import AlpacaBroker, AlpacaRateLimiter
from saras.brokers.alpaca.data import AlpacaSource
from saras.brokers.base import BrokerCredentials, BrokerOrderStatus, ConnectionConfig, OrderRequest
from saras.brokers.errors import (
    AmbiguousOrderError,
    FatalBrokerError,
    NonRetryableBrokerError,
    OrderNotFoundError,
    OrderRejectedError,
    RateLimitedError,
    RetryableBrokerError,
    is_retryable,
)
from saras.domain.enums import OrderSide
from saras.marketdata import BarRequest
from tests.fakes.fake_alpaca import (
    FAKE_KEY_ID,
    FAKE_SECRET,
    FakeAlpaca,
    FakeClock,
)
from tests.support.wire import WireServer, wire_bytes, wire_json

KEY = "PKWIREFIXTURE0000001"
SECRET = "wire-fixture-secret-0d6c2b9e"
START = 1_709_650_000.0  # 2024-03-05 14:46:40 UTC, the day the fixtures' orders were placed
S = BrokerOrderStatus


def body(name: str) -> bytes:
    return wire_bytes("alpaca", name)


def order_id(name: str) -> str:
    return str(wire_json("alpaca", name)["id"])


@pytest.fixture
def server(wire: WireServer) -> WireServer:
    return wire


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=START)


@pytest.fixture
def broker(server: WireServer, clock: FakeClock) -> AlpacaBroker:
    config = ConnectionConfig("alpaca-wire", "alpaca", True, {"base_url": server.url})
    credentials = BrokerCredentials(api_key=SecretStr(KEY), api_secret=SecretStr(SECRET))
    return AlpacaBroker(
        config,
        credentials,
        sleep=clock.sleep,
        clock=clock,
        rate_limiter=AlpacaRateLimiter(100_000, clock=clock),
    )


def serve_order(server: WireServer, name: str) -> None:
    server.serve("GET", f"/v2/orders/{order_id(name)}", body(name))


def serve_fills(server: WireServer) -> None:
    server.serve("GET", "/v2/account/activities/FILL", body("activities_fill.json"))


# --------------------------------------------------------------------------- account, positions


def test_account_is_read_as_exact_decimals(broker: AlpacaBroker, server: WireServer) -> None:
    server.serve("GET", "/v2/account", body("account.json"))

    account = broker.get_account()

    assert account.cash == Decimal("12873.45") and isinstance(account.cash, Decimal)
    assert account.buying_power == Decimal("25746.9")
    assert account.currency == "USD"
    (request,) = server.requests("/v2/account")
    assert request.headers["APCA-API-KEY-ID"] == KEY


def test_positions_long_fractional_and_short(broker: AlpacaBroker, server: WireServer) -> None:
    server.serve("GET", "/v2/positions", body("positions.json"))

    positions = {p.symbol: p for p in broker.get_positions()}

    aapl, voo, tsla = positions["AAPL"], positions["VOO"], positions["TSLA"]
    assert (aapl.quantity, aapl.average_price, aapl.market_value, aapl.exchange) == (
        Decimal("6"),
        Decimal("170.125"),
        Decimal("1023.3"),
        "NASDAQ",
    )
    assert (voo.quantity, voo.average_price, voo.exchange) == (
        Decimal("2.5"),
        Decimal("467.3304"),
        "ARCA",
    )
    # a short position: Alpaca sends qty "-3" with side "short"; it stays negative, once
    assert (tsla.quantity, tsla.market_value) == (Decimal("-3"), Decimal("-594.7998"))


# --------------------------------------------------------------------------- orders


def test_new_order(broker: AlpacaBroker, server: WireServer) -> None:
    serve_order(server, "order_new.json")

    order = broker.get_order(order_id("order_new.json"))

    assert order.status is S.OPEN
    assert (order.symbol, order.side) == ("MSFT", OrderSide.BUY)
    assert order.client_order_id == "saras-204269b27eb84025a5348ed3f6248782"
    assert (order.quantity, order.filled_quantity, order.average_fill_price) == (
        Decimal("4"),
        Decimal("0"),
        None,
    )
    assert order.submitted_at == datetime(2024, 3, 5, 14, 30, 1, 408902, tzinfo=UTC)
    assert order.updated_at == datetime(2024, 3, 5, 14, 30, 1, 498001, tzinfo=UTC)
    assert (order.fills, order.fills_reported, order.fees) == ((), False, Decimal("0"))
    assert server.requests("/v2/account/activities/FILL") == []  # nothing filled: not asked


def test_partially_filled_order_reads_its_own_fills(
    broker: AlpacaBroker, server: WireServer
) -> None:
    serve_order(server, "order_partially_filled.json")
    serve_fills(server)

    order = broker.get_order(order_id("order_partially_filled.json"))

    assert order.status is S.PARTIALLY_FILLED
    assert (order.quantity, order.filled_quantity, order.average_fill_price) == (
        Decimal("10"),
        Decimal("6"),
        Decimal("170.125"),
    )
    # nanoseconds on the wire: cut to microseconds, still UTC
    assert order.submitted_at == datetime(2024, 3, 5, 14, 31, 2, 16403, tzinfo=UTC)
    assert order.updated_at == datetime(2024, 3, 5, 14, 31, 9, 775120, tzinfo=UTC)
    assert [(f.fill_id, f.quantity, f.price, f.filled_at) for f in order.fills] == [
        (
            "20240305093105123::281aab15-a9cf-43a8-a269-a420fee6ab7d",
            Decimal("4"),
            Decimal("170.1"),
            datetime(2024, 3, 5, 14, 31, 5, 123456, tzinfo=UTC),
        ),
        (
            "20240305093109775::7b6bc68c-b778-4aae-9882-f70b851db538",
            Decimal("2"),
            Decimal("170.175"),
            datetime(2024, 3, 5, 14, 31, 9, 775120, tzinfo=UTC),
        ),
    ]  # the page's VOO and TSLA fills belong to other orders
    assert order.fills_reported is True
    (request,) = server.requests("/v2/account/activities/FILL")
    assert request.args["direction"] == "asc" and request.args["page_size"] == "100"
    assert request.args["after"] == "2024-03-05T14:31:01.016403+00:00"


def test_filled_fractional_order(broker: AlpacaBroker, server: WireServer) -> None:
    serve_order(server, "order_filled.json")
    serve_fills(server)

    order = broker.get_order(order_id("order_filled.json"))

    assert order.status is S.FILLED and order.is_terminal
    assert (order.quantity, order.filled_quantity) == (Decimal("2.5"), Decimal("2.5"))
    assert order.average_fill_price == Decimal("467.3304")
    quantities = [f.quantity for f in order.fills]
    assert quantities == [Decimal("1.5"), Decimal("1")]
    notional = sum((f.quantity * f.price for f in order.fills), Decimal(0))
    assert notional / sum(quantities, Decimal(0)) == order.average_fill_price  # exact


def test_canceled_after_a_partial_fill(broker: AlpacaBroker, server: WireServer) -> None:
    serve_order(server, "order_canceled.json")
    serve_fills(server)

    order = broker.get_order(order_id("order_canceled.json"))

    assert order.status is S.CANCELLED and order.is_terminal
    assert (order.side, order.quantity, order.filled_quantity) == (
        OrderSide.SELL,
        Decimal("3"),
        Decimal("1"),
    )
    (fill,) = order.fills
    assert (fill.quantity, fill.price) == (Decimal("1"), Decimal("198.2"))
    assert order.updated_at == datetime(2024, 3, 5, 20, 0, 0, 129043, tzinfo=UTC)


def test_rejected_order(broker: AlpacaBroker, server: WireServer) -> None:
    serve_order(server, "order_rejected.json")

    order = broker.get_order(order_id("order_rejected.json"))

    assert order.status is S.REJECTED and order.is_terminal
    assert order.reason == "rejected by Alpaca (no reason given)"
    assert (order.filled_quantity, order.average_fill_price) == (Decimal("0"), None)


def test_order_by_client_id(broker: AlpacaBroker, server: WireServer) -> None:
    raw = wire_json("alpaca", "order_by_client_id.json")
    server.serve("GET", "/v2/orders:by_client_order_id", body("order_by_client_id.json"))

    order = broker.get_order_by_client_id(raw["client_order_id"])

    assert order is not None
    assert (order.broker_order_id, order.client_order_id) == (raw["id"], raw["client_order_id"])
    assert order.status is S.PENDING  # "accepted"
    assert order.quantity is None  # a notional order: "qty": null
    (request,) = server.requests()
    assert request.args["client_order_id"] == raw["client_order_id"]


def test_order_list_is_sorted_by_submission(broker: AlpacaBroker, server: WireServer) -> None:
    names = [
        "order_rejected.json",
        "order_filled.json",
        "order_canceled.json",
        "order_new.json",
        "order_partially_filled.json",
    ]
    page = json.dumps([wire_json("alpaca", name) for name in names])
    server.serve("GET", "/v2/orders", page)

    orders = broker.list_orders(datetime(2024, 3, 5, 14, tzinfo=UTC))

    assert [(o.symbol, o.status) for o in orders] == [
        ("MSFT", S.OPEN),
        ("AAPL", S.PARTIALLY_FILLED),
        ("VOO", S.FILLED),
        ("TSLA", S.CANCELLED),
        ("NVDA", S.REJECTED),
    ]
    (request,) = server.requests("/v2/orders")
    assert request.args["status"] == "all" and request.args["direction"] == "asc"
    assert request.args["limit"] == "500"
    assert request.args["after"].startswith("2024-03-05T14:00:00")


# --------------------------------------------------------------------------- assets, bars


def test_assets(broker: AlpacaBroker, server: WireServer) -> None:
    server.serve("GET", "/v2/assets", body("assets.json"))

    assets = {a.symbol: a for a in broker.list_assets()}

    assert set(assets) == {"AAPL", "BRK.A", "VOO", "ZZWIRE"}
    assert assets["AAPL"].metadata == {
        "fractionable": True,
        "alpaca_asset_id": "128419b9-cc1e-4f57-904f-f5b4f7fa9a1c",
    }
    assert assets["BRK.A"].metadata["fractionable"] is False
    assert (assets["BRK.A"].exchange, assets["BRK.A"].currency) == ("NYSE", "USD")
    assert assets["ZZWIRE"].tradable is False
    assert [a.symbol for a in broker.list_assets("nasdaq")] == ["AAPL"]
    request = server.requests("/v2/assets")[0]
    assert request.args["status"] == "active" and request.args["asset_class"] == "us_equity"


def test_bars_follow_next_page_token_and_map_to_new_york_dates(server: WireServer) -> None:
    token = wire_json("alpaca", "bars_page_1.json")["next_page_token"]

    def pages(request: Request) -> Response:
        name = "bars_page_2.json" if request.args.get("page_token") else "bars_page_1.json"
        return Response(body(name), content_type="application/json")

    server.serve_with("GET", "/v2/stocks/bars", pages)
    source = AlpacaSource(
        {
            "api_key": KEY,
            "api_secret": SECRET,
            "data_url": server.url,
            "corporate_actions": False,
        },
        sleep=lambda _: None,
    )
    first, last = date(2024, 3, 6), date(2024, 3, 11)

    result = source.fetch_daily_bars(
        [BarRequest("AAPL", "NASDAQ", first, last), BarRequest("MSFT", "NASDAQ", first, last)]
    )

    assert result.failures == {}
    aapl = result.bars[result.bars["symbol"] == "AAPL"]
    # 2024-03-11 is stamped 04:00Z (New York on summer time since the 10th): still the 11th
    assert aapl["price_date"].tolist() == [date(2024, 3, d) for d in (6, 7, 8, 11)]
    assert aapl["close"].tolist() == [169.12, 169.0, 170.73, 172.75]
    msft = result.bars[result.bars["symbol"] == "MSFT"]
    assert msft["price_date"].tolist() == [date(2024, 3, 8), date(2024, 3, 11)]
    assert msft["volume"].tolist() == [304478.0, 261935.0]
    first_request, second_request = server.requests("/v2/stocks/bars")
    assert first_request.args["symbols"] == "AAPL,MSFT"
    assert "page_token" not in first_request.args
    assert second_request.args["page_token"] == token


def test_the_fake_answers_with_every_documented_field() -> None:
    """FakeAlpaca's payloads carry at least the fields of our hand-written fixtures."""
    with FakeAlpaca(cash=Decimal("5000")) as fake:
        fake.add_asset("AAPL", price=Decimal("170.55"))
        session = requests.Session()
        session.trust_env = False  # the fake is on 127.0.0.1: never through a proxy
        session.headers.update({"APCA-API-KEY-ID": FAKE_KEY_ID, "APCA-API-SECRET-KEY": FAKE_SECRET})

        def get(path: str) -> Any:
            answer = session.get(fake.url + path, timeout=5)
            answer.raise_for_status()
            return answer.json()

        posted = session.post(
            fake.url + "/v2/orders",
            json={
                "symbol": "AAPL",
                "qty": "2",
                "side": "buy",
                "type": "market",
                "time_in_force": "day",
                "client_order_id": "saras-wire-fake-0001",
            },
            timeout=5,
        )
        posted.raise_for_status()
        order = posted.json()
        for name in ("order_new.json", "order_filled.json", "order_by_client_id.json"):
            assert set(wire_json("alpaca", name)) <= set(order), name
        assert set(wire_json("alpaca", "account.json")) <= set(get("/v2/account"))
        assert set(wire_json("alpaca", "positions.json")[0]) <= set(get("/v2/positions")[0])
        activity = get("/v2/account/activities/FILL")[0]
        assert set(wire_json("alpaca", "activities_fill.json")[0]) <= set(activity)
        assert set(wire_json("alpaca", "assets.json")[0]) <= set(get("/v2/assets")[0])


# --------------------------------------------------------------------------- error bodies


def an_order(client_order_id: str = "saras-wire-error-0001") -> OrderRequest:
    return OrderRequest(client_order_id, "AAPL", OrderSide.BUY, quantity=Decimal("2"))


def test_422_duplicate_client_order_id_returns_the_existing_order(
    broker: AlpacaBroker, server: WireServer
) -> None:
    raw = wire_json("alpaca", "order_by_client_id.json")
    server.serve("POST", "/v2/orders", body("error_422_duplicate_client_order_id.json"), status=422)
    server.serve("GET", "/v2/orders:by_client_order_id", body("order_by_client_id.json"))
    request = OrderRequest(
        raw["client_order_id"], "AAPL", OrderSide.BUY, notional=Decimal("250"), fractionable=True
    )

    placed = broker.place_order(request)

    assert placed.broker_order_id == raw["id"] and placed.status is S.PENDING
    assert len(server.requests("/v2/orders")) == 1  # looked up, never sent again


def test_422_duplicate_that_cannot_be_found_is_ambiguous(
    broker: AlpacaBroker, server: WireServer
) -> None:
    server.serve("POST", "/v2/orders", body("error_422_duplicate_client_order_id.json"), status=422)
    server.serve(
        "GET", "/v2/orders:by_client_order_id", body("error_404_order_not_found.json"), status=404
    )

    with pytest.raises(AmbiguousOrderError, match="40010001") as info:
        broker.place_order(an_order())

    assert info.value.client_order_id == "saras-wire-error-0001"
    assert is_retryable(info.value)
    assert len(server.requests("/v2/orders")) == 1


def test_404_is_order_not_found(broker: AlpacaBroker, server: WireServer) -> None:
    server.serve(
        "GET",
        f"/v2/orders/{order_id('order_new.json')}",
        body("error_404_order_not_found.json"),
        status=404,
    )

    with pytest.raises(OrderNotFoundError, match="order not found"):
        broker.get_order(order_id("order_new.json"))


def test_429_is_rate_limited_and_waits_for_the_reset(
    broker: AlpacaBroker, server: WireServer, clock: FakeClock
) -> None:
    reset = int(START) + 30
    headers = {
        "X-RateLimit-Limit": "200",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": str(reset),
    }
    server.serve(
        "GET", "/v2/account", body("error_429_rate_limited.json"), status=429, headers=headers
    )

    with pytest.raises(RateLimitedError, match="rate limit exceeded") as info:
        broker.get_account()

    assert isinstance(info.value, RetryableBrokerError) and info.value.status_code == 429
    assert len(server.requests("/v2/account")) == 3  # the adapter's own bounded retries
    assert clock.sleeps and clock.sleeps[0] == pytest.approx(30.0)  # until X-RateLimit-Reset


def test_429_on_an_order_is_rate_limited_not_ambiguous(
    broker: AlpacaBroker, server: WireServer
) -> None:
    server.serve("POST", "/v2/orders", body("error_429_rate_limited.json"), status=429)

    with pytest.raises(RateLimitedError) as info:
        broker.place_order(an_order())

    assert not isinstance(info.value, AmbiguousOrderError)  # a 429 proves nothing was placed
    assert server.requests("/v2/orders:by_client_order_id") == []


def test_403_forbidden_is_fatal(broker: AlpacaBroker, server: WireServer) -> None:
    server.serve("GET", "/v2/positions", body("error_403_forbidden.json"), status=403)

    with pytest.raises(FatalBrokerError, match="HTTP 403 forbidden") as info:
        broker.get_positions()

    assert not is_retryable(info.value) and info.value.status_code == 403
    assert len(server.requests()) == 1  # never retried


def test_403_insufficient_buying_power_rejects_the_order(
    broker: AlpacaBroker, server: WireServer
) -> None:
    server.serve("POST", "/v2/orders", body("error_403_insufficient_buying_power.json"), status=403)

    with pytest.raises(OrderRejectedError) as info:
        broker.place_order(an_order())

    assert isinstance(info.value, NonRetryableBrokerError) and not is_retryable(info.value)
    assert info.value.reason == "insufficient buying power"
    assert len(server.requests()) == 1
