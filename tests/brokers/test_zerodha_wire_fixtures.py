"""ZerodhaBroker and KiteSource over the project's own Kite payloads (tests/fixtures/wire/kite).

The payloads are hand-written from the Kite Connect v3 documentation (see the README there) and
served from 127.0.0.1, so they go through kiteconnect and our parsing exactly as Kite's answers
would. Nothing here needs ``../shared/reference``.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from kiteconnect import KiteConnect
from pydantic import SecretStr

from saras.brokers.base import BrokerCredentials, BrokerOrderStatus, ConnectionConfig, OrderRequest
from saras.brokers.errors import (
    AmbiguousOrderError,
    FatalBrokerError,
    NonRetryableBrokerError,
    OrderRejectedError,
    RateLimitedError,
    RetryableBrokerError,
    is_retryable,
)
from saras.brokers.ids import kite_tag
from saras.brokers.zerodha import KiteRateLimiter, ZerodhaBroker
from saras.brokers.zerodha.data import KiteSource
from saras.brokers.zerodha.parsing import _decimal, _kite_time
from saras.domain.enums import OrderSide
from saras.marketdata import BarRequest
from tests.fakes.fake_kite import FakeKite
from tests.support.wire import WireServer, wire_bytes, wire_json

API_KEY = "wirefixtureapikey01"
ACCESS_TOKEN = "wirefixtureaccesstoken0000000001"
NOW = datetime(2025, 11, 25, 5, 30, tzinfo=UTC)  # 11:00 IST on a trading Tuesday
INFY_ORDER = "251125000418772"
INFY_CLIENT_ID = "saras-wire-kite-0001"  # kite_tag: SC33XRVESSK5IRM6XSTY, as in orders.json
S = BrokerOrderStatus


def body(name: str) -> bytes:
    return wire_bytes("kite", name)


def data(name: str) -> Any:
    return wire_json("kite", name)["data"]


def utc(year: int, month: int, day: int, hour: int, minute: int, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


@pytest.fixture
def server(wire: WireServer) -> WireServer:
    return wire


@pytest.fixture
def fatal_messages() -> list[str]:
    return []


@pytest.fixture
def broker(server: WireServer, fatal_messages: list[str]) -> ZerodhaBroker:
    config = ConnectionConfig("kite-wire", "zerodha", False, {"root": server.url})
    credentials = BrokerCredentials(
        api_key=SecretStr(API_KEY), access_token=SecretStr(ACCESS_TOKEN)
    )
    return ZerodhaBroker(
        config,
        credentials,
        timeout=2.0,
        clock=lambda: NOW,
        sleep=lambda _: None,
        on_fatal=fatal_messages.append,
        rate_limiter=KiteRateLimiter.create(sleep=lambda _: None),
    )


def serve_history(server: WireServer, history: list[dict[str, Any]]) -> None:
    payload = json.dumps({"status": "success", "data": history})
    server.serve("GET", f"/orders/{INFY_ORDER}", payload)


# --------------------------------------------------------------------------- orders


def test_order_book_maps_statuses_prices_and_times(
    broker: ZerodhaBroker, server: WireServer
) -> None:
    server.serve("GET", "/orders", body("orders.json"))
    server.serve("GET", "/trades", body("trades.json"))

    orders = {o.symbol: o for o in broker.list_orders(utc(2025, 11, 25, 3, 30))}

    assert {s: o.status for s, o in orders.items()} == {
        "INFY": S.FILLED,
        "TCS": S.OPEN,
        "HDFCBANK": S.REJECTED,
        "SBIN": S.CANCELLED,
        "ITC": S.PENDING,  # AMO REQ RECEIVED
    }
    infy = orders["INFY"]
    assert infy.client_order_id == kite_tag(INFY_CLIENT_ID)  # the tag: all the book knows
    assert (infy.quantity, infy.filled_quantity, infy.average_fill_price) == (
        Decimal("5"),
        Decimal("5"),
        Decimal("1530.44"),
    )
    assert infy.submitted_at == utc(2025, 11, 25, 3, 50, 14)  # 09:20:14 IST
    assert infy.updated_at == utc(2025, 11, 25, 3, 50, 16)  # exchange_update_timestamp
    assert [(f.fill_id, f.quantity, f.price, f.filled_at) for f in infy.fills] == [
        ("50918871", Decimal("3"), Decimal("1530.4"), utc(2025, 11, 25, 3, 50, 15)),
        ("50918874", Decimal("2"), Decimal("1530.5"), utc(2025, 11, 25, 3, 50, 16)),
    ]
    tcs = orders["TCS"]
    assert (tcs.side, tcs.quantity, tcs.average_fill_price) == (OrderSide.SELL, Decimal(2), None)
    rejected = orders["HDFCBANK"]
    assert rejected.reason is not None and rejected.reason.startswith("RMS:Margin Exceeds")
    assert rejected.updated_at == rejected.submitted_at  # no exchange time: never reached it
    sbin = orders["SBIN"]
    assert (sbin.filled_quantity, sbin.average_fill_price) == (Decimal("8"), Decimal("781.3"))
    assert [(f.quantity, f.price) for f in sbin.fills] == [(Decimal("8"), Decimal("781.3"))]
    assert orders["ITC"].fills == () and orders["ITC"].submitted_at == utc(2025, 11, 25, 10, 35)

    later = broker.list_orders(utc(2025, 11, 25, 4, 0))  # 09:30 IST: INFY was placed before
    assert {o.symbol for o in later} == {"TCS", "HDFCBANK", "SBIN", "ITC"}


def test_order_history_and_its_trades(broker: ZerodhaBroker, server: WireServer) -> None:
    server.serve("GET", f"/orders/{INFY_ORDER}", body("order_history.json"))
    server.serve("GET", f"/orders/{INFY_ORDER}/trades", body("order_trades.json"))

    order = broker.get_order(INFY_ORDER)

    assert (order.status, order.symbol, order.side) == (S.FILLED, "INFY", OrderSide.BUY)
    assert order.average_fill_price == Decimal("1530.44")
    assert order.submitted_at == utc(2025, 11, 25, 3, 50, 14)
    assert order.updated_at == utc(2025, 11, 25, 3, 50, 16)
    assert [(f.quantity, f.price, f.fees) for f in order.fills] == [
        (Decimal("3"), Decimal("1530.4"), Decimal("0")),
        (Decimal("2"), Decimal("1530.5"), Decimal("0")),
    ]
    total = sum((f.quantity * f.price for f in order.fills), Decimal(0))
    assert total / order.filled_quantity == order.average_fill_price  # exact, no float drift
    assert order.fills_reported is True


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        (1, S.PENDING),  # PUT ORDER REQ RECEIVED
        (2, S.PENDING),  # VALIDATION PENDING
        (3, S.PENDING),  # OPEN PENDING
        (4, S.OPEN),
        (5, S.PARTIALLY_FILLED),  # OPEN with 3 of 5 filled
        (6, S.FILLED),  # COMPLETE
    ],
)
def test_each_step_of_the_history_maps(
    broker: ZerodhaBroker, server: WireServer, steps: int, expected: BrokerOrderStatus
) -> None:
    serve_history(server, data("order_history.json")[:steps])
    server.serve("GET", f"/orders/{INFY_ORDER}/trades", body("order_trades.json"))

    order = broker.get_order(INFY_ORDER)

    assert order.status is expected
    filled = data("order_history.json")[steps - 1]["filled_quantity"]
    assert order.filled_quantity == Decimal(filled)
    assert bool(order.fills) == (filled > 0)  # trades are read only once something filled


def test_order_by_client_id_matches_the_tag(broker: ZerodhaBroker, server: WireServer) -> None:
    server.serve("GET", "/orders", body("orders.json"))
    server.serve("GET", f"/orders/{INFY_ORDER}/trades", body("order_trades.json"))

    order = broker.get_order_by_client_id(INFY_CLIENT_ID)

    assert order is not None
    assert (order.broker_order_id, order.client_order_id) == (INFY_ORDER, INFY_CLIENT_ID)
    assert len(order.fills) == 2
    assert broker.get_order_by_client_id("saras-wire-kite-0404") is None


def test_placement_answer_carries_the_order_id(server: WireServer) -> None:
    server.serve("POST", "/orders/regular", body("order_place.json"))
    config = ConnectionConfig("kite-wire", "zerodha", False, {"root": server.url})
    credentials = BrokerCredentials(
        api_key=SecretStr(API_KEY), access_token=SecretStr(ACCESS_TOKEN)
    )
    broker = ZerodhaBroker(config, credentials, clock=lambda: NOW, confirm_placement=False)

    placed = broker.place_order(
        OrderRequest("saras-wire-kite-0002", "ITC", OrderSide.BUY, quantity=Decimal(7))
    )

    assert placed.broker_order_id == "251125000611904" and placed.status is S.PENDING
    (request,) = server.requests("/orders/regular")
    assert request.form["tag"] == kite_tag("saras-wire-kite-0002")
    assert (request.form["product"], request.form["market_protection"]) == ("CNC", "-1")
    assert request.headers["Authorization"] == f"token {API_KEY}:{ACCESS_TOKEN}"


# --------------------------------------------------------------------------- portfolio, funds


def test_holdings_and_cnc_positions_add_up(broker: ZerodhaBroker, server: WireServer) -> None:
    server.serve("GET", "/portfolio/holdings", body("holdings.json"))
    server.serve("GET", "/portfolio/positions", body("positions.json"))

    positions = {p.symbol: p for p in broker.get_positions()}

    # MIS (TATAMOTORS) and NFO (NIFTY25NOVFUT) positions are not delivery holdings
    assert set(positions) == {"INFY", "RELIANCE", "TCS"}
    infy, reliance, tcs = positions["INFY"], positions["RELIANCE"], positions["TCS"]
    assert (infy.quantity, infy.average_price, infy.market_value, infy.exchange) == (
        Decimal("5"),
        Decimal("1530.44"),
        Decimal("7670.5"),
        "NSE",
    )  # bought today: only in positions
    assert (reliance.quantity, reliance.average_price, reliance.market_value) == (
        Decimal("8"),
        Decimal("1402.6"),
        Decimal("11983.2"),
    )  # 10 held, 2 sold today
    assert (tcs.quantity, tcs.average_price, tcs.market_value) == (
        Decimal("5"),
        Decimal("3011.3"),
        Decimal("15493.75"),
    )  # 3 settled + 2 in T1


def test_margins_give_cash_in_paise(broker: ZerodhaBroker, server: WireServer) -> None:
    server.serve("GET", "/user/margins", body("margins.json"))

    account = broker.get_account()

    # live_balance 48210.65000000001 on the wire; collateral (net is higher) buys no CNC
    assert str(account.cash) == "48210.65" and str(account.buying_power) == "48210.65"
    assert account.currency == "INR"


def test_ltp_and_quote_through_our_helpers(server: WireServer) -> None:
    server.serve("GET", "/quote/ltp", body("ltp.json"))
    server.serve("GET", "/quote", body("quote.json"))
    kite = KiteConnect(API_KEY, access_token=ACCESS_TOKEN, root=server.url)

    ltp = kite.ltp("NSE:INFY", "BSE:ITC")
    quote = kite.quote("NSE:INFY")["NSE:INFY"]

    assert _decimal(ltp["NSE:INFY"]["last_price"]) == Decimal("1534.1")
    assert _decimal(ltp["BSE:ITC"]["last_price"]) == Decimal("405.05")
    assert _kite_time(quote["timestamp"]) == utc(2025, 11, 25, 5, 32, 41)  # SDK-parsed, naive
    assert _kite_time(quote["last_trade_time"]) == utc(2025, 11, 25, 5, 32, 39)
    best_bid, best_ask = quote["depth"]["buy"][0], quote["depth"]["sell"][0]
    assert (_decimal(best_bid["price"]), _decimal(best_ask["price"])) == (
        Decimal("1534"),
        Decimal("1534.1"),
    )
    request = server.requests("/quote/ltp")[0]
    assert request.args.getlist("i") == ["NSE:INFY", "BSE:ITC"]


def test_the_fake_answers_with_every_documented_field() -> None:
    """FakeKite's payloads carry at least the fields of our hand-written fixtures."""
    with FakeKite(prices={"INFY": "1534.1"}) as fake:
        fake.add_holding("TCS", 2, "3000")
        kite = KiteConnect(fake.api_key, access_token=fake.access_token, root=fake.url)
        order_id = kite.place_order(
            variety="regular", exchange="NSE", tradingsymbol="INFY", transaction_type="BUY",
            quantity=1, product="CNC", order_type="MARKET", market_protection=-1, tag="abc",
        )  # fmt: skip
        assert set(data("orders.json")[0]) <= set(fake.orders()[0])
        assert set(data("order_history.json")[0]) <= set(kite.order_history(order_id)[0])
        assert set(data("trades.json")[0]) <= set(kite.trades()[0])
        assert set(data("holdings.json")[0]) <= set(fake.holdings()[0])
        assert set(data("positions.json")["net"][0]) <= set(fake.positions()["net"][0])
        ours, theirs = data("margins.json")["equity"], kite.margins()["equity"]
        assert set(ours) <= set(theirs)
        assert set(ours["available"]) <= set(theirs["available"])
        assert set(ours["utilised"]) <= set(theirs["utilised"])
        assert set(data("ltp.json")["NSE:INFY"]) <= set(kite.ltp("NSE:INFY")["NSE:INFY"])
        header = body("instruments_nse.csv").decode().splitlines()[0].split(",")
        assert list(kite.instruments("NSE")[0]) == header


# --------------------------------------------------------------------------- instruments, candles


def test_instruments_dump_lists_nse_equities(broker: ZerodhaBroker, server: WireServer) -> None:
    server.serve("GET", "/instruments/NSE", body("instruments_nse.csv"), content_type="text/csv")

    assets = {a.symbol: a for a in broker.list_assets("NSE")}

    assert set(assets) == {"INFY", "TCS", "SBIN", "RELIANCE", "NIFTYBEES", "SARASWIRE-BE"}
    assert "NIFTY 50" not in assets  # an index (segment INDICES), not a tradable share
    infy = assets["INFY"]
    assert (infy.exchange, infy.currency, infy.name) == ("NSE", "INR", "INFOSYS")
    assert infy.metadata == {"instrument_token": 408065, "lot_size": 1, "tick_size": "0.05"}
    assert assets["TCS"].metadata["tick_size"] == "0.1"


def test_day_candles_keep_their_ist_dates(server: WireServer) -> None:
    server.serve("GET", "/instruments/NSE", body("instruments_nse.csv"), content_type="text/csv")
    server.serve("GET", "/instruments/historical/408065/day", body("historical_day.json"))
    source = KiteSource(
        {
            "api_key": API_KEY,
            "access_token": ACCESS_TOKEN,
            "root": server.url,
            "rate_per_second": 0,
        },
        sleep=lambda _: None,
    )
    first, last = date(2025, 11, 17), date(2025, 11, 21)

    result = source.fetch_daily_bars(
        [BarRequest("INFY", "NSE", first, last), BarRequest("NIFTY 50", "NSE", first, last)]
    )

    # midnight +05:30 is 18:30 UTC the day before: the date is India's
    assert result.bars["price_date"].tolist() == [date(2025, 11, d) for d in range(17, 22)]
    assert result.bars["close"].tolist() == [1509.35, 1503.2, 1519.95, 1516.4, 1521.7]
    assert result.bars["volume"].tolist()[0] == 6120457.0
    assert result.failures == {"NIFTY 50": "NIFTY 50 is not in kite's NSE instruments list"}
    (request,) = server.requests("/instruments/historical/408065/day")
    assert (request.args["from"], request.args["to"]) == (
        "2025-11-17 00:00:00",
        "2025-11-21 23:59:59",
    )


# --------------------------------------------------------------------------- error bodies


def an_order(client_order_id: str = "saras-wire-kite-0003") -> OrderRequest:
    return OrderRequest(client_order_id, "INFY", OrderSide.BUY, quantity=Decimal(5))


ERRORS = [
    # (fixture, HTTP status, on an order placement, on a read)
    ("error_400_input_exception.json", 400, OrderRejectedError, NonRetryableBrokerError),
    ("error_400_order_exception.json", 400, OrderRejectedError, NonRetryableBrokerError),
    ("error_403_token_exception.json", 403, FatalBrokerError, FatalBrokerError),
    ("error_429_too_many_requests.json", 429, RateLimitedError, RateLimitedError),
    ("error_503_network_exception.json", 503, AmbiguousOrderError, RetryableBrokerError),
]


@pytest.mark.parametrize(("name", "status", "placing", "reading"), ERRORS)
def test_error_bodies_on_an_order_placement(
    broker: ZerodhaBroker,
    server: WireServer,
    name: str,
    status: int,
    placing: type[Exception],
    reading: type[Exception],
) -> None:
    server.serve("POST", "/orders/regular", body(name), status=status)
    server.serve("GET", "/orders", body("orders.json"))  # the book, for an ambiguous answer

    with pytest.raises(placing) as info:
        broker.place_order(an_order())

    assert type(info.value) is placing
    message = wire_json("kite", name)["message"]
    if isinstance(info.value, OrderRejectedError):
        assert info.value.reason == message
    # only an answer that leaves the placement unknown sends us to the order book
    lookups = len(server.requests("/orders"))
    assert lookups == (3 if placing is AmbiguousOrderError else 0)
    assert len(server.requests("/orders/regular")) == 1  # never placed twice


@pytest.mark.parametrize(("name", "status", "placing", "reading"), ERRORS)
def test_error_bodies_on_a_read(
    broker: ZerodhaBroker,
    server: WireServer,
    name: str,
    status: int,
    placing: type[Exception],
    reading: type[Exception],
) -> None:
    server.serve("GET", "/user/margins", body(name), status=status)

    with pytest.raises(reading) as info:
        broker.get_account()

    assert type(info.value) is reading
    assert is_retryable(info.value) == (reading in (RateLimitedError, RetryableBrokerError))


def test_an_ambiguous_placement_found_in_the_book_is_that_order(
    broker: ZerodhaBroker, server: WireServer
) -> None:
    server.serve("POST", "/orders/regular", body("error_503_network_exception.json"), status=503)
    server.serve("GET", "/orders", body("orders.json"))
    server.serve("GET", f"/orders/{INFY_ORDER}/trades", body("order_trades.json"))

    order = broker.place_order(an_order(INFY_CLIENT_ID))  # orders.json holds its tag

    assert (order.broker_order_id, order.status) == (INFY_ORDER, S.FILLED)
    assert order.client_order_id == INFY_CLIENT_ID
    assert len(server.requests("/orders/regular")) == 1


def test_an_expired_token_stops_the_connection(
    broker: ZerodhaBroker, server: WireServer, fatal_messages: list[str]
) -> None:
    server.serve("GET", "/user/margins", body("error_403_token_exception.json"), status=403)

    with pytest.raises(FatalBrokerError, match="log in to Kite again"):
        broker.get_account()
    with pytest.raises(FatalBrokerError):
        broker.get_positions()  # fails fast: Kite is not asked again

    assert len(server.requests()) == 1
    (message,) = fatal_messages
    assert ACCESS_TOKEN not in message and "06:00 IST" in message
