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
from dataclasses import dataclass, replace
from datetime import datetime
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
    SIZED = "sized"  # a buy re-sized to the cash its run's sells freed, before it is sent


_O = OrderStatus
_E = OrderEvent

#: The order state table: ``(status, event) -> new status``. Nothing else is allowed.
ORDER_TRANSITIONS: Mapping[tuple[OrderStatus, OrderEvent], OrderStatus] = {
    # planned: not sent yet
    (_O.PLANNED, _E.SUBMIT_STARTED): _O.SUBMITTING,
    (_O.PLANNED, _E.CANCEL): _O.CANCELLED,
    (_O.PLANNED, _E.REJECT): _O.REJECTED,  # refused by our own pre-submit check
    (_O.PLANNED, _E.SIZED): _O.PLANNED,  # re-sized to the cash there is (never above approved)
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


# --- what an order has filled: one typed record instead of loose JSON keys ----------------------


def _dec(value: object) -> Decimal | None:
    if value is None or value == "":
        return None
    return Decimal(str(value))


def _stamp(value: object) -> datetime | None:
    if value is None or value == "":
        return None
    parsed = datetime.fromisoformat(str(value))
    if parsed.tzinfo is None:
        raise ValueError(f"order time {value!r} is not timezone-aware")
    return parsed


#: the ``order_metadata`` keys FillState owns (other keys are kept untouched)
FILL_STATE_KEYS: frozenset[str] = frozenset(
    {
        "filled_quantity",
        "fill_notional",
        "average_fill_price",
        "fees",
        "filled_at",
        "fill_ids",
        "position_quantity",
        "position_average_price",
        "sized_quantity",
        "send_started_at",
        "broker_status",
        "status_reason",
    }
)


@dataclass(frozen=True)
class FillState:
    """What one of our orders has filled, and how it is being sent, as stored with the order.

    ``notional`` is the exact sum of quantity x price over the broker's own fills (no rounding),
    so the ledger's cash equals the broker's. ``fill_ids`` are the broker fills already recorded
    (Kite trade ids, Alpaca FILL activity ids); an adapter that reports no per-fill data is
    recorded from its cumulative figures instead. ``sized_quantity`` is what is sent when a buy
    was re-sized to the cash its run's sells really freed (never above the approved quantity).
    ``send_started_at`` is when the last send began, moved to when its answer proved ambiguous
    (the later, so the conservative, instant): an order in doubt is never concluded absent at
    the broker before the lookup horizon has passed since then.
    """

    filled_quantity: Decimal = Decimal(0)
    notional: Decimal = Decimal(0)
    fees: Decimal = Decimal(0)
    filled_at: datetime | None = None
    fill_ids: tuple[str, ...] = ()
    position_quantity: Decimal | None = None
    position_average_price: Decimal | None = None
    sized_quantity: Decimal | None = None
    send_started_at: datetime | None = None
    broker_status: str | None = None
    status_reason: str | None = None

    @property
    def average_fill_price(self) -> Decimal | None:
        """Return the average fill price (6 decimals, for display), None before any fill."""
        if self.filled_quantity <= 0:
            return None
        return (self.notional / self.filled_quantity).quantize(Decimal("0.000001"))

    @property
    def net_proceeds(self) -> Decimal:
        """Return the cash a sell freed (or a buy spent): gross fills less fees."""
        return self.notional - self.fees

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, object] | None) -> FillState:
        """Read the state from an order's ``order_metadata`` (older rows included)."""
        m = metadata or {}
        filled = _dec(m.get("filled_quantity")) or Decimal(0)
        notional = _dec(m.get("fill_notional"))
        if notional is None:  # rows written before per-fill recording: from the average
            notional = filled * (_dec(m.get("average_fill_price")) or Decimal(0))
        ids = m.get("fill_ids") or ()
        reason = m.get("status_reason")
        broker_status = m.get("broker_status")
        return cls(
            filled_quantity=filled,
            notional=notional,
            fees=_dec(m.get("fees")) or Decimal(0),
            filled_at=_stamp(m.get("filled_at")),
            fill_ids=tuple(str(i) for i in ids) if isinstance(ids, list | tuple) else (),
            position_quantity=_dec(m.get("position_quantity")),
            position_average_price=_dec(m.get("position_average_price")),
            sized_quantity=_dec(m.get("sized_quantity")),
            send_started_at=_stamp(m.get("send_started_at")),
            broker_status=None if broker_status is None else str(broker_status),
            status_reason=None if reason is None else str(reason),
        )

    def to_metadata(self, base: Mapping[str, object] | None = None) -> dict[str, object]:
        """Return ``order_metadata`` holding this state (keys other than ours kept from base)."""
        out: dict[str, object] = {k: v for k, v in (base or {}).items() if k not in FILL_STATE_KEYS}
        if self.filled_quantity > 0 or self.fill_ids:
            average = self.average_fill_price
            out.update(
                filled_quantity=f"{self.filled_quantity.quantize(Decimal('1E-9')):f}",
                fill_notional=f"{self.notional:f}",
                average_fill_price=None if average is None else f"{average:f}",
                fees=f"{self.fees:f}",
                fill_ids=list(self.fill_ids),
            )
        if self.filled_at is not None:
            out["filled_at"] = self.filled_at.isoformat()
        if self.position_quantity is not None:
            out["position_quantity"] = f"{self.position_quantity.quantize(Decimal('1E-9')):f}"
        if self.position_average_price is not None:
            out["position_average_price"] = f"{self.position_average_price:f}"
        if self.sized_quantity is not None:
            out["sized_quantity"] = f"{self.sized_quantity.quantize(Decimal('1E-9')):f}"
        if self.send_started_at is not None:
            out["send_started_at"] = self.send_started_at.isoformat()
        if self.broker_status is not None:
            out["broker_status"] = self.broker_status
        if self.status_reason is not None:
            out["status_reason"] = self.status_reason[:1000]
        return out

    def with_reason(self, reason: str | None) -> FillState:
        """Return this state carrying a new status reason (unchanged when None)."""
        return self if reason is None else replace(self, status_reason=reason[:1000])
