"""One ending for every flow: the results artifact, the audit row and the final state."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prefect.artifacts import create_table_artifact
from prefect.states import Completed, Failed, State

from tasks.common import record_audit

#: the name of a completed run that did not do everything it set out to
PARTIALLY_COMPLETED = "Partially Completed"


@dataclass(frozen=True)
class ResultsTable:
    """The table artifact a run publishes as its results (never empty: Prefect shows nothing)."""

    rows: Sequence[Mapping[str, Any]]
    key: str
    description: str
    empty_row: Mapping[str, Any] | None = None


def finish_flow(
    event_type: str,
    began: float,
    *,
    path: str,
    summary: str | None,
    problems: Sequence[str] = (),
    failed: bool = False,
    data: Any = None,
    results: ResultsTable | None = None,
    user_id: str | None = None,
) -> State:
    """Publish the results, write the run's audit row and return its final state.

    No problem: ``Completed`` with ``summary``. Problems: ``Partially Completed``, or ``Failed``
    when ``failed``; the state's message is the summary then the problems, and the audit row
    (``success`` false) carries the problems. ``began`` is the run's ``time.monotonic()`` start.
    """
    if results is not None:
        rows = [dict(r) for r in results.rows]
        if not rows and results.empty_row is not None:
            rows = [dict(results.empty_row)]
        create_table_artifact(rows, key=results.key, description=results.description)
    error = "; ".join(problems) or None
    record_audit(
        event_type,
        success=not (failed or problems),
        duration_ms=(time.monotonic() - began) * 1000,
        error_message=error,
        user_id=user_id,
        path=path,
    )
    message = "; ".join(part for part in (summary, error) if part) or None
    if failed:
        return Failed(message=message, data=data)
    if problems:
        return Completed(name=PARTIALLY_COMPLETED, message=message, data=data)
    return Completed(message=message, data=data)
