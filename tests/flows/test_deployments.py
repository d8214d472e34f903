"""prefect.yaml: every entrypoint loads as `prefect deploy` loads it, and deploys to a server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
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


def test_the_snapshot_follows_the_price_run_with_a_late_clock_fallback() -> None:
    from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger

    by_name = {d["name"]: d for d in DEPLOYMENTS}
    raw = by_name["nightly-positions"]["triggers"]
    assert len(raw) == 1
    trigger = DeploymentEventTrigger.model_validate(raw[0])  # Prefect's own schema accepts it
    assert "prefect.flow-run.Completed" in trigger.expect
    assert raw[0]["match_related"] == {
        "prefect.resource.role": "deployment",
        "prefect.resource.name": "nightly-prices",
    }
    prices = {s["timezone"]: s["cron"] for s in _schedules(by_name["nightly-prices"])}
    fallback = {s["timezone"]: s["cron"] for s in _schedules(by_name["nightly-positions"])}
    for zone, cron in prices.items():  # the clock run comes well after the price run
        price_minutes = int(cron.split()[1]) * 60 + int(cron.split()[0])
        fallback_minutes = int(fallback[zone].split()[1]) * 60 + int(fallback[zone].split()[0])
        assert fallback_minutes - price_minutes >= 120
    preopen = _schedules(by_name["broker-sessions"])
    assert [(s["cron"], s["timezone"], s["parameters"]) for s in preopen] == [
        ("30 8 * * 1-5", "Asia/Kolkata", {"session_exchange": "NSE"})
    ]


def test_alert_automations_are_valid_prefect_automations() -> None:
    sys.path.insert(0, str(ROOT / "deployments"))
    try:
        import automations
    finally:
        sys.path.remove(str(ROOT / "deployments"))
    block = uuid.uuid4()
    loaded = {a.name: a for a in automations.load_automations(block)}
    assert set(loaded) == {
        "saras-run-failed",
        "saras-nightly-late",
        "saras-reconciliation-differences",
    }
    for automation in loaded.values():
        assert automation.enabled
        assert [a.block_document_id for a in automation.actions] == [block]
    failed = loaded["saras-run-failed"].trigger
    assert failed.expect == {
        "prefect.flow-run.Failed",
        "prefect.flow-run.Crashed",
        "prefect.flow-run.Partially Completed",
    }
    assert loaded["saras-nightly-late"].trigger.posture == "Proactive"
    # no block chosen: created disabled, with no notification to send
    unset = automations.load_automations(None)
    assert all(not a.enabled and not a.actions for a in unset)


def test_bootstrap_refuses_without_a_server(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    result = subprocess.run(
        ["bash", str(ROOT / "deployments" / "bootstrap.sh")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2 and "PREFECT_API_URL is not set" in result.stderr
