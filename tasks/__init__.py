"""Thin Prefect tasks grouped by capability; retry policy lives in the decorators."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def retry_when(predicate: Callable[[BaseException], bool]) -> Callable[[Any, Any, Any], bool]:
    """Return a ``retry_condition_fn`` that retries only exceptions ``predicate`` accepts."""

    def condition(task: Any, task_run: Any, state: Any) -> bool:
        try:
            state.result()
        except BaseException as exc:  # the state's own exception, classified
            return predicate(exc)
        return False

    return condition


def concurrent_writes() -> bool:
    """Tell whether tasks may write to the database at the same time.

    PostgreSQL: yes. The embedded SQLite database has one writer at a time, and a transaction
    that read before another committed cannot then write (SQLITE_BUSY_SNAPSHOT), so flows run
    their writing tasks one after another there.
    """
    from saras.db import get_engine, is_postgres

    return is_postgres(get_engine())


def _share_rate_budgets() -> None:
    """Share broker rate budgets across worker processes while tasks run (see rate_budgets)."""
    from tasks.rate_budgets import install_prefect_rate_budgets

    install_prefect_rate_budgets()


_share_rate_budgets()
