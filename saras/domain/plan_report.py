"""The plan an analyst approves from, per investment: rows for table artifacts, and a CSV.

Built from plain inputs (:class:`InvestmentReport`), so the rebalance flow can call it with
whatever its plan holds; :func:`report_from_plan` adapts the planner's
:class:`~saras.domain.rebalance.InvestmentPlan`.

Figures, per investment, in its currency:

- *buys*, *sells*: estimated order values; *est. costs*: the broker kit's cost model
  (:data:`saras.domain.costs.CostModel`);
- *cash before* and *cash after* (the planner's estimates);
- *shortfall*: when cash limited the plan (buys cut for cash, or legs skipped for
  ``insufficient_cash``), the value still missing to bring every underweight leg to its
  target, ``sum(max(target - weight after, 0)) x investable / 100``; otherwise 0 (a leg left
  short by a rule or by whole shares is not short of cash);
- *turnover*: ``(buys + sells) / 2 / investable x 100``, in percent;
- *weights after*: the planner's estimated weights after the trades, against the targets.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal

from saras.domain.costs import CostBreakdown, CostModel, TradeLeg, no_costs
from saras.domain.enums import OrderSide
from saras.domain.rebalance import InvestmentPlan, SkipReason
from saras.domain.triggers import AssetKey

_ZERO = Decimal(0)
_HUNDRED = Decimal(100)
_CENT = Decimal("0.01")
_WEIGHT = Decimal("0.01")

#: columns of :func:`leg_rows` and of the CSV, in order
LEG_COLUMNS = (
    "investment",
    "user",
    "connection",
    "currency",
    "symbol",
    "exchange",
    "action",
    "quantity",
    "est_price",
    "est_value",
    "reason",
    "detail",
    "target_weight",
    "weight_after",
)
#: columns of :func:`investment_rows`, in order
INVESTMENT_COLUMNS = (
    "investment",
    "user",
    "connection",
    "broker",
    "currency",
    "status",
    "orders",
    "skipped_legs",
    "est_buys",
    "est_sells",
    "est_costs",
    "cash_before",
    "cash_after",
    "shortfall",
    "turnover_pct",
    "drift_pct",
    "weights_after",
)


@dataclass(frozen=True)
class ReportOrder:
    """One planned order."""

    symbol: str
    exchange: str
    side: OrderSide
    quantity: Decimal
    est_price: Decimal | None
    est_value: Decimal | None


@dataclass(frozen=True)
class ReportSkip:
    """A leg that wanted a trade and got none."""

    symbol: str
    exchange: str
    reason: str
    detail: str


@dataclass(frozen=True)
class InvestmentReport:
    """What the report needs of one investment's plan (no Prefect, no database)."""

    investment_id: str
    user: str
    connection: str
    broker_type: str
    currency: str
    status: str
    orders: tuple[ReportOrder, ...]
    skipped: tuple[ReportSkip, ...]
    cash_before: Decimal
    est_cash_after: Decimal
    investable_value: Decimal
    cash_limited: bool
    drift_pct: Decimal
    target_weights: Mapping[AssetKey, Decimal] = field(default_factory=dict)
    weights_after: Mapping[AssetKey, Decimal] = field(default_factory=dict)
    cost_model: CostModel = field(default=no_costs, compare=False, repr=False)

    @property
    def est_buys(self) -> Decimal:
        """Return the estimated value of the buys."""
        return _side_total(self.orders, OrderSide.BUY)

    @property
    def est_sells(self) -> Decimal:
        """Return the estimated value of the sells."""
        return _side_total(self.orders, OrderSide.SELL)

    @property
    def costs(self) -> CostBreakdown:
        """Return the expected costs of the orders at this investment's broker."""
        return self.cost_model(
            [
                TradeLeg(o.symbol, o.exchange, o.side, o.est_value)
                for o in self.orders
                if o.est_value is not None
            ],
        )

    @property
    def turnover_pct(self) -> Decimal:
        """Return half the traded value in percent of the investable value."""
        if self.investable_value <= 0:
            return _ZERO
        traded = self.est_buys + self.est_sells
        return _q(traded / 2 / self.investable_value * _HUNDRED, _WEIGHT)

    @property
    def shortfall(self) -> Decimal:
        """Return the value missing to reach the targets, when cash limited the plan."""
        short_of_cash = self.cash_limited or any(
            s.reason == SkipReason.INSUFFICIENT_CASH.value for s in self.skipped
        )
        if not short_of_cash or self.investable_value <= 0:
            return _ZERO
        gap = sum(
            (
                max(target - self.weights_after.get(key, _ZERO), _ZERO)
                for key, target in self.target_weights.items()
            ),
            _ZERO,
        )
        return _q(gap * self.investable_value / _HUNDRED, _CENT)


def _side_total(orders: Iterable[ReportOrder], side: OrderSide) -> Decimal:
    return sum((o.est_value or _ZERO for o in orders if o.side is side), _ZERO)


def _q(value: Decimal, quantum: Decimal) -> Decimal:
    return value.quantize(quantum, rounding=ROUND_HALF_EVEN)


def _text(value: Decimal | None, quantum: Decimal | None = _CENT) -> str:
    if value is None:
        return ""
    return f"{_q(value, quantum) if quantum is not None else value.normalize():f}"


def report_from_plan(
    plan: InvestmentPlan,
    *,
    exchanges: Mapping[str, str] | None = None,
    assets: Mapping[str, AssetKey] | None = None,
    user: str,
    connection: str,
    broker_type: str,
    currency: str,
    costs: CostModel = no_costs,
) -> InvestmentReport:
    """Adapt the planner's plan of one investment.

    The planner's symbols are resolved either by ``exchanges`` (symbol to exchange) or, when it
    plans by label (the rebalance service labels assets by id), by ``assets`` (label to asset).
    """

    def key(symbol: str) -> AssetKey:
        if assets is not None:
            return assets[symbol]
        return AssetKey(symbol, (exchanges or {})[symbol])

    return InvestmentReport(
        investment_id=plan.investment_id,
        user=user,
        connection=connection,
        broker_type=str(broker_type),
        currency=currency,
        status=plan.status.value + (f" ({plan.status_reason.value})" if plan.status_reason else ""),
        orders=tuple(
            ReportOrder(*key(o.symbol), o.side, o.quantity, o.est_price, o.est_value)
            for o in plan.orders
        ),
        skipped=tuple(ReportSkip(*key(s.symbol), s.reason.value, s.detail) for s in plan.skipped),
        cash_before=plan.cash_before,
        est_cash_after=plan.est_cash_after,
        investable_value=plan.investable_value,
        cash_limited=plan.cash_limited,
        drift_pct=plan.drift_pct,
        target_weights={key(s): w for s, w in plan.target_weights.items()},
        weights_after={key(s): w for s, w in plan.est_weights_after.items()},
        cost_model=costs,
    )


def investment_rows(reports: Sequence[InvestmentReport]) -> list[dict[str, str]]:
    """Return one row per investment: money before and after, costs, shortfall, turnover."""
    rows = []
    for r in reports:
        weights = ", ".join(
            f"{k.symbol} {_text(w, _WEIGHT)}/{_text(r.target_weights.get(k), _WEIGHT) or '0'}"
            for k, w in sorted(r.weights_after.items())
        )
        rows.append(
            {
                "investment": r.investment_id,
                "user": r.user,
                "connection": r.connection,
                "broker": r.broker_type,
                "currency": r.currency,
                "status": r.status,
                "orders": str(len(r.orders)),
                "skipped_legs": str(len(r.skipped)),
                "est_buys": _text(r.est_buys),
                "est_sells": _text(r.est_sells),
                "est_costs": _text(r.costs.total),
                "cash_before": _text(r.cash_before),
                "cash_after": _text(r.est_cash_after),
                "shortfall": _text(r.shortfall),
                "turnover_pct": _text(r.turnover_pct, _WEIGHT),
                "drift_pct": _text(r.drift_pct, _WEIGHT),
                "weights_after": weights,
            }
        )
    return rows


def leg_rows(reports: Sequence[InvestmentReport]) -> list[dict[str, str]]:
    """Return one row per order and per skipped leg, sells then buys then skips."""
    rows = []
    for r in reports:
        base = {
            "investment": r.investment_id,
            "user": r.user,
            "connection": r.connection,
            "currency": r.currency,
        }
        for o in r.orders:
            k = AssetKey(o.symbol, o.exchange)
            rows.append(
                {
                    **base,
                    "symbol": o.symbol,
                    "exchange": o.exchange,
                    "action": o.side.value,
                    "quantity": _text(o.quantity, None),
                    "est_price": _text(o.est_price, None),
                    "est_value": _text(o.est_value),
                    "reason": "",
                    "detail": "",
                    "target_weight": _text(r.target_weights.get(k), _WEIGHT),
                    "weight_after": _text(r.weights_after.get(k), _WEIGHT),
                }
            )
        for s in r.skipped:
            k = AssetKey(s.symbol, s.exchange)
            rows.append(
                {
                    **base,
                    "symbol": s.symbol,
                    "exchange": s.exchange,
                    "action": "skip",
                    "quantity": "",
                    "est_price": "",
                    "est_value": "",
                    "reason": s.reason,
                    "detail": s.detail,
                    "target_weight": _text(r.target_weights.get(k), _WEIGHT),
                    "weight_after": _text(r.weights_after.get(k), _WEIGHT),
                }
            )
    return rows


def plan_csv(reports: Sequence[InvestmentReport]) -> str:
    """Return the whole plan as CSV: one line per order or skipped leg, with a header."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=LEG_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(leg_rows(reports))
    return buffer.getvalue()


def plan_totals(reports: Sequence[InvestmentReport]) -> dict[str, dict[str, str]]:
    """Return buys, sells, costs and shortfall summed per currency (never across currencies)."""
    totals: dict[str, dict[str, Decimal]] = {}
    for r in reports:
        t = totals.setdefault(
            r.currency,
            {"est_buys": _ZERO, "est_sells": _ZERO, "est_costs": _ZERO, "shortfall": _ZERO},
        )
        t["est_buys"] += r.est_buys
        t["est_sells"] += r.est_sells
        t["est_costs"] += r.costs.total
        t["shortfall"] += r.shortfall
    return {c: {k: _text(v) for k, v in t.items()} for c, t in sorted(totals.items())}
