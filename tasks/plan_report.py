"""Publish the per-investment plan report as artifacts, with the whole plan as a CSV file.

A plain function (like ``tasks.orchestration.publish_plan``): it runs inside whichever flow
calls it. The CSV is written under ``<data dir>/plans/`` and linked from a link artifact; on a
shared deployment point ``SARAS_DATA_DIR`` at storage the analysts' browsers can reach.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_table_artifact,
)

from saras.db import get_engine
from saras.domain.plan_report import (
    InvestmentReport,
    investment_rows,
    leg_rows,
    plan_csv,
    plan_totals,
)
from saras.domain.policy import RebalancePolicy
from saras.services.plan_review import PlanReview, plan_for_review
from saras.settings import get_settings
from tasks.common import current_flow_run_id

#: rows a table artifact shows at most (the CSV has every line)
ARTIFACT_ROWS = 1000


@task
def plan_rebalance(
    smallcase: str,
    *,
    constituents: list[dict[str, Any]] | None = None,
    policy: RebalancePolicy | None = None,
    exclude_investments: Sequence[uuid.UUID] | None = None,
    dry_run: bool = False,
    require_approval: bool = True,
) -> PlanReview:
    """Plan a rebalance under the smallcase's policy with the run's overrides; report it."""
    return plan_for_review(
        get_engine(),
        smallcase,
        constituents=constituents,
        policy=policy,
        exclude_investments=exclude_investments,
        dry_run=dry_run,
        require_approval=require_approval,
    )


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
