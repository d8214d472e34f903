"""FillState: the typed fill record stored in ``order_metadata``."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from saras.domain.orders import FillState


def test_round_trip_keeps_every_field_and_foreign_keys() -> None:
    state = FillState(
        filled_quantity=Decimal("7"),
        notional=Decimal("10518.25"),
        fees=Decimal("1.5"),
        filled_at=datetime(2026, 11, 30, 4, 0, tzinfo=UTC),
        fill_ids=("t1", "t2"),
        position_quantity=Decimal("7"),
        position_average_price=Decimal("1502.607143"),
        sized_quantity=Decimal("7"),
        send_started_at=datetime(2026, 11, 30, 3, 59, tzinfo=UTC),
        broker_status="filled",
        status_reason="ok",
    )
    stored = state.to_metadata({"planner_note": "kept"})
    assert stored["planner_note"] == "kept"
    assert stored["filled_quantity"] == "7.000000000"
    assert stored["average_fill_price"] == "1502.607143"
    assert FillState.from_metadata(stored) == state
    assert state.net_proceeds == Decimal("10516.75")


def test_rows_from_before_per_fill_recording_read_their_notional_from_the_average() -> None:
    old = {"filled_quantity": "3", "average_fill_price": "10.5", "fees": "0"}
    state = FillState.from_metadata(old)
    assert (state.filled_quantity, state.notional, state.fill_ids) == (
        Decimal(3),
        Decimal("31.5"),
        (),
    )
    assert FillState.from_metadata(None) == FillState()


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        FillState.from_metadata({"filled_at": "2026-11-30T04:00:00"})
