"""Users, their sessions, and the audit trail."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, CreatedAt, InetType, Millis, PrimaryKey, Str100, Str255, Timestamps


class User(Timestamps, Base):
    """A platform user; e-mails are stored lower-case, so uniqueness is case-insensitive."""

    __tablename__ = "users"
    __table_args__ = (CheckConstraint("email = lower(email)", name="email_lowercase"),)

    id: Mapped[PrimaryKey]
    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[Str255 | None]
    first_name: Mapped[Str100 | None]
    last_name: Mapped[Str100 | None]


class UserSession(Timestamps, Base):
    """A login session; goes with its user."""

    __tablename__ = "user_sessions"
    __table_args__ = (Index(None, "user_id", "expires_at"),)

    id: Mapped[PrimaryKey]
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    session_token: Mapped[Str255] = mapped_column(unique=True)
    expires_at: Mapped[datetime]
    session_data: Mapped[dict[str, Any] | None]


class AuditLog(CreatedAt, Base):
    """One row per flow run and per security-relevant request; outlives its user."""

    __tablename__ = "audit_logs"
    __table_args__ = (
        Index(None, "event_type", "timestamp"),
        Index(None, "user_id"),
        Index(None, "request_id"),
    )

    id: Mapped[PrimaryKey]
    event_type: Mapped[Str100]
    request_id: Mapped[uuid.UUID | None]
    timestamp: Mapped[datetime]
    client_ip: Mapped[str | None] = mapped_column(InetType)
    user_agent: Mapped[str | None] = mapped_column(Text)
    path: Mapped[str | None] = mapped_column(String(500))
    method: Mapped[str | None] = mapped_column(String(20))
    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    status_code: Mapped[int | None]
    processing_time_ms: Mapped[Millis | None]
    success: Mapped[bool]
    error_message: Mapped[str | None] = mapped_column(Text)


__all__ = ["AuditLog", "User", "UserSession"]
