"""The typed rebalance policy: defaults, validation naming the field, overrides, the planner map."""

from __future__ import annotations

from decimal import Decimal

import pytest
from pydantic import ValidationError

from saras.domain.parameters import Constituent, ExecutionParameters
from saras.domain.policy import CalendarTrigger, RebalancePolicy, policy_error_message
from saras.domain.rebalance import PlanningPolicy


def _message(data: dict[str, object]) -> str:
    with pytest.raises(ValidationError) as info:
        RebalancePolicy.model_validate(data)
    return policy_error_message(info.value)


def test_defaults_follow_smallcase_and_alpaca_minimums() -> None:
    policy = RebalancePolicy()
    assert policy.min_trade_value_for("INR") == Decimal(500)
    assert policy.min_trade_value_for("usd") == Decimal(1)
    assert policy.min_trade_value_for("EUR") == Decimal(0)
    assert policy.planning_policy("INR") == PlanningPolicy(min_trade_value=Decimal(500))
    assert policy.planning_policy("USD") == PlanningPolicy()


def test_the_fresh_buy_exemption_reaches_the_planner() -> None:
    assert RebalancePolicy().planning_policy("USD").exempt_fresh_buys is True
    off = RebalancePolicy(exempt_fresh_buys=False).planning_policy("USD")
    assert off == PlanningPolicy(exempt_fresh_buys=False)


def test_every_field_is_described() -> None:
    for model in (RebalancePolicy, Constituent, ExecutionParameters):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"drift_band": "2"}, "policy: unknown field 'drift_band'"),
        ({"cooldown_days": -1}, "cooldown_days: Input should be greater than or equal to 0"),
        ({"cash_buffer_pct": "100"}, "cash_buffer_pct: Input should be less than 100"),
        ({"min_trade_value": {"RUPEES": "5"}}, "min_trade_value: Value error, currency"),
        ({"min_trade_value": {"INR": "-5"}}, "must be >= 0"),
        ({"calendar_trigger": "daily"}, "calendar_trigger: Input should be 'none'"),
        ({"calendar_trigger": "weekly", "calendar_day": 9}, "ISO weekday 1-7"),
    ],
)
def test_bad_policy_fails_naming_the_field(data: dict[str, object], expected: str) -> None:
    assert expected in _message(data)


def test_overrides_replace_only_what_a_run_gave() -> None:
    stored = RebalancePolicy(cooldown_days=7, relative_drift_band_pct=Decimal(25))
    run = RebalancePolicy.model_validate({"min_trade_value": {"USD": "5"}, "drift_band_pct": None})
    merged = stored.with_overrides(run)
    assert merged.cooldown_days == 7 and merged.relative_drift_band_pct == Decimal(25)
    assert merged.drift_band_pct is None
    assert merged.min_trade_value == {"INR": Decimal(500), "USD": Decimal(5)}
    assert stored.with_overrides({"cooldown_days": 1}).cooldown_days == 1
    assert stored.with_overrides(None) is stored
    with pytest.raises(ValidationError, match="extra"):
        stored.with_overrides({"cooldown": 1})
    # no absolute band: the planner gets 0 (the trigger already decided)
    assert merged.planning_policy("USD").drift_band_pct == 0


def test_record_round_trips() -> None:
    policy = RebalancePolicy(
        relative_drift_band_pct=Decimal("12.5"), calendar_trigger=CalendarTrigger.MONTHLY
    )
    record = policy.as_record()
    assert record["relative_drift_band_pct"] == "12.5"
    assert record["min_trade_value"] == {"INR": "500", "USD": "1"}
    assert RebalancePolicy.model_validate(record) == policy


def test_constituent_codes_are_normalised_and_checked() -> None:
    c = Constituent(symbol=" infy ", exchange="nse", weight=Decimal(10))
    assert (c.symbol, c.exchange) == ("INFY", "NSE")
    with pytest.raises(ValidationError, match="weight"):
        Constituent(symbol="INFY", exchange="NSE", weight=Decimal(0))
    with pytest.raises(ValidationError, match="symbol"):
        Constituent(symbol="IN FY", exchange="NSE", weight=Decimal(1))
