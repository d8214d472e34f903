"""Serve every Saras flow from this process, with prefect.yaml's schedules (no worker needed).

    python deployments/serve.py

For production, create the `saras` process work pool (deployments/bootstrap.sh), run
`prefect deploy --all`, and start a worker: `prefect worker start --pool saras`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml
from prefect import serve
from prefect.deployments.runner import RunnerDeployment
from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger
from prefect.flows import Flow, load_flow_from_entrypoint
from prefect.schedules import Cron

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    """Load prefect.yaml and serve each deployment with its schedules."""
    sys.path.insert(0, str(ROOT))
    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    deployments: list[RunnerDeployment] = []
    for spec in config["deployments"]:
        flow: Flow[..., Any] = load_flow_from_entrypoint(str(ROOT / spec["entrypoint"]))
        schedules = [
            Cron(
                s["cron"],
                timezone=s["timezone"],
                slug=s["slug"],
                parameters=s.get("parameters") or {},
            )
            for s in spec.get("schedules") or []
        ]
        triggers: list[Any] = [
            DeploymentEventTrigger.model_validate(t) for t in spec.get("triggers") or []
        ]
        deployment = flow.to_deployment(
            name=spec["name"], schedules=schedules, tags=spec.get("tags"), triggers=triggers
        )
        # Flow.to_deployment is sync_compatible: called from sync code it returns the deployment.
        assert isinstance(deployment, RunnerDeployment)
        deployments.append(deployment)
    serve(*deployments)


if __name__ == "__main__":
    main()
