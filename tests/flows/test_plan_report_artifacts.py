"""The plan report as artifacts: per investment, per leg, totals, and a CSV link."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
)

from flows.kit.reports import publish_plan_report
from saras.settings import get_settings
from tests.unit.test_domain_plan_report import _india_report, _us_report


@flow
def _publish() -> str:
    return str(publish_plan_report([_us_report(), _india_report()], key="rebalance-plan"))


def test_plan_report_artifacts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SARAS_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    try:
        state = _publish(return_state=True)
        path = Path(state.result())
    finally:
        get_settings.cache_clear()
    assert path.parent == tmp_path / "plans"
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    assert {r["symbol"] for r in rows} >= {"AAPL", "MRF"}
    with get_client(sync_client=True) as client:
        found = {
            a.key: a
            for a in client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id]),
                    key=ArtifactFilterKey(
                        any_=[
                            "rebalance-plan-investments",
                            "rebalance-plan-legs",
                            "rebalance-plan-totals",
                            "rebalance-plan-csv",
                        ]
                    ),
                )
            )
        }
    assert set(found) == {
        "rebalance-plan-investments",
        "rebalance-plan-legs",
        "rebalance-plan-totals",
        "rebalance-plan-csv",
    }
    link = found["rebalance-plan-csv"].data
    assert (
        isinstance(link, str)
        and Path(unquote(urlparse(link.split("](")[-1].rstrip(")")).path)) == path
    )
    assert "INR" in str(found["rebalance-plan-totals"].data)
