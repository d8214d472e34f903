"""A user's broker connections (credentials encrypted at rest)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Index, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, PrimaryKey, Str20, Str50, Str100, Timestamps, in_set
from saras.domain.enums import ConnectionStatus


def _paper_default(context: Any) -> bool:
    """Paper unless the broker has no paper environment (zerodha)."""
    return bool(context.get_current_parameters().get("broker_type") != "zerodha")


class UserBrokerConnection(Timestamps, Base):
    """A user's account at a broker; ``alias`` is unique per user (e.g. ``alpaca_primary``)."""

    __tablename__ = "user_broker_connections"
    __table_args__ = (
        UniqueConstraint("user_id", "alias"),
        CheckConstraint(in_set("status", ConnectionStatus), name="status"),
        # Kite has no paper environment: a zerodha connection is live by nature
        CheckConstraint("broker_type <> 'zerodha' OR NOT paper_trading", name="zerodha_is_live"),
        Index(None, "user_id", "broker_type", "status"),
    )

    id: Mapped[PrimaryKey]
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    broker_type: Mapped[Str50]
    alias: Mapped[Str100]
    api_key: Mapped[str | None] = mapped_column(Text)  # Fernet token, never plain text
    api_secret: Mapped[str | None] = mapped_column(Text)  # Fernet token, never plain text
    credentials: Mapped[dict[str, Any] | None]  # {"fernet": token}: encrypted JSON document
    paper_trading: Mapped[bool] = mapped_column(server_default=text("true"), default=_paper_default)
    status: Mapped[Str20] = mapped_column(
        server_default=ConnectionStatus.ACTIVE.value, default=ConnectionStatus.ACTIVE.value
    )
    connection_metadata: Mapped[dict[str, Any] | None]
