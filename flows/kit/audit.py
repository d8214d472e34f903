"""The state hooks every flow declares: a run that fails unexpectedly still leaves its audit row."""

from __future__ import annotations

import inspect
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from saras.db import get_engine
from saras.repositories.audit import has_audit, write_audit


def audit_flow_end(flow: Any, run: Any, state: Any) -> None:
    """Write the audit row of a flow run that failed, crashed or was cancelled without its own.

    A Prefect state hook (``on_failure``, ``on_crashed`` and ``on_cancellation`` of every flow
    in ``flows/``): an exception no flow expected (a TypeError, a bug) or a cancellation still
    leaves its ``audit_logs`` row, with the state's message as the error. A run that wrote its
    row itself is left alone.
    """
    fn = flow.fn
    source = inspect.getsourcefile(fn) or ""
    path = f"flows/{Path(source).name}:{fn.__name__}"
    started = getattr(run, "start_time", None) or getattr(run, "expected_start_time", None)
    duration_ms = (
        (datetime.now(UTC) - started).total_seconds() * 1000 if started is not None else None
    )
    user = (getattr(run, "parameters", None) or {}).get("user_id")
    with get_engine().begin() as conn:
        if has_audit(conn, run.id):
            return
        write_audit(
            conn,
            event_type=f"flow.{fn.__name__}",
            success=False,
            request_id=run.id,
            user_id=uuid.UUID(str(user)) if user else None,
            duration_ms=duration_ms,
            error_message=state.message or f"flow run ended {state.type.value.lower()}",
            path=path,
        )


#: the state hooks every flow declares: ``@flow(..., **AUDIT_HOOKS)``; a run cancelled from the
#: UI (its process killed by the runner) leaves its row too
AUDIT_HOOKS: dict[str, Any] = {
    "on_failure": [audit_flow_end],
    "on_crashed": [audit_flow_end],
    "on_cancellation": [audit_flow_end],
}
