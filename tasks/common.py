"""The audit task every flow uses, and the flow run id tasks record."""

from __future__ import annotations

import uuid

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from saras.db import get_engine
from saras.repositories.audit import write_audit


def current_flow_run_id() -> str | None:
    """Return the id of the flow run we are in (None outside Prefect)."""
    value = flow_run.get_id()
    return str(value) if value else None


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def record_audit(
    event_type: str,
    success: bool,
    duration_ms: float,
    error_message: str | None = None,
    request_id: str | None = None,
    user_id: str | None = None,
    path: str | None = None,
) -> None:
    """Write the run's audit_logs row."""
    with get_engine().begin() as conn:
        write_audit(
            conn,
            event_type=event_type,
            success=success,
            request_id=request_id or current_flow_run_id(),
            user_id=uuid.UUID(user_id) if user_id else None,
            duration_ms=duration_ms,
            error_message=error_message,
            path=path,
        )


__all__ = ["current_flow_run_id", "record_audit"]
