"""SIGKILL of an executor that marks its orders ``submitting`` in batches, then a resume.

With ``batch_size`` above one, the three buys of the rebalance (see ``test_execution_crash``) are
marked ``submitting`` in one commit before the first is sent. A process killed after that mark,
or after some of the batch reached the broker, leaves the whole batch in doubt; the resume looks
each order up by our id and sends only those the broker proves absent (after the lookup
horizon): every planned order is placed exactly once, and the ledger equals the broker's book.
"""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest

from saras.domain.enums import OrderStatus
from saras.services.execution import ExecutionSettings
from tests.reliability import test_execution_crash
from tests.reliability.test_execution_crash import REPO, RUNNER, assert_left_behind, resume
from tests.support.execution import Platform, assert_invariants

rebalance = test_execution_crash.rebalance  # the fixture: one sell and three buys

P, S, F = OrderStatus.PLANNED, OrderStatus.SUBMITTING, OrderStatus.FILLED
BATCH = 10
#: checkpoint, occurrence -> (our status, sent to the broker?) per order: the sell, three buys
LEFT_BEHIND = {
    ("marked_submitting", 1): [(S, False), (P, False), (P, False), (P, False)],
    ("marked_submitting", 2): [(F, True), (S, False), (S, False), (S, False)],
    ("broker_answered", 2): [(F, True), (S, True), (S, False), (S, False)],
    ("broker_answered", 4): [(F, True), (S, True), (S, True), (S, True)],
}


#: the resume polls three orders in doubt: at the suite's 10 ms polls their lookups spend the
#: account's 200 requests/min in a few virtual seconds and the limiter waits a minute (virtual
#: time: free), so the resume gets a deadline that outlasts that wait
PATIENT = ExecutionSettings(
    poll_interval=0.5, deadline_seconds=600, retry_backoff=0.01, lookup_horizon=1.0
)


def kill_batched_child_at(run_id: uuid.UUID, checkpoint: str, occurrence: int) -> None:
    child = subprocess.run(
        [sys.executable, str(RUNNER), str(run_id), checkpoint, str(occurrence), str(BATCH)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert child.returncode == -9, child.stdout[-2000:] + child.stderr[-2000:]
    assert f"killed at {checkpoint} #{occurrence}" in child.stdout


@pytest.mark.parametrize(("checkpoint", "occurrence"), list(LEFT_BEHIND))
def test_sigkill_inside_a_batch_then_resume_places_each_order_once(
    rebalance: tuple[Platform, uuid.UUID], checkpoint: str, occurrence: int
) -> None:
    p, run_id = rebalance
    kill_batched_child_at(run_id, checkpoint, occurrence)
    assert_left_behind(p, run_id, LEFT_BEHIND[(checkpoint, occurrence)])
    assert_invariants(p, in_doubt_ok=True)

    outcome = resume(p, run_id, PATIENT)
    assert outcome.status == "completed", outcome
    assert [p.placements(o) for o in p.orders()] == [1] * len(p.orders())
    assert_invariants(p)
