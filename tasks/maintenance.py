"""Tasks of the maintenance flow (never cached: each looks at the database as it is now)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from saras.db import get_engine
from saras.services import maintenance as service
from saras.services import repair
from saras.services.execution import ExecutionSettings


def _settings(overrides: dict[str, Any] | None) -> ExecutionSettings:
    return ExecutionSettings(**(overrides or {}))


@task(cache_policy=NO_CACHE)
def list_interrupted_runs() -> list[str]:
    """List the runs left ``executing``."""
    return [str(r) for r in service.interrupted_runs(get_engine())]


@task(cache_policy=NO_CACHE, task_run_name="resume-{run_id}")
def resume_run(run_id: str, execution: dict[str, Any] | None) -> service.RunAction:
    """Resume one executing run whose process is gone (its lock decides)."""
    return service.resume_run(get_engine(), uuid.UUID(run_id), _settings(execution))


@task(cache_policy=NO_CACHE)
def review_approved_runs(
    execution: dict[str, Any] | None, now: datetime | None = None
) -> list[service.RunAction]:
    """Start approved runs whose market is open; expire those too old or on stale prices."""
    return service.review_approved(get_engine(), _settings(execution), now)


@task(cache_policy=NO_CACHE)
def list_repair_candidates(now: datetime | None = None) -> list[repair.RepairCandidate]:
    """List the partially completed runs to repair now."""
    return repair.repair_candidates(get_engine(), now)


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def purge_expired(now: datetime | None = None) -> service.PurgeReport:
    """Delete expired sessions and old paper fills."""
    return service.purge_expired(get_engine(), now)


@task(cache_policy=NO_CACHE)
def find_stuck_work(now: datetime | None = None) -> list[service.StuckItem]:
    """List the work that needs a person."""
    return service.stuck_work(get_engine(), now)


__all__ = [
    "find_stuck_work",
    "list_interrupted_runs",
    "list_repair_candidates",
    "purge_expired",
    "resume_run",
    "review_approved_runs",
]
