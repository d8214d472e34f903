"""AlpacaBroker through the real alpaca-py SDK against the fake Alpaca server: the happy paths,
local order checks, status mapping and secret masking."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from pydantic import SecretStr

from saras.brokers.alpaca import (
    AlpacaBroker,
    AlpacaRateLimiter,
    AlpacaResponseError,
    map_order_status,
)
from saras.brokers.base import (
    Broker,
    BrokerCredentials,
    BrokerOrderStatus,
    ConnectionConfig,
    OrderRequest,
)
from saras.brokers.errors import (
    BrokerError,
    FatalBrokerError,
    NonRetryableBrokerError,
    OrderNotFoundError,
    OrderRejectedError,
)
from saras.brokers.ids import client_order_id
from saras.domain.enums import OrderSide, OrderType
from tests.fakes.fake_alpaca import (
    FAKE_KEY_ID,
    FAKE_SECRET,
    FakeAlpaca,
    Fault,
    alpaca_connection,
)

S = BrokerOrderStatus


@pytest.fixture
def fake() -> Iterator[FakeAlpaca]:
    with FakeAlpaca(cash=Decimal("100000")) as server:
        server.add_asset("AAPL", price=Decimal("190.25"))
        server.add_asset("BRKA", price=Decimal("600000"), fractionable=False)
        yield server


@pytest.fixture
def sleeps() -> list[float]:
    return []


def make_broker(fake: FakeAlpaca, sleeps: list[float], **kwargs: Any) -> AlpacaBroker:
    config, credentials = alpaca_connection(fake)
    kwargs.setdefault("rate_limiter", AlpacaRateLimiter(100_000))
    kwargs.setdefault("timeout", 2.0)
    return AlpacaBroker(config, credentials, sleep=sleeps.append, **kwargs)


@pytest.fixture
def broker(fake: FakeAlpaca, sleeps: list[float]) -> AlpacaBroker:
    return make_broker(fake, sleeps)


def order(symbol: str = "AAPL", side: OrderSide = OrderSide.BUY, **kwargs: Any) -> OrderRequest:
    kwargs.setdefault("client_order_id", client_order_id(uuid.uuid4()))
    if "notional" not in kwargs:
        kwargs.setdefault("quantity", Decimal("3"))
    return OrderRequest(symbol=symbol, side=side, **kwargs)


# --------------------------------------------------------------------------- construction


def test_constructor_does_no_io_and_hides_secrets(fake: FakeAlpaca, sleeps: list[float]) -> None:
    broker = make_broker(fake, sleeps)
    assert fake.requests == []
    assert isinstance(broker, Broker)
    assert broker.broker_type == "alpaca"
    text = repr(broker) + str(broker.__dict__)
    assert FAKE_KEY_ID not in text
    assert FAKE_SECRET not in text


@pytest.mark.parametrize(
    ("paper", "metadata", "expected"),
    [
        (True, {}, "https://paper-api.alpaca.markets"),
        (False, {}, "https://api.alpaca.markets"),
        (True, {"base_url": "http://127.0.0.1:9/"}, "http://127.0.0.1:9"),
        (False, {"base_url": "https://proxy.example/alpaca/v2/"}, "https://proxy.example/alpaca"),
    ],
)
def test_base_url_from_paper_flag_and_metadata(
    paper: bool, metadata: dict[str, object], expected: str
) -> None:
    config = ConnectionConfig("c", "alpaca", paper_trading=paper, metadata=metadata)
    credentials = BrokerCredentials(api_key=SecretStr("k"), api_secret=SecretStr("s"))
    assert AlpacaBroker(config, credentials).base_url == expected


def test_bad_base_url_and_missing_credentials_are_fatal() -> None:
    credentials = BrokerCredentials(api_key=SecretStr("k"), api_secret=SecretStr("s"))
    config = ConnectionConfig("c", "alpaca", True, {"base_url": "ftp://nowhere"})
    with pytest.raises(FatalBrokerError, match="base_url"):
        AlpacaBroker(config, credentials)
    with pytest.raises(FatalBrokerError, match="api key and secret"):
        AlpacaBroker(
            ConnectionConfig("c", "alpaca", True), BrokerCredentials(api_key=SecretStr("k"))
        )


def test_sdk_client_has_its_blind_retries_disabled_and_our_timeout(broker: AlpacaBroker) -> None:
    client = broker._client()
    assert client._retry == 0
    assert client._retry_codes == []
    assert client._session._timeout == 2.0  # type: ignore[attr-defined]
    assert broker._client() is client  # built once


# --------------------------------------------------------------------------- reads


def test_get_account(broker: AlpacaBroker, fake: FakeAlpaca) -> None:
    fake.cash = Decimal("12345.67")
    account = broker.get_account()
    assert account.cash == Decimal("12345.67")
    assert account.buying_power == Decimal("12345.67")
    assert account.currency == "USD"
    assert isinstance(account.cash, Decimal)


def test_get_positions_long_and_short(broker: AlpacaBroker, fake: FakeAlpaca) -> None:
    fake.set_position("AAPL", Decimal("2.5"), Decimal("180"))
    fake.set_position("TSLA", -4, Decimal("250"))
    fake.set_price("TSLA", Decimal("200"))
    positions = {p.symbol: p for p in broker.get_positions()}
    assert positions["AAPL"].quantity == Decimal("2.5")
    assert positions["AAPL"].average_price == Decimal("180")
    assert positions["AAPL"].market_value == Decimal("475.625")
    assert positions["AAPL"].exchange == "NASDAQ"
    assert positions["TSLA"].quantity == Decimal("-4")
    assert positions["TSLA"].market_value == Decimal("-800")


def test_get_clock(broker: AlpacaBroker, fake: FakeAlpaca) -> None:
    fake.market_open = True
    clock = broker.get_clock()
    assert clock.is_open is True
    assert clock.next_open is not None and clock.next_open.tzinfo is UTC
    assert clock.next_close is not None and clock.next_close.tzinfo is UTC
    assert clock.next_open.minute == 30  # 09:30 New York
    fake.market_open = False
    assert broker.get_clock().is_open is False


# --------------------------------------------------------------------------- placing


def test_market_order_by_quantity_fills_and_sends_day_order(
    broker: AlpacaBroker, fake: FakeAlpaca
) -> None:
    request = order(quantity=Decimal("3"))
    placed = broker.place_order(request)
    assert placed.status is S.FILLED
    assert placed.client_order_id == request.client_order_id
    assert placed.symbol == "AAPL"
    assert placed.side is OrderSide.BUY
    assert placed.quantity == Decimal("3")
    assert placed.filled_quantity == Decimal("3")
    assert placed.average_fill_price == Decimal("190.25")
    assert placed.submitted_at is not None and placed.submitted_at.tzinfo is UTC
    assert placed.is_terminal
    (fill,) = placed.fills  # from the account's FILL activity of the execution
    assert "::" in fill.fill_id and placed.fills_reported
    assert (fill.quantity, fill.price, fill.fees) == (Decimal("3"), Decimal("190.25"), Decimal(0))
    (post,) = fake.order_posts()
    assert post.body["client_order_id"] == request.client_order_id
    assert post.body["time_in_force"] == "day"
    assert post.body["type"] == "market"
    assert post.body["side"] == "buy"
    assert Decimal(str(post.body["qty"])) == Decimal("3")
    assert "notional" not in post.body
    assert fake.positions == {"AAPL": Decimal("3")}
    assert fake.cash == Decimal("100000") - Decimal("570.75")


def test_limit_order_rests_then_cancels(broker: AlpacaBroker, fake: FakeAlpaca) -> None:
    request = order(order_type=OrderType.LIMIT, limit_price=Decimal("150.5"), quantity=Decimal(2))
    placed = broker.place_order(request)
    assert placed.status is S.OPEN
    assert placed.fills == ()
    (post,) = fake.order_posts()
    assert post.body["type"] == "limit"
    assert Decimal(str(post.body["limit_price"])) == Decimal("150.5")
    broker.cancel_order(placed.broker_order_id)
    cancelled = broker.get_order(placed.broker_order_id)
    assert cancelled.status is S.CANCELLED
    broker.cancel_order(placed.broker_order_id)  # cancelling a cancelled order is fine


def test_cancel_filled_unknown_and_foreign_ids(broker: AlpacaBroker, fake: FakeAlpaca) -> None:
    filled = broker.place_order(order())
    with pytest.raises(NonRetryableBrokerError, match="not cancelable") as info:
        broker.cancel_order(filled.broker_order_id)
    assert info.value.status_code == 422
    with pytest.raises(OrderNotFoundError):
        broker.cancel_order(str(uuid.uuid4()))
    before = len(fake.requests)
    with pytest.raises(OrderNotFoundError):
        broker.cancel_order("not-an-alpaca-id")
    assert len(fake.requests) == before  # nothing sent


def test_notional_and_fractional_orders_on_a_fractionable_asset(
    broker: AlpacaBroker, fake: FakeAlpaca
) -> None:
    fake.set_price("AAPL", Decimal("200"))
    by_value = broker.place_order(order(notional=Decimal("50"), fractionable=True))
    assert by_value.status is S.FILLED
    assert by_value.quantity is None
    assert by_value.filled_quantity == Decimal("0.25")
    fractional = broker.place_order(order(quantity=Decimal("0.125"), fractionable=True))
    assert fractional.filled_quantity == Decimal("0.125")
    first, second = fake.order_posts()
    assert Decimal(str(first.body["notional"])) == Decimal("50")
    assert "qty" not in first.body
    assert Decimal(str(second.body["qty"])) == Decimal("0.125")
    assert first.body["time_in_force"] == second.body["time_in_force"] == "day"
    assert fake.positions == {"AAPL": Decimal("0.375")}


@pytest.mark.parametrize(
    ("request_kwargs", "reason"),
    [
        ({"symbol": "BRKA", "quantity": Decimal("0.5")}, "not fractionable"),
        ({"symbol": "BRKA", "notional": Decimal("100")}, "not fractionable"),
        (
            {
                "notional": Decimal("100"),
                "fractionable": True,
                "order_type": OrderType.LIMIT,
                "limit_price": Decimal("10"),
            },
            "notional order must be a market order",
        ),
        ({"notional": Decimal("0.99"), "fractionable": True}, "at least $1"),
        (
            {
                "quantity": Decimal("0.01"),
                "fractionable": True,
                "order_type": OrderType.LIMIT,
                "limit_price": Decimal("50"),
            },
            "at least $1",
        ),
        ({"quantity": Decimal("0.0000000001"), "fractionable": True}, "decimal places"),
        ({"client_order_id": "x" * 49}, "client_order_id"),
    ],
)
def test_local_rejections_send_nothing(
    broker: AlpacaBroker, fake: FakeAlpaca, request_kwargs: dict[str, Any], reason: str
) -> None:
    with pytest.raises(OrderRejectedError, match="nothing was sent") as info:
        broker.place_order(order(**request_kwargs))
    assert reason in (info.value.reason or "")
    assert fake.requests == []


def test_sell_below_one_dollar_is_not_a_buy_rule(broker: AlpacaBroker, fake: FakeAlpaca) -> None:
    fake.set_position("AAPL", Decimal("1"), Decimal("100"))
    fake.set_price("AAPL", Decimal("10"))
    sold = broker.place_order(
        order(side=OrderSide.SELL, quantity=Decimal("0.05"), fractionable=True)
    )
    assert sold.status is S.FILLED


def test_server_side_fractional_rejection_keeps_alpacas_reason(
    broker: AlpacaBroker, fake: FakeAlpaca
) -> None:
    # Our asset row says fractionable, Alpaca disagrees: the 422 comes back as a rejection.
    with pytest.raises(OrderRejectedError) as info:
        broker.place_order(order(symbol="BRKA", quantity=Decimal("0.5"), fractionable=True))
    assert info.value.reason == "asset BRKA is not fractionable"
    assert info.value.status_code == 422
    assert fake.orders == []


def test_insufficient_buying_power_is_a_rejection_not_fatal(
    broker: AlpacaBroker, fake: FakeAlpaca
) -> None:
    fake.cash = Decimal("500")
    with pytest.raises(OrderRejectedError) as info:
        broker.place_order(order(quantity=Decimal("10")))
    assert not isinstance(info.value, FatalBrokerError)
    assert info.value.reason == "insufficient buying power"
    assert info.value.status_code == 403
    assert fake.orders == []
    assert len(fake.order_posts()) == 1  # not retried


def test_selling_more_than_held_is_rejected(broker: AlpacaBroker, fake: FakeAlpaca) -> None:
    fake.set_position("AAPL", 2, 100)
    with pytest.raises(OrderRejectedError, match="insufficient qty available"):
        broker.place_order(order(side=OrderSide.SELL, quantity=Decimal("5")))


def test_lookups(broker: AlpacaBroker, fake: FakeAlpaca) -> None:
    placed = broker.place_order(order())
    by_client = broker.get_order_by_client_id(placed.client_order_id or "")
    assert by_client is not None and by_client.broker_order_id == placed.broker_order_id
    assert broker.get_order(placed.broker_order_id) == by_client
    assert broker.get_order_by_client_id("saras-nobody") is None
    with pytest.raises(OrderNotFoundError) as info:
        broker.get_order(str(uuid.uuid4()))
    assert info.value.status_code == 404


def test_resume_returns_the_existing_order_without_sending(
    broker: AlpacaBroker, fake: FakeAlpaca
) -> None:
    request = order()
    placed = broker.place_order(request)
    again = broker.place_order(request, resume=True)
    assert again.broker_order_id == placed.broker_order_id
    assert len(fake.order_posts()) == 1
    fresh = order()
    broker.place_order(fresh, resume=True)  # not there yet: sent once
    assert [p.body["client_order_id"] for p in fake.order_posts()] == [
        request.client_order_id,
        fresh.client_order_id,
    ]


def test_duplicate_client_order_id_means_already_placed(
    broker: AlpacaBroker, fake: FakeAlpaca
) -> None:
    request = order()
    first = broker.place_order(request)
    second = broker.place_order(request)  # no resume: Alpaca answers 422 40010001
    assert second.broker_order_id == first.broker_order_id
    assert [p.status for p in fake.order_posts()] == [200, 422]
    assert len(fake.orders) == 1


def test_duplicate_client_order_id_of_another_order_is_refused(
    broker: AlpacaBroker, fake: FakeAlpaca
) -> None:
    request = order()
    broker.place_order(request)
    other = order(symbol="MSFT", client_order_id=request.client_order_id)
    with pytest.raises(NonRetryableBrokerError, match="already used by another order"):
        broker.place_order(other)
    assert len(fake.orders) == 1


def test_list_orders_pages_past_500_and_ties(broker: AlpacaBroker, fake: FakeAlpaca) -> None:
    start = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)
    fake.seed_order("AAPL", submitted_at=start - timedelta(seconds=1))  # before `since`
    seeded = []
    for i in range(1203):
        # Six orders share one submission time across the first page boundary.
        at = start + timedelta(milliseconds=497 if 497 <= i <= 502 else i + 1)
        seeded.append(fake.seed_order("AAPL", qty=1 + i % 7, submitted_at=at)["id"])
    listed = broker.list_orders(start)
    assert [o.broker_order_id for o in listed] == seeded
    assert len({o.broker_order_id for o in listed}) == 1203
    pages = fake.requests_to("GET", "/v2/orders")
    assert len(pages) == 3
    assert all(p.query["status"] == ["all"] and p.query["limit"] == ["500"] for p in pages)
    assert all(p.query["direction"] == ["asc"] for p in pages)


def test_list_orders_needs_an_aware_time(broker: AlpacaBroker) -> None:
    with pytest.raises(ValueError, match="aware"):
        broker.list_orders(datetime(2026, 1, 1))


# --------------------------------------------------------------------------- statuses

ALPACA_STATUSES: list[tuple[str, BrokerOrderStatus, BrokerOrderStatus]] = [
    # status, mapped with nothing filled, mapped with part of the order filled
    ("new", S.OPEN, S.PARTIALLY_FILLED),
    ("accepted", S.PENDING, S.PARTIALLY_FILLED),
    ("pending_new", S.PENDING, S.PARTIALLY_FILLED),
    ("accepted_for_bidding", S.OPEN, S.PARTIALLY_FILLED),
    ("pending_review", S.PENDING, S.PARTIALLY_FILLED),
    ("partially_filled", S.PARTIALLY_FILLED, S.PARTIALLY_FILLED),
    ("filled", S.FILLED, S.FILLED),
    ("done_for_day", S.OPEN, S.PARTIALLY_FILLED),
    ("canceled", S.CANCELLED, S.CANCELLED),
    ("expired", S.EXPIRED, S.EXPIRED),
    ("replaced", S.CANCELLED, S.CANCELLED),
    ("pending_cancel", S.OPEN, S.PARTIALLY_FILLED),
    ("pending_replace", S.OPEN, S.PARTIALLY_FILLED),
    ("stopped", S.OPEN, S.PARTIALLY_FILLED),
    ("rejected", S.REJECTED, S.REJECTED),
    ("suspended", S.PENDING, S.PARTIALLY_FILLED),
    ("calculated", S.OPEN, S.PARTIALLY_FILLED),
    ("held", S.PENDING, S.PARTIALLY_FILLED),
]


def test_every_alpaca_status_of_the_sdk_is_mapped() -> None:
    from alpaca.trading.enums import OrderStatus as SdkStatus

    assert {s.value for s in SdkStatus} == {status for status, _, _ in ALPACA_STATUSES}


@pytest.mark.parametrize(("status", "unfilled", "part_filled"), ALPACA_STATUSES)
def test_status_mapping(
    status: str, unfilled: BrokerOrderStatus, part_filled: BrokerOrderStatus
) -> None:
    ten = Decimal(10)
    assert map_order_status(status, filled_quantity=Decimal(0), quantity=ten) is unfilled
    assert map_order_status(status, filled_quantity=Decimal(4), quantity=ten) is part_filled


def test_calculated_with_everything_filled_is_filled() -> None:
    status = map_order_status("calculated", filled_quantity=Decimal(10), quantity=Decimal(10))
    assert status is S.FILLED


@pytest.mark.parametrize(("status", "expected", "_part"), ALPACA_STATUSES)
def test_status_mapping_through_the_wire(
    broker: AlpacaBroker,
    fake: FakeAlpaca,
    status: str,
    expected: BrokerOrderStatus,
    _part: BrokerOrderStatus,
) -> None:
    seeded = fake.seed_order("AAPL", qty=5, status="new", filled_qty=0)
    extra = {"replaced_by": str(uuid.uuid4())} if status == "replaced" else {}
    fake.set_order_status(seeded["id"], status, **extra)
    got = broker.get_order(seeded["id"])
    assert got.status is expected
    if status == "replaced":
        assert got.reason == f"replaced by order {extra['replaced_by']}"


def test_unknown_status_is_a_clear_error(broker: AlpacaBroker, fake: FakeAlpaca) -> None:
    seeded = fake.seed_order("AAPL", status="new", filled_qty=0)
    fake.set_order_status(seeded["id"], "teleported")
    with pytest.raises(AlpacaResponseError, match="unknown order status 'teleported'"):
        broker.get_order(seeded["id"])
    with pytest.raises(AlpacaResponseError):
        map_order_status("", filled_quantity=Decimal(0), quantity=None)


def test_nanosecond_timestamps_and_numbers_as_json_numbers(
    broker: AlpacaBroker, fake: FakeAlpaca
) -> None:
    seeded = fake.seed_order("AAPL", qty=2, status="filled", filled_avg_price="10.5")
    fake.set_order_status(
        seeded["id"],
        "filled",
        submitted_at="2026-03-02T14:30:00.123456789Z",
        filled_at="2026-03-02T10:30:01.5-04:00",
        qty=2,
        filled_qty=2.0,
        filled_avg_price=10.5,
    )
    got = broker.get_order(seeded["id"])
    assert got.submitted_at == datetime(2026, 3, 2, 14, 30, 0, 123456, tzinfo=UTC)
    assert got.updated_at is not None
    assert got.quantity == Decimal("2")
    assert got.filled_quantity == Decimal("2")  # "2" and 2.0 alike
    assert got.average_fill_price == Decimal("10.5")


def test_unreadable_order_body_is_a_clear_error(broker: AlpacaBroker, fake: FakeAlpaca) -> None:
    seeded = fake.seed_order("AAPL", status="new", filled_qty=0)
    fake.set_order_status(seeded["id"], "new", filled_qty="lots")
    with pytest.raises(AlpacaResponseError, match="filled_qty is not a number"):
        broker.get_order(seeded["id"])


# --------------------------------------------------------------------------- secrets


def test_secrets_never_in_errors_or_logs(
    fake: FakeAlpaca, sleeps: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    config, _ = alpaca_connection(fake)
    wrong_secret = "wrong-secret-5f0c1d2e3b4a69788796a5b4c3d2e1f0"
    credentials = BrokerCredentials(
        api_key=SecretStr(FAKE_KEY_ID), api_secret=SecretStr(wrong_secret)
    )
    broker = AlpacaBroker(config, credentials, sleep=sleeps.append)
    errors: list[BrokerError] = []
    for call in (broker.get_account, lambda: broker.place_order(order())):
        with pytest.raises(FatalBrokerError) as info:
            call()
        errors.append(info.value)
    assert errors[0].status_code == 401
    assert len(fake.requests) == 2  # fatal: never retried
    good = make_broker(fake, sleeps)
    good.place_order(order())
    with pytest.raises(OrderRejectedError) as rejected:
        good.place_order(order(quantity=Decimal("100000")))
    errors.append(rejected.value)
    texts = [str(e) for e in errors] + [repr(e) for e in errors] + [caplog.text, repr(broker)]
    for text in texts:
        for secret in (FAKE_KEY_ID, FAKE_SECRET, wrong_secret):
            assert secret not in text
    assert all(r.key_id == FAKE_KEY_ID for r in fake.requests)  # the fake saw the key header
    assert "request is not authorized" in str(errors[0])


def test_scrub_masks_credentials_echoed_by_a_server(broker: AlpacaBroker, fake: FakeAlpaca) -> None:
    body = {"code": 40010000, "message": f"bad key {FAKE_KEY_ID} / {FAKE_SECRET}"}
    fake.inject(Fault.respond(422, body), method="POST", path="/v2/orders")
    with pytest.raises(OrderRejectedError) as info:
        broker.place_order(order())
    assert FAKE_KEY_ID not in str(info.value) and FAKE_SECRET not in str(info.value)
    assert FAKE_SECRET not in (info.value.reason or "")
    assert "**********" in str(info.value)
