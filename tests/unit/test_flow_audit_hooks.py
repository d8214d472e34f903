"""Every deployed flow leaves its audit row whatever ends it (issue 8, item 10).

A flow that fails, crashes or is cancelled without writing its own ``audit_logs`` row gets one
from ``flows.kit.audit.audit_flow_end``; the flow tests show it for failures and crashes
(tests/flows/test_money_safety.py). Here: no deployed flow lacks the hook for any of the three.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import yaml

from flows.kit.audit import audit_flow_end


def test_every_deployed_flow_audits_failure_crash_and_cancellation() -> None:
    root = Path(__file__).resolve().parents[2]
    deployments = yaml.safe_load((root / "prefect.yaml").read_text())["deployments"]
    entrypoints = sorted({d["entrypoint"] for d in deployments})
    assert len(entrypoints) >= 10
    missing = []
    for entrypoint in entrypoints:
        path, name = entrypoint.split(":")
        flow = getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), name)
        for kind in ("on_failure_hooks", "on_crashed_hooks", "on_cancellation_hooks"):
            if audit_flow_end not in getattr(flow, kind):
                missing.append(f"{entrypoint} {kind}")
    assert missing == []
