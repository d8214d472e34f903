"""Calendar reviews, drift bands and the cooldown that decide when a smallcase is due."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from saras.domain.policy import CalendarTrigger, RebalancePolicy
from saras.domain.triggers import (
    AssetKey,
    DriftMeasure,
    decide_due,
    measure_drift,
    review_session,
)
from saras.marketdata import calendars

A = AssetKey("AAPL", "NASDAQ")
M = AssetKey("MSFT", "NASDAQ")
X = AssetKey("XOM", "NYSE")


def _weekdays(start: date, end: date, holidays: frozenset[date] = frozenset()) -> list[date]:
    days, d = [], start
    while d <= end:
        if d.weekday() < 5 and d not in holidays:
            days.append(d)
        d += timedelta(days=1)
    return days


NSE_2026 = calendars.sessions("NSE", date(2026, 1, 1), date(2026, 12, 31))
NYSE_2026 = calendars.sessions("NYSE", date(2026, 1, 1), date(2026, 12, 31))


def test_monthly_review_moves_back_to_the_previous_session() -> None:
    # 2026-05-31 is a Sunday: the May review is Friday 2026-05-29
    assert review_session(CalendarTrigger.MONTHLY, None, NYSE_2026, date(2026, 6, 1)) == date(
        2026, 5, 29
    )
    # 2026-11-26 is Thanksgiving (NYSE closed): a review on the 26th moves to the 25th
    assert review_session(CalendarTrigger.MONTHLY, 26, NYSE_2026, date(2026, 11, 27)) == date(
        2026, 11, 25
    )
    # on the nominal day's session itself
    assert review_session(CalendarTrigger.MONTHLY, 15, NYSE_2026, date(2026, 10, 15)) == date(
        2026, 10, 15
    )


def test_a_review_day_past_the_known_sessions_is_not_placed() -> None:
    # sessions known only up to Wednesday 2026-11-25: a review on the 27th is not "today"
    known = [s for s in NYSE_2026 if s <= date(2026, 11, 25)]
    assert review_session(CalendarTrigger.MONTHLY, 27, known, date(2026, 11, 25)) == date(
        2026, 10, 27
    )
    assert review_session(CalendarTrigger.MONTHLY, 27, NYSE_2026, date(2026, 11, 25)) == date(
        2026, 10, 27
    )
    assert review_session(CalendarTrigger.MONTHLY, 26, NYSE_2026, date(2026, 11, 25)) == date(
        2026, 11, 25
    )


def test_the_indian_calendar_is_the_exchanges_own() -> None:
    # 2026-10-02 (Gandhi Jayanti) is an NSE holiday but a NYSE session
    assert date(2026, 10, 2) in NYSE_2026 and date(2026, 10, 2) not in NSE_2026
    assert review_session(CalendarTrigger.MONTHLY, 2, NSE_2026, date(2026, 10, 5)) == date(
        2026, 10, 1
    )
    assert review_session(CalendarTrigger.MONTHLY, 2, NYSE_2026, date(2026, 10, 5)) == date(
        2026, 10, 2
    )


def test_weekly_and_quarterly_reviews() -> None:
    sessions = _weekdays(date(2026, 1, 1), date(2026, 12, 31), frozenset({date(2026, 4, 3)}))
    # Friday 2026-04-03 is a holiday: the weekly (Friday) review is Thursday 2026-04-02
    assert review_session(CalendarTrigger.WEEKLY, None, sessions, date(2026, 4, 6)) == date(
        2026, 4, 2
    )
    assert review_session(CalendarTrigger.WEEKLY, 1, sessions, date(2026, 4, 8)) == date(2026, 4, 6)
    # quarters end in March, June, September, December: 2026-06-30 is a Tuesday
    assert review_session(CalendarTrigger.QUARTERLY, None, sessions, date(2026, 8, 14)) == date(
        2026, 6, 30
    )
    assert review_session(CalendarTrigger.NONE, None, sessions, date(2026, 8, 14)) is None


def _drift(inv: str, absolute: str, relative: str) -> DriftMeasure:
    return DriftMeasure(inv, Decimal(absolute), Decimal(relative), A)


MONTHLY_RELATIVE = RebalancePolicy(
    calendar_trigger=CalendarTrigger.MONTHLY,
    drift_band_pct=None,
    relative_drift_band_pct=Decimal(20),
    cooldown_days=5,
)


def test_monthly_trigger_with_a_relative_band() -> None:
    calm = [_drift("i1", "2", "10")]
    drifted = [_drift("i1", "2", "10"), _drift("i2", "4", "25")]
    review = date(2026, 10, 30)  # the October review (31st is a Saturday)
    # not a review day, within the band: not due
    d = decide_due(MONTHLY_RELATIVE, date(2026, 10, 20), NYSE_2026, date(2026, 9, 30), calm)
    assert not d.due and "within the drift band" in d.reasons[-1]
    # beyond the relative band: due between reviews
    d = decide_due(MONTHLY_RELATIVE, date(2026, 10, 20), NYSE_2026, date(2026, 9, 30), drifted)
    assert d.due and d.beyond_band == ("i2",)
    # on the review session: due whatever the drift
    d = decide_due(MONTHLY_RELATIVE, review, NYSE_2026, date(2026, 9, 30), calm)
    assert d.due and d.review_session == review
    # after the review, once approved: not due again until the next one
    d = decide_due(MONTHLY_RELATIVE, date(2026, 11, 5), NYSE_2026, review, calm)
    assert not d.due
    # a missed review is caught up the next day
    d = decide_due(MONTHLY_RELATIVE, date(2026, 11, 2), NYSE_2026, date(2026, 9, 30), calm)
    assert d.due
    # a smallcase never rebalanced waits for its review session
    assert not decide_due(MONTHLY_RELATIVE, date(2026, 11, 2), NYSE_2026, None, calm).due
    # the cooldown wins over everything
    d = decide_due(MONTHLY_RELATIVE, date(2026, 10, 22), NYSE_2026, date(2026, 10, 20), drifted)
    assert not d.due and d.cooldown_until == date(2026, 10, 25)


def test_drift_trigger_can_be_turned_off_between_reviews() -> None:
    policy = MONTHLY_RELATIVE.with_overrides({"drift_trigger": False})
    drifted = [_drift("i2", "4", "25")]
    assert not decide_due(policy, date(2026, 10, 20), NYSE_2026, date(2026, 9, 30), drifted).due


def test_no_trigger_configured_is_never_due() -> None:
    policy = RebalancePolicy(drift_band_pct=None)
    d = decide_due(policy, date(2026, 10, 20), NYSE_2026, None, [_drift("i", "50", "500")])
    assert not d.due and d.reasons == ("no trigger: no calendar review and no drift band",)


def test_measure_drift_mirrors_the_planner_weights() -> None:
    # 1% buffer: value 10_000, investable 9_900; on target means holdings of 9_900 at 60/40
    targets = {A: Decimal(60), M: Decimal(40)}
    prices = {A: Decimal(100), M: Decimal(50), X: None}
    on_target = measure_drift(
        "i", targets, {A: Decimal("59.4"), M: Decimal("79.2")}, prices, Decimal(100), Decimal(1)
    )
    assert on_target is not None
    assert on_target.absolute_pct == 0 and on_target.relative_pct == 0
    off = measure_drift("i", targets, {A: Decimal(66), M: Decimal(66)}, prices, Decimal(100))
    assert off is not None
    # A = 6600/10000 = 66% (6 pp, 10% of target), M = 33% (7 pp, 17.5% of target)
    assert off.absolute_pct == Decimal("7.0000") and off.relative_pct == Decimal("17.5000")
    assert off.worst == M
    held_other = measure_drift("i", targets, {X: Decimal(1), A: Decimal(1)}, prices, Decimal(0))
    assert held_other is not None and held_other.unpriced == (X,)
    gone = measure_drift("i", {A: Decimal(100)}, {M: Decimal(1)}, prices, Decimal(0))
    assert gone is not None and gone.untargeted == (M,)
    assert measure_drift("i", targets, {}, prices, Decimal(0)) is None


@settings(max_examples=200, deadline=None)
@given(
    trigger=st.sampled_from(
        [CalendarTrigger.WEEKLY, CalendarTrigger.MONTHLY, CalendarTrigger.QUARTERLY]
    ),
    day=st.one_of(st.none(), st.integers(1, 7)),
    today=st.dates(date(2026, 4, 1), date(2026, 12, 31)),
)
def test_review_session_is_a_session_on_or_before_today(
    trigger: CalendarTrigger, day: int | None, today: date
) -> None:
    review = review_session(trigger, day, NSE_2026, today)
    assert review is not None
    assert review in NSE_2026 and review <= today
    # no later review session lies between it and today
    for later in (s for s in NSE_2026 if review < s <= today):
        assert review_session(trigger, day, NSE_2026, later) == review


@settings(max_examples=200, deadline=None)
@given(
    cooldown=st.integers(0, 30),
    since=st.integers(0, 60),
    absolute=st.decimals(0, 50, places=2),
    relative=st.decimals(0, 200, places=2),
    extra=st.decimals(0, 50, places=2),
)
def test_cooldown_blocks_and_more_drift_never_undoes_due(
    cooldown: int, since: int, absolute: Decimal, relative: Decimal, extra: Decimal
) -> None:
    policy = RebalancePolicy(relative_drift_band_pct=Decimal(20), cooldown_days=cooldown)
    today = date(2026, 10, 20)
    last = today - timedelta(days=since)
    low = decide_due(policy, today, NYSE_2026, last, [_drift("i", str(absolute), str(relative))])
    high = decide_due(
        policy, today, NYSE_2026, last, [_drift("i", str(absolute + extra), str(relative + extra))]
    )
    if since < cooldown:
        assert not low.due and not high.due
    elif low.due:
        assert high.due


@pytest.mark.parametrize("trigger", list(CalendarTrigger))
def test_without_bands_only_the_calendar_decides(trigger: CalendarTrigger) -> None:
    policy = RebalancePolicy(drift_band_pct=None, calendar_trigger=trigger)
    for today in NYSE_2026[150:220]:
        d = decide_due(policy, today, NYSE_2026, None, [_drift("i", "90", "900")])
        assert d.due == (d.review_session == today and trigger is not CalendarTrigger.NONE)
