"""SIGKILL of the executing process at each step of the order pipeline, then a resume.

A rebalance run (one sell, three buys) over holdings bought by an invest run is executed by
``crash_runner.py`` in a child process, which kills itself with SIGKILL at a checkpoint. The fake
Alpaca lives in this process and outlives the child. What the child left behind is checked
against the step it died at, then the run is resumed here and must end with the invariants:
exactly one order per planned order at the broker, ledger == book, nothing in doubt.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from saras.domain.enums import OrderSide, OrderStatus, RunStatus, RunType
from saras.services.execution import ExecutionSettings, RunOutcome, RunRefused
from tests.support.execution import FAST, Platform, assert_invariants

RUNNER = Path(__file__).with_name("crash_runner.py")
REPO = Path(__file__).resolve().parents[2]
NEW_WEIGHTS = {"AAPL": "10", "GOOGL": "25", "MSFT": "35", "NVDA": "30"}

P, S, F = OrderStatus.PLANNED, OrderStatus.SUBMITTING, OrderStatus.FILLED
#: checkpoint, occurrence -> what the child leaves: (our status, sent to the broker?) per order,
#: in pipeline order (the sell, then the three buys)
LEFT_BEHIND: dict[tuple[str, int], list[tuple[OrderStatus, bool]]] = {
    ("run_started", 1): [(P, False), (P, False), (P, False), (P, False)],
    ("marked_submitting", 1): [(S, False), (P, False), (P, False), (P, False)],
    ("broker_answered", 1): [(S, True), (P, False), (P, False), (P, False)],
    ("answer_recorded", 1): [(F, True), (P, False), (P, False), (P, False)],
    ("sells_settled", 1): [(F, True), (P, False), (P, False), (P, False)],
    ("marked_submitting", 2): [(F, True), (S, False), (P, False), (P, False)],
    ("broker_answered", 2): [(F, True), (S, True), (P, False), (P, False)],
    ("answer_recorded", 4): [(F, True), (F, True), (F, True), (F, True)],  # run not closed yet
}


@pytest.fixture
def rebalance(alpaca: Platform) -> tuple[Platform, uuid.UUID]:
    """Holdings from an invest run, then an approved rebalance: one sell and three buys."""
    p = alpaca
    assert p.execute(p.plan()).status == "completed"
    p.set_weights(NEW_WEIGHTS)
    run_id = p.plan(RunType.REBALANCE)
    sides = [o.side for o in p.orders(run_id)]
    assert sides == [OrderSide.SELL, OrderSide.BUY, OrderSide.BUY, OrderSide.BUY]
    return p, run_id


def kill_child_at(run_id: uuid.UUID, checkpoint: str, occurrence: int) -> str:
    """Run the executor in a child process that SIGKILLs itself at the checkpoint."""
    started = time.monotonic()
    child = subprocess.run(
        [sys.executable, str(RUNNER), str(run_id), checkpoint, str(occurrence)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert child.returncode == -9, (
        f"the child was not killed at {checkpoint} #{occurrence} "
        f"(exit {child.returncode}): {child.stdout[-2000:]} {child.stderr[-2000:]}"
    )
    assert f"killed at {checkpoint} #{occurrence}" in child.stdout
    return f"{time.monotonic() - started:.2f}s"


def resume(p: Platform, run_id: uuid.UUID, settings: ExecutionSettings = FAST) -> RunOutcome:
    """Resume in this process once PostgreSQL has noticed the dead child and freed its lock.

    The child ran on the real clock and stored its send times in it; this process's virtual
    clock started earlier, so it is first brought up to the real time (the resume is later).
    """
    p.clock.sleep(max(0.0, time.time() - p.clock()))
    deadline = time.monotonic() + 10
    while True:
        try:
            return p.execute(run_id, settings=settings)
        except RunRefused as exc:
            if "another process" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def assert_left_behind(
    p: Platform, run_id: uuid.UUID, expected: list[tuple[OrderStatus, bool]]
) -> None:
    orders = p.orders(run_id)
    found = [(o.status, p.placements(o) > 0) for o in orders]
    assert found == expected, [o.symbol for o in orders]
    assert p.run_status(run_id) is RunStatus.EXECUTING


@pytest.mark.parametrize(("checkpoint", "occurrence"), list(LEFT_BEHIND))
def test_sigkill_at_each_step_then_resume_places_each_order_once(
    rebalance: tuple[Platform, uuid.UUID], checkpoint: str, occurrence: int
) -> None:
    p, run_id = rebalance
    kill_child_at(run_id, checkpoint, occurrence)
    assert_left_behind(p, run_id, LEFT_BEHIND[(checkpoint, occurrence)])
    assert_invariants(p, in_doubt_ok=True)

    outcome = resume(p, run_id)
    assert outcome.status == "completed", outcome
    assert [p.placements(o) for o in p.orders()] == [1] * len(p.orders())
    assert_invariants(p)
    assert p.execute(run_id).status == "completed"  # and once more: nothing changes
    assert_invariants(p)


def test_two_crashes_in_a_row_then_resume(rebalance: tuple[Platform, uuid.UUID]) -> None:
    p, run_id = rebalance
    kill_child_at(run_id, "broker_answered", 2)  # the first buy is at Alpaca, not in our books
    kill_child_at(run_id, "marked_submitting", 1)  # the resumed child dies marking the next one
    orders = p.orders(run_id)
    assert [o.status for o in orders] == [F, F, S, P]
    assert [p.placements(o) for o in orders] == [1, 1, 0, 0]
    outcome = resume(p, run_id)
    assert outcome.status == "completed", outcome
    assert Counter(p.placements(o) for o in p.orders()) == {1: 8}
    assert_invariants(p)
