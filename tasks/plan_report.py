"""Publish the per-investment plan report as artifacts, with the whole plan as a CSV file.

A plain function (like ``tasks.orchestration.publish_plan``): it runs inside whichever flow
calls it. The CSV is written under ``<data dir>/plans/`` and linked from a link artifact; on a
shared deployment point ``SARAS_DATA_DIR`` at storage the analysts' browsers can reach.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_table_artifact,
)

from saras.domain.plan_report import (
    InvestmentReport,
    investment_rows,
    leg_rows,
    plan_csv,
    plan_totals,
)
from saras.settings import get_settings
from tasks.common import current_flow_run_id


def write_plan_csv(reports: Sequence[InvestmentReport], name: str) -> Path:
    """Write the plan as CSV under the data directory; return the file."""
    directory = get_settings().data_dir / "plans"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.csv"
    path.write_text(plan_csv(reports), encoding="utf-8")
    return path


def publish_plan_report(reports: Sequence[InvestmentReport], *, key: str) -> Path:
    """Show the plan per investment and per leg, totals per currency, and link the CSV."""
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
    summary = "\n".join(lines)
    create_table_artifact(
        investment_rows(reports) or [{"investment": "-"}],
        key=f"{key}-investments",
        description="Per investment: orders, cash before and after, shortfall, costs, turnover",
    )
    create_table_artifact(
        leg_rows(reports) or [{"investment": "-"}],
        key=f"{key}-legs",
        description="Every order and every skipped leg, with its reason and detail",
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
