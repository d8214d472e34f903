"""ZerodhaBroker through the real kiteconnect SDK against the fake Kite server on 127.0.0.1."""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from pydantic import SecretStr

from saras.brokers.base import (
    Broker,
    BrokerCredentials,
    BrokerOrderStatus,
    ConnectionConfig,
    OrderRequest,
)
from saras.brokers.errors import (
    AmbiguousOrderError,
    BrokerError,
    FatalBrokerError,
    NonRetryableBrokerError,
    OrderNotFoundError,
    OrderRejectedError,
    RateLimitedError,
    RetryableBrokerError,
    is_retryable,
)
from saras.brokers.ids import kite_tag
from saras.brokers.kit.rate import RateLimiter
from saras.brokers.zerodha import (
    KiteMappingError,
    KiteRateLimiter,
    ZerodhaBroker,
    map_kite_status,
    nse_market_clock,
)
from saras.domain.enums import OrderSide, OrderType
from tests.fakes.fake_kite import FakeKite, FillPolicy, at_ist

OPEN_TIME = at_ist(2026, 11, 25, 11, 0)  # a Wednesday session
API_KEY = "kiteKEYsecret987"
ACCESS_TOKEN = "kiteTOKENsecret654"


class FakeTime:
    """Wall clock, monotonic clock and sleep that only move when slept on."""

    def __init__(self, start: datetime = OPEN_TIME):
        self.now = start
        self.mono = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> datetime:
        return self.now

    def monotonic(self) -> float:
        return self.mono

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.mono += seconds
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def fake() -> Iterator[FakeKite]:
    with FakeKite(
        api_key=API_KEY,
        access_token=ACCESS_TOKEN,
        cash="500000",
        prices={"INFY": "1500.50", "TCS": "3000", "RELIANCE": "1250.25"},
    ) as server:
        yield server


@pytest.fixture
def ftime() -> FakeTime:
    return FakeTime()


@pytest.fixture
def fatal_calls() -> list[str]:
    return []


@pytest.fixture
def make_broker(
    fake: FakeKite, ftime: FakeTime, fatal_calls: list[str]
) -> Callable[..., ZerodhaBroker]:
    def build(**overrides: Any) -> ZerodhaBroker:
        kwargs: dict[str, Any] = {
            "timeout": 0.5,
            "sleep": ftime.sleep,
            "clock": ftime.clock,
            "on_fatal": fatal_calls.append,
            # real time for the limiter: the fake enforces Kite's limits in real time
            "rate_limiter": KiteRateLimiter.create(),
            "lookup_delays": (0.0, 0.5, 1.0),
        }
        kwargs.update(overrides)
        config = ConnectionConfig(
            connection_id="conn-kite-1",
            broker_type="zerodha",
            paper_trading=False,
            metadata=fake.connection_metadata(),
        )
        credentials = BrokerCredentials(
            api_key=SecretStr(API_KEY), access_token=SecretStr(ACCESS_TOKEN)
        )
        return ZerodhaBroker(config, credentials, **kwargs)

    return build


@pytest.fixture
def broker(make_broker: Callable[..., ZerodhaBroker]) -> ZerodhaBroker:
    return make_broker()


def buy(
    cid: str = "saras-order-1", qty: str = "3", symbol: str = "INFY", **kw: Any
) -> OrderRequest:
    return OrderRequest(cid, symbol, OrderSide.BUY, quantity=Decimal(qty), **kw)


# --------------------------------------------------------------------------- protocol basics


def test_is_a_broker_and_does_no_io_when_built(fake: FakeKite, broker: ZerodhaBroker) -> None:
    assert isinstance(broker, Broker)
    assert broker.broker_type == "zerodha"
    repr(broker)
    assert fake.requests == []


def test_market_order_goes_out_as_cnc_with_tag_and_market_protection(
    fake: FakeKite, broker: ZerodhaBroker
) -> None:
    order = broker.place_order(buy())

    (sent,) = fake.placement_requests()
    assert sent.path == "/orders/regular"
    assert sent.form == {
        "exchange": "NSE",
        "tradingsymbol": "INFY",
        "transaction_type": "BUY",
        "quantity": "3",
        "product": "CNC",
        "validity": "DAY",
        "tag": kite_tag("saras-order-1"),
        "order_type": "MARKET",
        "market_protection": "-1",
        "variety": "regular",
    }
    assert order.client_order_id == "saras-order-1"
    assert order.status is BrokerOrderStatus.FILLED
    assert order.quantity == order.filled_quantity == Decimal("3")
    assert order.average_fill_price == Decimal("1500.5")
    assert order.submitted_at is not None and order.submitted_at.tzinfo is UTC
    (fill,) = order.fills
    assert (fill.quantity, fill.price, fill.fees) == (Decimal("3"), Decimal("1500.5"), 0)
    assert fill.filled_at.tzinfo is UTC
    assert abs(fill.filled_at - datetime.now(UTC)) < timedelta(minutes=1)


def test_limit_order_carries_price_and_no_market_protection(
    fake: FakeKite, broker: ZerodhaBroker
) -> None:
    order = broker.place_order(
        buy(order_type=OrderType.LIMIT, limit_price=Decimal("1400.50"), qty="2")
    )

    (sent,) = fake.placement_requests()
    assert sent.form["order_type"] == "LIMIT"
    assert sent.form["price"] == "1400.50"
    assert "market_protection" not in sent.form
    assert order.status is BrokerOrderStatus.OPEN
    assert order.average_fill_price is None and order.fills == ()

    broker.place_order(buy("sci", order_type=OrderType.LIMIT, limit_price=Decimal("1E+3")))
    assert fake.placement_requests()[-1].form["price"] == "1000"


def test_nse_and_bse_suffixes_pick_the_exchange(fake: FakeKite, broker: ZerodhaBroker) -> None:
    broker.place_order(buy("a", symbol="infy.ns"))
    broker.place_order(buy("b", symbol="RELIANCE.BO"))
    broker.place_order(buy("c", symbol="TCS", exchange="BSE"))

    forms = [(r.form["exchange"], r.form["tradingsymbol"]) for r in fake.placement_requests()]
    assert forms == [("NSE", "INFY"), ("BSE", "RELIANCE"), ("BSE", "TCS")]


@pytest.mark.parametrize(
    ("request_", "reason"),
    [
        (buy(qty="1.5"), "whole shares"),
        (OrderRequest("n", "INFY", OrderSide.BUY, notional=Decimal("1000")), "notional"),
        (buy(exchange="NFO"), "not supported"),
        (buy(symbol="INFY.NS", exchange="BSE"), "not listed"),
    ],
)
def test_invalid_requests_are_rejected_locally(
    fake: FakeKite, broker: ZerodhaBroker, request_: OrderRequest, reason: str
) -> None:
    with pytest.raises(OrderRejectedError, match=reason) as info:
        broker.place_order(request_)

    assert not is_retryable(info.value)
    assert fake.requests == []


def test_kite_input_rejection_is_not_retryable(fake: FakeKite, broker: ZerodhaBroker) -> None:
    with pytest.raises(OrderRejectedError) as info:
        broker.place_order(buy(symbol="NOSUCH"))

    assert info.value.reason == "Invalid `tradingsymbol`."
    assert info.value.status_code == 400
    assert [r.path for r in fake.requests] == ["/orders/regular"]  # no lookup after a 400


def test_insufficient_funds_is_accepted_then_rejected_in_the_book(
    fake: FakeKite, broker: ZerodhaBroker
) -> None:
    order = broker.place_order(buy(qty="1000"))

    assert order.status is BrokerOrderStatus.REJECTED
    assert order.is_terminal
    assert order.reason is not None and order.reason.startswith("Insufficient funds")
    assert order.broker_order_id == fake.orders()[0]["order_id"]


# --------------------------------------------------------------------------- AMO and the clock


@pytest.mark.parametrize(
    "when",
    [
        at_ist(2026, 11, 25, 18, 0),  # after the close
        at_ist(2026, 11, 25, 8, 30),  # before the open
        at_ist(2026, 11, 28, 11, 0),  # Saturday
        at_ist(2026, 11, 24, 11, 0),  # Guru Nanak Jayanti, an exchange holiday
    ],
    ids=["evening", "morning", "saturday", "holiday"],
)
def test_orders_outside_market_hours_go_as_amo(
    fake: FakeKite, make_broker: Callable[..., ZerodhaBroker], when: datetime
) -> None:
    fake.market_open = False  # the fake now refuses regular orders, like Kite after hours
    broker = make_broker(clock=lambda: when)

    order = broker.place_order(buy())

    (sent,) = fake.placement_requests()
    assert sent.path == "/orders/amo"
    assert order.status is BrokerOrderStatus.PENDING
    assert fake.orders()[0]["status"] == "AMO REQ RECEIVED"

    fake.open_market()
    assert broker.get_order(order.broker_order_id).status is BrokerOrderStatus.FILLED


def test_clock_in_and_out_of_session(broker: ZerodhaBroker, ftime: FakeTime) -> None:
    clock = broker.get_clock()
    assert clock.is_open
    assert clock.next_close == at_ist(2026, 11, 25, 15, 30)
    assert clock.next_open == at_ist(2026, 11, 26, 9, 15)

    ftime.now = at_ist(2026, 11, 23, 16, 0)  # Monday evening; Tuesday is a holiday
    clock = broker.get_clock()
    assert not clock.is_open
    assert clock.next_open == at_ist(2026, 11, 25, 9, 15)
    assert clock.next_close == at_ist(2026, 11, 25, 15, 30)
    assert clock.next_open is not None and clock.next_open.tzinfo is not None


def test_clock_beyond_the_calendar_falls_back_to_weekdays() -> None:
    tuesday = nse_market_clock(at_ist(2031, 3, 4, 10, 0))
    assert tuesday.is_open
    assert tuesday.next_close == at_ist(2031, 3, 4, 15, 30)
    saturday = nse_market_clock(at_ist(2031, 3, 8, 10, 0))
    assert not saturday.is_open
    assert saturday.next_open == at_ist(2031, 3, 10, 9, 15)
    with pytest.raises(ValueError, match="aware"):
        nse_market_clock(datetime(2031, 3, 4, 10, 0))


# --------------------------------------------------------------------------- exactly once


def test_resume_finds_the_order_and_sends_nothing(
    fake: FakeKite, make_broker: Callable[..., ZerodhaBroker]
) -> None:
    first = make_broker().place_order(buy())
    again = make_broker().place_order(buy(), resume=True)  # a fresh adapter, e.g. a retry

    assert again.broker_order_id == first.broker_order_id
    assert again.client_order_id == "saras-order-1"
    assert len(fake.placement_requests(kite_tag("saras-order-1"))) == 1


def test_same_adapter_never_sends_a_tag_twice(fake: FakeKite, broker: ZerodhaBroker) -> None:
    first = broker.place_order(buy())
    again = broker.place_order(buy())  # resume forgotten: the adapter checks anyway

    assert again.broker_order_id == first.broker_order_id
    assert len(fake.placement_requests()) == 1


def test_resume_places_when_the_book_has_no_such_order(
    fake: FakeKite, broker: ZerodhaBroker
) -> None:
    order = broker.place_order(buy(), resume=True)

    assert order.status is BrokerOrderStatus.FILLED
    assert [r.path for r in fake.requests][:2] == ["/orders", "/orders/regular"]
    assert len(fake.orders_with_tag(kite_tag("saras-order-1"))) == 1


def test_resume_refuses_a_tagged_order_that_is_not_ours(
    fake: FakeKite, broker: ZerodhaBroker
) -> None:
    broker.place_order(buy(qty="3"))

    with pytest.raises(NonRetryableBrokerError, match="another instrument"):
        broker.place_order(buy(qty="4"), resume=True)
    assert len(fake.placement_requests()) == 1


def test_timeout_after_kite_accepted_yields_exactly_one_order(
    fake: FakeKite, broker: ZerodhaBroker
) -> None:
    fake.inject("timeout_after_accept", delay=5.0)
    started = time.monotonic()

    order = broker.place_order(buy())

    assert time.monotonic() - started < 3
    assert order.status is BrokerOrderStatus.FILLED
    tag = kite_tag("saras-order-1")
    assert len(fake.orders_with_tag(tag)) == 1
    assert len(fake.placement_requests(tag)) == 1
    assert order.broker_order_id == fake.orders_with_tag(tag)[0]["order_id"]


def test_timeout_before_kite_accepted_is_ambiguous_then_resume_places_once(
    fake: FakeKite, make_broker: Callable[..., ZerodhaBroker], ftime: FakeTime
) -> None:
    broker = make_broker(monotonic=ftime.monotonic, lookup_horizon=2.0)
    fake.inject("timeout_before_accept", delay=5.0)

    with pytest.raises(AmbiguousOrderError) as info:
        broker.place_order(buy())

    assert info.value.client_order_id == "saras-order-1"
    assert is_retryable(info.value)
    assert [r.path for r in fake.requests] == ["/orders/regular", "/orders", "/orders", "/orders"]
    assert ftime.sleeps == [0.5, 1.0]
    assert fake.orders() == []

    # 1.5 s after the send: inside the lookup horizon, Kite may still be processing it
    with pytest.raises(AmbiguousOrderError, match="not sending it again"):
        broker.place_order(buy(), resume=True)
    assert len(fake.placement_requests(kite_tag("saras-order-1"))) == 1

    ftime.sleep(1.0)  # past the horizon: absent, sent again under the same tag
    order = broker.place_order(buy(), resume=True)

    tag = kite_tag("saras-order-1")
    assert order.status is BrokerOrderStatus.FILLED
    assert len(fake.orders_with_tag(tag)) == 1
    assert len(fake.placement_requests(tag)) == 2  # the first one never reached the book


@pytest.mark.parametrize("fault", ["drop_after_accept", "http_500_placed", "http_503_placed"])
def test_lost_or_failed_answer_after_placing_is_resolved_from_the_book(
    fake: FakeKite, broker: ZerodhaBroker, fault: str
) -> None:
    fake.inject(fault)

    order = broker.place_order(buy())

    tag = kite_tag("saras-order-1")
    assert order.client_order_id == "saras-order-1"
    assert order.broker_order_id == fake.orders_with_tag(tag)[0]["order_id"]
    assert len(fake.orders_with_tag(tag)) == 1
    assert len(fake.placement_requests(tag)) == 1


@pytest.mark.parametrize(
    "fault", ["drop_before_accept", "http_500_not_placed", "http_503_not_placed", "http_502_html"]
)
def test_failed_answer_without_an_order_is_ambiguous_until_resumed(
    fake: FakeKite, make_broker: Callable[..., ZerodhaBroker], ftime: FakeTime, fault: str
) -> None:
    broker = make_broker(monotonic=ftime.monotonic, lookup_horizon=5.0)
    fake.inject(fault)

    with pytest.raises(AmbiguousOrderError):
        broker.place_order(buy())
    assert fake.orders() == []
    with pytest.raises(AmbiguousOrderError):  # not absent before the horizon
        broker.place_order(buy(), resume=True)

    ftime.sleep(5.0)
    broker.place_order(buy(), resume=True)
    assert len(fake.orders_with_tag(kite_tag("saras-order-1"))) == 1
    assert len(fake.placement_requests(kite_tag("saras-order-1"))) == 2


def test_html_502_after_placing_is_found(fake: FakeKite, broker: ZerodhaBroker) -> None:
    fake.inject("http_502_html", placed=True)

    order = broker.place_order(buy())

    assert order.status is BrokerOrderStatus.FILLED
    assert len(fake.placement_requests()) == 1


def test_malformed_json_after_placing_is_found(fake: FakeKite, broker: ZerodhaBroker) -> None:
    fake.inject("malformed_json")

    order = broker.place_order(buy())

    assert order.broker_order_id == fake.orders()[0]["order_id"]
    assert len(fake.placement_requests()) == 1


def test_unreadable_book_after_an_ambiguous_answer_stays_ambiguous(
    fake: FakeKite, broker: ZerodhaBroker
) -> None:
    fake.inject("timeout_before_accept", delay=5.0)
    fake.inject("http_502_html", method="GET", path="/orders", times=3)

    with pytest.raises(AmbiguousOrderError, match="could not be read"):
        broker.place_order(buy())
    assert len(fake.placement_requests()) == 1


def test_connection_refused_is_retryable_and_sends_nothing(
    fake: FakeKite, broker: ZerodhaBroker
) -> None:
    with fake.refusing(), pytest.raises(RetryableBrokerError) as info:
        broker.place_order(buy())
    assert type(info.value) is RetryableBrokerError  # not ambiguous: nothing was sent
    assert fake.requests == []

    broker.place_order(buy())  # no lookup needed: the tag was never sent
    assert next(r.path for r in fake.requests) == "/orders/regular"
    assert len(fake.orders()) == 1


def test_too_many_requests_is_rate_limited_and_not_placed(
    fake: FakeKite, broker: ZerodhaBroker
) -> None:
    fake.inject("http_429")

    with pytest.raises(RateLimitedError) as info:
        broker.place_order(buy())

    assert info.value.status_code == 429
    assert info.value.retry_after is not None
    assert fake.orders() == []
    assert [r.path for r in fake.requests] == ["/orders/regular"]
    broker.place_order(buy(), resume=True)
    assert len(fake.orders()) == 1


@pytest.mark.parametrize(
    ("status", "error_type", "lookups"),
    [
        (400, "MarginException", 1),  # unknown error type -> GeneralException 400: check first
        (500, "OrderException", 1),  # a rejection type on a 5xx: check the book first
        (400, "OrderException", 0),
    ],
)
def test_rejections_check_the_book_unless_plainly_400(
    fake: FakeKite, broker: ZerodhaBroker, status: int, error_type: str, lookups: int
) -> None:
    fake.inject("error", status=status, error_type=error_type, message="Insufficient margin.")

    with pytest.raises(OrderRejectedError) as info:
        broker.place_order(buy())

    assert info.value.reason == "Insufficient margin."
    assert [r.path for r in fake.requests].count("/orders") == lookups


def test_placed_but_unreadable_order_is_returned_pending(
    fake: FakeKite, broker: ZerodhaBroker
) -> None:
    fake.inject("http_502_html", method="GET", path="/orders/*")

    order = broker.place_order(buy())

    assert order.status is BrokerOrderStatus.PENDING
    assert order.broker_order_id == fake.orders()[0]["order_id"]
    assert order.client_order_id == "saras-order-1"


# --------------------------------------------------------------------------- fatal errors


def test_expired_token_on_placement_is_fatal_and_never_retried(
    fake: FakeKite, broker: ZerodhaBroker, fatal_calls: list[str]
) -> None:
    fake.inject("token_expired")

    with pytest.raises(FatalBrokerError) as info:
        broker.place_order(buy())

    message = str(info.value)
    assert "log in to Kite again" in message
    assert not is_retryable(info.value)
    assert fatal_calls == [message]
    assert fake.orders() == []
    assert len(fake.requests) == 1  # no lookup, no retry

    with pytest.raises(FatalBrokerError):
        broker.get_account()  # fails fast: Kite is not asked again
    assert len(fake.requests) == 1
    assert fatal_calls == [message]


def test_token_expiring_mid_run_stops_reads(
    fake: FakeKite, broker: ZerodhaBroker, fatal_calls: list[str]
) -> None:
    broker.get_account()
    fake.expire_token()

    with pytest.raises(FatalBrokerError, match="log in to Kite again"):
        broker.get_positions()
    assert len(fatal_calls) == 1


def test_token_expiry_at_six_ist() -> None:
    now = [at_ist(2026, 11, 25, 5, 59)]
    with FakeKite(
        api_key=API_KEY,
        access_token=ACCESS_TOKEN,
        clock=lambda: now[0],
        token_expires_at=at_ist(2026, 11, 25, 6, 0),
    ) as other:
        config = ConnectionConfig("c", "zerodha", False, other.connection_metadata())
        creds = BrokerCredentials(api_key=SecretStr(API_KEY), access_token=SecretStr(ACCESS_TOKEN))
        broker = ZerodhaBroker(config, creds, rate_limiter=KiteRateLimiter.create())
        broker.get_account()
        now[0] = at_ist(2026, 11, 25, 6, 0)
        with pytest.raises(FatalBrokerError):
            broker.get_account()


def test_missing_token_is_fatal_without_io(fake: FakeKite, fatal_calls: list[str]) -> None:
    config = ConnectionConfig("c", "zerodha", False, fake.connection_metadata())
    broker = ZerodhaBroker(
        config,
        BrokerCredentials(api_key=SecretStr(API_KEY)),
        on_fatal=fatal_calls.append,
        rate_limiter=KiteRateLimiter.create(),
    )
    with pytest.raises(FatalBrokerError, match="log in to Kite again"):
        broker.get_account()
    assert fake.requests == []
    assert len(fatal_calls) == 1


def test_permission_error_is_fatal(fake: FakeKite, broker: ZerodhaBroker) -> None:
    fake.inject(
        "error", method="GET", path="/user/margins", status=403,
        error_type="PermissionException", message="Insufficient permission for that call.",
    )  # fmt: skip
    with pytest.raises(FatalBrokerError, match="permission"):
        broker.get_account()


# --------------------------------------------------------------------------- reads


def test_reads_map_transient_failures_to_retryable(fake: FakeKite, broker: ZerodhaBroker) -> None:
    for fault in ["http_502_html", "malformed_json", "http_503_not_placed", "drop_before_accept"]:
        fake.inject(fault, method="GET", path="/user/margins")
        with pytest.raises(RetryableBrokerError) as info:
            broker.get_account()
        assert not isinstance(info.value, RateLimitedError)
    fake.inject("http_429", method="GET", path="/user/margins")
    with pytest.raises(RateLimitedError):
        broker.get_account()
    fake.inject("timeout_before_accept", method="GET", path="/user/margins", delay=5)
    with pytest.raises(RetryableBrokerError):
        broker.get_account()
    with fake.refusing(), pytest.raises(RetryableBrokerError):
        broker.get_account()
    assert broker.get_account().currency == "INR"


def test_get_account(fake: FakeKite, broker: ZerodhaBroker) -> None:
    account = broker.get_account()
    assert account.cash == Decimal("500000.00")
    assert account.buying_power == Decimal("500000.00")
    assert account.currency == "INR"

    broker.place_order(buy(qty="10"))  # 15005.00
    broker.place_order(buy("lim", order_type=OrderType.LIMIT, limit_price=Decimal("1000"), qty="5"))

    account = broker.get_account()
    assert account.cash == Decimal("479995.00")  # the open limit buy blocks 5000
    assert account.buying_power == Decimal("479995.00")


def test_positions_count_settled_t1_and_todays_trades(
    fake: FakeKite, broker: ZerodhaBroker
) -> None:
    fake.add_holding("TCS", 10, "2800", t1_quantity=2)
    fake.add_holding("RELIANCE", 4, "1200")
    fake.set_price("TCS", "3000")
    broker.place_order(OrderRequest("s1", "TCS", OrderSide.SELL, quantity=Decimal(4)))
    broker.place_order(buy("b1", qty="3", symbol="INFY"))
    broker.place_order(buy("b2", qty="4", symbol="RELIANCE"))

    before = {p.symbol: p for p in broker.get_positions()}

    assert {s: p.quantity for s, p in before.items()} == {"INFY": 3, "RELIANCE": 8, "TCS": 8}
    assert before["TCS"].average_price == Decimal("2800")
    assert before["TCS"].market_value == Decimal("24000")
    assert before["INFY"].average_price == Decimal("1500.5")
    assert before["RELIANCE"].average_price == Decimal("1225.125")
    assert all(p.exchange == "NSE" for p in before.values())

    fake.end_of_day()  # today's buys become T1 holdings, today's sells leave
    after = {p.symbol: p.quantity for p in broker.get_positions()}
    assert after == {s: p.quantity for s, p in before.items()}
    infy = next(h for h in fake.holdings() if h["tradingsymbol"] == "INFY")
    assert (infy["quantity"], infy["t1_quantity"]) == (0, 3)


def test_get_order_and_fills_after_polls(fake: FakeKite, broker: ZerodhaBroker) -> None:
    fake.set_fill_policy(FillPolicy(mode="polls", polls=3))

    placed = broker.place_order(buy())  # the 1st read of the order
    assert placed.status is BrokerOrderStatus.OPEN
    assert broker.get_order(placed.broker_order_id).status is BrokerOrderStatus.OPEN
    filled = broker.get_order(placed.broker_order_id)

    assert filled.status is BrokerOrderStatus.FILLED
    assert filled.client_order_id == kite_tag("saras-order-1")  # only the tag is known here
    assert len(filled.fills) == 1


def test_partial_fills(fake: FakeKite, broker: ZerodhaBroker) -> None:
    fake.set_fill_policy(FillPolicy(mode="partial", fraction=Decimal("0.4")))

    placed = broker.place_order(buy(qty="10"))

    assert placed.status is BrokerOrderStatus.PARTIALLY_FILLED
    assert placed.filled_quantity == Decimal("4")
    assert [f.quantity for f in placed.fills] == [Decimal("4")]

    fake.fill(placed.broker_order_id, price="1510.50")
    done = broker.get_order(placed.broker_order_id)

    assert done.status is BrokerOrderStatus.FILLED
    assert done.filled_quantity == Decimal("10")
    assert [(f.quantity, f.price) for f in done.fills] == [
        (Decimal("4"), Decimal("1500.5")),
        (Decimal("6"), Decimal("1510.5")),
    ]
    assert len({f.fill_id for f in done.fills}) == 2
    assert done.average_fill_price == Decimal("1506.5")


def test_get_order_unknown_id(broker: ZerodhaBroker) -> None:
    with pytest.raises(OrderNotFoundError):
        broker.get_order("999999999999999")


def test_get_order_by_client_id(fake: FakeKite, broker: ZerodhaBroker) -> None:
    assert broker.get_order_by_client_id("saras-order-1") is None
    placed = broker.place_order(buy())

    found = broker.get_order_by_client_id("saras-order-1")

    assert found is not None
    assert found.broker_order_id == placed.broker_order_id
    assert found.client_order_id == "saras-order-1"
    assert found.fills == placed.fills
    assert broker.get_order_by_client_id("saras-order-2") is None


def test_list_orders_since() -> None:
    now = [at_ist(2026, 11, 25, 9, 30)]
    with FakeKite(
        api_key=API_KEY, access_token=ACCESS_TOKEN, prices={"INFY": 100}, clock=lambda: now[0]
    ) as other:
        config = ConnectionConfig("c", "zerodha", False, other.connection_metadata())
        creds = BrokerCredentials(api_key=SecretStr(API_KEY), access_token=SecretStr(ACCESS_TOKEN))
        broker = ZerodhaBroker(
            config, creds, clock=lambda: now[0], rate_limiter=KiteRateLimiter.create()
        )
        broker.place_order(buy("early", qty="1"))
        now[0] = at_ist(2026, 11, 25, 10, 30)
        broker.place_order(
            buy("late", qty="2", order_type=OrderType.LIMIT, limit_price=Decimal("90"))
        )

        all_orders = broker.list_orders(at_ist(2026, 11, 25, 0, 0))
        later = broker.list_orders(at_ist(2026, 11, 25, 10, 0))

    assert [o.quantity for o in all_orders] == [1, 2]
    assert all_orders[0].submitted_at == at_ist(2026, 11, 25, 9, 30)
    assert all_orders[0].fills[0].filled_at == at_ist(2026, 11, 25, 9, 30)
    assert [o.client_order_id for o in later] == [kite_tag("late")]
    assert later[0].status is BrokerOrderStatus.OPEN
    with pytest.raises(ValueError, match="aware"):
        broker.list_orders(datetime(2026, 11, 25))


def test_cancel_regular_and_amo_orders(
    fake: FakeKite, make_broker: Callable[..., ZerodhaBroker]
) -> None:
    broker = make_broker()
    limit = broker.place_order(
        buy("lim", order_type=OrderType.LIMIT, limit_price=Decimal("1000"), qty="2")
    )
    amo = make_broker(clock=lambda: at_ist(2026, 11, 25, 20, 0)).place_order(buy("amo"))

    broker.cancel_order(limit.broker_order_id)
    broker.cancel_order(amo.broker_order_id)

    deletes = [r.path for r in fake.requests if r.method == "DELETE"]
    assert deletes == [
        f"/orders/regular/{limit.broker_order_id}",
        f"/orders/amo/{amo.broker_order_id}",
    ]
    assert broker.get_order(limit.broker_order_id).status is BrokerOrderStatus.CANCELLED
    assert broker.get_order(amo.broker_order_id).status is BrokerOrderStatus.CANCELLED


def test_cancel_a_filled_order_sends_nothing(fake: FakeKite, broker: ZerodhaBroker) -> None:
    filled = broker.place_order(buy())
    broker.cancel_order(filled.broker_order_id)
    assert not [r for r in fake.requests if r.method == "DELETE"]


def test_cancel_refused_by_kite_is_not_retryable(fake: FakeKite, broker: ZerodhaBroker) -> None:
    fake.set_fill_policy(FillPolicy(mode="manual"))
    order = broker.place_order(buy())
    fake.inject("error", method="DELETE", status=400, error_type="OrderException",
                message="Order cannot be cancelled.")  # fmt: skip
    with pytest.raises(NonRetryableBrokerError, match="cannot be cancelled"):
        broker.cancel_order(order.broker_order_id)


# --------------------------------------------------------------------------- status mapping

STATUS_CASES = [
    ("PUT ORDER REQ RECEIVED", 0, BrokerOrderStatus.PENDING),
    ("VALIDATION PENDING", 0, BrokerOrderStatus.PENDING),
    ("OPEN PENDING", 0, BrokerOrderStatus.PENDING),
    ("AMO REQ RECEIVED", 0, BrokerOrderStatus.PENDING),
    ("OPEN", 0, BrokerOrderStatus.OPEN),
    ("OPEN", 2, BrokerOrderStatus.PARTIALLY_FILLED),
    ("TRIGGER PENDING", 0, BrokerOrderStatus.OPEN),
    ("MODIFY VALIDATION PENDING", 0, BrokerOrderStatus.OPEN),
    ("MODIFY PENDING", 0, BrokerOrderStatus.OPEN),
    ("MODIFY PENDING", 2, BrokerOrderStatus.PARTIALLY_FILLED),
    ("MODIFIED", 0, BrokerOrderStatus.OPEN),
    ("CANCEL PENDING", 0, BrokerOrderStatus.OPEN),
    ("CANCEL PENDING", 2, BrokerOrderStatus.PARTIALLY_FILLED),
    ("COMPLETE", 5, BrokerOrderStatus.FILLED),
    ("CANCELLED", 0, BrokerOrderStatus.CANCELLED),
    ("CANCELLED", 2, BrokerOrderStatus.CANCELLED),
    ("CANCELLED AMO", 0, BrokerOrderStatus.CANCELLED),
    ("REJECTED", 0, BrokerOrderStatus.REJECTED),
    ("LAPSED", 0, BrokerOrderStatus.EXPIRED),
    ("EXPIRED", 0, BrokerOrderStatus.EXPIRED),
]


@pytest.mark.parametrize(("kite_status", "filled", "expected"), STATUS_CASES)
def test_every_kite_status_maps_over_the_wire(
    fake: FakeKite,
    broker: ZerodhaBroker,
    kite_status: str,
    filled: int,
    expected: BrokerOrderStatus,
) -> None:
    fake.set_fill_policy(FillPolicy(mode="manual"))
    order_id = broker.place_order(buy(qty="5")).broker_order_id
    if filled:
        fake.fill(order_id, filled)
    fake.set_order_status(order_id, kite_status, "why" if kite_status == "REJECTED" else None)

    order = broker.get_order(order_id)

    assert order.status is expected
    assert order.filled_quantity == filled
    assert len(order.fills) == (1 if filled else 0)
    if kite_status == "REJECTED":
        assert order.reason == "why"


@pytest.mark.parametrize(("kite_status", "filled", "expected"), STATUS_CASES)
def test_map_kite_status(kite_status: str, filled: int, expected: BrokerOrderStatus) -> None:
    assert map_kite_status(kite_status, Decimal(filled)) is expected
    assert map_kite_status(f" {kite_status.lower()} ", Decimal(filled)) is expected


def test_unknown_status_is_a_clear_error_not_a_rejection(
    fake: FakeKite, broker: ZerodhaBroker
) -> None:
    with pytest.raises(KiteMappingError, match="SLICED"):
        map_kite_status("SLICED", Decimal(0))

    fake.set_fill_policy(FillPolicy(mode="manual"))
    order = broker.place_order(buy())
    fake.set_order_status(order.broker_order_id, "SLICED")
    with pytest.raises(KiteMappingError) as info:
        broker.get_order(order.broker_order_id)
    assert not isinstance(info.value, NonRetryableBrokerError | RetryableBrokerError)
    with pytest.raises(KiteMappingError):
        broker.place_order(buy(), resume=True)  # never placed again over an unknown state
    assert len(fake.placement_requests()) == 1


# --------------------------------------------------------------------------- rate limits


def test_sliding_window_limiter_keeps_every_window_under_its_limit() -> None:
    ft = FakeTime()
    limiter = RateLimiter([(10, 1.0), (400, 60.0)], clock=ft.monotonic,
                                   sleep=ft.sleep, margin=0.05)  # fmt: skip
    stamps = []
    for _ in range(450):
        limiter.acquire()
        stamps.append(ft.mono)

    assert stamps[:10] == [1000.0] * 10
    assert stamps[10] == pytest.approx(1001.05)  # one window plus the margin
    for i in range(len(stamps) - 10):
        assert stamps[i + 10] - stamps[i] >= 1.0
    for i in range(len(stamps) - 400):
        assert stamps[i + 400] - stamps[i] >= 60.0
    assert stamps[400] == pytest.approx(1060.05)


def test_limiter_is_shared_per_account_by_default(fake: FakeKite) -> None:
    config = ConnectionConfig("shared-conn", "zerodha", False, fake.connection_metadata())
    creds = BrokerCredentials(api_key=SecretStr(API_KEY), access_token=SecretStr(ACCESS_TOKEN))
    a, b = ZerodhaBroker(config, creds), ZerodhaBroker(config, creds)
    assert a._limiter is b._limiter
    assert KiteRateLimiter.for_account("other-conn") is not a._limiter


def test_bursts_stay_under_kites_order_limit(
    fake: FakeKite, make_broker: Callable[..., ZerodhaBroker]
) -> None:
    fake.set_fill_policy(FillPolicy(mode="manual"))
    broker = make_broker()
    started = time.monotonic()

    orders = [broker.place_order(buy(f"burst-{i}", qty="1")) for i in range(15)]

    assert time.monotonic() - started >= 1.0
    assert len({o.broker_order_id for o in orders}) == 15
    assert all(r.status != 429 for r in fake.requests)


def test_fake_throttles_clients_that_ignore_the_limit(
    fake: FakeKite, make_broker: Callable[..., ZerodhaBroker]
) -> None:
    fake.set_fill_policy(FillPolicy(mode="manual"))
    fake.rate_clock = lambda: 0.0  # frozen: every request falls in the same second
    fake.rate_limits["other"] = ((1000, 1.0),)
    reckless = KiteRateLimiter(orders=RateLimiter([(1000, 1.0)]), other=RateLimiter([(1000, 1.0)]))
    broker = make_broker(rate_limiter=reckless)

    with pytest.raises(RateLimitedError):
        for i in range(12):
            broker.place_order(buy(f"r-{i}", qty="1"))
    assert len(fake.orders()) == 10


# --------------------------------------------------------------------------- secrets


def test_no_secret_in_errors_reprs_or_logs(
    fake: FakeKite,
    make_broker: Callable[..., ZerodhaBroker],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    broker = make_broker()
    errors: list[BaseException] = []

    def attempt(call: Callable[[], object]) -> None:
        try:
            call()
        except BrokerError as exc:
            errors.append(exc)

    attempt(lambda: broker.place_order(buy(qty="1.5")))
    attempt(lambda: broker.place_order(buy(symbol="NOSUCH")))
    fake.inject("timeout_before_accept", delay=5)
    attempt(lambda: broker.place_order(buy("t")))
    fake.inject("http_502_html", method="GET", path="/user/margins")
    attempt(broker.get_account)
    fake.inject("malformed_json", method="GET", path="/portfolio/holdings")
    attempt(broker.get_positions)
    with fake.refusing():
        attempt(lambda: broker.place_order(buy("r")))
    fake.inject("http_429")
    attempt(lambda: broker.place_order(buy("q")))
    fake.inject("token_expired")
    attempt(lambda: broker.place_order(buy("x")))

    assert len(errors) == 8
    texts = [repr(broker)]
    for exc in errors:
        texts += [str(exc), repr(exc), "".join(traceback.format_exception(exc))]
    for record in caplog.records:
        texts += [record.getMessage(), str(record.args), record.exc_text or ""]
    texts.append(repr(fake.requests))
    for text in texts:
        assert API_KEY not in text
        assert ACCESS_TOKEN not in text
