"""The declarative Base, its naming convention, and the column types every table shares."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Any

from sqlalchemy import JSON, Date, DateTime, MetaData, Numeric, String, Uuid, func
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator
from uuid_utils.compat import uuid7

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """``timestamp with time zone`` that only accepts aware datetimes and returns UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: Saras stores aware timestamps only")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):  # SQLite may hand back text for server-side defaults
            value = datetime.fromisoformat(value)
        if value.tzinfo is None:  # SQLite keeps no offset: everything written is UTC
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


#: jsonb on PostgreSQL, JSON (text) elsewhere.
JSONType = JSON().with_variant(postgresql.JSONB(), "postgresql")
#: inet on PostgreSQL, a 45-character string elsewhere (the longest IPv6 text form).
InetType = String(45).with_variant(postgresql.INET(), "postgresql")

# Deliberate precisions (see README, "Numeric precision"):
#: cash, values, amounts, fees, P&L: 4 decimals (cents/paise plus headroom for fee maths).
Money = Annotated[Decimal, 20_4]
#: per-share prices and average prices: 6 decimals (adjusted prices carry many digits).
Price = Annotated[Decimal, 20_6]
#: share quantities: 9 decimals, the finest fractional share Alpaca trades.
Quantity = Annotated[Decimal, 24_9]
#: traded volume: whole shares mostly, 4 decimals kept for sources that report fractions.
Volume = Annotated[Decimal, 24_4]
#: constituent weights in percent, (0, 100] with 4 decimals.
Weight = Annotated[Decimal, 7_4]
#: durations in milliseconds.
Millis = Annotated[Decimal, 14_3]

PrimaryKey = Annotated[uuid.UUID, mapped_column(primary_key=True, default=uuid7)]
Str20 = Annotated[str, 20]
Str50 = Annotated[str, 50]
Str100 = Annotated[str, 100]
Str255 = Annotated[str, 255]


def utcnow() -> datetime:
    """Return the current time, aware, in UTC."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """One typed declarative Base for all fifteen tables."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        datetime: UTCDateTime(),
        date: Date(),
        uuid.UUID: Uuid(),
        dict[str, Any]: JSONType,
        list[Any]: JSONType,
        str: String(),
        Money: Numeric(20, 4),
        Price: Numeric(20, 6),
        Quantity: Numeric(24, 9),
        Volume: Numeric(24, 4),
        Weight: Numeric(7, 4),
        Millis: Numeric(14, 3),
        Str20: String(20),
        Str50: String(50),
        Str100: String(100),
        Str255: String(255),
    }


class CreatedAt:
    """A ``created_at`` column set by the application and by the database."""

    created_at: Mapped[datetime] = mapped_column(
        default=utcnow, server_default=func.now(), sort_order=900
    )


class Timestamps(CreatedAt):
    """``created_at`` plus ``updated_at``, the latter maintained on every ORM/Core update."""

    updated_at: Mapped[datetime] = mapped_column(
        default=utcnow, onupdate=utcnow, server_default=func.now(), sort_order=901
    )


def in_set(column: str, values: Any) -> str:
    """Return a CHECK expression limiting ``column`` to a closed set of values."""
    quoted = ", ".join(f"'{v}'" for v in values)
    return f"{column} IN ({quoted})"
