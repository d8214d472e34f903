"""Paper kit: the settings of a paper account (``paper_*`` connection metadata) and its scales."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

from saras.domain.enums import BrokerType

BROKER = BrokerType.PAPER.value


PAPER_TABLE_PREFIX = "paper_"


PRICE_SCALE = 6


MONEY_SCALE = 4


QUANTITY_SCALE = 9


_PRICE_Q = Decimal(1).scaleb(-PRICE_SCALE)


_MONEY_Q = Decimal(1).scaleb(-MONEY_SCALE)


_QTY_Q = Decimal(1).scaleb(-QUANTITY_SCALE)


_BPS = Decimal(10_000)


_ZERO = Decimal(0)


class PaperFillMode(StrEnum):
    """How the paper broker fills an order."""

    IMMEDIATE = "immediate"
    DELAYED = "delayed"
    PARTIAL = "partial"


class PaperMarketHours(StrEnum):
    """When the paper market is open."""

    ALWAYS = "always"
    NEVER = "never"
    CALENDAR = "calendar"  # the exchange calendar named by ``PaperSettings.calendar``


@dataclass(frozen=True)
class PaperSettings:
    """How a paper account trades; every field can be overridden by connection metadata."""

    starting_cash: Decimal = Decimal("100000")
    currency: str = "USD"
    slippage_bps: Decimal = Decimal("0")
    fee_bps: Decimal = Decimal("0")
    min_fee: Decimal = Decimal("0")
    fill_mode: PaperFillMode = PaperFillMode.IMMEDIATE
    fill_delay_polls: int = 1
    partial_fill_ratio: Decimal = Decimal("0.5")
    market_open: PaperMarketHours = PaperMarketHours.ALWAYS
    calendar: str = "XNYS"
    fractional: bool = True

    def __post_init__(self) -> None:
        for f in fields(self):
            object.__setattr__(self, f.name, _coerce(f.name, getattr(self, f.name), f.name))
        if self.starting_cash < 0:
            raise ValueError("paper starting_cash must not be negative")
        if self.slippage_bps < 0 or self.fee_bps < 0 or self.min_fee < 0:
            raise ValueError("paper slippage_bps, fee_bps and min_fee must not be negative")
        if self.slippage_bps >= _BPS:
            raise ValueError("paper slippage_bps must be below 10000")
        if self.fill_delay_polls < 0:
            raise ValueError("paper fill_delay_polls must not be negative")
        if not Decimal(0) < self.partial_fill_ratio < Decimal(1):
            raise ValueError("paper partial_fill_ratio must be between 0 and 1 (exclusive)")
        if not self.currency.strip():
            raise ValueError("paper currency must not be empty")
        if not self.calendar.strip():
            raise ValueError("paper calendar must not be empty")

    @classmethod
    def from_metadata(
        cls, metadata: Mapping[str, object], base: PaperSettings | None = None
    ) -> PaperSettings:
        """Return ``base`` (or the defaults) overridden by ``paper_*`` connection metadata keys."""
        settings = base or cls()
        overrides: dict[str, Any] = {}
        for key, value in metadata.items():
            if not key.startswith("paper_"):
                continue
            name = METADATA_KEYS.get(key)
            if name is None:
                known = ", ".join(sorted(METADATA_KEYS))
                raise ValueError(f"unknown paper broker setting {key!r} (known: {known})")
            overrides[name] = _coerce(name, value, key)
        return replace(settings, **overrides) if overrides else settings


#: Connection metadata keys and the ``PaperSettings`` field each one sets.
METADATA_KEYS: dict[str, str] = {f"paper_{f.name}": f.name for f in fields(PaperSettings)}


_BOOL_WORDS = {
    "true": True,
    "1": True,
    "yes": True,
    "on": True,
    "false": False,
    "0": False,
    "no": False,
    "off": False,
}


def _coerce(name: str, value: object, label: str) -> Any:
    """Convert a settings value (from code or JSON metadata) to the field's type."""
    try:
        match name:
            case "starting_cash" | "slippage_bps" | "fee_bps" | "min_fee" | "partial_fill_ratio":
                if isinstance(value, bool):
                    raise TypeError
                number = value if isinstance(value, Decimal) else Decimal(str(value).strip())
                if not number.is_finite():
                    raise ValueError
                return number
            case "fill_delay_polls":
                if isinstance(value, bool) or not isinstance(value, int | str):
                    raise TypeError
                return int(value)
            case "fill_mode":
                return PaperFillMode(str(value).strip().lower())
            case "market_open":
                return PaperMarketHours(str(value).strip().lower())
            case "fractional":
                if isinstance(value, bool):
                    return value
                return _BOOL_WORDS[str(value).strip().lower()]
            case "currency":
                if not isinstance(value, str):
                    raise TypeError
                return value.strip().upper()
            case "calendar":
                if not isinstance(value, str):
                    raise TypeError
                return value.strip().upper()
    except (TypeError, ValueError, KeyError, InvalidOperation) as exc:
        raise ValueError(f"invalid paper broker setting {label}={value!r}") from exc
    raise ValueError(f"unknown paper broker setting {label!r}")
