"""The planning gates and the inference of splits from rewritten histories."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from fractions import Fraction
from types import SimpleNamespace

from sqlalchemy.orm import Session

from models import Asset, UserBrokerConnection, UserSmallcaseInvestment
from saras.domain.enums import CorporateActionType, DifferenceKind
from saras.marketdata.base import SourceAction
from saras.repositories import corporate_actions as repo
from saras.services.corporate_actions import infer_from_rewrite, simple_ratio
from tests import factories as f

DAY = date(2024, 3, 15)


def _investment(db: Session) -> tuple[Asset, UserBrokerConnection, UserSmallcaseInvestment]:
    asset = f.asset(db, "GATE", "NYSE")
    owner = f.user(db)
    conn = f.connection(db, owner, "paper")
    inv = f.investment(db, owner, f.smallcase(db, {asset: "100"}), f.portfolio(db, owner), conn)
    return asset, conn, inv


def test_a_pending_action_and_an_open_difference_stop_the_plan(db: Session) -> None:
    asset, conn, inv = _investment(db)
    c = db.connection()
    assert repo.planning_gates(c, [inv.id], [asset.id], as_of=DAY) == {}

    split = repo.ReportedAction("GATE", "NYSE", CorporateActionType.SPLIT, DAY, "test", Decimal(4))
    assert repo.record_actions(c, {("GATE", "NYSE"): asset.id}, [split, split]) == 1
    assert repo.record_actions(c, {("GATE", "NYSE"): asset.id}, [split]) == 0
    gates = repo.planning_gates(c, [inv.id], [asset.id], as_of=DAY)
    (gate,) = gates[inv.id]
    assert gate.reason == "corporate_action_pending" and "GATE (NYSE): split" in gate.detail
    # not yet due: no gate
    assert repo.planning_gates(c, [inv.id], [asset.id], as_of=date(2024, 3, 14)) == {}

    tiny = repo.StoredDifference(
        DifferenceKind.POSITION, "GATE", "NYSE", asset.id, Decimal(5), Decimal("5.0000000001"),
        "unknown", "rounding",
    )  # fmt: skip
    real = repo.StoredDifference(
        DifferenceKind.POSITION, "OTHER", "NYSE", None, Decimal(0), Decimal(3),
        "external_trade", "bought outside",
    )  # fmt: skip
    repo.record_reconciliation(
        c, conn.id, DAY, broker_cash=None, ledger_cash_flow=None, currency="USD",
        differences=[tiny, real],
    )  # fmt: skip
    reasons = {
        g.reason for g in repo.planning_gates(c, [inv.id], [], as_of=date(2024, 3, 14))[inv.id]
    }
    assert reasons == {"reconciliation_difference"}  # the real one; the rounding is tolerated

    # the next night the broker matches: the open differences are resolved, the gate lifts
    repo.record_reconciliation(
        c, conn.id, date(2024, 3, 16), broker_cash=None, ledger_cash_flow=None, currency="USD",
        differences=[],
    )  # fmt: skip
    assert repo.list_differences(c, connection_ids=[conn.id]) == []
    assert repo.planning_gates(c, [inv.id], [], as_of=date(2024, 3, 14)) == {}


def test_a_rewrite_by_a_simple_ratio_is_an_inferred_split() -> None:
    assert simple_ratio(4.0004) == 4 and simple_ratio(0.1) == Fraction(1, 10)
    assert simple_ratio(1.5) == Fraction(3, 2)
    assert simple_ratio(1.018) is None  # a dividend adjustment
    assert simple_ratio(7.9) is None and simple_ratio(3.1) is None  # coincidences
    items = {s: SimpleNamespace(start=DAY) for s in ("A", "B", "C")}
    reported = [SourceAction("B", "split", DAY, ratio=Decimal(2))]
    inferred = infer_from_rewrite(items, {"A": 4.0, "B": 2.0, "C": 1.01}, reported)
    assert [(a.symbol, a.action_type, a.ratio, a.ex_date) for a in inferred] == [
        ("A", "split", Decimal(4), DAY)
    ]


def test_a_dismissed_inference_no_longer_stops_the_plan(db: Session) -> None:
    asset, _, inv = _investment(db)
    c = db.connection()
    guess = repo.ReportedAction(
        "GATE", "NYSE", CorporateActionType.SPLIT, DAY, "inferred:csv", Decimal(2)
    )
    repo.record_actions(c, {("GATE", "NYSE"): asset.id}, [guess])
    (action,) = repo.list_actions(c)
    assert inv.id in repo.planning_gates(c, [inv.id], [asset.id], as_of=DAY)
    repo.mark_dismissed(c, action.id, datetime.now(UTC))
    assert repo.planning_gates(c, [inv.id], [asset.id], as_of=DAY) == {}
