"""The ingestion benchmark runs end to end at smoke size, prints its figures, cleans up."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import create_engine, text

if TYPE_CHECKING:
    from tests.support.databases import PostgresServer

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "ingest_prices.py"


def _line(stdout: str, pattern: str) -> str:
    match = re.search(pattern, stdout, re.M)
    assert match, f"no line matching {pattern!r} in:\n{stdout}"
    return match.group(0)


@pytest.mark.postgres
def test_ingest_benchmark_smoke(pg_server: PostgresServer) -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--admin-url", pg_server.admin_url],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    _line(out, r"^ingest\s+1,200 rows\s+[\d.]+ s\s+[\d,]+ rows/s")
    _line(out, r"^raw COPY\s+1,200 rows\s+[\d.]+ s\s+[\d,]+ rows/s")
    _line(out, r"^ratio\s+\d+\.\d\d\s+\(ours / raw COPY; target >= 0\.8\)\s+(PASS|MISS)$")
    _line(out, r"^increment\s+20 rows")
    _line(out, r"^re-run\s+0 rows\s.*\(0 inserted, 0 updated, 20 unchanged; 0 row versions .*PASS$")
    _line(out, r"^\s+price_history .*\(\+0 bytes; heap\+indexes \+0 bytes\)$")
    _line(out, r"^peak RSS\s+[\d,]+ MiB .*PASS$")
    assert "FAILED" not in out

    # the throwaway database was dropped
    name = re.search(r"^database\s+\S+/(saras_bench_\d+)\s", out, re.M)
    assert name, out
    admin = create_engine(pg_server.admin_url)
    try:
        with admin.connect() as conn:
            left = conn.execute(
                text("SELECT count(*) FROM pg_database WHERE datname = :n"), {"n": name.group(1)}
            ).scalar_one()
    finally:
        admin.dispose()
    assert left == 0
