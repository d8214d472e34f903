"""One rebalance of a smallcase at a time: a Prefect global concurrency slot per smallcase.

A rebalance holds the slot ``rebalance:<smallcase id>`` (limit 1, created on first use) from
planning to the end of execution, the approval pause included. A second rebalance of the same
smallcase is refused at once, naming the smallcase and the run holding it.

How it holds across an hour-long pause: ``prefect.concurrency.sync.concurrency`` takes the slot
with a *lease* (``lease_duration`` seconds) and renews it from a daemon thread at 75% of the
duration (Prefect 3.9, PR #21925: thread-backed renewal), so it keeps renewing while
``pause_flow_run`` blocks the flow's thread polling for the decision (an in-process pause; the
process stays alive). If the process dies, the lease is not renewed and the slot comes back
after at most ``SARAS_REBALANCE_SLOT_LEASE_SECONDS`` (300; the server grants 60 to 86,400) plus
the server's lease sweep (15 s). The real-server test pauses a rebalance for longer than a
60-second lease and finds the slot still held; Prefect's test harness cannot show it, as its
ephemeral server runs no lease sweep.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress

import httpx
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import ConcurrencyLeaseHolder, StateType
from prefect.concurrency._asyncio import ConcurrencySlotAcquisitionError
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

from saras.errors import SarasError
from saras.settings import get_settings
from tasks.common import current_flow_run_id

#: seconds a second rebalance waits for the slot before it is refused (0: refused at once)
WAIT_SECONDS = 0.0


class SmallcaseBusy(SarasError):
    """Another rebalance of the smallcase holds its slot."""


def slot_name(smallcase_id: str) -> str:
    """Return the name of the smallcase's global concurrency limit."""
    return f"rebalance:{smallcase_id}"


def ensure_limit(name: str) -> None:
    """Create the global concurrency limit ``name`` (limit 1) unless it exists."""
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            with suppress(ObjectAlreadyExists):  # another run created it first
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=1)
                )


def holders(flow_name: str, smallcase_id: str, smallcase_name: str) -> list[str]:
    """Return the running or paused runs of ``flow_name`` for this smallcase (but this one)."""
    me = current_flow_run_id()
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(
                    type=FlowRunFilterStateType(any_=[StateType.RUNNING, StateType.PAUSED])
                )
            ),
            limit=50,
        )
    return [
        f"{r.name} ({r.id}, {r.state_name})"
        for r in runs
        if str(r.id) != me and str(r.parameters.get("smallcase")) in (smallcase_id, smallcase_name)
    ]


def _locked(exc: BaseException) -> bool:
    """Tell whether an acquisition failed because the slot is taken (HTTP 423)."""
    cause = exc.__cause__
    return isinstance(cause, httpx.HTTPStatusError) and cause.response.status_code == 423


@contextmanager
def smallcase_slot(
    flow_name: str, smallcase_id: str, smallcase_name: str, *, wait_seconds: float = WAIT_SECONDS
) -> Iterator[str]:
    """Hold the smallcase's slot for the block; raise SmallcaseBusy when another run holds it."""
    name = slot_name(smallcase_id)
    ensure_limit(name)
    me = current_flow_run_id()
    holder = ConcurrencyLeaseHolder(type="flow_run", id=uuid.UUID(me)) if me else None
    with ExitStack() as stack:
        try:
            # no wait: one request, and the server's 423 (the slot is taken) is the refusal,
            # whatever the latency; with a wait, Prefect retries until the timeout
            stack.enter_context(
                concurrency(
                    name,
                    occupy=1,
                    timeout_seconds=wait_seconds or None,
                    max_retries=None if wait_seconds else 0,
                    lease_duration=get_settings().rebalance_slot_lease_seconds,
                    strict=True,
                    holder=holder,
                    raise_on_lease_renewal_failure=False,
                )
            )
        except (TimeoutError, ConcurrencySlotAcquisitionError) as exc:
            if not isinstance(exc, TimeoutError) and not _locked(exc):
                raise
            running = holders(flow_name, smallcase_id, smallcase_name)
            by = f" (flow run {', '.join(running)})" if running else ""
            raise SmallcaseBusy(
                f"smallcase {smallcase_name!r} is already being rebalanced by another run{by}: "
                f"one rebalance at a time (slot {name!r}); try again when it has finished"
            ) from None
        yield name
