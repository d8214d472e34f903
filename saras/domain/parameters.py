"""Typed flow parameters: what the Prefect UI renders as forms, validated before a flow runs.

Prefect builds a flow's parameter schema from its signature with pydantic
(``prefect.utilities.callables.parameter_schema``): a parameter annotated with one of these
models becomes a typed form (nested fields, enums as choices, each field's description shown
under it), and the values are validated into the model before the flow body runs, so bad
input fails naming the field. Every model refuses unknown keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Annotated, Any, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

_HUNDRED = Decimal(100)


class Constituent(BaseModel):
    """One asset of a smallcase's composition and its target weight."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="Constituent")

    symbol: str = Field(
        min_length=1, max_length=20, description="Ticker as the exchange lists it, e.g. AAPL, INFY."
    )
    exchange: str = Field(
        min_length=2,
        max_length=20,
        description="Exchange code of the asset, e.g. NASDAQ, NYSE, NSE, BSE.",
    )
    weight: Decimal = Field(
        gt=0, le=100, description="Target weight in percent; the weights of a list sum to 100."
    )
    rationale: str | None = Field(
        default=None, max_length=1000, description="Why the asset is in the basket (optional)."
    )

    @field_validator("symbol", "exchange")
    @classmethod
    def _code(cls, value: str) -> str:
        code = value.strip().upper()
        if not code or any(ch.isspace() for ch in code):
            raise ValueError(f"{value!r} is not a code (no spaces allowed)")
        return code


def _check_composition(items: list[Constituent]) -> list[Constituent]:
    seen: set[tuple[str, str]] = set()
    for item in items:
        key = (item.symbol, item.exchange)
        if key in seen:
            raise ValueError(f"{item.symbol} on {item.exchange} is listed twice")
        seen.add(key)
    total = sum((item.weight for item in items), Decimal(0))
    if items and total != _HUNDRED:
        raise ValueError(f"weights sum to {total}, not 100")
    return items


#: A composition: unique (symbol, exchange) pairs whose weights sum to 100.
Composition = Annotated[
    list[Constituent],
    AfterValidator(_check_composition),
    Field(
        min_length=1,
        description="The new composition: each asset with its exchange and weight (sum 100).",
    ),
]


class ExecutionParameters(BaseModel):
    """How patient an execution is (mirrors ``saras.services.execution.ExecutionSettings``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="Execution settings")

    poll_interval: float = Field(
        default=1.0, gt=0, le=60, description="Seconds between order status checks."
    )
    deadline_seconds: float = Field(
        default=600.0,
        gt=0,
        le=86_400,
        description="Seconds an execution waits for fills before it stops.",
    )
    submit_attempts: int = Field(
        default=4, ge=1, le=20, description="Attempts to submit an order on a retryable error."
    )
    retry_backoff: float = Field(
        default=1.0,
        ge=0,
        le=300,
        description="Seconds before the first retry; doubles at each attempt.",
    )
    wait_for_open: bool = Field(
        default=False,
        description="Wait for the market to open (within the deadline) instead of refusing.",
    )
    cancel_unfilled_at_deadline: bool = Field(
        default=True, description="Cancel what is still open at the deadline."
    )
    request_timeout: float | None = Field(
        default=None,
        gt=0,
        le=600,
        description=(
            "Seconds the broker client waits for one HTTP answer; empty: the connection's "
            "setting, else the adapter's default."
        ),
    )
    lookup_horizon: float | None = Field(
        default=None,
        gt=0,
        le=3600,
        description=(
            "Seconds after a send began before an order the broker does not show is taken as "
            "absent and sent again; longer than the request timeout. Empty: the connection's "
            "setting, else 30."
        ),
    )

    @model_validator(mode="after")
    def _horizon(self) -> Self:
        """Check what spans fields: the lookup horizon outlasts the request timeout."""
        if (
            self.request_timeout is not None
            and self.lookup_horizon is not None
            and self.lookup_horizon <= self.request_timeout
        ):
            raise ValueError(
                f"lookup_horizon ({self.lookup_horizon}) must be longer than request_timeout "
                f"({self.request_timeout})"
            )
        return self

    def as_settings_kwargs(self) -> dict[str, Any]:
        """Return the keyword arguments of ``ExecutionSettings``."""
        return self.model_dump()


def settings_kwargs(
    execution: ExecutionParameters | Mapping[str, Any] | None,
) -> dict[str, Any] | None:
    """Return a flow's ``execution`` parameter as ``ExecutionSettings`` keyword arguments."""
    if execution is None:
        return None
    if isinstance(execution, ExecutionParameters):
        return execution.as_settings_kwargs()
    return dict(execution)
