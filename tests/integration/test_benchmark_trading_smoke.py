"""The planning and execution benchmarks run end to end at smoke size and print their figures."""

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

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _run(script: str, admin_url: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--smoke", "--admin-url", admin_url],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "FAILED" not in proc.stdout, proc.stdout
    return proc.stdout


def _line(stdout: str, pattern: str) -> re.Match[str]:
    match = re.search(pattern, stdout, re.M)
    assert match, f"no line matching {pattern!r} in:\n{stdout}"
    return match


def _assert_dropped(stdout: str, admin_url: str) -> None:
    name = _line(stdout, r"^database\s+\S+/(saras_bench_\d+)\s").group(1)
    admin = create_engine(admin_url)
    try:
        with admin.connect() as conn:
            left = conn.execute(
                text("SELECT count(*) FROM pg_database WHERE datname = :n"), {"n": name}
            ).scalar_one()
    finally:
        admin.dispose()
    assert left == 0, f"{name} was not dropped"


@pytest.mark.postgres
def test_plan_rebalance_benchmark_smoke(pg_server: PostgresServer) -> None:
    out = _run("plan_rebalance.py", pg_server.admin_url)
    # 500 investments x 20 constituents: every investment gets one order per constituent
    _line(out, r"^ours\s+10,000 orders\s+500 runs\s+[\d.]+ s\s+[\d,]+ orders/s")
    _line(out, r"^\s+plan\s+: load investments [\d.]+, load state [\d.]+, .*plan_batch [\d.]+")
    _line(out, r"^\s+write : supersede [\d.]+, COPY smallcase_execution_runs [\d.]+ ")
    _line(out, r"^raw COPY\s+10,000 orders\s+[\d.]+ s\s+[\d,]+ orders/s")
    ratio = _line(out, r"^ratio\s+(\d+\.\d\d)\s+\(ours / raw COPY; target <= 3\)\s+(PASS|MISS)$")
    assert float(ratio.group(1)) > 0
    assert (ratio.group(2) == "PASS") == (float(ratio.group(1)) <= 3)
    _line(out, r"^approval\s+recompute_plan_hash [\d.]+ s on .* same hash as planned\)$")
    tasks = _line(out, r"^task runs\s+(\d+)\s+for the whole rebalance flow: plan_runs 1 .*PASS$")
    assert int(tasks.group(1)) == 1 + 2 + 32 + 1 + 1  # 500 connections -> 32 execution tasks
    _assert_dropped(out, pg_server.admin_url)


@pytest.mark.postgres
def test_execute_orders_benchmark_smoke(pg_server: PostgresServer) -> None:
    out = _run("execute_orders.py", pg_server.admin_url)
    # one Alpaca connection: every planned order filled, no 429 from the fake
    # (fills are read from the account's FILL activities: GET /v2/account/activities/FILL too)
    _line(out, r"^alpaca 1\s+\d+ requests in [\d.]+ s \(.*GET /v2/clock \d+, POST /v2/orders \d+\)")
    _line(out, r"^\s+utilisation \d+\.\d{3}\s+\(.*target >= 0\.9\)\s+(PASS|MISS)$")
    _line(out, r"^\s+steady rate after the first \d+ requests .* 429s 0 \(target 0\)\s+PASS$")
    # Kite: orders/s against 10/s, and no 429 either
    kite = _line(
        out,
        r"^kite 1\s+\d+ orders in [\d.]+ s = ([\d.]+) orders/s -> ([\d.]+) of the limit "
        r"10\.00/s \(orders\)",
    )
    assert float(kite.group(1)) > 0
    assert re.search(r"^\s+requests: \d+ order POSTs .* 429s 0 \(target 0\)\s+PASS$", out, re.M)
    # read back, a placement costs reads too: its limit is Kite's 10 reads/s over reads per order
    back = _line(
        out,
        r"^kite read-back\s+\d+ orders in [\d.]+ s = [\d.]+ orders/s -> [\d.]+ of the limit "
        r"([\d.]+)/s \(reads, ([\d.]+) per order\)",
    )
    assert float(back.group(1)) == pytest.approx(10 / float(back.group(2)), rel=0.05)
    # many connections: every C executed every order, the speedup is reported against C=1
    _line(out, r"^C=1\s+12/12 orders on 3 connections in\s+[\d.]+ s = .* speedup\s+1\.00 ")
    _line(out, r"^C=3\s+12/12 orders on 3 connections in\s+[\d.]+ s = .* speedup\s+\d+\.\d\d ")
    assert "tasks FAILED" not in out
    # paper: 20 investments, each its own connection, executed as the flow's tasks do
    _line(out, r"^paper\s+20 investments x 20 buys = 400 orders, each investment its own ")
    ours = _line(
        out,
        r"^ours\s+400/400 orders filled in [\d.]+ s = ([\d,]+) orders/s with \d+ threads = "
        r"([\d,]+) orders/s per core \(\d+ cores\)$",
    )
    assert int(ours.group(1).replace(",", "")) > 0
    _line(out, r"^\s+cpu [\d.]+ CPU-s .*orders per CPU-second$")
    _line(out, r"^floor\s+one single-row UPDATE \+ commit per order .*: [\d,]+/s; ours / that ")
    _line(out, r"^raw COPY\s+the same 400 order rows .*: [\d,]+ rows/s; ours / that [\d.]+$")
    _line(out, r"^books\s+ledger rows = broker fills = filled orders; cash equal: yes$")
    _assert_dropped(out, pg_server.admin_url)
