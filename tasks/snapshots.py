"""Tasks of the position-snapshot flow: write the snapshot, reconcile connections (never cached)."""

from __future__ import annotations

from datetime import date, datetime

from prefect import task
from prefect.cache_policies import NO_CACHE
from sqlalchemy.exc import OperationalError

from saras.brokers.errors import is_retryable
from saras.db import get_engine
from saras.services import snapshots as service
from saras.services.corporate_actions import AppliedAction, apply_due_actions
from tasks import retry_when
from tasks.common import current_flow_run_id


@task(
    retries=2,
    retry_delay_seconds=10,
    retry_condition_fn=retry_when(lambda exc: isinstance(exc, OperationalError)),
    cache_policy=NO_CACHE,
)
def write_position_snapshot(snapshot_date: date, now: datetime) -> service.SnapshotReport:
    """Value and write every active investment's positions for one day."""
    return service.write_snapshot(get_engine(), snapshot_date, now=now)


@task(cache_policy=NO_CACHE)
def plan_reconciliation() -> list[service.ConnectionRef]:
    """List the broker connections active investments use."""
    return service.plan_reconciliation(get_engine())


@task(cache_policy=NO_CACHE, task_run_name="reconcile-{label}")
def reconcile_connections(
    connections: list[service.ConnectionRef], label: str, snapshot_date: date | None = None
) -> list[service.ConnectionResult]:
    """Reconcile a batch of connections, one positions call each."""
    return service.reconcile_batch(
        get_engine(), connections, request_id=current_flow_run_id(), day=snapshot_date
    )


@task(
    retries=2,
    retry_delay_seconds=10,
    retry_condition_fn=retry_when(lambda exc: isinstance(exc, OperationalError)),
    cache_policy=NO_CACHE,
)
def apply_corporate_actions(snapshot_date: date) -> list[AppliedAction]:
    """Apply the corporate actions due by the snapshot day to the ledger (each once)."""
    return apply_due_actions(get_engine(), as_of=snapshot_date)


@task(
    retries=3,
    retry_delay_seconds=[5, 30, 120],
    retry_condition_fn=retry_when(is_retryable),
    cache_policy=NO_CACHE,
    task_run_name="reconcile-retry-{connection.alias}",
)
def reconcile_connection(
    connection: service.ConnectionRef, snapshot_date: date | None = None
) -> service.ConnectionResult:
    """Reconcile one connection whose broker answered with a retryable error."""
    return service.reconcile_connection(
        get_engine(), connection, request_id=current_flow_run_id(), day=snapshot_date
    )
