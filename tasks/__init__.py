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
