"""Explicit state tables for execution orders and execution runs.

Every allowed change of status is one row of a dict literal, ``(from, event) -> to``; anything
else raises :class:`InvalidTransition`. Replayed events that leave the status unchanged (a
broker reporting ``partially_filled`` twice, a second ``ambiguous`` answer while we are still in
doubt, a duplicate fill report for a filled order) are explicit rows too, so a status poll can be
applied twice without special cases, while a real regression (``filled`` back to ``submitted``)
still raises.

Orders
------
Terminal statuses are ``filled``, ``cancelled``, ``rejected`` and ``expired``: the only rows
leaving them are the idempotent repeats of the event that reached them.

An order is ``submitting`` from the moment we decide to send it until the broker answers. An
answer we cannot interpret (timeout, 5xx, lost response) is ``ambiguous`` and leads to
``unknown``; nothing is sent again until a lookup at the broker (by our deterministic client
order id) resolves it with one of the ``resolved_*`` events. ``resolved_absent`` means the
lookup proved the broker never received the order, so it goes back to ``planned`` and may be
sent again under the same client order id. A process that crashes while an order is
``submitting`` finds it there on resume and resolves it the same way: either ``ambiguous`` (to
park it in ``unknown``) or directly with a ``resolved_*`` event.

Runs
----
``planned -> awaiting_approval -> approved | rejected``, or ``planned -> approved`` when no
approval is required; ``approved -> executing -> completed | partially_completed | failed``;
``executing -> executing`` on resume after a crash; anything not yet executing can be cancelled
or superseded by a newer run. An ``approved`` run that was never started is ``expire``-d to
``cancelled`` by the maintenance flow when its approval is too old or its prices went stale
(the reason is kept in the run's plan).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from enum import StrEnum
from itertools import zip_longest

from saras.domain.enums import OrderStatus, RunStatus


class InvalidTransition(ValueError):
    """An event that the state table does not allow from the current status."""

    def __init__(self, kind: str, status: str, event: str) -> None:
        super().__init__(f"invalid {kind} transition: event '{event}' from status '{status}'")
        self.kind = kind
        self.status = status
        self.event = event


class OrderEvent(StrEnum):
    """What can happen to one of our orders."""

    SUBMIT_STARTED = "submit_started"  # we are about to send it (persisted before the call)
    ACCEPTED = "accepted"  # the broker acknowledged it
    PARTIAL_FILL = "partial_fill"
    FILL = "fill"  # completely filled
    CANCEL = "cancel"  # we cancelled it (before sending, or the broker confirmed our cancel)
    BROKER_CANCELLED = "broker_cancelled"  # the broker cancelled it on its own
    REJECT = "reject"  # the broker (or our pre-submit check) refused it
    EXPIRE = "expire"  # time in force ran out
    AMBIGUOUS = "ambiguous"  # no usable answer: must be looked up before anything is re-sent
    RESOLVED_SUBMITTED = "resolved_submitted"  # lookup: the broker has it, working
    RESOLVED_PARTIALLY_FILLED = "resolved_partially_filled"
    RESOLVED_FILLED = "resolved_filled"
    RESOLVED_CANCELLED = "resolved_cancelled"
    RESOLVED_REJECTED = "resolved_rejected"
    RESOLVED_EXPIRED = "resolved_expired"
    RESOLVED_ABSENT = "resolved_absent"  # lookup proved the broker never got it: send again


_O = OrderStatus
_E = OrderEvent

#: The order state table: ``(status, event) -> new status``. Nothing else is allowed.
ORDER_TRANSITIONS: Mapping[tuple[OrderStatus, OrderEvent], OrderStatus] = {
    # planned: not sent yet
    (_O.PLANNED, _E.SUBMIT_STARTED): _O.SUBMITTING,
    (_O.PLANNED, _E.CANCEL): _O.CANCELLED,
    (_O.PLANNED, _E.REJECT): _O.REJECTED,  # refused by our own pre-submit check
    # submitting: the request is (or may be) in flight
    (_O.SUBMITTING, _E.ACCEPTED): _O.SUBMITTED,
    (_O.SUBMITTING, _E.PARTIAL_FILL): _O.PARTIALLY_FILLED,
    (_O.SUBMITTING, _E.FILL): _O.FILLED,
    (_O.SUBMITTING, _E.BROKER_CANCELLED): _O.CANCELLED,
    (_O.SUBMITTING, _E.REJECT): _O.REJECTED,
    (_O.SUBMITTING, _E.AMBIGUOUS): _O.UNKNOWN,
    # submitting found again when resuming after a crash: resolve by lookup
    (_O.SUBMITTING, _E.RESOLVED_SUBMITTED): _O.SUBMITTED,
    (_O.SUBMITTING, _E.RESOLVED_PARTIALLY_FILLED): _O.PARTIALLY_FILLED,
    (_O.SUBMITTING, _E.RESOLVED_FILLED): _O.FILLED,
    (_O.SUBMITTING, _E.RESOLVED_CANCELLED): _O.CANCELLED,
    (_O.SUBMITTING, _E.RESOLVED_REJECTED): _O.REJECTED,
    (_O.SUBMITTING, _E.RESOLVED_EXPIRED): _O.EXPIRED,
    (_O.SUBMITTING, _E.RESOLVED_ABSENT): _O.PLANNED,
    # submitted: working at the broker
    (_O.SUBMITTED, _E.ACCEPTED): _O.SUBMITTED,  # idempotent repeat
    (_O.SUBMITTED, _E.PARTIAL_FILL): _O.PARTIALLY_FILLED,
    (_O.SUBMITTED, _E.FILL): _O.FILLED,
    (_O.SUBMITTED, _E.CANCEL): _O.CANCELLED,
    (_O.SUBMITTED, _E.BROKER_CANCELLED): _O.CANCELLED,
    (_O.SUBMITTED, _E.REJECT): _O.REJECTED,  # asynchronous rejection after acceptance
    (_O.SUBMITTED, _E.EXPIRE): _O.EXPIRED,
    # partially filled: working, some quantity done (a cancel or expiry keeps the fills)
    (_O.PARTIALLY_FILLED, _E.PARTIAL_FILL): _O.PARTIALLY_FILLED,  # idempotent / more fills
    (_O.PARTIALLY_FILLED, _E.FILL): _O.FILLED,
    (_O.PARTIALLY_FILLED, _E.CANCEL): _O.CANCELLED,
    (_O.PARTIALLY_FILLED, _E.BROKER_CANCELLED): _O.CANCELLED,
    (_O.PARTIALLY_FILLED, _E.EXPIRE): _O.EXPIRED,
    # unknown: in doubt until a lookup resolves it; never re-sent from here
    (_O.UNKNOWN, _E.AMBIGUOUS): _O.UNKNOWN,  # the lookup itself was ambiguous
    (_O.UNKNOWN, _E.RESOLVED_SUBMITTED): _O.SUBMITTED,
    (_O.UNKNOWN, _E.RESOLVED_PARTIALLY_FILLED): _O.PARTIALLY_FILLED,
    (_O.UNKNOWN, _E.RESOLVED_FILLED): _O.FILLED,
    (_O.UNKNOWN, _E.RESOLVED_CANCELLED): _O.CANCELLED,
    (_O.UNKNOWN, _E.RESOLVED_REJECTED): _O.REJECTED,
    (_O.UNKNOWN, _E.RESOLVED_EXPIRED): _O.EXPIRED,
    (_O.UNKNOWN, _E.RESOLVED_ABSENT): _O.PLANNED,
    # terminal: only idempotent repeats of the event that got there
    (_O.FILLED, _E.FILL): _O.FILLED,
    (_O.FILLED, _E.RESOLVED_FILLED): _O.FILLED,
    (_O.CANCELLED, _E.CANCEL): _O.CANCELLED,
    (_O.CANCELLED, _E.BROKER_CANCELLED): _O.CANCELLED,
    (_O.CANCELLED, _E.RESOLVED_CANCELLED): _O.CANCELLED,
    (_O.REJECTED, _E.REJECT): _O.REJECTED,
    (_O.REJECTED, _E.RESOLVED_REJECTED): _O.REJECTED,
    (_O.EXPIRED, _E.EXPIRE): _O.EXPIRED,
    (_O.EXPIRED, _E.RESOLVED_EXPIRED): _O.EXPIRED,
}


def transition(status: OrderStatus | str, event: OrderEvent | str) -> OrderStatus:
    """Return the order status after ``event``; raise InvalidTransition if the table forbids it."""
    try:
        key = (OrderStatus(status), OrderEvent(event))
    except ValueError:
        raise InvalidTransition("order", str(status), str(event)) from None
    try:
        return ORDER_TRANSITIONS[key]
    except KeyError:
        raise InvalidTransition("order", key[0].value, key[1].value) from None


def allowed_order_events(status: OrderStatus | str) -> frozenset[OrderEvent]:
    """Return the events the order state table accepts from ``status``."""
    current = OrderStatus(status)
    return frozenset(event for (frm, event) in ORDER_TRANSITIONS if frm is current)


class RunEvent(StrEnum):
    """What can happen to an execution run."""

    REQUEST_APPROVAL = "request_approval"
    APPROVE = "approve"
    AUTO_APPROVE = "auto_approve"  # approval not required
    REJECT = "reject"
    TIMEOUT = "timeout"  # nobody approved in time: treated as a rejection
    START = "start"
    RESUME = "resume"  # a crashed or retried execution picks up where it stopped
    COMPLETE = "complete"
    PARTIALLY_COMPLETE = "partially_complete"
    FAIL = "fail"
    CANCEL = "cancel"
    SUPERSEDED = "superseded"  # a newer run for the same investment replaced it
    EXPIRE = "expire"  # approved but never started in time (old approval, stale prices)


_R = RunStatus
_RE = RunEvent

#: The run state table: ``(status, event) -> new status``. Nothing else is allowed.
RUN_TRANSITIONS: Mapping[tuple[RunStatus, RunEvent], RunStatus] = {
    (_R.PLANNED, _RE.REQUEST_APPROVAL): _R.AWAITING_APPROVAL,
    (_R.PLANNED, _RE.AUTO_APPROVE): _R.APPROVED,
    (_R.PLANNED, _RE.CANCEL): _R.CANCELLED,
    (_R.PLANNED, _RE.SUPERSEDED): _R.CANCELLED,
    (_R.AWAITING_APPROVAL, _RE.REQUEST_APPROVAL): _R.AWAITING_APPROVAL,  # idempotent repeat
    (_R.AWAITING_APPROVAL, _RE.APPROVE): _R.APPROVED,
    (_R.AWAITING_APPROVAL, _RE.REJECT): _R.REJECTED,
    (_R.AWAITING_APPROVAL, _RE.TIMEOUT): _R.REJECTED,
    (_R.AWAITING_APPROVAL, _RE.CANCEL): _R.CANCELLED,
    (_R.AWAITING_APPROVAL, _RE.SUPERSEDED): _R.CANCELLED,
    (_R.APPROVED, _RE.APPROVE): _R.APPROVED,  # idempotent repeat (a second click)
    (_R.APPROVED, _RE.START): _R.EXECUTING,
    (_R.APPROVED, _RE.CANCEL): _R.CANCELLED,
    (_R.APPROVED, _RE.SUPERSEDED): _R.CANCELLED,
    (_R.APPROVED, _RE.EXPIRE): _R.CANCELLED,
    (_R.EXECUTING, _RE.RESUME): _R.EXECUTING,
    (_R.EXECUTING, _RE.COMPLETE): _R.COMPLETED,
    (_R.EXECUTING, _RE.PARTIALLY_COMPLETE): _R.PARTIALLY_COMPLETED,
    (_R.EXECUTING, _RE.FAIL): _R.FAILED,
}

#: Runs in these statuses never change again.
TERMINAL_RUN_STATUSES: frozenset[RunStatus] = frozenset(
    {_R.COMPLETED, _R.PARTIALLY_COMPLETED, _R.FAILED, _R.REJECTED, _R.CANCELLED}
)


def transition_run(status: RunStatus | str, event: RunEvent | str) -> RunStatus:
    """Return the run status after ``event``; raise InvalidTransition if the table forbids it."""
    try:
        key = (RunStatus(status), RunEvent(event))
    except ValueError:
        raise InvalidTransition("run", str(status), str(event)) from None
    try:
        return RUN_TRANSITIONS[key]
    except KeyError:
        raise InvalidTransition("run", key[0].value, key[1].value) from None


def allowed_run_events(status: RunStatus | str) -> frozenset[RunEvent]:
    """Return the events the run state table accepts from ``status``."""
    current = RunStatus(status)
    return frozenset(event for (frm, event) in RUN_TRANSITIONS if frm is current)


class UnresolvedOrders(ValueError):
    """A run cannot be summarised while some of its orders are in doubt."""


_FINISH_EVENTS: Mapping[RunStatus, RunEvent] = {
    _R.COMPLETED: _RE.COMPLETE,
    _R.PARTIALLY_COMPLETED: _RE.PARTIALLY_COMPLETE,
    _R.FAILED: _RE.FAIL,
}


def finish_event(outcome: RunStatus) -> RunEvent:
    """Return the run event that moves an executing run to ``outcome``."""
    try:
        return _FINISH_EVENTS[outcome]
    except KeyError:
        raise ValueError(f"'{outcome}' is not an outcome of an executing run") from None


def summarize_run_outcome(
    order_statuses: Iterable[OrderStatus | str],
    *,
    filled_quantities: Iterable[Decimal] | None = None,
) -> RunStatus:
    """Return the final status of a run whose orders are done.

    The rule, in order:

    1. an order still ``submitting`` or ``unknown`` raises :class:`UnresolvedOrders`: it may have
       been filled, so nothing can be claimed until a lookup resolves it (the run stays
       ``executing`` and is resumed);
    2. no orders at all, or every order ``filled``: ``completed``;
    3. at least one order ``filled`` or with some fill (status ``partially_filled``, or a
       positive entry in ``filled_quantities``, e.g. a cancelled or expired order that had
       filled in part): ``partially_completed``;
    4. otherwise (nothing filled anywhere: planned, submitted, cancelled, rejected, expired):
       ``failed``.

    ``filled_quantities``, when given, is aligned with ``order_statuses``.
    """
    statuses = [OrderStatus(s) for s in order_statuses]
    if filled_quantities is None:
        fills: list[Decimal | None] = [None] * len(statuses)
    else:
        fills = []
        for status_or_none, qty in zip_longest(statuses, filled_quantities):
            if status_or_none is None or qty is None:
                raise ValueError("filled_quantities must have one entry per order status")
            fills.append(qty)
    unresolved = sorted({s.value for s in statuses if s in (_O.SUBMITTING, _O.UNKNOWN)})
    if unresolved:
        raise UnresolvedOrders(
            f"cannot summarise a run with orders in status {', '.join(unresolved)}: "
            "resolve them at the broker first"
        )
    if all(s is _O.FILLED for s in statuses):
        return _R.COMPLETED
    some_fill = any(
        s in (_O.FILLED, _O.PARTIALLY_FILLED) or (q is not None and q > 0)
        for s, q in zip(statuses, fills, strict=True)
    )
    return _R.PARTIALLY_COMPLETED if some_fill else _R.FAILED
