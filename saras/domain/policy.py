"""A smallcase's rebalance policy: typed, validated, documented field by field.

:class:`RebalancePolicy` is what an analyst sets (``saras smallcases policy set``) and what a
run's parameters may override; it is stored with the smallcase and recorded in every plan. The
planner itself takes the narrower :class:`~saras.domain.rebalance.PlanningPolicy` of one
currency: :meth:`RebalancePolicy.planning_policy` maps one onto the other. The rest of the
policy (calendar trigger, relative band, cooldown) drives :mod:`saras.domain.triggers`.

Unknown keys are refused (``extra="forbid"``), so a typo fails naming the field instead of being
silently ignored; :func:`policy_error_message` turns a validation error into one line.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from saras.domain.inputs import MONEY, check_numeric
from saras.domain.rebalance import PlanningPolicy

#: smallcase's minimum order value in India (₹500) and Alpaca's minimum notional ($1)
DEFAULT_MIN_TRADE_VALUES: dict[str, Decimal] = {"INR": Decimal(500), "USD": Decimal(1)}
#: the key of the policy in ``smallcases.metadata``
METADATA_KEY = "rebalance_policy"

Percent = Annotated[Decimal, Field(ge=0, le=100)]


class CalendarTrigger(StrEnum):
    """When a smallcase is reviewed on a calendar, whatever its drift."""

    NONE = "none"
    WEEKLY = "weekly"
    MONTHLY = "monthly"
    QUARTERLY = "quarterly"


class RebalancePolicy(BaseModel):
    """How and when a smallcase is rebalanced; every field has a default."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="Rebalance policy")

    drift_band_pct: Percent | None = Field(
        default=Decimal(1),
        description=(
            "Absolute drift band in percentage points: an investment whose every weight is "
            "within this many points of its target is left alone. Empty: no absolute band."
        ),
    )
    relative_drift_band_pct: Decimal | None = Field(
        default=None,
        ge=0,
        description=(
            "Relative drift band in percent of each target weight (25 means a 20% target may "
            "drift to 15% or 25%). Empty: no relative band."
        ),
    )
    min_weight_change_pct: Percent = Field(
        default=Decimal(1),
        description=(
            "Noise filter: a leg whose weight would change by fewer percentage points than "
            "this is not traded (as smallcase does)."
        ),
    )
    min_trade_value: dict[str, Decimal] = Field(
        default_factory=lambda: dict(DEFAULT_MIN_TRADE_VALUES),
        description=(
            "Smallest order worth placing, per currency (ISO code to amount): "
            "smallcase's ₹500 for INR, Alpaca's $1 for USD. A currency not listed uses 0."
        ),
    )
    exempt_fresh_buys: bool = Field(
        default=True,
        description=(
            "A buy of a constituent the investment does not hold yet is exempt from the "
            "noise filter (minimum weight change)."
        ),
    )
    cash_buffer_pct: Decimal = Field(
        default=Decimal(1),
        ge=0,
        lt=100,
        description=(
            "Percent of an investment's value kept as cash, so market orders still fit when "
            "prices move between planning and execution."
        ),
    )
    cooldown_days: int = Field(
        default=0,
        ge=0,
        le=366,
        description=(
            "Days after an approved rebalance during which no trigger starts another one "
            "(0: no cooldown)."
        ),
    )
    fee_bps_estimate: Decimal = Field(
        default=Decimal(0),
        ge=0,
        lt=10_000,
        description=(
            "Fees and slippage in basis points of traded value, used to size buys "
            "(deducted from sell proceeds, added to buy costs)."
        ),
    )
    calendar_trigger: CalendarTrigger = Field(
        default=CalendarTrigger.NONE,
        description=(
            "Scheduled review: weekly, monthly or quarterly (on the day below, moved back to "
            "the previous session when the exchange is closed), or none."
        ),
    )
    calendar_day: int | None = Field(
        default=None,
        ge=1,
        le=31,
        description=(
            "Day of the scheduled review: ISO weekday 1-7 for weekly (default 5, Friday); "
            "day of the month 1-31 for monthly and quarterly (default 31: the month's last "
            "day; quarters end in March, June, September, December)."
        ),
    )
    drift_trigger: bool = Field(
        default=True,
        description=(
            "Between scheduled reviews, start a rebalance as soon as an investment drifts "
            "beyond a band (absolute or relative)."
        ),
    )

    @field_validator("min_trade_value")
    @classmethod
    def _currencies(cls, value: dict[str, Decimal]) -> dict[str, Decimal]:
        out = {}
        for code, amount in value.items():
            cur = code.strip().upper()
            if len(cur) != 3 or not cur.isalpha():
                raise ValueError(f"currency {code!r} is not a 3-letter ISO code")
            if not amount.is_finite() or amount < 0:
                raise ValueError(f"minimum trade value for {cur} must be >= 0, got {amount}")
            try:  # money, as the ledger holds it: 1e30 is no minimum
                check_numeric(amount, MONEY)
            except ValueError as exc:
                raise ValueError(f"minimum trade value for {cur} {amount}: {exc}") from None
            out[cur] = amount
        return out

    @model_validator(mode="after")
    def _weekday(self) -> Self:
        """Check what spans fields: a weekly review's day is a weekday."""
        if (
            self.calendar_trigger is CalendarTrigger.WEEKLY
            and self.calendar_day is not None
            and self.calendar_day > 7
        ):
            raise ValueError(
                f"calendar_day must be an ISO weekday 1-7 for a weekly trigger, "
                f"got {self.calendar_day}"
            )
        return self

    def min_trade_value_for(self, currency: str) -> Decimal:
        """Return the minimum trade value in ``currency`` (0 when the policy names none)."""
        return self.min_trade_value.get(currency.upper(), Decimal(0))

    def planning_policy(self, currency: str) -> PlanningPolicy:
        """Return the planner's policy for an investment in ``currency``.

        The planner has one absolute band: with none set (relative band only, or none at all)
        it gets 0, since whether the smallcase is due was decided by the trigger.
        """
        policy = PlanningPolicy(
            cash_buffer_pct=self.cash_buffer_pct,
            min_trade_value=self.min_trade_value_for(currency),
            drift_band_pct=self.drift_band_pct if self.drift_band_pct is not None else Decimal(0),
            min_weight_change_pct=self.min_weight_change_pct,
            fee_bps_estimate=self.fee_bps_estimate,
            exempt_fresh_buys=self.exempt_fresh_buys,
        )
        if "exempt_fresh_buys" in {f.name for f in dataclasses.fields(PlanningPolicy)}:
            # the planner's fresh-buy exemption, where the planner has the knob
            changes: dict[str, Any] = {"exempt_fresh_buys": self.exempt_fresh_buys}
            policy = dataclasses.replace(policy, **changes)
        return policy

    def with_overrides(self, overrides: RebalancePolicy | Mapping[str, Any] | None) -> Self:
        """Return this policy with the fields a run set explicitly replaced (validated).

        A :class:`RebalancePolicy` given as a run parameter overrides only the fields it was
        given (pydantic's ``model_fields_set``); ``min_trade_value`` is merged per currency.
        """
        if overrides is None:
            return self
        if isinstance(overrides, RebalancePolicy):
            given = {k: getattr(overrides, k) for k in overrides.model_fields_set}
        else:
            parsed = RebalancePolicy.model_validate(dict(overrides))
            given = {k: getattr(parsed, k) for k in parsed.model_fields_set}
        data = self.model_dump()
        if "min_trade_value" in given:
            given["min_trade_value"] = {**data["min_trade_value"], **given["min_trade_value"]}
        data.update(given)
        return type(self).model_validate(data)

    def as_record(self) -> dict[str, Any]:
        """Return the policy as JSON-able data (decimals as strings), for plans and metadata."""
        return self.model_dump(mode="json")


def policy_error_message(error: ValidationError, *, prefix: str = "policy") -> str:
    """Return one line naming every refused field and why."""
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "(policy)"
        if item["type"] == "extra_forbidden":
            parts.append(f"unknown field {where!r}")
        else:
            value = item.get("input")
            shown = f" (got {value!r})" if not isinstance(value, dict | list) else ""
            parts.append(f"{where}: {item['msg']}{shown}")
    return f"{prefix}: " + "; ".join(parts)
