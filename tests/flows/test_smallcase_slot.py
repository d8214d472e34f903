"""One rebalance of a smallcase at a time: the slot is held through the approval pause."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.flow_runs import resume_flow_run
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from flows.kit.smallcase_slot import slot_name
from flows.rebalance import rebalance_smallcase
from models import Smallcase
from tests.flows.test_cockpit import NEW_US, US, platform  # noqa: F401  (the fixture)


def _active_slots(name: str) -> int:
    with get_client(sync_client=True) as client:
        return client.read_global_concurrency_limit_by_name(name).active_slots


def _wait_paused(flow_name_started_after: float, within: float = 60) -> uuid.UUID:
    deadline = time.monotonic() + within
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            # filtered by the server: an unfiltered read is one page of runs in id order
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
                ),
                limit=50,
            )
            for run in runs:
                if (
                    run.state
                    and run.state.type is StateType.PAUSED
                    and run.parameters.get("smallcase") == US
                    and run.created
                    and run.created.timestamp() >= flow_name_started_after
                ):
                    return run.id
            time.sleep(0.5)
    raise AssertionError("the first rebalance never paused")


def test_a_second_rebalance_is_refused_while_the_first_is_paused(
    platform: Engine,  # noqa: F811
) -> None:
    # that the lease is renewed through a pause longer than it is shown by the real-server test
    # (this harness's server runs no lease sweep)
    with Session(platform) as session:
        smallcase_id = str(session.scalars(select(Smallcase.id).where(Smallcase.name == US)).one())
    name = slot_name(smallcase_id)
    states: dict[str, Any] = {}
    started = time.time() - 1

    def first() -> None:
        states["first"] = rebalance_smallcase(
            US,
            constituents=NEW_US,
            approval_timeout_seconds=120,
            approval_poll_seconds=1,
            return_state=True,
        )

    thread = threading.Thread(target=first, daemon=True)
    thread.start()
    paused = _wait_paused(started)
    time.sleep(2)  # well into the pause: the slot is still held
    assert _active_slots(name) == 1
    second = rebalance_smallcase(US, dry_run=True, return_state=True)
    assert second.is_failed()
    message = second.message or ""
    assert f"smallcase {US!r} is already being rebalanced" in message
    assert str(paused) in message and "Paused" in message
    assert _active_slots(name) == 1
    resume_flow_run(paused, run_input={"approve": False, "note": "not now"})
    thread.join(timeout=60)
    assert states["first"].is_failed() and "rejected" in (states["first"].message or "")
    assert _active_slots(name) == 0  # released when the run ended
    third = rebalance_smallcase(US, dry_run=True, return_state=True)
    assert third.is_completed(), third.message
