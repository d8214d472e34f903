"""Answering paused flow runs from a watcher thread, the way a person in the UI would."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.sorting import FlowRunSort

#: stop signals of the ``when_paused`` watchers still running; each test's end sets them
#: (``stop_pause_watchers``, an autouse fixture of tests/flows)
WATCHERS: list[threading.Event] = []


def stop_pause_watchers() -> None:
    """Stop every watcher still running (a test's end)."""
    while WATCHERS:
        WATCHERS.pop().set()


def when_paused(action: Callable[[uuid.UUID], None], *, within: float = 60) -> threading.Thread:
    """Call ``action(flow_run_id)`` once a flow run is paused: the newest paused run.

    The harness's server is shared by the whole session: a run an earlier test left paused
    must not be the one answered, so the newest paused run is; and the watcher ends with its
    test (a watcher whose run never paused must not answer the next test's run).
    """
    stop = threading.Event()
    WATCHERS.append(stop)

    def run() -> None:
        deadline = time.monotonic() + within
        with get_client(sync_client=True) as client:
            while time.monotonic() < deadline and not stop.is_set():
                # filtered and sorted by the server: an unfiltered read returns one page of
                # runs in id order, and a long session has more runs than a page holds
                paused = client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(
                        state=FlowRunFilterState(
                            type=FlowRunFilterStateType(any_=[StateType.PAUSED])
                        )
                    ),
                    sort=FlowRunSort.START_TIME_DESC,
                    limit=20,
                )
                paused = sorted(
                    (r for r in paused if r.state and r.state.is_paused()),
                    key=lambda r: r.created or datetime.min.replace(tzinfo=UTC),
                    reverse=True,
                )
                if paused:
                    action(paused[0].id)
                    return
                time.sleep(0.2)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread
