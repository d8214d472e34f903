"""Broker rate budgets shared through Prefect global concurrency limits (issue 13, item 5).

Two limiters standing for two worker processes on one account declare the same budget; with the
Prefect backend installed, what one spends the other must wait for, while a limiter of another
account does not. Runs against the Prefect test harness (a real temporary server).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from prefect import flow
from prefect.client.orchestration import get_client

from flows.kit.rate_budgets import PrefectRateBudgets, in_a_run
from saras.brokers.kit.rate import Budget, RateLimiter, current_backend, install_backend


@pytest.fixture
def prefect_budgets() -> Iterator[PrefectRateBudgets]:
    backend = PrefectRateBudgets(timeout_seconds=60)
    previous = install_backend(backend)
    yield backend
    install_backend(previous)


def _timed(limiter: RateLimiter) -> float:
    started = time.monotonic()
    limiter.acquire()
    return time.monotonic() - started


@flow
def spend(limiters: list[RateLimiter], other: RateLimiter) -> tuple[list[float], float, float]:
    """Spend the budget through the first limiter, then ask the second and another account's."""
    first = [_timed(limiters[0]) for _ in range(2)]
    other_wait = _timed(other)
    second = _timed(limiters[1])
    return first, second, other_wait


def test_two_limiters_of_one_account_share_its_budget(prefect_budgets: PrefectRateBudgets) -> None:
    account = f"broker:test-{uuid.uuid4().hex[:8]}"
    budget = Budget(account, limit=2, seconds=24.0)  # 2 slots, one freed every 12 s
    a, b = RateLimiter(budgets=[budget]), RateLimiter(budgets=[budget])
    other = RateLimiter(budgets=[Budget(f"{account}-other", limit=2, seconds=24.0)])

    first, second, other_wait = spend([a, b], other)

    # wide margins: the harness server answers slowly on a loaded machine
    assert max(first) < 6  # the budget had room for both
    assert second >= 6  # the other limiter found it spent and waited for a slot to decay
    assert other_wait < second  # another account's budget is its own
    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name(account)
    assert limit.limit == 2
    assert limit.slot_decay_per_second == pytest.approx(2 / 24)  # created on demand, with decay


def test_outside_a_run_only_the_in_process_limits_apply(
    prefect_budgets: PrefectRateBudgets,
) -> None:
    assert current_backend() is prefect_budgets and not in_a_run()
    name = f"broker:test-{uuid.uuid4().hex[:8]}"
    limiter = RateLimiter(budgets=[Budget(name, limit=1, seconds=60.0)])
    waits = [_timed(limiter) for _ in range(3)]  # over the budget, but no flow: no Prefect
    assert max(waits) < 5  # a Prefect-counted budget would hold the 2nd for about 60 s
    with get_client(sync_client=True) as client:
        names = {gcl.name for gcl in client.read_global_concurrency_limits(limit=200)}
    assert name not in names
