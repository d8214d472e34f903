"""The after-execution report of a plan's runs: computed, and stored for SQL.

Reads each run's orders (planned quantity and price, and what filled), the investment's ledger
positions and free cash afterwards, the latest closes and the smallcase's targets; computes the
report with :mod:`saras.domain.execution_report`; replaces the rows of
``execution_run_reports`` and ``execution_run_report_legs`` for those runs.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, delete, insert, select, tuple_

from models import (
    Asset,
    ExecutionRunReport,
    ExecutionRunReportLeg,
    SmallcaseConstituent,
    SmallcaseExecutionOrder,
    SmallcaseExecutionRun,
    UserSmallcaseInvestment,
)
from saras.domain.enums import OrderSide
from saras.domain.execution_report import OrderOutcome, RunOutcome, drift_left, legs_of
from saras.domain.triggers import AssetKey
from saras.repositories import corporate_actions as ca_repo
from saras.services import rebalance as planner


def _dec(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    return Decimal(str(value))


def _orders(
    conn: Connection, run_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[tuple[uuid.UUID, OrderOutcome]]]:
    order = SmallcaseExecutionOrder
    rows = conn.execute(
        select(
            order.execution_run_id,
            order.asset_id,
            Asset.symbol,
            Asset.exchange,
            order.side,
            order.quantity,
            order.price,
            order.order_metadata,
        )
        .join(Asset, Asset.id == order.asset_id)
        .where(order.execution_run_id.in_(list(run_ids)))
    )
    out: dict[uuid.UUID, list[tuple[uuid.UUID, OrderOutcome]]] = defaultdict(list)
    for run_id, asset_id, symbol, exchange, side, qty, price, meta in rows:
        meta = meta or {}
        outcome = OrderOutcome(
            AssetKey(symbol, exchange),
            OrderSide(side),
            Decimal(str(qty)),
            _dec(price),
            _dec(meta.get("filled_quantity")) or Decimal(0),
            _dec(meta.get("average_fill_price")),
            _dec(meta.get("fees")) or Decimal(0),
        )
        out[uuid.UUID(str(run_id))].append((uuid.UUID(str(asset_id)), outcome))
    return out


def _drift_left(
    conn: Connection, smallcase_id: uuid.UUID, investments: dict[uuid.UUID, Decimal]
) -> dict[uuid.UUID, Decimal | None]:
    """Return each investment's drift left, from its ledger now and the latest closes."""
    ids = list(investments)
    positions, _, spent = planner.load_state(conn, smallcase_id, ids)
    positions, spent = ca_repo.adjust_planning_state(conn, ids, positions, spent)
    targets_by_id = {
        uuid.UUID(str(a)): Decimal(str(w))
        for a, w in conn.execute(
            select(SmallcaseConstituent.asset_id, SmallcaseConstituent.weight_percentage).where(
                SmallcaseConstituent.smallcase_id == smallcase_id
            )
        )
    }
    asset_ids = set(targets_by_id) | {a for (_, a) in positions}
    keys = {
        uuid.UUID(str(i)): AssetKey(s, e)
        for i, s, e in conn.execute(
            select(Asset.id, Asset.symbol, Asset.exchange).where(Asset.id.in_(list(asset_ids)))
        )
    }
    closes = {keys[a]: p for a, (p, _) in planner.latest_prices(conn, asset_ids).items()}
    targets = {keys[a]: w for a, w in targets_by_id.items()}
    out = {}
    for inv, amount in investments.items():
        held = {keys[a]: q for (i, a), q in positions.items() if i == inv}
        cash = amount - spent.get(inv, Decimal(0))
        out[inv] = drift_left(held, closes, cash, targets)
    return out


def build_reports(conn: Connection, run_ids: Sequence[uuid.UUID]) -> list[RunOutcome]:
    """Return the report of each run (in ``run_ids`` order)."""
    if not run_ids:
        return []
    run = SmallcaseExecutionRun
    inv = UserSmallcaseInvestment
    meta = {
        uuid.UUID(str(r)): (uuid.UUID(str(i)), uuid.UUID(str(s)), Decimal(str(a)), st)
        for r, i, s, a, st in conn.execute(
            select(run.id, inv.id, inv.smallcase_id, inv.investment_amount, run.status)
            .join(inv, inv.id == run.investment_id)
            .where(run.id.in_(list(run_ids)))
        )
    }
    orders = _orders(conn, run_ids)
    currencies = {
        uuid.UUID(str(a)): c
        for a, c in conn.execute(
            select(Asset.id, Asset.currency).where(
                Asset.id.in_({a for rows in orders.values() for a, _ in rows})
            )
        )
    }
    by_smallcase: dict[uuid.UUID, dict[uuid.UUID, Decimal]] = defaultdict(dict)
    for inv_id, smallcase_id, amount, _ in meta.values():
        by_smallcase[smallcase_id][inv_id] = amount
    drift: dict[uuid.UUID, Decimal | None] = {}
    for smallcase_id, investments in by_smallcase.items():
        drift.update(_drift_left(conn, smallcase_id, investments))
    reports = []
    for run_id in run_ids:
        inv_id, _, _, status = meta[run_id]
        rows = orders.get(run_id, [])
        currency = next((currencies[a] for a, _ in rows), "")
        reports.append(
            RunOutcome(
                str(run_id),
                str(inv_id),
                currency,
                status,
                legs_of(o for _, o in rows),
                drift.get(inv_id),
            )
        )
    return reports


def store_reports(conn: Connection, reports: Sequence[RunOutcome]) -> None:
    """Replace the stored reports of these runs."""
    if not reports:
        return
    run_ids = [uuid.UUID(r.run_id) for r in reports]
    conn.execute(delete(ExecutionRunReport).where(ExecutionRunReport.execution_run_id.in_(run_ids)))
    pairs = list({tuple(leg.asset) for r in reports for leg in r.legs})
    assets = (
        {
            AssetKey(s, e): i
            for i, s, e in conn.execute(
                select(Asset.id, Asset.symbol, Asset.exchange).where(
                    tuple_(Asset.symbol, Asset.exchange).in_(pairs)
                )
            )
        }
        if pairs
        else {}
    )
    for r in reports:
        report_id = uuid.uuid4()
        conn.execute(
            insert(ExecutionRunReport).values(
                id=report_id,
                execution_run_id=uuid.UUID(r.run_id),
                investment_id=uuid.UUID(r.investment_id),
                currency=r.currency or "---",
                run_status=r.status,
                planned_value=r.planned_value.quantize(Decimal("0.0001")),
                filled_value=r.filled_value.quantize(Decimal("0.0001")),
                cost=r.cost.quantize(Decimal("0.0001")),
                slippage_bps=r.slippage_bps,
                drift_left_pct=r.drift_left_pct,
            )
        )
        if r.legs:
            conn.execute(
                insert(ExecutionRunReportLeg),
                [
                    {
                        "id": uuid.uuid4(),
                        "report_id": report_id,
                        "asset_id": assets[leg.asset],
                        "side": leg.side.value,
                        "planned_quantity": leg.planned_quantity,
                        "filled_quantity": leg.filled_quantity,
                        "planned_price": leg.planned_price,
                        "avg_fill_price": leg.avg_fill_price,
                        "slippage_bps": leg.slippage_bps,
                        "cost": leg.cost.quantize(Decimal("0.0001")),
                    }
                    for leg in r.legs
                ],
            )


def report_runs(engine: Engine, run_ids: Sequence[uuid.UUID]) -> list[RunOutcome]:
    """Compute and store the report of these runs (one transaction); return it."""
    with engine.begin() as conn:
        reports = build_reports(conn, run_ids)
        store_reports(conn, reports)
    return reports
