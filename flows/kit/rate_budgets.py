"""Broker rate budgets shared by every process, in Prefect global concurrency limits.

The broker kits' one ``RateLimiter`` declares each account's venue limits as ``Budget``s named
after the connection (``broker:<connection id>`` for Alpaca's 200 requests/min,
``broker:<connection id>:orders`` and ``...:orders-day`` for Kite's 400 orders/min and 5,000
orders/day). This backend counts them in Prefect global concurrency limits with slot decay
(``prefect.concurrency.sync.rate_limit``): every worker process on the server draws from the same
budget. A limit is created on first use with ``slot_decay_per_second = limit / seconds`` (a rate
limit needs its decay set; without one ``rate_limit`` fails), and updated when the figures change.

Outside a Prefect flow or task run (a CLI call, a test without a flow) it does nothing: the
in-process limits stay the only ones, and no Prefect server is needed.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Sequence

from prefect.client.orchestration import get_client
from prefect.concurrency.sync import rate_limit
from prefect.context import FlowRunContext, TaskRunContext
from prefect.exceptions import ObjectAlreadyExists

from saras.brokers.kit.rate import Budget, RateBackend, current_backend, install_backend

log = logging.getLogger(__name__)


class PrefectRateBudgets:
    """A ``RateBackend`` on Prefect global concurrency limits with slot decay."""

    def __init__(self, *, only_in_runs: bool = True, timeout_seconds: float | None = 600.0):
        self.only_in_runs = only_in_runs
        self.timeout_seconds = timeout_seconds
        self._ready: set[Budget] = set()
        self._lock = threading.Lock()

    def take(self, budgets: Sequence[Budget]) -> None:
        """Block until one request fits every budget (all processes counted), and count it."""
        if not budgets or (self.only_in_runs and not in_a_run()):
            return
        for budget in budgets:
            self._ensure(budget)
        rate_limit(
            [b.name for b in budgets], occupy=1, timeout_seconds=self.timeout_seconds, strict=True
        )

    def _ensure(self, budget: Budget) -> None:
        """Create (or correct) the budget's limit once per process."""
        with self._lock:
            if budget in self._ready:
                return
        # ObjectAlreadyExists: another process created it in between, and theirs holds
        with get_client(sync_client=True) as client, contextlib.suppress(ObjectAlreadyExists):
            client.upsert_global_concurrency_limit_by_name(
                budget.name, budget.limit, slot_decay_per_second=budget.decay_per_second
            )
        log.info(
            "rate budget %s: %d per %g s (shared by every worker)",
            budget.name,
            budget.limit,
            budget.seconds,
        )
        with self._lock:
            self._ready.add(budget)


def in_a_run() -> bool:
    """Tell whether the caller runs inside a Prefect flow or task run."""
    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def install_prefect_rate_budgets() -> RateBackend:
    """Install the Prefect backend for this process (once); return the installed backend."""
    backend = current_backend()
    if isinstance(backend, PrefectRateBudgets):
        return backend
    backend = PrefectRateBudgets()
    install_backend(backend)
    return backend
