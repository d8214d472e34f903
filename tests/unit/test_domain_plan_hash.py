"""plan_hash: stable under key order, Decimal spelling and a jsonb round trip."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from decimal import Decimal

import pytest

from saras.domain.enums import OrderSide
from saras.domain.plan_hash import canonical_json, decimal_to_str, plan_hash


def _plan() -> dict[str, object]:
    return {
        "run_type": "rebalance",
        "orders": [
            {"symbol": "AAPL", "side": OrderSide.SELL, "quantity": Decimal("1.50")},
            {"symbol": "MSFT", "side": OrderSide.BUY, "quantity": Decimal("2")},
        ],
        "cash": Decimal("100.00"),
        "meta": {"b": 1, "a": None, "ok": True},
    }


def test_canonical_text_is_pinned() -> None:
    text = canonical_json(_plan())
    assert text == (
        '{"cash":"100","meta":{"a":null,"b":1,"ok":true},"orders":['
        '{"quantity":"1.5","side":"sell","symbol":"AAPL"},'
        '{"quantity":"2","side":"buy","symbol":"MSFT"}],"run_type":"rebalance"}'
    )
    assert plan_hash(_plan()) == hashlib.sha256(text.encode()).hexdigest()
    assert len(plan_hash(_plan())) == 64


def test_key_order_does_not_matter() -> None:
    plan = _plan()
    reordered = dict(reversed(list(plan.items())))
    reordered["meta"] = {"ok": True, "a": None, "b": 1}
    assert plan_hash(reordered) == plan_hash(plan)


def test_decimal_spelling_does_not_matter_but_values_do() -> None:
    a = {"q": Decimal("1.50"), "p": Decimal("1E+2"), "z": Decimal("-0.000")}
    b = {"q": Decimal("1.5"), "p": Decimal("100"), "z": Decimal("0")}
    assert plan_hash(a) == plan_hash(b)
    assert plan_hash({"q": Decimal("1.5")}) != plan_hash({"q": Decimal("1.51")})
    assert plan_hash({"q": Decimal("1")}) != plan_hash({"q": 1})  # a string is not a number


def test_jsonb_round_trip_keeps_the_hash() -> None:
    plan = _plan()
    stored = json.loads(json.dumps(json.loads(canonical_json(plan)), indent=2))
    assert plan_hash(stored) == plan_hash(plan)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (Decimal("0.000000001"), "0.000000001"),
        (Decimal("1E-9"), "0.000000001"),
        (Decimal("12.3400"), "12.34"),
        (Decimal("-5.10"), "-5.1"),
        (Decimal("2.5E+3"), "2500"),
        (Decimal("-0"), "0"),
    ],
)
def test_decimal_to_str(value: Decimal, text: str) -> None:
    assert decimal_to_str(value) == text


def test_other_types() -> None:
    uid = uuid.UUID("12345678-1234-5678-1234-567812345678")
    day = dt.date(2024, 1, 2)
    at = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    text = canonical_json({"id": uid, "d": day, "t": at, "l": (1, 2)})
    assert text == (
        '{"d":"2024-01-02","id":"12345678-1234-5678-1234-567812345678",'
        '"l":[1,2],"t":"2024-01-02T03:04:05+00:00"}'
    )


@pytest.mark.parametrize(
    "bad",
    [
        {"x": 1.5},
        {"x": Decimal("NaN")},
        {"x": Decimal("Infinity")},
        {1: "int key"},
        {"x": object()},
    ],
)
def test_refuses_what_has_no_canonical_form(bad: dict[object, object]) -> None:
    with pytest.raises((TypeError, ValueError)):
        plan_hash(bad)  # type: ignore[arg-type]
