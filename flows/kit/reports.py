"""Report artifacts of a rebalance: the plan per investment (with a CSV) and the execution report.

Plain functions that run inside whichever flow calls them (not tasks). The plan CSV is written
under ``<data dir>/plans/`` and linked from a link artifact; on a shared deployment point
``SARAS_DATA_DIR`` at storage the analysts' browsers can reach. The execution report's figures
are stored in SQL by ``saras.services.execution_report``; the artifacts show them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from prefect import get_run_logger
from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_table_artifact,
)

from saras.domain.execution_report import run_rows
from saras.domain.plan import Plan
from saras.domain.plan_report import (
    InvestmentReport,
    investment_rows,
    leg_rows,
    plan_csv,
    plan_totals,
)
from saras.settings import get_settings
from tasks.common import current_flow_run_id
from tasks.execution_report import report_execution

#: rows a table artifact shows at most (the CSV has every line)
ARTIFACT_ROWS = 1000


def write_plan_csv(reports: Sequence[InvestmentReport], name: str) -> Path:
    """Write the plan as CSV under the data directory; return the file."""
    directory = get_settings().data_dir / "plans"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.csv"
    path.write_text(plan_csv(reports), encoding="utf-8")
    return path


def publish_plan_report(
    reports: Sequence[InvestmentReport], *, key: str, complete: bool = True
) -> Path:
    """Show the plan per investment and per leg, totals per currency, and link the CSV.

    The tables show at most :data:`ARTIFACT_ROWS` rows each (the CSV has them all);
    ``complete=False`` says the reports themselves stop at the planner's report limit.
    """
    totals = plan_totals(reports)
    lines = [
        "| currency | est. buys | est. sells | est. costs | shortfall |",
        "| --- | --- | --- | --- | --- |",
    ]
    for currency, t in totals.items():
        lines.append(
            f"| {currency} | {t['est_buys']} | {t['est_sells']} | {t['est_costs']} "
            f"| {t['shortfall']} |"
        )
    if not complete:
        lines.append("")
        lines.append(f"Only the first {len(reports)} investments are reported.")
    summary = "\n".join(lines)
    investments = investment_rows(reports)
    legs = leg_rows(reports)
    cut = " (first {n} of {total}: the CSV has all)"
    create_table_artifact(
        investments[:ARTIFACT_ROWS] or [{"investment": "-"}],
        key=f"{key}-investments",
        description="Per investment: orders, cash before and after, shortfall, costs, turnover"
        + (
            cut.format(n=ARTIFACT_ROWS, total=len(investments))
            if len(investments) > ARTIFACT_ROWS
            else ""
        ),
    )
    create_table_artifact(
        legs[:ARTIFACT_ROWS] or [{"investment": "-"}],
        key=f"{key}-legs",
        description="Every order and every skipped leg, with its reason and detail"
        + (cut.format(n=ARTIFACT_ROWS, total=len(legs)) if len(legs) > ARTIFACT_ROWS else ""),
    )
    create_markdown_artifact(f"### Totals per currency\n\n{summary}", key=f"{key}-totals")
    path = write_plan_csv(reports, f"{current_flow_run_id() or 'local'}-{key}")
    create_link_artifact(
        link=path.as_uri(),
        link_text="the whole plan as CSV",
        key=f"{key}-csv",
        description=f"One line per order or skipped leg: `{path}`",
    )
    return path


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
