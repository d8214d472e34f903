"""The order and run state tables: every valid row, every invalid pair, the run summary."""

from __future__ import annotations

from decimal import Decimal
from itertools import product

import pytest

from saras.domain.enums import TERMINAL_ORDER_STATUSES, OrderStatus, RunStatus
from saras.domain.orders import (
    ORDER_TRANSITIONS,
    RUN_TRANSITIONS,
    TERMINAL_RUN_STATUSES,
    InvalidTransition,
    OrderEvent,
    RunEvent,
    UnresolvedOrders,
    allowed_order_events,
    allowed_run_events,
    finish_event,
    summarize_run_outcome,
    transition,
    transition_run,
)

S = OrderStatus
E = OrderEvent
R = RunStatus
RE = RunEvent


@pytest.mark.parametrize(("key", "to"), sorted(ORDER_TRANSITIONS.items()))
def test_every_order_row_is_applied(key: tuple[OrderStatus, OrderEvent], to: OrderStatus) -> None:
    status, event = key
    assert transition(status, event) is to
    assert transition(status.value, event.value) is to  # plain strings from the database


def test_every_order_pair_outside_the_table_raises_naming_both() -> None:
    invalid = [k for k in product(OrderStatus, OrderEvent) if k not in ORDER_TRANSITIONS]
    assert len(invalid) > 80  # the table is a small part of all pairs
    for status, event in invalid:
        with pytest.raises(InvalidTransition) as err:
            transition(status, event)
        assert f"'{status.value}'" in str(err.value)
        assert f"'{event.value}'" in str(err.value)


def test_terminal_order_statuses_only_repeat_themselves() -> None:
    for (status, event), to in ORDER_TRANSITIONS.items():
        if status in TERMINAL_ORDER_STATUSES:
            assert to is status, (status, event)
    # and each terminal status is reachable
    reached = set(ORDER_TRANSITIONS.values())
    assert reached >= TERMINAL_ORDER_STATUSES


@pytest.mark.parametrize(
    ("status", "event"),
    [
        (S.UNKNOWN, E.SUBMIT_STARTED),  # never re-send without a lookup
        (S.UNKNOWN, E.ACCEPTED),
        (S.SUBMITTED, E.SUBMIT_STARTED),
        (S.FILLED, E.PARTIAL_FILL),
        (S.FILLED, E.CANCEL),
        (S.CANCELLED, E.FILL),
        (S.REJECTED, E.ACCEPTED),
        (S.EXPIRED, E.FILL),
        (S.PARTIALLY_FILLED, E.ACCEPTED),  # no regression
        (S.PLANNED, E.FILL),
        (S.PLANNED, E.AMBIGUOUS),
        (S.SUBMITTED, E.RESOLVED_ABSENT),  # the broker acknowledged it: it exists
    ],
)
def test_selected_invalid_order_transitions(status: OrderStatus, event: OrderEvent) -> None:
    with pytest.raises(InvalidTransition, match=event.value):
        transition(status, event)


def test_unknown_names_raise_invalid_transition() -> None:
    with pytest.raises(InvalidTransition, match="'launched'"):
        transition(S.PLANNED, "launched")
    with pytest.raises(InvalidTransition, match="'flying'"):
        transition("flying", E.FILL)
    with pytest.raises(InvalidTransition, match="'oops'"):
        transition_run("oops", RE.START)


def test_ambiguous_submit_is_resolved_before_it_is_sent_again() -> None:
    path = [
        (E.SUBMIT_STARTED, S.SUBMITTING),
        (E.AMBIGUOUS, S.UNKNOWN),
        (E.AMBIGUOUS, S.UNKNOWN),  # the lookup timed out too
        (E.RESOLVED_ABSENT, S.PLANNED),  # proven absent: may go again
        (E.SUBMIT_STARTED, S.SUBMITTING),
        (E.ACCEPTED, S.SUBMITTED),
        (E.ACCEPTED, S.SUBMITTED),
        (E.PARTIAL_FILL, S.PARTIALLY_FILLED),
        (E.PARTIAL_FILL, S.PARTIALLY_FILLED),
        (E.FILL, S.FILLED),
        (E.FILL, S.FILLED),
    ]
    status = S.PLANNED
    for event, expected in path:
        status = transition(status, event)
        assert status is expected


def test_submitting_found_at_resume_resolves_directly() -> None:
    assert transition(S.SUBMITTING, E.RESOLVED_FILLED) is S.FILLED
    assert transition(S.SUBMITTING, E.RESOLVED_ABSENT) is S.PLANNED
    assert transition(S.SUBMITTING, E.RESOLVED_PARTIALLY_FILLED) is S.PARTIALLY_FILLED


def test_allowed_events_match_the_table() -> None:
    assert allowed_order_events(S.PLANNED) == {E.SUBMIT_STARTED, E.CANCEL, E.REJECT, E.SIZED}
    assert E.SUBMIT_STARTED not in allowed_order_events(S.UNKNOWN)
    assert allowed_run_events(R.EXECUTING) == {
        RE.RESUME,
        RE.COMPLETE,
        RE.PARTIALLY_COMPLETE,
        RE.FAIL,
    }


@pytest.mark.parametrize(("key", "to"), sorted(RUN_TRANSITIONS.items()))
def test_every_run_row_is_applied(key: tuple[RunStatus, RunEvent], to: RunStatus) -> None:
    assert transition_run(*key) is to


def test_every_run_pair_outside_the_table_raises() -> None:
    for status, event in product(RunStatus, RunEvent):
        if (status, event) in RUN_TRANSITIONS:
            continue
        with pytest.raises(InvalidTransition) as err:
            transition_run(status, event)
        assert status.value in str(err.value) and event.value in str(err.value)


def test_terminal_runs_never_move() -> None:
    for status in TERMINAL_RUN_STATUSES:
        assert allowed_run_events(status) == frozenset()


def test_run_lifecycles() -> None:
    status = R.PLANNED
    for event in (RE.REQUEST_APPROVAL, RE.APPROVE, RE.START, RE.RESUME, RE.COMPLETE):
        status = transition_run(status, event)
    assert status is R.COMPLETED
    assert transition_run(R.PLANNED, RE.AUTO_APPROVE) is R.APPROVED
    assert transition_run(R.AWAITING_APPROVAL, RE.TIMEOUT) is R.REJECTED
    for status in (R.PLANNED, R.AWAITING_APPROVAL, R.APPROVED):
        assert transition_run(status, RE.SUPERSEDED) is R.CANCELLED
        assert transition_run(status, RE.CANCEL) is R.CANCELLED
    with pytest.raises(InvalidTransition):
        transition_run(R.EXECUTING, RE.CANCEL)  # a started run finishes, it is not cancelled
    with pytest.raises(InvalidTransition):
        transition_run(R.PLANNED, RE.START)  # never execute an unapproved plan


def test_finish_event_maps_outcomes() -> None:
    for outcome in (R.COMPLETED, R.PARTIALLY_COMPLETED, R.FAILED):
        assert transition_run(R.EXECUTING, finish_event(outcome)) is outcome
    with pytest.raises(ValueError, match="cancelled"):
        finish_event(R.CANCELLED)


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ([], R.COMPLETED),
        ([S.FILLED, S.FILLED], R.COMPLETED),
        ([S.FILLED, S.REJECTED], R.PARTIALLY_COMPLETED),
        ([S.PARTIALLY_FILLED, S.CANCELLED], R.PARTIALLY_COMPLETED),
        ([S.REJECTED, S.CANCELLED, S.EXPIRED], R.FAILED),
        ([S.PLANNED, S.SUBMITTED], R.FAILED),  # stopped before anything filled
        (["filled", "expired"], R.PARTIALLY_COMPLETED),
    ],
)
def test_summarize_run_outcome(statuses: list[OrderStatus], expected: RunStatus) -> None:
    assert summarize_run_outcome(statuses) is expected


def test_summary_counts_partial_fills_of_cancelled_orders() -> None:
    statuses = [S.CANCELLED, S.EXPIRED]
    assert summarize_run_outcome(statuses) is R.FAILED
    fills = [Decimal("0"), Decimal("0.5")]
    assert summarize_run_outcome(statuses, filled_quantities=fills) is R.PARTIALLY_COMPLETED
    with pytest.raises(ValueError, match="one entry per order"):
        summarize_run_outcome(statuses, filled_quantities=[Decimal(1)])


@pytest.mark.parametrize("doubt", [S.UNKNOWN, S.SUBMITTING])
def test_summary_refuses_orders_in_doubt(doubt: OrderStatus) -> None:
    with pytest.raises(UnresolvedOrders, match=doubt.value):
        summarize_run_outcome([S.FILLED, doubt])
