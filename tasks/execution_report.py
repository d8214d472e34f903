"""The after-execution report of a rebalance, stored in SQL (shown by ``flows.kit.reports``)."""

from __future__ import annotations

import uuid

from prefect import task
from prefect.cache_policies import NO_CACHE

from saras.db import get_engine
from saras.domain.execution_report import RunOutcome
from saras.services.execution_report import report_runs


@task(cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2)
def report_execution(run_ids: list[str]) -> list[RunOutcome]:
    """Compute the report of these runs and store it in ``execution_run_reports``."""
    return report_runs(get_engine(), [uuid.UUID(r) for r in run_ids])
