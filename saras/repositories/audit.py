"""The audit trail: one ``audit_logs`` row per flow run (our own tables are the ledger)."""

from __future__ import annotations

import uuid
from decimal import Decimal

from sqlalchemy import Connection, insert, select
from uuid_utils.compat import uuid7

from models import AuditLog
from models.base import utcnow


def write_audit(
    conn: Connection,
    *,
    event_type: str,
    success: bool,
    request_id: uuid.UUID | str | None = None,
    user_id: uuid.UUID | None = None,
    duration_ms: float | None = None,
    error_message: str | None = None,
    path: str | None = None,
    method: str | None = None,
    status_code: int | None = None,
) -> uuid.UUID:
    """Insert one audit row and return its id."""
    row_id = uuid7()
    conn.execute(
        insert(AuditLog).values(
            id=row_id,
            event_type=event_type,
            request_id=uuid.UUID(str(request_id)) if request_id else None,
            timestamp=utcnow(),
            user_id=user_id,
            processing_time_ms=Decimal(f"{duration_ms:.3f}") if duration_ms is not None else None,
            success=success,
            error_message=(error_message or None) and error_message[:4000],
            path=path,
            method=method,
            status_code=status_code,
            created_at=utcnow(),
        )
    )
    return row_id


def has_audit(conn: Connection, request_id: uuid.UUID | str) -> bool:
    """Tell whether a flow run (its id is the request id) already has its audit row."""
    return (
        conn.scalar(
            select(AuditLog.id).where(AuditLog.request_id == uuid.UUID(str(request_id))).limit(1)
        )
        is not None
    )
