"""AlpacaBroker under faults, through the real alpaca-py SDK against the fake Alpaca server:
lost answers, refused connections, 5xx with and without the order placed, HTML gateway pages,
malformed JSON, 429s and rate-limit headers, partial fills. The invariant: exactly one order."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from saras.brokers.alpaca import AlpacaBroker, AlpacaRateLimiter
from saras.brokers.base import BrokerOrderStatus, OrderRequest
from saras.brokers.errors import (
    AmbiguousOrderError,
    FatalBrokerError,
    OrderRejectedError,
    RateLimitedError,
    RetryableBrokerError,
    is_retryable,
)
from saras.brokers.ids import client_order_id
from saras.domain.enums import OrderSide
from tests.fakes.fake_alpaca import (
    FakeAlpaca,
    FakeClock,
    Fault,
    FillRule,
    alpaca_connection,
)

S = BrokerOrderStatus


@pytest.fixture
def fake() -> Iterator[FakeAlpaca]:
    with FakeAlpaca() as server:
        server.add_asset("AAPL", price=Decimal("100"))
        yield server


@pytest.fixture
def sleeps() -> list[float]:
    return []


def make_broker(fake: FakeAlpaca, sleeps: list[float], **kwargs: Any) -> AlpacaBroker:
    config, credentials = alpaca_connection(fake)
    kwargs.setdefault("rate_limiter", AlpacaRateLimiter(100_000))
    kwargs.setdefault("timeout", 2.0)
    kwargs.setdefault("sleep", sleeps.append)
    return AlpacaBroker(config, credentials, **kwargs)


@pytest.fixture
def broker(fake: FakeAlpaca, sleeps: list[float]) -> AlpacaBroker:
    return make_broker(fake, sleeps)


def order(**kwargs: Any) -> OrderRequest:
    kwargs.setdefault("client_order_id", client_order_id(uuid.uuid4()))
    kwargs.setdefault("quantity", Decimal("2"))
    return OrderRequest(symbol=kwargs.pop("symbol", "AAPL"), side=OrderSide.BUY, **kwargs)


def assert_exactly_one_order(fake: FakeAlpaca, request: OrderRequest) -> dict[str, Any]:
    assert len(fake.orders) == 1
    placed = fake.order_by_client_id(request.client_order_id)
    assert placed is not None
    return placed


# --------------------------------------------------------------------------- lost answers


def test_timeout_after_the_broker_accepted_places_exactly_one_order(
    fake: FakeAlpaca, sleeps: list[float]
) -> None:
    broker = make_broker(fake, sleeps, timeout=0.5)
    fake.inject(Fault.timeout_after_accept(delay=3.0), method="POST", path="/v2/orders")
    request = order()
    started = time.monotonic()
    placed = broker.place_order(request)
    assert time.monotonic() - started < 2.5  # our timeout, not the server's hang
    assert placed.status is S.FILLED
    assert placed.broker_order_id == assert_exactly_one_order(fake, request)["id"]
    assert len(fake.order_posts()) == 1
    lookups = fake.requests_to("GET", "/v2/orders:by_client_order_id")
    assert [r.query["client_order_id"] for r in lookups] == [[request.client_order_id]]


def test_connection_dropped_after_accept_is_resolved_by_lookup(
    broker: AlpacaBroker, fake: FakeAlpaca
) -> None:
    fake.inject(Fault.drop_after_accept(), method="POST", path="/v2/orders")
    request = order()
    placed = broker.place_order(request)
    assert placed.broker_order_id == assert_exactly_one_order(fake, request)["id"]
    assert len(fake.order_posts()) == 1


def test_reset_before_processing_is_ambiguous_then_resume_places_once(
    broker: AlpacaBroker, fake: FakeAlpaca, sleeps: list[float]
) -> None:
    fake.inject(Fault.refuse(), method="POST", path="/v2/orders")
    request = order()
    with pytest.raises(AmbiguousOrderError) as info:
        broker.place_order(request)
    assert info.value.client_order_id == request.client_order_id
    assert is_retryable(info.value)
    assert fake.orders == []
    assert len(fake.requests_to("GET", "/v2/orders:by_client_order_id")) == 3
    assert sleeps == [0.5, 1.0]  # the short waits between lookups
    placed = broker.place_order(request, resume=True)
    assert placed.broker_order_id == assert_exactly_one_order(fake, request)["id"]
    assert len(fake.order_posts()) == 2


def test_timeout_on_a_read_is_retried_then_retryable(fake: FakeAlpaca, sleeps: list[float]) -> None:
    broker = make_broker(fake, sleeps, timeout=0.3, max_attempts=2)
    fake.latency_ms = 2000
    started = time.monotonic()
    with pytest.raises(RetryableBrokerError, match=r"no answer within 0\.3 s"):
        broker.get_account()
    assert time.monotonic() - started < 1.8
    assert sleeps == [0.5]
    assert len(fake.requests_to("GET", "/v2/account")) == 2


# --------------------------------------------------------------------------- refused


def test_connection_refused_before_sending_is_retryable_and_places_nothing(
    broker: AlpacaBroker, fake: FakeAlpaca, sleeps: list[float]
) -> None:
    request = order()
    with fake.refusing():
        with pytest.raises(RetryableBrokerError, match="could not connect") as info:
            broker.place_order(request)
        assert not isinstance(info.value, AmbiguousOrderError)
        with pytest.raises(RetryableBrokerError, match="could not connect"):
            broker.get_positions()
    assert sleeps == [0.5, 1.0, 0.5, 1.0]  # both retried with backoff, then gave up
    assert fake.requests == []
    assert fake.orders == []


def test_connection_refused_then_back_is_sent_once(fake: FakeAlpaca) -> None:
    fake.stop()
    broker = make_broker(fake, [], sleep=lambda _seconds: fake.start())
    request = order()
    placed = broker.place_order(request)
    assert placed.broker_order_id == assert_exactly_one_order(fake, request)["id"]
    assert len(fake.order_posts()) == 1


# --------------------------------------------------------------------------- 5xx


def test_500_with_the_order_placed_is_resolved_by_lookup(
    broker: AlpacaBroker, fake: FakeAlpaca, sleeps: list[float]
) -> None:
    fake.inject(Fault.http_500(placed=True), method="POST", path="/v2/orders")
    request = order()
    placed = broker.place_order(request)
    assert placed.broker_order_id == assert_exactly_one_order(fake, request)["id"]
    assert [r.status for r in fake.order_posts()] == [500]
    assert sleeps == []


def test_500_without_the_order_placed_ends_with_one_order_after_resume(
    broker: AlpacaBroker, fake: FakeAlpaca
) -> None:
    fake.inject(Fault.http_500(placed=False), method="POST", path="/v2/orders")
    request = order()
    with pytest.raises(AmbiguousOrderError, match="HTTP 500"):
        broker.place_order(request)
    assert fake.orders == []
    placed = broker.place_order(request, resume=True)
    assert placed.broker_order_id == assert_exactly_one_order(fake, request)["id"]
    assert [r.status for r in fake.order_posts()] == [500, 200]


def test_html_504_on_an_order_is_ambiguous_not_a_crash(
    broker: AlpacaBroker, fake: FakeAlpaca
) -> None:
    fake.inject(Fault.http_504_html(), method="POST", path="/v2/orders")
    request = order()
    with pytest.raises(AmbiguousOrderError) as info:
        broker.place_order(request)
    assert "HTTP 504 (no JSON error body)" in str(info.value)
    assert "<html>" not in str(info.value)
    # alpaca-py would have re-sent this POST by itself three more times, 3 s apart.
    assert len(fake.order_posts()) == 1
    broker.place_order(request, resume=True)
    assert_exactly_one_order(fake, request)


def test_html_504_after_placing_is_resolved(broker: AlpacaBroker, fake: FakeAlpaca) -> None:
    fake.inject(Fault.http_504_html(placed=True), method="POST", path="/v2/orders")
    request = order()
    placed = broker.place_order(request)
    assert placed.broker_order_id == assert_exactly_one_order(fake, request)["id"]
    assert len(fake.order_posts()) == 1


def test_html_504_on_a_read_is_retried(
    broker: AlpacaBroker, fake: FakeAlpaca, sleeps: list[float]
) -> None:
    fake.inject(Fault.http_504_html(), method="GET", path="/v2/account")
    assert broker.get_account().currency == "USD"
    assert [r.status for r in fake.requests_to("GET", "/v2/account")] == [504, 200]
    assert sleeps == [0.5]
    fake.inject(Fault.http_504_html(), method="GET", path="/v2/account", times=None)
    with pytest.raises(RetryableBrokerError) as info:
        broker.get_account()
    assert info.value.status_code == 504


# --------------------------------------------------------------------------- malformed answers


def test_malformed_json_on_a_read_is_retried(
    broker: AlpacaBroker, fake: FakeAlpaca, sleeps: list[float]
) -> None:
    fake.set_position("AAPL", 3, 90)
    fake.inject(Fault.malformed_json(), method="GET", path="/v2/positions")
    (position,) = broker.get_positions()
    assert position.quantity == Decimal(3)
    assert sleeps == [0.5]
    fake.inject(Fault.malformed_json(), method="GET", path="/v2/positions", times=None)
    with pytest.raises(RetryableBrokerError, match="not valid JSON"):
        broker.get_positions()


def test_malformed_json_after_placing_is_resolved_by_lookup(
    broker: AlpacaBroker, fake: FakeAlpaca
) -> None:
    fake.inject(Fault.malformed_json(), method="POST", path="/v2/orders")
    request = order()
    placed = broker.place_order(request)
    assert placed.broker_order_id == assert_exactly_one_order(fake, request)["id"]
    assert len(fake.order_posts()) == 1


def test_a_2xx_order_body_of_the_wrong_shape_is_resolved_by_lookup(
    broker: AlpacaBroker, fake: FakeAlpaca
) -> None:
    request = order()
    fake.inject(Fault.respond(200, ["not", "an", "order"]), method="POST", path="/v2/orders")
    with pytest.raises(AmbiguousOrderError, match="could not be read"):
        broker.place_order(request)  # the canned answer placed nothing
    placed = broker.place_order(request, resume=True)
    assert placed.broker_order_id == assert_exactly_one_order(fake, request)["id"]


# --------------------------------------------------------------------------- auth


def test_auth_failure_is_fatal_and_not_retried(fake: FakeAlpaca, sleeps: list[float]) -> None:
    config, credentials = alpaca_connection(fake, secret_key="not-the-secret")
    broker = AlpacaBroker(config, credentials, sleep=sleeps.append)
    with pytest.raises(FatalBrokerError) as info:
        broker.place_order(order())
    assert info.value.status_code == 401
    assert not is_retryable(info.value)
    assert len(fake.requests) == 1
    assert sleeps == []


def test_forbidden_without_an_order_code_is_fatal(broker: AlpacaBroker, fake: FakeAlpaca) -> None:
    fake.inject(Fault.respond(403, {"message": "forbidden."}), method="GET", path="/v2/account")
    with pytest.raises(FatalBrokerError, match="HTTP 403 forbidden"):
        broker.get_account()


# --------------------------------------------------------------------------- rate limits


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def timed_fake(clock: FakeClock) -> Iterator[FakeAlpaca]:
    with FakeAlpaca(clock=clock) as server:
        yield server


def timed_broker(fake: FakeAlpaca, clock: FakeClock, **kwargs: Any) -> AlpacaBroker:
    config, credentials = alpaca_connection(fake)
    kwargs.setdefault("rate_limiter", AlpacaRateLimiter(clock=clock))
    return AlpacaBroker(config, credentials, sleep=clock.sleep, clock=clock, **kwargs)


def test_429_waits_until_the_reset_then_succeeds(timed_fake: FakeAlpaca, clock: FakeClock) -> None:
    broker = timed_broker(timed_fake, clock)
    timed_fake.inject(Fault.http_429(reset_in=7), method="GET", path="/v2/account")
    assert broker.get_account().currency == "USD"
    assert clock.sleeps == [7.0]  # exactly until X-RateLimit-Reset, through the injected sleep
    assert [r.status for r in timed_fake.requests_to("GET", "/v2/account")] == [429, 200]


def test_429_on_an_order_is_resent_safely_once(timed_fake: FakeAlpaca, clock: FakeClock) -> None:
    broker = timed_broker(timed_fake, clock)
    timed_fake.inject(Fault.http_429(reset_in=3), method="POST", path="/v2/orders")
    request = order()
    placed = broker.place_order(request)
    assert placed.broker_order_id == assert_exactly_one_order(timed_fake, request)["id"]
    assert [r.status for r in timed_fake.order_posts()] == [429, 200]
    assert clock.sleeps == [3.0]


def test_persistent_429_raises_rate_limited_with_retry_after(
    timed_fake: FakeAlpaca, clock: FakeClock
) -> None:
    broker = timed_broker(timed_fake, clock)
    timed_fake.inject(Fault.http_429(reset_in=5), method="GET", path="/v2/clock", times=None)
    with pytest.raises(RateLimitedError) as info:
        broker.get_clock()
    assert info.value.retry_after == pytest.approx(5.0)
    assert info.value.status_code == 429
    assert len(timed_fake.requests_to("GET", "/v2/clock")) == 3  # ours, not the SDK's 4
    assert clock.sleeps == [5.0, 5.0]


def test_retry_after_header_is_used_without_a_reset(
    timed_fake: FakeAlpaca, clock: FakeClock
) -> None:
    broker = timed_broker(timed_fake, clock)
    body = {"code": 42910000, "message": "rate limit exceeded"}
    timed_fake.inject(
        Fault.respond(429, body, headers={"Retry-After": "4"}), method="GET", path="/v2/account"
    )
    broker.get_account()
    assert clock.sleeps == [4.0]


def test_remaining_zero_makes_the_next_call_wait_for_the_reset(
    clock: FakeClock,
) -> None:
    with FakeAlpaca(clock=clock, rate_limit_per_minute=3) as fake:
        broker = timed_broker(fake, clock)
        for _ in range(3):
            broker.get_clock()
        assert clock.sleeps == []
        broker.get_clock()  # the third answer said Remaining: 0
        assert clock.sleeps == [60.0]
        assert all(r.status == 200 for r in fake.requests)


def test_client_side_limiter_reaches_90_percent_with_zero_429(clock: FakeClock) -> None:
    with FakeAlpaca(clock=clock, rate_limit_per_minute=200) as fake:
        broker = timed_broker(fake, clock)  # the default limiter: 200/min at 90%, burst 10
        started = clock()
        for _ in range(400):
            broker.get_clock()
        elapsed = clock() - started
        statuses = [r.status for r in fake.requests]
    assert statuses.count(429) == 0
    assert len(statuses) == 400
    rate_per_minute = 400 / elapsed * 60
    assert 180 <= rate_per_minute <= 195  # 400 requests: 5 at once, then 190 per minute
    stamps = [r.at for r in fake.requests]
    window = max(sum(1 for t in stamps if s <= t < s + 60) for s in stamps)
    assert window <= 195


def test_fake_enforces_its_rolling_minute(clock: FakeClock) -> None:
    with FakeAlpaca(clock=clock, rate_limit_per_minute=5) as fake:
        broker = timed_broker(
            fake, clock, rate_limiter=AlpacaRateLimiter(10_000, burst=10, clock=clock)
        )
        broker.rate_limiter.observe = lambda headers: None  # type: ignore[method-assign]
        for _ in range(5):
            broker.get_clock()
        broker.get_clock()  # the sixth in a minute: 429, wait for the reset, then 200
        assert [r.status for r in fake.requests] == [200] * 5 + [429, 200]
        assert clock.sleeps == [60.0]


def test_limiter_paces_a_burst_then_a_steady_rate(clock: FakeClock) -> None:
    limiter = AlpacaRateLimiter(200, utilisation=0.9, burst=10, clock=clock)
    waits = [limiter.acquire(clock.sleep) for _ in range(30)]
    assert waits[:10] == [0.0] * 10
    assert all(w == pytest.approx(60 / 180, abs=1e-5) for w in waits[10:])
    clock.advance(3600)
    assert limiter.acquire(clock.sleep) == 0.0  # idle time refills the bucket


# --------------------------------------------------------------------------- fills


def test_partial_fill_then_complete(broker: AlpacaBroker, fake: FakeAlpaca) -> None:
    fake.set_fill_rule("AAPL", FillRule(partial_ratio=Decimal("0.4"), polls_before_complete=1))
    request = order(quantity=Decimal(10))
    placed = broker.place_order(request)
    assert placed.status is S.PARTIALLY_FILLED
    assert placed.filled_quantity == Decimal(4)
    assert not placed.is_terminal
    (fill,) = placed.fills  # each execution is its own FILL activity
    assert fill.quantity == Decimal(4)
    done = broker.get_order(placed.broker_order_id)
    assert done.status is S.FILLED
    assert done.filled_quantity == Decimal(10)
    assert [f.quantity for f in done.fills] == [Decimal(4), Decimal(6)]
    assert done.fills[0].fill_id == fill.fill_id
    assert fake.positions == {"AAPL": Decimal(10)}
    assert fake.cash == Decimal(99000)


def test_fill_after_polls_and_never_completing_partial(
    broker: AlpacaBroker, fake: FakeAlpaca
) -> None:
    fake.set_fill_rule("AAPL", FillRule(polls_before_fill=2))
    placed = broker.place_order(order())
    assert placed.status is S.OPEN
    assert broker.get_order(placed.broker_order_id).status is S.OPEN
    assert broker.get_order(placed.broker_order_id).status is S.FILLED
    fake.set_fill_rule("AAPL", FillRule(partial_ratio=Decimal("0.5"), polls_before_complete=None))
    stuck = broker.place_order(order(quantity=Decimal(6)))
    for _ in range(3):
        assert broker.get_order(stuck.broker_order_id).filled_quantity == Decimal(3)
    broker.cancel_order(stuck.broker_order_id)
    cancelled = broker.get_order(stuck.broker_order_id)
    assert cancelled.status is S.CANCELLED
    assert cancelled.filled_quantity == Decimal(3)  # a cancelled order keeps its partial fill


def test_insufficient_buying_power_from_reserved_open_orders(
    broker: AlpacaBroker, fake: FakeAlpaca
) -> None:
    fake.cash = Decimal(1000)
    fake.auto_fill = False
    broker.place_order(order(quantity=Decimal(6)))  # reserves 600
    with pytest.raises(OrderRejectedError, match="insufficient buying power"):
        broker.place_order(order(quantity=Decimal(5)))
    assert broker.get_account().buying_power == Decimal(400)
