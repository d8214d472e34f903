"""The scale-out benchmark runs every mode at smoke size, and every mode writes the same rows."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.conftest import PostgresServer

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "ingest_workers.py"

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def test_ingest_workers_benchmark_smoke(pg_server: PostgresServer, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SARAS_", "PREFECT_"))}
    env["PREFECT_HOME"] = str(tmp_path / "prefect")
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--admin-url", pg_server.admin_url],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    for mode, runs in (("threads", 1), ("dask", 1), ("processes", 2)):
        assert re.search(rf"^{mode}\s.*\s{runs}\s+[\d.]+\s+[\d,]+\s+[\d.]+x$", out, re.M), out
    assert "every mode wrote the same 60 rows (count and checksum)" in out, out
    assert "FAILED" not in out
