"""A rebalance plan as planning hands it over: typed, frozen, and free of I/O.

``Plan`` is what planning decided for a smallcase (its runs, the totals per asset, who was
skipped and why, the composition that travels with it until approval); ``PlannedRun`` is one
investment's run; ``PlannedOrders`` holds the order rows in columns (millions of orders must not
become millions of objects). Assets are ``(symbol, exchange)`` pairs everywhere
(:class:`AssetRef`): NSE and BSE share most symbols.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from saras.domain.enums import RunType


@dataclass(frozen=True, order=True)
class AssetRef:
    """An asset as people name it: a symbol on an exchange."""

    symbol: str
    exchange: str

    def __str__(self) -> str:
        return f"{self.symbol} ({self.exchange})"


@dataclass(frozen=True)
class Constituent:
    """One asset of a composition and its target weight (percent)."""

    asset_id: uuid.UUID
    asset: AssetRef
    currency: str
    weight: Decimal
    rationale: str | None = None

    def as_json(self) -> dict[str, str | None]:
        """Return the constituent as JSON values (for metadata and artifacts)."""
        return {
            "symbol": self.asset.symbol,
            "exchange": self.asset.exchange,
            "weight": f"{self.weight.normalize():f}",
            "rationale": self.rationale,
        }


@dataclass(frozen=True)
class SkippedLeg:
    """A leg the planner left out of a run, and why."""

    asset: AssetRef
    reason: str


@dataclass(frozen=True)
class PlannedRun:
    """One investment's run, as written (status ``planned``, then moved by the state table)."""

    run_id: uuid.UUID
    investment_id: uuid.UUID
    connection_id: uuid.UUID
    user_id: uuid.UUID
    order_count: int
    est_buy: Decimal
    est_sell: Decimal
    plan_hash: str
    drift_pct: float = 0.0
    cash_limited: bool = False
    skipped_legs: tuple[SkippedLeg, ...] = ()

    @property
    def total(self) -> Decimal:
        """Return the run's estimated traded value (buys plus sells)."""
        return self.est_buy + self.est_sell

    def body(self, smallcase_id: uuid.UUID, smallcase: str, run_type: RunType) -> dict[str, Any]:
        """Return the run's ``execution_plan`` document."""
        return {
            "smallcase_id": str(smallcase_id),
            "smallcase": smallcase,
            "run_type": run_type.value,
            "orders": self.order_count,
            "est_buy_value": f"{self.est_buy:f}",
            "est_sell_value": f"{self.est_sell:f}",
            "drift_pct": self.drift_pct,
            "cash_limited": self.cash_limited,
            "skipped_legs": [
                {"symbol": s.asset.symbol, "exchange": s.asset.exchange, "reason": s.reason}
                for s in self.skipped_legs
            ],
            "plan_hash": self.plan_hash,
        }


@dataclass(frozen=True)
class AssetTotal:
    """A plan's totals for one asset and side (the plan table's rows)."""

    asset: AssetRef
    side: str
    orders: int
    quantity: Decimal
    est_value: Decimal


@dataclass(frozen=True)
class PlannedOrders:
    """A plan's order rows in columns, aligned by index (quantities as 9-decimal text)."""

    ids: list[str] = field(default_factory=list)
    run_ids: list[str] = field(default_factory=list)
    asset_ids: list[str] = field(default_factory=list)
    sides: list[str] = field(default_factory=list)
    quantities: list[str] = field(default_factory=list)
    prices: list[str] = field(default_factory=list)  # "" when no price was known

    def __len__(self) -> int:
        return len(self.ids)


def _money(value: Decimal) -> str:
    return f"{value.quantize(Decimal('0.01')):f}"


@dataclass(frozen=True)
class Plan:
    """Everything a rebalance (or invest, top-up, exit) planned for a smallcase."""

    smallcase_id: uuid.UUID
    smallcase_name: str
    run_type: RunType
    currency: str | None
    runs: tuple[PlannedRun, ...]
    totals: tuple[AssetTotal, ...]
    skipped: Mapping[str, tuple[str, ...]]  # reason -> investment ids
    order_count: int
    plan_hash: str
    problems: tuple[str, ...] = ()
    composition: tuple[Constituent, ...] | None = None  # a new composition, until approved
    policy: Mapping[str, Any] | None = None  # the rebalance policy the plan used (JSON values)

    @property
    def run_ids(self) -> list[uuid.UUID]:
        """Return the ids of the plan's runs, in plan order."""
        return [r.run_id for r in self.runs]

    def runs_by_connection(self) -> dict[str, list[str]]:
        """Return run ids grouped by broker connection (execution's unit of parallelism)."""
        out: dict[str, list[str]] = {}
        for run in self.runs:
            out.setdefault(str(run.connection_id), []).append(str(run.run_id))
        return out

    def summary(self) -> dict[str, Any]:
        """Return the headline figures (also shown in the approval form)."""
        return {
            "smallcase": self.smallcase_name,
            "run_type": self.run_type.value,
            "currency": self.currency,
            "investments_changed": len(self.runs),
            "investments_skipped": sum(len(v) for v in self.skipped.values()),
            "skipped_by_reason": {k: len(v) for k, v in sorted(self.skipped.items())},
            "orders": self.order_count,
            "est_buy_value": _money(sum((r.est_buy for r in self.runs), Decimal(0))),
            "est_sell_value": _money(sum((r.est_sell for r in self.runs), Decimal(0))),
            "plan_hash": self.plan_hash,
            "problems": list(self.problems),
            "new_composition": (
                None if self.composition is None else [c.as_json() for c in self.composition]
            ),
            "policy": None if self.policy is None else dict(self.policy),
        }

    def summary_rows(self) -> list[dict[str, Any]]:
        """Return the totals per asset and side, sells first (the plan table artifact)."""
        return [
            {
                "symbol": t.asset.symbol,
                "exchange": t.asset.exchange,
                "side": t.side,
                "orders": t.orders,
                "quantity": f"{t.quantity:f}",
                "est_value": f"{t.est_value.quantize(Decimal('0.01')):f}",
            }
            for t in sorted(self.totals, key=lambda t: (t.side != "sell", t.asset))
        ]

    def report(self) -> dict[str, Any]:
        """Return the plan as JSON values (a flow's result)."""
        return {
            "summary": self.summary(),
            "assets": self.summary_rows(),
            "skipped": {k: list(v) for k, v in self.skipped.items()},
            "run_ids": [str(r) for r in self.run_ids],
            "plan_hash": self.plan_hash,
        }
