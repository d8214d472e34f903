"""prefect.yaml: every entrypoint loads as `prefect deploy` loads it, and deploys to a server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL

ROOT = Path(__file__).resolve().parents[2]
CONFIG = yaml.safe_load((ROOT / "prefect.yaml").read_text())
DEPLOYMENTS = CONFIG["deployments"]

LOAD_ALL = """
import json, sys
from prefect.flows import load_flow_from_entrypoint
out = {}
for entrypoint in sys.argv[1:]:
    flow = load_flow_from_entrypoint(entrypoint)
    out[entrypoint] = {"name": flow.name, "parameters": sorted(flow.parameters.properties)}
print(json.dumps(out))
"""


def test_every_entrypoint_loads_without_side_effects(tmp_path: Path) -> None:
    entrypoints = [d["entrypoint"] for d in DEPLOYMENTS]
    env = {
        **os.environ,
        "SARAS_DATA_DIR": str(tmp_path / "must-not-exist"),
        "SARAS_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",  # any I/O would fail
        "PREFECT_API_URL": "http://127.0.0.1:1/api",
    }
    result = subprocess.run(
        [sys.executable, "-c", LOAD_ALL, *entrypoints],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(loaded) == set(entrypoints)
    assert not (tmp_path / "must-not-exist").exists()
    names = {e: v["name"] for e, v in loaded.items()}
    assert names["flows/rebalance.py:rebalance_smallcase"] == "rebalance-smallcase"
    params = loaded["flows/rebalance.py:rebalance_smallcase"]["parameters"]
    assert {"smallcase", "constituents", "require_approval", "dry_run"} <= set(params)


def _schedules(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    return list(deployment.get("schedules") or [])


def test_schedules_have_slugs_timezones_and_valid_parameters() -> None:
    from prefect.flows import load_flow_from_entrypoint

    slugs = set()
    for deployment in DEPLOYMENTS:
        flow = load_flow_from_entrypoint(str(ROOT / deployment["entrypoint"]))
        assert (
            deployment["work_pool"]["name"] == CONFIG["definitions"]["work_pools"]["saras"]["name"]
        )
        for schedule in _schedules(deployment):
            assert schedule["slug"] and schedule["slug"] not in slugs
            slugs.add(schedule["slug"])
            assert schedule["timezone"] in {"America/New_York", "Asia/Kolkata"}
            assert "parameters" in schedule
            flow.validate_parameters(dict(schedule["parameters"]))
    by_name = {d["name"]: d for d in DEPLOYMENTS}
    assert _schedules(by_name["rebalance"]) == []  # analysts start rebalances from the UI
    assert {s["timezone"] for s in _schedules(by_name["nightly-prices"])} == {
        "America/New_York",
        "Asia/Kolkata",
    }
    assert {s["timezone"] for s in _schedules(by_name["nightly-positions"])} == {
        "America/New_York",
        "Asia/Kolkata",
    }


@pytest.mark.slow
def test_prefect_deploy_registers_everything_on_a_real_server() -> None:
    env = {
        **os.environ,
        "PREFECT_API_URL": PREFECT_API_URL.value(),
        "SARAS_REPO_DIR": str(ROOT),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    for command in (
        [
            "prefect",
            "work-pool",
            "create",
            "saras",
            "--type",
            "process",
            "--base-job-template",
            "deployments/work-pool.json",
            "--overwrite",
        ],
        ["prefect", "--no-prompt", "deploy", "--all"],
    ):
        result = subprocess.run(
            [sys.executable, "-m", "prefect", *command[1:]],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    with get_client(sync_client=True) as client:
        deployments = {d.name: d for d in client.read_deployments()}
    assert {d["name"] for d in DEPLOYMENTS} <= set(deployments)
    prices = deployments["nightly-prices"]
    assert prices.work_pool_name == "saras"
    zones = {s.schedule.timezone for s in prices.schedules}
    assert zones == {"America/New_York", "Asia/Kolkata"}
    assert {s.slug for s in prices.schedules} == {
        "us-prices-after-nyse-close",
        "india-prices-after-nse-close",
    }
    assert any(s.parameters.get("exchanges") == ["NSE", "BSE"] for s in prices.schedules)
    assert deployments["rebalance"].schedules == []
