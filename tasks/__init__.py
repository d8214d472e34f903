"""Thin Prefect tasks grouped by capability; retry and cache policy live in the decorators.

Every task names its cache policy. All are ``NO_CACHE``: each reads or writes the database (or
a broker), whose answer changes between calls, and a task that writes or trades must run every
time it is called. What flows share that is not a task is in ``flows/kit``.
"""

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


__all__ = ["retry_when"]
