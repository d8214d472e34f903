"""Unattended upkeep: resume, start or expire runs, repair within bounds, purge, report."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.states import State

from flows.kit.audit import AUDIT_HOOKS
from flows.kit.finish import ResultsTable, finish_flow
from flows.kit.repair import repair_and_execute
from flows.kit.runners import SarasTaskRunner
from saras.domain.parameters import ExecutionParameters, settings_kwargs
from saras.errors import SarasError
from saras.services.maintenance import RunAction
from tasks.maintenance import (
    find_stuck_work,
    list_interrupted_runs,
    list_repair_candidates,
    purge_expired,
    resume_run,
    review_approved_runs,
)

PATH = "flows/maintenance.py:maintain"
STUCK_KEY = "maintenance-stuck-work"


@flow(name="maintenance", task_runner=SarasTaskRunner(), **AUDIT_HOOKS)
def maintain(
    resume: bool = True,
    start_approved: bool = True,
    repair: bool = True,
    purge: bool = True,
    execution: ExecutionParameters | None = None,
) -> State:
    """Resume interrupted runs, start or expire approved ones, repair, purge; report stuck work.

    Safe to run twice at once: execution locks decide who resumes or starts a run, expiry is
    written under the lock and ``WHERE status = 'approved'``, repair planning takes the
    planner's lock on the investment (and checks again under it), and purges delete only what
    has expired.

    Args:
        resume: Resume executing runs whose process is gone.
        start_approved: Start approved runs whose market is open; expire those too old.
        repair: Plan and execute bounded repairs of partially completed runs.
        purge: Delete expired sessions and old paper fills (retention settings).
        execution: How patient the execution is (polling, deadline, timeouts); empty: the
            defaults.
    """
    began = time.monotonic()
    logger = get_run_logger()
    actions: list[RunAction] = []
    if resume:
        for run_id in list_interrupted_runs():
            actions.append(resume_run(run_id, settings_kwargs(execution)))
    if start_approved:
        actions.extend(review_approved_runs(settings_kwargs(execution)))
    repairs = _repair_all(settings_kwargs(execution)) if repair else []
    purged = purge_expired() if purge else None
    stuck = find_stuck_work()
    lines = ["### Maintenance", ""]
    lines += [f"- run `{a.run_id}`: {a.action} -> {a.status}. {a.reason}" for a in actions]
    lines += [
        f"- repair of run `{r['run_id']}`: {r['status']} {r['repair_run_id']}. {r['detail']}"
        for r in repairs
    ]
    if purged is not None:
        lines.append(
            f"- purged {purged.user_sessions} expired session(s), {purged.paper_fills} old "
            "paper fill(s)"
        )
    lines.append(f"- stuck work: {len(stuck)} item(s)")
    create_markdown_artifact("\n".join(lines), key="maintenance-summary")
    problems = [a for a in actions if a.action == "skipped" and "lock held" not in a.reason]
    message = (
        f"{sum(a.action == 'resumed' for a in actions)} resumed, "
        f"{sum(a.action == 'started' for a in actions)} started, "
        f"{sum(a.action == 'expired' for a in actions)} expired, "
        f"{sum(a.action == 'waiting' for a in actions)} waiting, "
        f"{len(repairs)} repaired, {len(stuck)} stuck"
    )
    logger.info(message)
    return finish_flow(
        "flow.maintain",
        began,
        path=PATH,
        summary=message,
        problems=[f"{a.run_id}: {a.reason}" for a in problems],
        data={
            "actions": [asdict(a) for a in actions],
            "repairs": repairs,
            "purged": asdict(purged) if purged is not None else None,
            "stuck": [asdict(item) for item in stuck],
        },
        results=ResultsTable(
            [asdict(item) for item in stuck],
            key=STUCK_KEY,
            description=f"Stuck work: {len(stuck)} item(s) that need a person",
            empty_row={"kind": "-", "ref": "-", "detail": "nothing stuck", "since": ""},
        ),
    )


def _repair_all(execution: dict[str, Any] | None) -> list[dict[str, str]]:
    """Repair, within bounds, every run that qualifies; say what became of each."""
    repairs: list[dict[str, str]] = []
    for candidate in list_repair_candidates():
        original = str(candidate.original_run_id)
        try:
            result = repair_and_execute(
                original,
                require_approval=None,
                wait_for_approval=False,
                approval_timeout_seconds=0,
                approval_poll_seconds=1,
                execution=execution,
            )
        except SarasError as exc:
            repairs.append(
                {"run_id": original, "repair_run_id": "", "status": "refused", "detail": str(exc)}
            )
            continue
        statuses = [r["status"] for r in result.results]
        repairs.append(
            {
                "run_id": original,
                "repair_run_id": result.plan.repair_run_id or "",
                "status": statuses[0] if statuses else (result.plan.status or "nothing"),
                "detail": result.message,
            }
        )
    return repairs


if __name__ == "__main__":
    maintain()
