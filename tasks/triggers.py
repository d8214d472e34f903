"""Tasks of the trigger evaluation: decide which smallcases are due, start their rebalances."""

from __future__ import annotations

from datetime import datetime

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment

from saras.db import get_engine
from saras.services.approval import TRIGGER_REQUESTER
from saras.services.triggers import SmallcaseEvaluation, evaluate_smallcases


@task(cache_policy=NO_CACHE)
def evaluate_due(
    smallcases: list[str] | None, exchanges: list[str] | None, as_of: datetime
) -> list[SmallcaseEvaluation]:
    """Evaluate the triggers of every active smallcase (or the named ones)."""
    return evaluate_smallcases(get_engine(), as_of, smallcases, exchanges)


@task(retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def start_rebalance(deployment: str, smallcase: str, idempotency_key: str) -> str:
    """Start a run of the rebalance deployment for one smallcase; return its flow run id.

    The run names the trigger as its requester: under maker-checker any Saras user may approve
    what a schedule started (a run naming no requester could not be approved at all).
    """
    flow_run = run_deployment(
        name=deployment,
        parameters={"smallcase": smallcase, "requested_by": TRIGGER_REQUESTER},
        timeout=0,
        idempotency_key=idempotency_key,
        tags=["saras", "triggered"],
    )
    assert isinstance(flow_run, FlowRun)  # called from a sync task: never a coroutine
    return str(flow_run.id)
