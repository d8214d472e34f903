"""When a smallcase is due for a rebalance: calendar reviews, drift bands and the cooldown.

Pure functions over plain inputs (sessions as sorted dates, positions, prices, cash); the data
comes from ``saras.services.triggers``.

- **Calendar**: a weekly, monthly or quarterly review falls on a nominal day (a weekday, or a
  day of the month clamped to the month's length; quarters end in March, June, September and
  December); when the exchange is closed that day, the review moves back to the previous
  session. A review is due from its session on until a rebalance is approved on or after it;
  a smallcase never rebalanced is due on the review session itself (a missed first review waits
  for the next one, rather than firing on the day the policy is set).
- **Drift**: an investment's weights are ``100 x value / W`` with ``W = (cash + holdings) x
  (1 - cash buffer)``, as the planner computes them. It is beyond the absolute band when a leg
  is more than ``drift_band_pct`` points from its target, beyond the relative band when a leg
  is more than ``relative_drift_band_pct`` percent of its target away from it; holding an asset
  that is no longer a constituent is beyond either band. Legs without a price are left out and
  reported.
- **Cooldown**: within ``cooldown_days`` of the last approved rebalance nothing is due.
"""

from __future__ import annotations

import bisect
import calendar as _cal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import NamedTuple

from saras.domain.policy import CalendarTrigger, RebalancePolicy

_HUNDRED = Decimal(100)
_Q = Decimal("0.0001")
_QUARTER_END_MONTHS = (3, 6, 9, 12)


class AssetKey(NamedTuple):
    """An asset: a symbol on an exchange."""

    symbol: str
    exchange: str

    def __str__(self) -> str:
        return f"{self.symbol}/{self.exchange}"


@dataclass(frozen=True)
class DriftMeasure:
    """How far one investment is from its targets."""

    investment_id: str
    absolute_pct: Decimal
    relative_pct: Decimal
    worst: AssetKey | None
    untargeted: tuple[AssetKey, ...] = ()
    unpriced: tuple[AssetKey, ...] = ()


@dataclass(frozen=True)
class TriggerDecision:
    """Whether a smallcase is due, and every reason, for the analyst's artifact."""

    due: bool
    reasons: tuple[str, ...]
    review_session: date | None = None
    cooldown_until: date | None = None
    beyond_band: tuple[str, ...] = ()


def measure_drift(
    investment_id: str,
    targets: Mapping[AssetKey, Decimal],
    positions: Mapping[AssetKey, Decimal],
    prices: Mapping[AssetKey, Decimal | None],
    cash: Decimal,
    cash_buffer_pct: Decimal = Decimal(0),
) -> DriftMeasure | None:
    """Return one investment's drift, or None when it is worth nothing (nothing to drift)."""
    keys = sorted(set(targets) | {k for k, q in positions.items() if q})
    unpriced = tuple(k for k in keys if prices.get(k) is None)
    values = {
        k: positions.get(k, Decimal(0)) * price
        for k in keys
        if (price := prices.get(k)) is not None
    }
    total = max(cash, Decimal(0)) + sum(values.values(), Decimal(0))
    investable = total * (1 - cash_buffer_pct / _HUNDRED)
    if investable <= 0:
        return None
    absolute = relative = Decimal(0)
    worst: AssetKey | None = None
    worst_score = Decimal(-1)
    untargeted = []
    for k, value in values.items():
        weight = _HUNDRED * value / investable
        target = targets.get(k, Decimal(0))
        gap = abs(weight - target)
        if target > 0:
            rel = _HUNDRED * gap / target
        elif weight > 0:
            untargeted.append(k)
            rel = Decimal(0)  # reported as untargeted: beyond either band
        else:
            continue
        absolute = max(absolute, gap)
        relative = max(relative, rel)
        score = gap if target > 0 else _HUNDRED + gap
        if score > worst_score:
            worst, worst_score = k, score
    return DriftMeasure(
        investment_id,
        absolute.quantize(_Q),
        relative.quantize(_Q),
        worst,
        tuple(untargeted),
        unpriced,
    )


def _nominal_day(trigger: CalendarTrigger, day: int | None, year: int, month: int) -> date:
    last = _cal.monthrange(year, month)[1]
    return date(year, month, min(day or 31, last))


def _previous_session(sessions: Sequence[date], day: date) -> date | None:
    i = bisect.bisect_right(sessions, day)
    return sessions[i - 1] if i else None


def review_session(
    trigger: CalendarTrigger, day: int | None, sessions: Sequence[date], on_or_before: date
) -> date | None:
    """Return the latest review session on or before ``on_or_before`` (None: none known).

    ``sessions`` are the exchange's sessions in ascending order, from at least a quarter before
    ``on_or_before`` to at least a month after it: a nominal day after the last session given
    is not placed (it may have a session of its own).
    """
    if trigger is CalendarTrigger.NONE:
        return None
    nominal: list[date] = []
    if trigger is CalendarTrigger.WEEKLY:
        weekday = (day or 5) - 1  # ISO 1..7 -> Python 0..6
        # the nominal day of this week and the two before (this week's may still be ahead)
        monday = on_or_before - timedelta(days=on_or_before.weekday())
        nominal = [monday + timedelta(days=weekday - 7 * k) for k in range(3)]
    else:
        year, month = on_or_before.year, on_or_before.month
        months: list[tuple[int, int]] = []
        for _ in range(7):
            if trigger is CalendarTrigger.MONTHLY or month in _QUARTER_END_MONTHS:
                months.append((year, month))
            year, month = (year, month - 1) if month > 1 else (year - 1, 12)
        nominal = [_nominal_day(trigger, day, y, m) for y, m in months[:3]]
    # a nominal day past the last known session cannot be placed (the exchange may be open
    # between today and that day): it is not a review yet
    known_until = sessions[-1] if sessions else on_or_before
    found = [
        s
        for n in nominal
        if n <= known_until
        and (s := _previous_session(sessions, n)) is not None
        and s <= on_or_before
    ]
    return max(found) if found else None


def _bands(policy: RebalancePolicy) -> bool:
    return policy.drift_band_pct is not None or policy.relative_drift_band_pct is not None


def beyond_band(policy: RebalancePolicy, drift: DriftMeasure) -> bool:
    """Tell whether an investment drifted beyond the policy's absolute or relative band."""
    if drift.untargeted and _bands(policy):
        return True
    if policy.drift_band_pct is not None and drift.absolute_pct > policy.drift_band_pct:
        return True
    return (
        policy.relative_drift_band_pct is not None
        and drift.relative_pct > policy.relative_drift_band_pct
    )


def decide_due(
    policy: RebalancePolicy,
    today: date,
    sessions: Sequence[date],
    last_rebalanced: date | None,
    drifts: Sequence[DriftMeasure],
) -> TriggerDecision:
    """Decide whether a smallcase is due on ``today`` (a date on its exchange's clock)."""
    if policy.cooldown_days and last_rebalanced is not None:
        until = last_rebalanced + timedelta(days=policy.cooldown_days)
        if today < until:
            return TriggerDecision(
                False,
                (f"cooldown until {until} (last rebalance approved {last_rebalanced})",),
                cooldown_until=until,
            )
    reasons: list[str] = []
    review = review_session(policy.calendar_trigger, policy.calendar_day, sessions, today)
    if review is not None:
        if (last_rebalanced is None and review == today) or (
            last_rebalanced is not None and last_rebalanced < review
        ):
            return TriggerDecision(
                True,
                (f"{policy.calendar_trigger.value} review on {review}",),
                review_session=review,
            )
        reasons.append(
            f"{policy.calendar_trigger.value} review of {review} "
            + ("already done" if last_rebalanced is not None else "was before the first run")
        )
    elif policy.calendar_trigger is not CalendarTrigger.NONE:
        reasons.append(f"no {policy.calendar_trigger.value} review session known yet")
    drift_checked = _bands(policy) and (
        policy.calendar_trigger is CalendarTrigger.NONE or policy.drift_trigger
    )
    if drift_checked:
        beyond = [d for d in drifts if beyond_band(policy, d)]
        if beyond:
            worst = max(beyond, key=lambda d: (d.relative_pct, d.absolute_pct))
            where = f" in {worst.worst}" if worst.worst is not None else ""
            return TriggerDecision(
                True,
                (
                    f"{len(beyond)} of {len(drifts)} investments beyond the drift band "
                    f"(worst {worst.investment_id}{where}: {worst.absolute_pct} pp, "
                    f"{worst.relative_pct}% of target)",
                ),
                review_session=review,
                beyond_band=tuple(d.investment_id for d in beyond),
            )
        if drifts:
            reasons.append(
                f"all {len(drifts)} investments within the drift band (max "
                f"{max(d.absolute_pct for d in drifts)} pp, "
                f"{max(d.relative_pct for d in drifts)}% of target)"
            )
        else:
            reasons.append("no investment with a value to drift")
    if not reasons:
        reasons.append("no trigger: no calendar review and no drift band")
    return TriggerDecision(False, tuple(reasons), review_session=review)
