"""Deterministic synthetic smallcases and investments, for demos, tests and the planning benchmark.

``benchmark_plan_batch()`` times :func:`saras.domain.rebalance.plan_batch` on a synthetic
smallcase (default 100,000 investments x 20 constituents); ``benchmarks/`` holds the real,
end-to-end benchmark with the database write.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from decimal import Decimal

import numpy as np

from saras.domain.enums import RunType
from saras.domain.rebalance import (
    BatchPlan,
    BatchState,
    BrokerRules,
    Instrument,
    PlanningPolicy,
    plan_batch,
)


@dataclass(frozen=True, eq=False)
class SyntheticSmallcase:
    """A smallcase with prices and a batch of investments holding it with some drift."""

    targets: dict[str, Decimal]
    instruments: dict[str, Instrument]
    batch: BatchState


#: fractions to 9 decimals and buys of at least 1 (the rules Alpaca's kit declares)
FRACTIONAL_RULES = BrokerRules(fractional=True, quantity_decimals=9, min_order_value=Decimal(1))


def synthetic_smallcase(
    n_investments: int = 100_000,
    n_legs: int = 20,
    rules: BrokerRules | None = None,
    seed: int = 0,
) -> SyntheticSmallcase:
    """Return a deterministic smallcase and ``n_investments`` drifted holdings of it."""
    rules = rules or FRACTIONAL_RULES
    rng = np.random.default_rng(seed)
    symbols = [f"SYM{j:03d}" for j in range(n_legs)]
    raw = rng.integers(1, 20, size=n_legs)
    cents = raw * 10_000 // raw.sum()  # weights in hundredths of a percent
    cents[0] += 10_000 - cents.sum()
    targets = {s: Decimal(int(c)).scaleb(-2) for s, c in zip(symbols, cents, strict=True)}
    prices = (rng.lognormal(4.5, 1.0, size=n_legs) * 100).round() / 100 + 1
    instruments = {
        s: Instrument(s, Decimal(str(p)), lot_size=1, fractionable=(j % 7 != 6))
        for j, (s, p) in enumerate(zip(symbols, prices, strict=True))
    }
    d = rules.unit_decimals
    value = rng.lognormal(9.5, 1.0, size=n_investments)  # ~13k typical portfolio
    weights = np.array([float(w) for w in targets.values()]) / 100
    drift = rng.normal(1.0, 0.15, size=(n_investments, n_legs)).clip(0.2, 2.0)
    shares = value[:, None] * weights[None, :] * drift / prices[None, :]
    if d == 0:
        held = np.floor(shares).astype(np.int64)
    else:
        held = np.floor(shares * 10**d).astype(np.int64)
    cash_cents = (value * rng.uniform(0.0, 0.05, size=n_investments) * 100).astype(np.int64)
    batch = BatchState(
        investment_ids=tuple(f"inv-{i:07d}" for i in range(n_investments)),
        symbols=tuple(symbols),
        cash=tuple(Decimal(int(c)).scaleb(-2) for c in cash_cents),
        held_units=held,
        open_units=np.zeros_like(held),
        unit_decimals=d,
    )
    return SyntheticSmallcase(targets, instruments, batch)


def benchmark_plan_batch(
    n_investments: int = 100_000,
    n_legs: int = 20,
    rules: BrokerRules | None = None,
    run_type: RunType = RunType.REBALANCE,
    policy: PlanningPolicy | None = None,
    seed: int = 0,
) -> tuple[float, BatchPlan]:
    """Return (seconds, plan) for planning a synthetic smallcase (data generation not timed)."""
    rules = rules or FRACTIONAL_RULES
    case = synthetic_smallcase(n_investments, n_legs, rules, seed)
    amounts = None
    batch = case.batch
    if run_type in (RunType.INVEST, RunType.TOPUP):
        amounts = Decimal(10_000)
        if run_type is RunType.INVEST:  # a new investment: nothing held yet, the amount in cash
            batch = BatchState(
                batch.investment_ids,
                batch.symbols,
                (amounts,) * len(batch.investment_ids),
                np.zeros_like(batch.held_units),
                np.zeros_like(batch.open_units),
                batch.unit_decimals,
            )
        else:  # a top-up: the amount arrives as cash
            batch = BatchState(
                batch.investment_ids,
                batch.symbols,
                tuple(c + amounts for c in batch.cash),
                batch.held_units,
                batch.open_units,
                batch.unit_decimals,
            )
    start = time.perf_counter()
    plan = plan_batch(
        run_type,
        case.targets,
        case.instruments,
        rules,
        policy or PlanningPolicy(),
        batch,
        amounts,
    )
    return time.perf_counter() - start, plan
