"""Run writing tasks in parallel where the database allows it, one after another where not."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from prefect.futures import PrefectFuture

from saras.db import concurrent_writes

B = TypeVar("B")
R = TypeVar("R")


def in_turn(future: PrefectFuture[R]) -> PrefectFuture[R]:
    """Wait for a writing task run to end when the database takes one writer at a time."""
    if not concurrent_writes():
        future.wait()
    return future


def submit_batches(
    submit: Callable[[int, B], PrefectFuture[R]], batches: Sequence[B]
) -> list[PrefectFuture[R]]:
    """Submit one task run per batch: all at once on PostgreSQL, in turn on embedded SQLite.

    ``submit(i, batch)`` submits the task run of the i-th batch (``task.submit(...)``); the
    futures come back in the batches' order.
    """
    parallel = concurrent_writes()
    futures = []
    for i, batch in enumerate(batches):
        future = submit(i, batch)
        if not parallel:
            future.wait()
        futures.append(future)
    return futures
