"""Decide, every day after the closes, which smallcases are due for a rebalance, and start them."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from prefect import flow, get_run_logger
from prefect.exceptions import ObjectNotFound
from prefect.states import State

from flows.kit.audit import AUDIT_HOOKS
from flows.kit.finish import ResultsTable, finish_flow
from flows.kit.runners import SarasTaskRunner
from saras.domain.inputs import check_instant
from saras.errors import SarasError
from tasks.triggers import evaluate_due, start_rebalance

PATH = "flows/evaluate_rebalances.py:evaluate_rebalances"
EVENT = "flow.evaluate_rebalances"
#: the deployment of flows/rebalance.py in prefect.yaml, as flow-name/deployment-name
REBALANCE_DEPLOYMENT = "rebalance-smallcase/rebalance"


@flow(name="evaluate-rebalances", task_runner=SarasTaskRunner(), **AUDIT_HOOKS)
def evaluate_rebalances(
    smallcases: list[str] | None = None,
    exchanges: list[str] | None = None,
    as_of: datetime | None = None,
    start_runs: bool = True,
    rebalance_deployment: str = REBALANCE_DEPLOYMENT,
) -> State:
    """Decide which smallcases are due (calendar review, drift band, cooldown) and start them.

    Each due smallcase gets one run of the rebalance deployment, which plans and pauses for an
    analyst's approval as a manual run does; a second evaluation of the same day starts nothing
    new. The decisions, due or not and why, are published as the ``rebalance-triggers`` table.

    Args:
        smallcases: Names of the smallcases to evaluate; empty: every active smallcase.
        exchanges: Only the smallcases trading on these exchanges' calendars (each market's
            schedule evaluates its own after its close); empty: every exchange.
        as_of: The instant to evaluate at (default: now); each smallcase's day is read on its
            exchange's clock.
        start_runs: Start a rebalance run for each due smallcase; off: only report.
        rebalance_deployment: The deployment to start, as flow-name/deployment-name.
    """
    began = time.monotonic()
    logger = get_run_logger()
    try:
        when = check_instant("as_of", as_of) or datetime.now(UTC)  # never a day in 2100
        evaluations = evaluate_due(smallcases, exchanges, when)
    except SarasError as exc:
        return finish_flow(EVENT, began, path=PATH, summary=None, problems=[str(exc)], failed=True)
    rows: list[dict[str, str]] = []
    problems: list[str] = []
    for evaluation in evaluations:
        row = evaluation.as_row()
        row["rebalance_run"] = "-"
        if evaluation.due and start_runs:
            key = f"evaluate-rebalances/{evaluation.smallcase_id}/{evaluation.day.isoformat()}"
            try:
                row["rebalance_run"] = start_rebalance(rebalance_deployment, evaluation.name, key)
            except ObjectNotFound:
                problem = f"no deployment {rebalance_deployment!r} to start for {evaluation.name}"
                row["rebalance_run"] = "not started: " + problem
                problems.append(problem)
        rows.append(row)
    due = [r["smallcase"] for r in rows if r["due"] == "yes"]
    summary = (
        f"{len(due)} of {len(rows)} smallcases due"
        + (f": {', '.join(due)}" if due else "")
        + ("" if start_runs else " (report only: no run started)")
    )
    logger.info("; ".join([summary, *problems]))
    return finish_flow(
        EVENT,
        began,
        path=PATH,
        summary=summary,
        problems=problems,
        failed=bool(problems),
        data=rows,
        results=ResultsTable(
            rows,
            key="rebalance-triggers",
            description=f"### Rebalance triggers at {when.isoformat()}\n\n{summary}",
            empty_row={"smallcase": "-", "due": "no", "reasons": "no active smallcase"},
        ),
    )
