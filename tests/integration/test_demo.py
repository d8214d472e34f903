"""`saras demo`, the main job, end to end in a fresh process on a fresh embedded database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_demo_tells_the_whole_story_and_is_safe_to_rerun(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SARAS_", "PREFECT_"))}
    env["SARAS_DATA_DIR"] = str(tmp_path / "data")
    env["PREFECT_HOME"] = str(tmp_path / "prefect")
    command = [sys.executable, "-m", "saras.cli", "demo"]
    first = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-4000:]
    out = first.stdout
    assert "generated a local encryption key" in out
    assert "1. nightly prices" in out and "0 symbols failed" in out
    assert out.count("Completed (1 runs completed)") >= 3  # two investments and the rebalance
    assert "2 connections reconciled" in out
    assert "runs: 2 invest completed" in out and "runs: 1 rebalance completed" in out
    assert "AMZN" not in out.split("What changed")[1]  # dropped from the composition
    assert (tmp_path / "data" / "saras.sqlite3").exists()

    second = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-4000:]
    assert "0 created" in second.stdout and "generated" not in second.stdout
    assert "already invested" in second.stdout
    assert "0 bars inserted" in second.stdout
    assert "runs: 2 invest completed" in second.stdout  # nothing invested twice
