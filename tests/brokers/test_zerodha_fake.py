"""The fake Kite server itself, driven through the real kiteconnect SDK (and raw HTTP)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
import requests
from kiteconnect import KiteConnect
from kiteconnect import exceptions as kex

from tests.fakes.fake_kite import FAULTS, FakeKite, FillPolicy


@pytest.fixture
def fake() -> Iterator[FakeKite]:
    with FakeKite(prices={"INFY": "1500", "TCS": "3000"}, cash="100000") as server:
        yield server


@pytest.fixture
def kite(fake: FakeKite) -> KiteConnect:
    return KiteConnect(fake.api_key, access_token=fake.access_token, root=fake.url, timeout=1)


def order(**overrides: Any) -> dict[str, Any]:
    params: dict[str, Any] = {
        "variety": "regular",
        "exchange": "NSE",
        "tradingsymbol": "INFY",
        "transaction_type": "BUY",
        "quantity": 2,
        "product": "CNC",
        "order_type": "MARKET",
        "market_protection": -1,
        "tag": "SARAS1",
    }
    params.update(overrides)
    return {k: v for k, v in params.items() if v is not None}


def test_accepted_market_order_fills_with_history_trades_and_book(
    fake: FakeKite, kite: KiteConnect
) -> None:
    order_id = kite.place_order(**order())

    history = kite.order_history(order_id)
    assert [h["status"] for h in history] == [
        "PUT ORDER REQ RECEIVED",
        "VALIDATION PENDING",
        "OPEN PENDING",
        "OPEN",
        "COMPLETE",
    ]
    (book_entry,) = kite.orders()
    assert book_entry["tag"] == "SARAS1" and book_entry["tags"] == ["SARAS1"]
    assert book_entry["average_price"] == 1500
    (trade,) = kite.order_trades(order_id)
    assert (trade["quantity"], trade["average_price"]) == (2, 1500)
    assert kite.positions()["net"][0]["quantity"] == 2
    assert fake.cash == Decimal("97000")
    assert kite.margins()["equity"]["available"]["live_balance"] == 97000


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        ({"market_protection": None}, kex.InputException, "market protection"),
        ({"market_protection": 0}, kex.InputException, "market protection"),
        ({"market_protection": 101}, kex.InputException, "market protection"),
        ({"quantity": "1.5"}, kex.InputException, "Invalid `quantity`."),
        ({"quantity": 0}, kex.InputException, "Invalid `quantity`."),
        ({"tag": "A" * 21}, kex.InputException, "Invalid `tag`."),
        ({"tag": "has space"}, kex.InputException, "Invalid `tag`."),
        ({"order_type": "LIMIT", "market_protection": None}, kex.OrderException, "Valid Price"),
        ({"tradingsymbol": "NOSUCH"}, kex.InputException, "tradingsymbol"),
        ({"variety": "iceberg"}, kex.InputException, "variety"),
    ],
)
def test_placement_validations(
    fake: FakeKite,
    kite: KiteConnect,
    overrides: dict[str, Any],
    error: type[Exception],
    message: str,
) -> None:
    with pytest.raises(error, match=message) as info:
        kite.place_order(**order(**overrides))
    assert info.value.code == 400  # type: ignore[attr-defined]
    assert fake.orders() == []


def test_protection_percentages_and_auto_are_accepted(kite: KiteConnect) -> None:
    kite.place_order(**order(market_protection=-1, tag="A1"))
    kite.place_order(**order(market_protection=2.5, tag="A2"))
    assert len(kite.orders()) == 2


def test_risk_rejections_come_after_a_200(fake: FakeKite, kite: KiteConnect) -> None:
    broke = kite.place_order(**order(quantity=100))
    naked = kite.place_order(**order(transaction_type="SELL", tradingsymbol="TCS", tag="S2"))

    assert kite.order_history(broke)[-1]["status"] == "REJECTED"
    assert kite.order_history(broke)[-1]["status_message"].startswith("Insufficient funds")
    assert kite.order_history(naked)[-1]["status"] == "REJECTED"
    assert fake.cash == Decimal("100000")


def test_market_hours_are_enforced_when_asked(fake: FakeKite, kite: KiteConnect) -> None:
    fake.market_open = False
    with pytest.raises(kex.InputException, match="Markets are closed"):
        kite.place_order(**order())
    amo = kite.place_order(**order(variety="amo"))
    assert kite.order_history(amo)[-1]["status"] == "AMO REQ RECEIVED"

    fake.open_market()
    assert kite.order_history(amo)[-1]["status"] == "COMPLETE"
    with pytest.raises(kex.InputException):
        kite.place_order(**order(variety="amo", tag="LATE"))


def test_fill_policies(fake: FakeKite, kite: KiteConnect) -> None:
    fake.set_fill_policy(FillPolicy(mode="manual"), symbol="TCS")
    fake.set_fill_policy(FillPolicy(mode="polls", polls=2), symbol="INFY")

    manual = kite.place_order(**order(tradingsymbol="TCS", quantity=3))
    polled = kite.place_order(**order(tag="P1"))

    assert kite.order_history(polled)[-1]["status"] == "OPEN"
    assert kite.order_history(polled)[-1]["status"] == "COMPLETE"
    fake.fill(manual, 1, price="2990")
    assert kite.order_history(manual)[-1]["filled_quantity"] == 1
    fake.fill(manual)
    last = kite.order_history(manual)[-1]
    assert (last["status"], last["filled_quantity"]) == ("COMPLETE", 3)
    assert last["average_price"] == pytest.approx((2990 + 2 * 3000) / 3, abs=1e-4)
    with pytest.raises(ValueError, match="cannot fill"):
        fake.fill(manual)


def test_limit_orders_fill_only_when_they_cross(fake: FakeKite, kite: KiteConnect) -> None:
    low = kite.place_order(**order(order_type="LIMIT", price=1400, market_protection=None))
    high = kite.place_order(
        **order(order_type="LIMIT", price=1600, market_protection=None, tag="H")
    )

    assert kite.order_history(low)[-1]["status"] == "OPEN"
    high_state = kite.order_history(high)[-1]
    assert (high_state["status"], high_state["average_price"]) == ("COMPLETE", 1500)
    kite.cancel_order("regular", low)
    assert kite.order_history(low)[-1]["status"] == "CANCELLED"
    with pytest.raises(kex.OrderException):
        kite.cancel_order("regular", low)


def test_end_of_day_settles_into_holdings(fake: FakeKite, kite: KiteConnect) -> None:
    fake.add_holding("TCS", 5, "2500", t1_quantity=1)
    kite.place_order(**order(quantity=4))
    kite.place_order(**order(tradingsymbol="TCS", transaction_type="SELL", quantity=2, tag="S"))

    fake.end_of_day()

    holdings = {h["tradingsymbol"]: h for h in kite.holdings()}
    assert (holdings["INFY"]["quantity"], holdings["INFY"]["t1_quantity"]) == (0, 4)
    assert (holdings["TCS"]["quantity"], holdings["TCS"]["t1_quantity"]) == (4, 0)
    assert kite.orders() == []
    assert kite.positions() == {"net": [], "day": []}


def test_authentication(fake: FakeKite) -> None:
    wrong = KiteConnect(fake.api_key, access_token="nope", root=fake.url)
    with pytest.raises(kex.TokenException) as info:
        wrong.orders()
    assert info.value.code == 403
    assert fake.requests[-1].authorized is False

    raw = requests.get(
        f"{fake.url}/orders",
        headers={"Authorization": f"token {fake.api_key}:{fake.access_token}"},
        timeout=2,
    )
    assert raw.status_code == 400  # no X-Kite-Version header
    assert raw.json()["error_type"] == "InputException"


def test_token_expiry_and_fresh_login(fake: FakeKite, kite: KiteConnect) -> None:
    kite.orders()
    fake.expire_token()
    with pytest.raises(kex.TokenException):
        kite.orders()
    fake.set_access_token("fresh")
    kite.set_access_token("fresh")
    assert kite.orders() == []


def test_unknown_route(kite: KiteConnect) -> None:
    with pytest.raises(kex.GeneralException, match="Route not found"):
        kite.get_gtts()


def test_request_log_holds_no_credentials(fake: FakeKite, kite: KiteConnect) -> None:
    kite.place_order(**order())
    (placed,) = fake.placement_requests("SARAS1")
    assert placed.form["market_protection"] == "-1"
    assert placed.status == 200
    assert fake.access_token not in repr(fake.requests)
    assert fake.api_key not in repr(fake.requests)


def test_rate_limit_is_enforced(fake: FakeKite, kite: KiteConnect) -> None:
    now = [100.0]
    fake.rate_clock = lambda: now[0]
    fake.set_fill_policy(FillPolicy(mode="manual"))
    for i in range(10):
        kite.place_order(**order(tag=f"R{i}", quantity=1))
    with pytest.raises(kex.NetworkException, match="Too many requests") as info:
        kite.place_order(**order(tag="R10", quantity=1))
    assert info.value.code == 429
    assert len(fake.orders()) == 10

    now[0] += 0.99  # still inside the first second
    with pytest.raises(kex.NetworkException):
        kite.place_order(**order(tag="R10", quantity=1))
    now[0] += 0.02
    kite.place_order(**order(tag="R10", quantity=1))
    for _ in range(10):
        kite.orders()  # reads have their own 10/s budget
    with pytest.raises(kex.NetworkException, match="Too many requests"):
        kite.orders()


def test_faults_are_consumed_in_order(fake: FakeKite, kite: KiteConnect) -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        fake.inject("gremlins")
    fake.inject("http_429", times=2)
    fake.inject("latency", method="GET", path="/orders", delay=0.2)
    assert len(fake.pending_faults()) == 2

    for _ in range(2):
        with pytest.raises(kex.NetworkException):
            kite.place_order(**order())
    started = time.monotonic()
    kite.orders()
    assert time.monotonic() - started >= 0.2
    assert fake.pending_faults() == []
    assert set(FAULTS) >= {"timeout_after_accept", "http_502_html", "token_expired"}


def test_timeout_fault_creates_the_order_and_stop_does_not_hang() -> None:
    fake = FakeKite(prices={"INFY": 10}).start()
    slow = KiteConnect(fake.api_key, access_token=fake.access_token, root=fake.url, timeout=0.2)
    fake.inject("timeout_after_accept", delay=30)

    with pytest.raises(requests.Timeout):
        slow.place_order(**order())
    assert len(fake.orders()) == 1
    assert fake.requests[0].status is None  # no answer was sent

    started = time.monotonic()
    fake.stop()
    assert time.monotonic() - started < 2


def test_refusing_and_accepting_keeps_the_port(fake: FakeKite, kite: KiteConnect) -> None:
    port = fake.port
    with fake.refusing(), pytest.raises(requests.ConnectionError):
        kite.orders()
    assert fake.port == port
    assert kite.orders() == []


def test_canned_responses_override_routes(fake: FakeKite, kite: KiteConnect) -> None:
    fake.set_canned("GET", "/orders", {"status": "success", "data": [{"order_id": "1"}]})
    assert kite.orders() == [{"order_id": "1"}]
    fake.clear_canned()
    assert kite.orders() == []


def test_instruments_and_ltp(kite: KiteConnect) -> None:
    nse = kite.instruments("NSE")
    assert {i["tradingsymbol"] for i in nse} == {"INFY", "TCS"}
    assert len(kite.instruments()) == 4
    assert kite.ltp("NSE:INFY")["NSE:INFY"]["last_price"] == 1500


def test_concurrent_placements_get_distinct_ids(fake: FakeKite) -> None:
    fake.enforce_rate_limits = False
    ids: list[str] = []
    lock = threading.Lock()

    def place(i: int) -> None:
        client = KiteConnect(fake.api_key, access_token=fake.access_token, root=fake.url)
        oid = client.place_order(**order(tag=f"C{i}", quantity=1))
        with lock:
            ids.append(oid)

    threads = [threading.Thread(target=place, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == 20
