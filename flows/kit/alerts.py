"""Prefect events that Saras' alert automations (deployments/automations/) react to."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

from prefect.events import emit_event

RECONCILIATION_DIFFERENCES = "saras.reconciliation.differences"


def announce_reconciliation_differences(
    day: date, differences: Sequence[Mapping[str, Any]]
) -> None:
    """Emit one event for a snapshot day whose reconciliation found differences (none: none).

    The payload names the day, the count and the connections (aliases), never amounts or
    secrets; the run's flow, deployment and tags are attached by Prefect as related resources.
    """
    if not differences:
        return
    connections = sorted({str(d["connection"]) for d in differences if d.get("connection")})
    emit_event(
        event=RECONCILIATION_DIFFERENCES,
        resource={
            "prefect.resource.id": f"saras.reconciliation.{day.isoformat()}",
            "prefect.resource.name": f"reconciliation {day.isoformat()}",
        },
        payload={
            "snapshot_date": day.isoformat(),
            "differences": len(differences),
            "connections": connections,
        },
    )
