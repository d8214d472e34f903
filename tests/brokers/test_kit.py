"""The shared broker kit: one resend loop, one rate limiter, one market clock."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from saras.brokers.base import BrokerOrder, BrokerOrderStatus
from saras.brokers.errors import (
    AmbiguousOrderError,
    FatalBrokerError,
    RetryableBrokerError,
)
from saras.brokers.kit.clock import market_clock
from saras.brokers.kit.rate import Budget, RateLimiter, install_backend
from saras.brokers.kit.resend import (
    OrderStillInDoubt,
    SendLog,
    before_resend,
    place_once,
    resolve,
)
from saras.brokers.zerodha import nse_market_clock
from saras.domain.enums import OrderSide
from saras.marketdata.base import CalendarRangeError
from tests.fakes.fake_alpaca import FakeClock


def order(cid: str = "c-1") -> BrokerOrder:
    return BrokerOrder("B-1", cid, "AAPL", OrderSide.BUY, Decimal(1), Decimal(0), None,
                       BrokerOrderStatus.PENDING)  # fmt: skip


# --------------------------------------------------------------------------- resend loop


def test_a_resumed_order_found_at_the_venue_is_not_sent_again() -> None:
    sent: list[str] = []
    found = place_once(key="k", client_order_id="c-1", broker="x", resume=True,
                       find=order, send=lambda: sent.append("sent") or order())  # fmt: skip
    assert found.broker_order_id == "B-1" and sent == []


def test_an_order_sent_moments_ago_and_not_yet_visible_is_not_sent_twice() -> None:
    t = FakeClock(start=100.0)
    log = SendLog(t)
    sends: list[int] = []

    def send() -> BrokerOrder:
        sends.append(1)
        return order()

    def attempt(resume: bool) -> BrokerOrder:
        return place_once(key="k", client_order_id="c-1", broker="x", resume=resume,
                          find=lambda: None, send=send, sent=log, horizon=30.0)  # fmt: skip

    attempt(False)
    t.advance(10)  # inside the horizon: absent proves nothing yet
    with pytest.raises(AmbiguousOrderError):
        attempt(True)
    t.advance(25)  # past the horizon: absent means absent
    attempt(True)
    assert len(sends) == 2


def test_the_resend_rule_found_in_doubt_absent_and_never_sent() -> None:
    def rule(find: Callable[[], BrokerOrder | None], age: float | None) -> BrokerOrder | None:
        return before_resend(find, client_order_id="c-1", broker="x", age=age, horizon=30.0)

    assert rule(order, 5.0) is not None  # found: the order, whatever its age
    with pytest.raises(OrderStillInDoubt, match=r"5\.0 s after it was sent") as doubt:
        rule(lambda: None, 5.0)
    assert doubt.value.age == 5.0 and isinstance(doubt.value, AmbiguousOrderError)
    with pytest.raises(OrderStillInDoubt):
        rule(lambda: None, -2.0)  # a send time ahead of this clock proves nothing either
    assert rule(lambda: None, 30.0) is None  # absent at the horizon: may be sent
    assert rule(lambda: None, None) is None  # never sent: may be sent
    with pytest.raises(RetryableBrokerError):  # a failed lookup tells nothing: it propagates
        rule(lambda: (_ for _ in ()).throw(RetryableBrokerError("down")), 60.0)


def test_resolve_looks_up_with_waits_and_reports_the_last_failure() -> None:
    t = FakeClock(start=100.0)
    answers: list[Callable[[], BrokerOrder | None]] = [
        lambda: (_ for _ in ()).throw(RetryableBrokerError("timeout")),
        lambda: None,
        order,
    ]
    lookup = resolve(lambda: answers.pop(0)(), delays=[0, 1, 2], sleep=t.sleep)
    assert lookup.order is not None and t.sleeps == [1, 2]

    failing = resolve(lambda: (_ for _ in ()).throw(RetryableBrokerError("down")),
                      delays=[0, 1], sleep=t.sleep)  # fmt: skip
    assert failing.order is None and isinstance(failing.error, RetryableBrokerError)

    with pytest.raises(FatalBrokerError):
        resolve(lambda: (_ for _ in ()).throw(FatalBrokerError("token")), delays=[0, 1],
                sleep=t.sleep)  # fmt: skip

    calls: list[int] = []
    absent = resolve(lambda: calls.append(1), delays=[0, 1, 2], sleep=t.sleep,  # type: ignore[func-returns-value]
                     stop_when_absent=True)  # fmt: skip
    assert absent.order is None and absent.error is None and len(calls) == 1


# --------------------------------------------------------------------------- rate limiter


def test_windows_pacing_and_the_venues_hold_combine() -> None:
    t = FakeClock(start=100.0)
    windowed = RateLimiter([(3, 1.0)], clock=t, sleep=t.sleep)
    stamps = []
    for _ in range(7):
        windowed.acquire()
        stamps.append(t())
    assert stamps == [100.0, 100.0, 100.0, 101.0, 101.0, 101.0, 102.0]

    paced = RateLimiter(interval=0.5, burst=2, clock=t, sleep=t.sleep)
    waits = [paced.reserve() for _ in range(4)]
    assert waits == [0.0, 0.0, 0.5, 1.0]

    held = RateLimiter(clock=t, sleep=t.sleep, max_wait=5.0)
    held.defer(60.0)  # capped at max_wait
    assert held.acquire() == pytest.approx(5.0)


def test_budgets_go_to_the_installed_backend() -> None:
    taken: list[tuple[str, ...]] = []

    class Backend:
        def take(self, budgets: tuple[Budget, ...]) -> None:
            taken.append(tuple(b.name for b in budgets))

    budget = Budget("broker:abc", 200, 60.0)
    limiter = RateLimiter(budgets=[budget])
    previous = install_backend(Backend())
    try:
        limiter.acquire()
        RateLimiter().acquire()  # declares no budget: nothing shared
    finally:
        install_backend(previous)
    limiter.acquire()  # no backend: in-process only
    assert taken == [("broker:abc",)]
    assert budget.decay_per_second == pytest.approx(200 / 60)


# --------------------------------------------------------------------------- market clock


def test_the_market_clock_reads_the_exchange_calendar() -> None:
    # Wednesday 26 Nov 2025, 15:00 UTC = 10:00 New York: open; Thanksgiving the next day
    clock = market_clock("NYSE", datetime(2025, 11, 26, 15, 0, tzinfo=UTC))
    assert clock.is_open
    assert clock.next_close == datetime(2025, 11, 26, 21, 0, tzinfo=UTC)
    assert clock.next_open == datetime(2025, 11, 28, 14, 30, tzinfo=UTC)  # after the holiday
    assert market_clock("XNYS", datetime(2025, 11, 27, 15, 0, tzinfo=UTC)).is_open is False
    with pytest.raises(ValueError, match="aware"):
        market_clock("NYSE", datetime(2025, 11, 26, 15, 0))


def test_beyond_the_calendar_the_fallback_hours_answer() -> None:
    far = datetime(2200, 1, 7, 5, 0, tzinfo=UTC)  # a Tuesday, 10:30 IST
    with pytest.raises(CalendarRangeError):
        market_clock("NSE", far)
    clock = nse_market_clock(far)
    assert clock.is_open
    assert clock.next_close == datetime(2200, 1, 7, 10, 0, tzinfo=UTC)
