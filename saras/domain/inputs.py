"""Typed input models: what Saras accepts at its boundary (CLI, flow parameters, source rows).

One set of rules for every way in: e-mails, symbols and exchanges (against the exchange table),
currencies Saras trades in, money and quantities that are finite and fit their column's
precision and scale, names within their column's length, dates within a sane range. The limits
below are the columns' own (a test holds them to ``models/``), so what passes here fits the
database on PostgreSQL and on the embedded SQLite alike.

``parse`` turns a rejection into one ``InvalidInputError`` line that names the field and the
value: ``cash '1e30': out of range (must be below 10^16)``.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from saras.domain import exchanges as xt
from saras.domain.enums import AssetType, RiskLevel
from saras.errors import InvalidInputError

# Column limits (lengths of varchar columns; (precision, scale) of numeric ones).
EMAIL_MAX = 320
PERSON_NAME_MAX = 100
SYMBOL_MAX = 50
EXCHANGE_MAX = 20
ASSET_NAME_MAX = 255
PORTFOLIO_NAME_MAX = 200
SMALLCASE_NAME_MAX = 200
CATEGORY_MAX = 100
ALIAS_MAX = 100
#: free text (text columns): long enough for any honest description, short enough to refuse junk
TEXT_MAX = 10_000
MONEY = (20, 4)
PRICE = (20, 6)
QUANTITY = (24, 9)
VOLUME = (24, 4)
WEIGHT = (7, 4)

#: dates Saras accepts at all (prices, snapshots, ranges)
EARLIEST_DATE = date(1970, 1, 1)
#: a day ahead of UTC's today: the exchange furthest east may already be there
FUTURE_SLACK = timedelta(days=1)

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: free text may hold line breaks and tabs, never other control characters
_CONTROL_INLINE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s.]+(\.[^@\s.]+)+$")
_SYMBOL = re.compile(r"^[A-Z0-9^][A-Z0-9.&_\-=]*$")
_ALIAS = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


class _Refused(ValueError):
    """A rule's reason; ``parse`` adds the field and value."""


def _text(max_len: int, *, multiline: bool = False) -> Any:
    control = _CONTROL_INLINE if multiline else _CONTROL

    def check(value: object) -> object:
        if value is None:
            return None
        if not isinstance(value, str):
            raise _Refused("not text")
        value = value.strip()
        if control.search(value):
            raise _Refused("contains a control character (newline, tab, ...)")
        if len(value) > max_len:
            raise _Refused(f"longer than {max_len} characters ({len(value)})")
        return value

    return BeforeValidator(check)


def _blank_is_none(value: str | None) -> str | None:
    """An optional text left blank (or only spaces) is no text, not an empty string."""
    return value or None


def _not_empty(value: str) -> str:
    if not value:
        raise _Refused("must not be empty")
    return value


def to_decimal(value: object) -> Decimal:
    """Read a finite decimal from text, an int or a Decimal (never a bool); raise otherwise."""
    if isinstance(value, bool) or value is None:
        raise _Refused("not a number")
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, int | float | str):
        text = str(value).strip().replace("_", "#")  # no 1_000: a typo, not a number
        if not text.isascii():  # Decimal reads full-width and Arabic-Indic digits: refuse
            raise _Refused("not a decimal number (use the digits 0-9)")
        try:
            number = Decimal(text)
        except InvalidOperation:
            raise _Refused("not a decimal number") from None
    else:
        raise _Refused("not a number")
    if not number.is_finite():
        raise _Refused("not a finite number")
    return number


def _numeric(
    spec: tuple[int, int], *, minimum: Decimal | None = None, positive: bool = False
) -> Any:
    def check(value: object) -> Decimal:
        number = to_decimal(value)
        check_numeric(number, spec)
        if positive and number <= 0:
            raise _Refused("must be positive")
        if minimum is not None and number < minimum:
            raise _Refused(f"must be at least {minimum}")
        return number

    return BeforeValidator(check)


def check_numeric(number: Decimal, spec: tuple[int, int]) -> None:
    """Refuse a value that a ``numeric(precision, scale)`` column cannot hold exactly."""
    precision, scale = spec
    if abs(number) >= Decimal(10) ** (precision - scale):
        raise _Refused(f"out of range (must be below 10^{precision - scale})")
    exponent = number.as_tuple().exponent
    whole = number.quantize(Decimal(1).scaleb(-scale)) if isinstance(exponent, int) else number
    if isinstance(exponent, int) and exponent < -scale and number != whole:
        raise _Refused(f"has more than {scale} decimal places")


def _email(value: str) -> str:
    value = value.lower()
    if not value.isascii():  # a Cyrillic o in 'owner@...' is not the owner
        raise _Refused("not ASCII (a look-alike letter?); write an international domain as xn--...")
    if not _EMAIL.match(value):
        raise _Refused("not an e-mail address (one @, a domain with a dot, no spaces)")
    return value


def _symbol(value: str) -> str:
    value = value.upper()
    if not _SYMBOL.match(value):
        raise _Refused("not a symbol (letters, digits and . & _ - = ^)")
    return value


def _exchange(value: str) -> str:
    try:
        return xt.check_code(value)
    except xt.UnknownExchange as exc:
        raise _Refused(exc.reason) from None


def _currency(value: str) -> str:
    value = value.upper()
    if value not in xt.CURRENCIES:
        raise _Refused(f"not a currency Saras trades in ({', '.join(sorted(xt.CURRENCIES))})")
    return value


def _alias(value: str) -> str:
    if not _ALIAS.match(value):
        raise _Refused("use lower-case letters, digits, '_' or '-'")
    return value


def _sane_date(value: date) -> date:
    if isinstance(value, datetime):
        raise _Refused("a date, not a timestamp")
    latest = datetime.now(UTC).date() + FUTURE_SLACK
    if value < EARLIEST_DATE:
        raise _Refused(f"before {EARLIEST_DATE}")
    if value > latest:
        raise _Refused(f"in the future (after {latest})")
    return value


Email = Annotated[str, _text(EMAIL_MAX), AfterValidator(_not_empty), AfterValidator(_email)]
PersonName = Annotated[str | None, _text(PERSON_NAME_MAX), AfterValidator(_blank_is_none)]
Symbol = Annotated[str, _text(SYMBOL_MAX), AfterValidator(_not_empty), AfterValidator(_symbol)]
ExchangeCode = Annotated[str, _text(EXCHANGE_MAX), AfterValidator(_exchange)]
Currency = Annotated[str, _text(EXCHANGE_MAX), AfterValidator(_currency)]
Alias = Annotated[str, _text(ALIAS_MAX), AfterValidator(_not_empty), AfterValidator(_alias)]
FreeText = Annotated[str | None, _text(TEXT_MAX, multiline=True), AfterValidator(_blank_is_none)]
Money = Annotated[Decimal, _numeric(MONEY, minimum=Decimal(0))]
Weight = Annotated[Decimal, _numeric(WEIGHT, positive=True)]
SaneDate = Annotated[date, AfterValidator(_sane_date)]


def _exchange_or_legacy(value: str) -> str:
    try:
        xt.exchange(value)
    except xt.UnknownExchange as exc:
        raise _Refused(exc.reason) from None
    return value.strip().upper()


ExchangeOrLegacy = Annotated[str, _text(EXCHANGE_MAX), AfterValidator(_exchange_or_legacy)]


class _Input(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


class UserInput(_Input):
    """``saras users add``."""

    email: Email
    first_name: PersonName = None
    last_name: PersonName = None


class AssetInput(_Input):
    """``saras assets add``: the currency must be the exchange's."""

    symbol: Symbol
    exchange: ExchangeCode
    currency: Currency
    name: Annotated[str | None, _text(ASSET_NAME_MAX), AfterValidator(_blank_is_none)] = None
    asset_type: AssetType = AssetType.EQUITY
    lot_size: Annotated[int | None, Field(gt=0, le=1_000_000)] = None

    @model_validator(mode="after")
    def _currency_of_exchange(self) -> AssetInput:
        expected = xt.exchange(self.exchange).currency
        if self.currency != expected:
            raise ValueError(
                f"currency {self.currency!r}: {self.exchange} trades in {expected}, "
                f"not {self.currency}"
            )
        return self


class PortfolioInput(_Input):
    """``saras portfolios add``."""

    name: Annotated[str, _text(PORTFOLIO_NAME_MAX), AfterValidator(_not_empty)]
    currency: Currency
    cash: Money = Decimal(0)
    description: FreeText = None


class ConnectionInput(_Input):
    """``saras connections add`` (the broker type and its paper environment: the registry's)."""

    alias: Alias | None = None
    paper_trading: bool


class ConstituentRow(_Input):
    """One constituent: (symbol, exchange), weight in percent, rationale."""

    symbol: Symbol
    exchange: Annotated[str | None, _text(EXCHANGE_MAX), AfterValidator(_optional_exchange)] = None
    weight: Weight
    rationale: FreeText = None

    @model_validator(mode="after")
    def _weight_at_most_100(self) -> ConstituentRow:
        if self.weight > 100:
            raise ValueError(f"weight {str(self.weight)!r} of {self.symbol}: above 100")
        return self


def _optional_exchange(value: str | None) -> str | None:
    return _exchange(value) if value else None


class SmallcaseInput(_Input):
    """``saras smallcases add`` (the constituents are checked against the asset master later)."""

    name: Annotated[str, _text(SMALLCASE_NAME_MAX), AfterValidator(_not_empty)]
    description: FreeText = None
    category: Annotated[str | None, _text(CATEGORY_MAX), AfterValidator(_blank_is_none)] = None
    min_investment: Money | None = None
    risk_level: RiskLevel | None = None


class InvestmentParams(_Input):
    """The invest flow's amount: positive money that fits the ledger's column."""

    amount: Annotated[Decimal, _numeric(MONEY, positive=True)]


class ApprovalParams(_Input):
    """How long a flow waits for an analyst's decision, and how often it looks (rebalance,
    repair): a timeout of -1 would reject every plan at once, a poll of 0 spin on the API."""

    approval_timeout_seconds: Annotated[int, Field(ge=1, le=30 * 86_400)]
    approval_poll_seconds: Annotated[int, Field(ge=1, le=3_600)]


class PriceHistoryParams(_Input):
    """The price-history flow's parameters that can be wrong on their own."""

    start: SaneDate | None = None
    end: SaneDate | None = None
    batch_size: Annotated[int | None, Field(gt=0, le=100_000)] = None
    exchanges: list[ExchangeOrLegacy] | None = None

    @model_validator(mode="after")
    def _ordered(self) -> PriceHistoryParams:
        if self.start and self.end and self.start > self.end:
            raise ValueError(f"start {self.start} is after end {self.end}")
        return self


class SnapshotParams(_Input):
    """The position-snapshot flow's parameters."""

    snapshot_date: SaneDate | None = None
    batch_size: Annotated[int | None, Field(gt=0, le=100_000)] = None


M = TypeVar("M", bound=BaseModel)


def parse(model: type[M], **data: Any) -> M:
    """Validate ``data`` into ``model``; a refusal is one ``InvalidInputError`` line."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidInputError(describe(exc)) from None


def describe(exc: ValidationError) -> str:
    """Say the first refusal of a ValidationError in one line: field, value, reason."""
    error = exc.errors(include_url=False)[0]
    field = ".".join(str(part) for part in error["loc"])
    reason = str(error["msg"]).removeprefix("Value error, ").replace("\n", " ")
    if not field:  # a model-level rule: its message names the field itself
        return reason
    value = error.get("input")
    shown = value if isinstance(value, str) else str(value)
    if isinstance(value, dict):
        return f"{field}: {reason}"
    return f"{field} {shorten(shown)!r}: {reason}"


#: how much of a refused value a message shows (a 20,000-character cell is not one line)
SHOWN_MAX = 60


def shorten(text: str) -> str:
    """Return ``text`` cut to ``SHOWN_MAX`` characters, with an ellipsis when cut."""
    return text if len(text) <= SHOWN_MAX else text[: SHOWN_MAX - 3] + "..."


def check_date(name: str, value: date | None) -> date | None:
    """Refuse a date outside the sane range, naming the parameter."""
    if value is None:
        return None
    try:
        return _sane_date(value)
    except _Refused as exc:
        raise InvalidInputError(f"{name} {str(value)!r}: {exc}") from None


def check_instant(name: str, value: datetime | None) -> datetime | None:
    """Refuse an instant whose UTC day is outside the sane range (``as_of`` in 2100)."""
    if value is None:
        return None
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInputError(f"{name} {value.isoformat()!r}: no time zone (give an offset)")
    try:
        _sane_date(value.astimezone(UTC).date())
    except _Refused as exc:
        raise InvalidInputError(f"{name} {value.isoformat()!r}: {exc}") from None
    return value


def check_run_id(value: str, name: str = "run_id") -> uuid.UUID:
    """Read a run's id, refusing anything that is not a UUID, naming the parameter."""
    try:
        return uuid.UUID(str(value).strip())
    except ValueError:
        raise InvalidInputError(f"{name} {shorten(str(value))!r}: not a run id (a UUID)") from None


__all__ = [
    "ApprovalParams",
    "AssetInput",
    "ConnectionInput",
    "ConstituentRow",
    "InvestmentParams",
    "PortfolioInput",
    "PriceHistoryParams",
    "SmallcaseInput",
    "SnapshotParams",
    "UserInput",
    "check_instant",
    "check_numeric",
    "check_run_id",
    "describe",
    "parse",
    "to_decimal",
]
