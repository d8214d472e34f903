"""The after-execution report of a rebalance as an artifact (stored in SQL by the service)."""

from __future__ import annotations

import uuid

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from saras.db import get_engine
from saras.domain.execution_report import RunOutcome, run_rows
from saras.domain.plan import Plan
from saras.services.execution_report import report_runs

#: rows the table artifact shows at most (every row is in SQL)
ARTIFACT_ROWS = 1000


@task(retries=1, retry_delay_seconds=2)
def report_execution(run_ids: list[str]) -> list[RunOutcome]:
    """Compute the report of these runs and store it in ``execution_run_reports``."""
    return report_runs(get_engine(), [uuid.UUID(r) for r in run_ids])


def _text(value: object) -> str:
    return "-" if value is None else str(value)


def publish_execution_report(plan: Plan, *, key: str = "rebalance-execution") -> None:
    """Show planned against filled per asset, slippage, cost and the drift left per investment.

    A report that cannot be made is logged, not raised: the trades are done either way.
    """
    try:
        reports = report_execution([str(r) for r in plan.run_ids])
    except Exception as exc:  # a report must not fail an executed rebalance
        get_run_logger().warning("no execution report: %s", exc)
        return
    rows = run_rows(reports)
    create_table_artifact(
        rows[:ARTIFACT_ROWS] or [{"run": "-"}],
        key=key,
        description=(
            "Planned against filled quantity and price per run and asset; slippage in bps "
            "against the planned price (positive: it cost); fees; drift left per investment"
            + (f" (first {ARTIFACT_ROWS} of {len(rows)} rows)" if len(rows) > ARTIFACT_ROWS else "")
        ),
    )
    lines = [
        "| run | investment | status | planned | filled | cost | slippage bps | drift left % |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in reports[:ARTIFACT_ROWS]:
        lines.append(
            f"| {r.run_id} | {r.investment_id} | {r.status} "
            f"| {r.planned_value:.2f} {r.currency} | {r.filled_value:.2f} {r.currency} "
            f"| {r.cost:.2f} | {_text(r.slippage_bps)} | {_text(r.drift_left_pct)} |"
        )
    lines.append("")
    lines.append("Stored in SQL: `execution_run_reports` and `execution_run_report_legs`.")
    create_markdown_artifact("\n".join(lines), key=f"{key}-summary")
