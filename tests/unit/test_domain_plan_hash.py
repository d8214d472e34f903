"""The plan's one fingerprint: per run over its sorted order lines, per plan over its runs."""

from __future__ import annotations

import hashlib
from decimal import Decimal

import pytest

from saras.domain.plan_hash import combined_plan_hash, decimal_to_str, order_line, run_orders_hash

LINES = [
    order_line("o-2", "MSFT", "sell", "1.500000000"),
    order_line("o-1", "AAPL", "buy", "2.000000000"),
]


def test_a_runs_hash_is_pinned_and_ignores_the_order_of_its_lines() -> None:
    expected = hashlib.sha256(
        b"run:r-1\no-1|AAPL|buy|2.000000000\no-2|MSFT|sell|1.500000000"
    ).hexdigest()
    assert run_orders_hash("r-1", LINES) == expected
    assert run_orders_hash("r-1", list(reversed(LINES))) == expected


def test_every_part_of_a_line_and_the_run_id_count() -> None:
    base = run_orders_hash("r-1", LINES)
    assert run_orders_hash("r-2", LINES) != base
    changed = [
        [order_line("o-2", "MSFT", "sell", "1.500000001"), LINES[1]],  # a quantity
        [order_line("o-2", "MSFT", "buy", "1.500000000"), LINES[1]],  # a side
        [order_line("o-2", "MSFX", "sell", "1.500000000"), LINES[1]],  # a symbol
        [order_line("o-3", "MSFT", "sell", "1.500000000"), LINES[1]],  # an order id
        LINES[:1],  # an order fewer
    ]
    assert all(run_orders_hash("r-1", lines) != base for lines in changed)


def test_a_plans_hash_follows_its_runs_in_order() -> None:
    a, b = run_orders_hash("r-1", LINES), run_orders_hash("r-2", LINES)
    assert combined_plan_hash([a, b]) == hashlib.sha256((a + b).encode()).hexdigest()
    assert combined_plan_hash([a, b]) != combined_plan_hash([b, a])
    assert combined_plan_hash([a]) != combined_plan_hash([a, b])


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


@pytest.mark.parametrize("bad", [Decimal("NaN"), Decimal("Infinity")])
def test_a_non_finite_decimal_has_no_text(bad: Decimal) -> None:
    with pytest.raises(ValueError, match="non-finite"):
        decimal_to_str(bad)
