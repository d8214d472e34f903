"""execute_run against the fake Alpaca under faults: every scenario ends with the invariants
(one broker order per planned order, ledger == book, holdings == fills, nothing in doubt)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from decimal import Decimal

import pytest
from sqlalchemy import Engine

from saras.domain.enums import ConnectionStatus, OrderStatus, RunStatus
from saras.services.execution import ExecutionSettings, MarketClosedError, RunRefused, execute_run
from tests.fakes.fake_alpaca import FakeAlpaca, Fault, FillRule
from tests.support.execution import (
    FAST,
    Checkpoints,
    Clock,
    Platform,
    assert_invariants,
    build_platform,
    count_posts,
)

ORDERS = "/v2/orders"
FILLED = OrderStatus.FILLED
SLOW_POLLS = ExecutionSettings(
    poll_interval=0.1, deadline_seconds=5, retry_backoff=0.01, lookup_horizon=1.0
)


@pytest.fixture
def alpaca_any(flow_db: Engine, alpaca_fake: FakeAlpaca, clock: Clock) -> Platform:
    """An Alpaca platform on each backend."""
    return build_platform(flow_db, "alpaca", alpaca_fake, clock)


def statuses(p: Platform, run_id: object) -> dict[str, OrderStatus]:
    return {o.symbol: o.status for o in p.orders(run_id)}  # type: ignore[arg-type]


def assert_each_order_sent_once(p: Platform) -> None:
    for order in p.orders():
        assert p.placements(order) == 1, f"{order.symbol}: {p.placements(order)} POSTs"


def assert_rerun_changes_nothing(p: Platform, run_id: object, status: str) -> None:
    """A second execute_run on a finished run returns its outcome and touches nothing."""
    before = (p.holdings(), p.cash(), len(p.transactions()), statuses(p, run_id))
    requests_before = len(p.fake.requests)
    again = p.execute(run_id)  # type: ignore[arg-type]
    assert again.status == status
    assert (p.holdings(), p.cash(), len(p.transactions()), statuses(p, run_id)) == before
    assert len(p.fake.requests) == requests_before, "a finished run talked to the broker"
    assert_invariants(p)


# --- the clean path and concurrency, on both backends -------------------------------------------


def test_clean_run_places_each_order_once_and_a_rerun_changes_nothing(
    alpaca_any: Platform,
) -> None:
    p = alpaca_any
    run_id = p.plan()
    outcome = p.execute(run_id)
    assert (outcome.status, outcome.orders) == ("completed", {"filled": 4})
    assert p.run_status(run_id) is RunStatus.COMPLETED
    assert p.investment_status() == "active"
    assert count_posts(p) == 4
    assert_each_order_sent_once(p)
    assert_invariants(p)
    assert_rerun_changes_nothing(p, run_id, "completed")


def test_a_second_executor_is_refused_while_the_first_runs(alpaca_any: Platform) -> None:
    p = alpaca_any
    run_id = p.plan()
    refused: list[str] = []

    def second_executor() -> None:
        with pytest.raises(RunRefused) as info:
            execute_run(p.engine, run_id, broker=p.broker(), settings=FAST, sleep=p.clock.sleep)
        refused.append(str(info.value))

    hooks = (
        Checkpoints()
        .at("run_started", 1, second_executor)
        .at("answer_recorded", 2, second_executor)
    )
    assert p.execute(run_id, checkpoint=hooks).status == "completed"
    assert len(refused) == 2 and all("another process" in r for r in refused)
    assert_each_order_sent_once(p)
    assert_invariants(p)


# --- lost answers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [
        Fault.timeout_after_accept(delay=3.0),
        Fault.drop_after_accept(),
        Fault.http_500(placed=True),
        Fault.http_504_html(placed=True),
        Fault.malformed_json(),
    ],
    ids=lambda f: f.kind + ("_placed" if f.placed else ""),
)
def test_answer_lost_after_the_order_was_placed_is_resolved_by_lookup(
    alpaca: Platform, fault: Fault
) -> None:
    p = alpaca
    run_id = p.plan()
    # the first two orders (one only for a timeout: each costs the client's 0.5 s timeout)
    times = 1 if fault.kind == "timeout_after_accept" else 2
    p.fake.inject(fault, method="POST", path=ORDERS, times=times)
    outcome = p.execute(run_id)
    assert outcome.status == "completed", outcome
    assert_each_order_sent_once(p)  # found by client order id, never re-sent
    assert_invariants(p)
    assert_rerun_changes_nothing(p, run_id, "completed")


@pytest.mark.parametrize(
    "fault",
    [Fault.http_500(placed=False), Fault.http_504_html(placed=False), Fault.refuse()],
    ids=lambda f: f.kind,
)
def test_answer_lost_before_the_order_was_placed_is_sent_again_once(
    alpaca: Platform, fault: Fault
) -> None:
    p = alpaca
    run_id = p.plan()
    p.fake.inject(fault, method="POST", path=ORDERS, times=1)
    outcome = p.execute(run_id)
    assert outcome.status == "completed", outcome
    # the lost POST (a reset is recorded without its body), then one more after the lookup
    # proved the order absent
    assert count_posts(p) == 5
    assert len(p.book()) == 4
    assert_invariants(p)


# --- connection refused -------------------------------------------------------------------------


def test_connection_refused_mid_basket_recovers_within_the_run(alpaca: Platform) -> None:
    p = alpaca
    run_id = p.plan()
    sleeps_while_down: list[float] = []

    def come_back(clock: Clock) -> None:
        sleeps_while_down.append(clock.sleeps[-1])
        if len(sleeps_while_down) == 3:
            p.fake.start()

    def go_down() -> None:
        p.fake.stop()
        p.clock.hooks.append(come_back)

    outcome = p.execute(run_id, checkpoint=Checkpoints().at("answer_recorded", 1, go_down))
    assert outcome.status == "completed", outcome
    assert len(sleeps_while_down) >= 3
    assert_each_order_sent_once(p)
    assert_invariants(p)


def test_connection_refused_for_the_rest_of_the_run_leaves_it_resumable(alpaca: Platform) -> None:
    p = alpaca
    run_id = p.plan()
    outcome = p.execute(run_id, checkpoint=Checkpoints().at("answer_recorded", 1, p.fake.stop))
    assert outcome.status == "executing" and "doubt" in (outcome.reason or ""), outcome
    assert p.run_status(run_id) is RunStatus.EXECUTING
    seen = statuses(p, run_id)
    assert sorted(seen.values()) == [FILLED, *[OrderStatus.SUBMITTING] * 3], seen
    assert_invariants(p, in_doubt_ok=True)

    p.fake.start()
    outcome = p.execute(run_id)
    assert outcome.status == "completed", outcome
    assert_each_order_sent_once(p)
    assert_invariants(p)
    assert_rerun_changes_nothing(p, run_id, "completed")


# --- rate limits --------------------------------------------------------------------------------


def test_429_storm_on_orders_waits_for_the_reset_and_places_once(alpaca: Platform) -> None:
    p = alpaca
    run_id = p.plan()
    p.fake.inject(Fault.http_429(reset_in=2.0), method="POST", path=ORDERS, times=5)
    outcome = p.execute(run_id)
    assert outcome.status == "completed", outcome
    first = p.orders(run_id)[0]
    assert p.placements(first) == 6  # five 429s, then the one that placed it
    assert len(p.book()) == 4
    requests = p.fake.requests
    throttled = [i for i, r in enumerate(requests) if r.status == 429]
    assert len(throttled) == 5
    for i in throttled:  # nothing is sent before the X-RateLimit-Reset it was given
        reset = math.ceil(requests[i].at + 2.0)
        assert requests[i + 1].at >= reset - 1e-6, (requests[i].at, requests[i + 1].at)
    assert_invariants(p)


def test_429_storm_on_polling_reads_with_partial_fills(alpaca: Platform) -> None:
    p = alpaca
    p.fake.set_fill_rule(None, FillRule(partial_ratio=Decimal("0.5"), polls_before_complete=2))
    run_id = p.plan()
    p.fake.inject(Fault.http_429(reset_in=0.5), method="GET", path=ORDERS + "/*", times=6)
    # every 429 makes the adapter wait for its reset (about a second each): a longer deadline
    outcome = p.execute(
        run_id, settings=ExecutionSettings(0.01, 60, retry_backoff=0.01, lookup_horizon=1.0)
    )
    assert outcome.status == "completed", outcome
    assert sum(1 for r in p.fake.requests if r.status == 429) == 6
    assert len(p.transactions()) == 8  # a partial fill and the rest, per order
    assert_each_order_sent_once(p)
    assert_invariants(p)


# --- duplicate client order ids ------------------------------------------------------------------


def test_an_order_already_at_the_broker_under_our_id_is_adopted_not_duplicated(
    alpaca: Platform,
) -> None:
    p = alpaca
    run_id = p.plan()
    first = p.orders(run_id)[0]
    price = p.prices[first.symbol]
    # an earlier executor placed it (and it filled) but its answer never reached our database
    seeded = p.fake.seed_order(
        first.symbol, "buy", first.quantity, client_order_id=p.key(first), status="filled"
    )
    p.fake.set_position(first.symbol, first.quantity, price)
    p.fake.cash = p.fake.cash - first.quantity * price
    outcome = p.execute(run_id)
    assert outcome.status == "completed", outcome
    adopted = p.orders(run_id)[0]
    assert adopted.broker_order_id == seeded["id"]
    assert p.placements(first) == 1  # answered 422 "client_order_id must be unique", looked up
    assert len(p.book()) == 4
    assert_invariants(p)


# --- fills ------------------------------------------------------------------------------------


def test_partial_fills_and_late_fills_complete_over_polls(alpaca: Platform) -> None:
    p = alpaca
    p.fake.set_fill_rule("AAPL", FillRule(polls_before_fill=3))
    p.fake.set_fill_rule("MSFT", FillRule(partial_ratio=Decimal("0.3"), polls_before_complete=2))
    p.fake.set_fill_rule("NVDA", FillRule(partial_ratio=Decimal("0.5"), polls_before_complete=4))
    run_id = p.plan()
    outcome = p.execute(run_id)
    assert outcome.status == "completed", outcome
    per_symbol: dict[str, int] = {}
    for symbol, *_ in p.transactions():
        per_symbol[symbol] = per_symbol.get(symbol, 0) + 1
    assert per_symbol == {"AAPL": 1, "GOOGL": 1, "MSFT": 2, "NVDA": 2}
    assert_each_order_sent_once(p)
    assert_invariants(p)


def test_a_partial_fill_that_never_completes_is_cancelled_at_the_deadline(
    alpaca: Platform,
) -> None:
    p = alpaca
    p.fake.set_fill_rule("MSFT", FillRule(partial_ratio=Decimal("0.4"), polls_before_complete=None))
    run_id = p.plan()
    outcome = p.execute(run_id, settings=SLOW_POLLS)
    assert outcome.status == "partially_completed", outcome
    seen = statuses(p, run_id)
    assert seen["MSFT"] is OrderStatus.CANCELLED
    msft = next(o for o in p.orders(run_id) if o.symbol == "MSFT")
    assert 0 < msft.filled_quantity < msft.quantity
    assert p.investment_status() == "active"
    assert_invariants(p)
    assert_rerun_changes_nothing(p, run_id, "partially_completed")


def test_orders_that_never_fill_are_cancelled_and_the_run_fails(alpaca: Platform) -> None:
    p = alpaca
    p.fake.auto_fill = False
    run_id = p.plan()
    outcome = p.execute(
        run_id, settings=ExecutionSettings(0.05, 2, retry_backoff=0.01, lookup_horizon=1.0)
    )
    assert outcome.status == "failed", outcome
    assert set(statuses(p, run_id).values()) == {OrderStatus.CANCELLED}
    assert {b.status for b in p.book()} == {"canceled"}
    assert p.investment_status() == "failed"
    assert_invariants(p)


# --- rejections -------------------------------------------------------------------------------


def test_insufficient_buying_power_rejects_the_rest_without_retrying(alpaca: Platform) -> None:
    p = alpaca
    p.fake.cash = Decimal("4500")  # AAPL and GOOGL fit, MSFT and NVDA do not
    p.start_broker_cash = p.broker_cash()
    run_id = p.plan()
    outcome = p.execute(run_id)
    assert outcome.status == "partially_completed", outcome
    seen = statuses(p, run_id)
    assert seen == {
        "AAPL": FILLED,
        "GOOGL": FILLED,
        "MSFT": OrderStatus.REJECTED,
        "NVDA": OrderStatus.REJECTED,
    }
    for order in p.orders(run_id):
        if order.status is OrderStatus.REJECTED:
            assert "insufficient buying power" in order.metadata["status_reason"]
    assert_each_order_sent_once(p)
    assert p.investment_status() == "active"
    assert_invariants(p)


def test_every_order_rejected_fails_the_run_and_the_investment(alpaca: Platform) -> None:
    p = alpaca
    p.fake.cash = Decimal("500")
    p.start_broker_cash = p.broker_cash()
    run_id = p.plan()
    outcome = p.execute(run_id)
    assert outcome.status == "failed", outcome
    assert set(statuses(p, run_id).values()) == {OrderStatus.REJECTED}
    assert p.book() == []
    assert p.investment_status() == "failed"
    assert_each_order_sent_once(p)
    assert_invariants(p)


def test_a_rejection_after_an_ambiguous_answer_is_recorded_not_a_crash(alpaca: Platform) -> None:
    """A 500 that placed nothing, then the re-send is refused for buying power.

    The order is ``unknown`` after the 500; the lookup proves it absent, the adapter sends it
    again and Alpaca refuses it (403 insufficient buying power). That is a plain rejection.
    """
    p = alpaca
    p.fake.cash = Decimal("500")  # no order fits
    p.start_broker_cash = p.broker_cash()
    run_id = p.plan()
    p.fake.inject(Fault.http_500(placed=False), method="POST", path=ORDERS, times=1)
    outcome = p.execute(run_id)  # today: InvalidTransition (unknown, reject) escapes
    assert outcome.status == "failed", outcome
    assert set(statuses(p, run_id).values()) == {OrderStatus.REJECTED}
    assert p.book() == []
    assert_invariants(p)


# --- the connection fails for good ---------------------------------------------------------------


def test_credentials_refused_mid_basket_stop_the_run_without_retrying(alpaca: Platform) -> None:
    p = alpaca
    run_id = p.plan()
    unauthorized = Fault.respond(401, {"code": 40110000, "message": "request is not authorized"})

    def revoke() -> None:
        p.fake.inject(unauthorized, times=None)  # every request from now on

    outcome = p.execute(run_id, checkpoint=Checkpoints().at("answer_recorded", 1, revoke))
    posts = count_posts(p)
    assert posts == 2  # the filled AAPL, then the refused GOOGL; nothing after
    assert p.connection().status == ConnectionStatus.ERROR.value
    # the refused order never reached the book: nothing is in doubt, so the run is over
    assert outcome.status == "partially_completed", outcome
    seen = statuses(p, run_id)
    assert seen["AAPL"] is FILLED
    assert not set(seen.values()) & {OrderStatus.SUBMITTING, OrderStatus.UNKNOWN}, seen
    # the run is finished: executing it again only reports its outcome, and sends nothing
    assert p.execute(run_id).status == outcome.status
    assert count_posts(p) == posts
    assert_invariants(p)


def test_a_closed_market_starts_nothing(alpaca: Platform) -> None:
    p = alpaca
    run_id = p.plan()
    p.fake.market_open = False
    with pytest.raises(MarketClosedError, match="closed"):
        p.execute(run_id)
    assert count_posts(p) == 0
    assert p.run_status(run_id) is RunStatus.APPROVED
    p.fake.market_open = True
    assert p.execute(run_id).status == "completed"
    assert_invariants(p)


@pytest.fixture(autouse=True)
def _stop_fake_hooks(clock: Clock) -> Iterator[None]:
    yield
    clock.hooks.clear()
