"""The price-history flow end to end under Prefect's test harness, on both backends."""

from __future__ import annotations

import uuid
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from flows.price_history import ingest_price_history
from models import AuditLog, Portfolio, PortfolioHolding, PriceHistory
from tests import factories as f

START, END = date(2024, 1, 2), date(2024, 1, 31)  # NYSE: 21 sessions (Jan 1, 15 holidays)


def _seed(engine: Engine, symbols: tuple[str, ...] = ("AAA", "BBB", "CCC")) -> dict[str, str]:
    with Session(engine) as db, db.begin():
        assets = {s: f.asset(db, s, "NYSE") for s in symbols}
        owner = f.user(db)
        pf = f.portfolio(db, owner, cash="1000")
        db.add(
            PortfolioHolding(
                portfolio_id=pf.id,
                asset_id=assets[symbols[0]].id,
                quantity=Decimal(2),
                average_price=Decimal(1),
            )
        )
        f.smallcase(db, {a: str(Decimal(100) / len(symbols)) for a in list(assets.values())[:1]})
        return {s: str(a.id) for s, a in assets.items()}


def _count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(PriceHistory)).scalar_one())


def _run(**kw: object):  # type: ignore[no-untyped-def]
    state = ingest_price_history(return_state=True, **kw)
    return state, state.result(raise_on_failure=False)


def test_ingest_rerun_backfill_and_revalue(flow_db: Engine) -> None:
    _seed(flow_db)
    syms = ["AAA", "BBB", "CCC"]
    state, data = _run(symbols=syms, start=date(2024, 1, 16), end=END, source="simulated")
    assert state.is_completed() and state.name == "Completed"
    assert data["totals"]["inserted"] == 3 * 12  # Jan 16..31: 12 sessions
    assert data["totals"]["failed"] == 0 and data["totals"]["missing_sessions"] == 0
    first = _count(flow_db)

    # an identical re-run writes nothing
    state, data = _run(symbols=syms, start=date(2024, 1, 16), end=END, source="simulated")
    assert data["totals"]["inserted"] == 0 and data["totals"]["updated"] == 0
    assert data["totals"]["unchanged"] == 3 * 12
    assert _count(flow_db) == first

    # a backfill of an earlier range works the same way, keeping what is there
    state, data = _run(symbols=syms, start=START, end=END, source="simulated")
    assert data["totals"]["inserted"] == 3 * 9  # Jan 2..12 (9 sessions)
    assert data["totals"]["unchanged"] == 3 * 12
    assert _count(flow_db) == 3 * 21

    # holdings and portfolios were revalued at the latest close
    with flow_db.connect() as conn:
        holding = conn.execute(select(PortfolioHolding)).one()
        close = conn.execute(
            select(PriceHistory.close_price).where(
                PriceHistory.asset_id == holding.asset_id, PriceHistory.price_date == END
            )
        ).scalar_one()
        assert holding.current_price == close
        assert holding.total_value == (2 * close).quantize(Decimal("0.0001"))
        total = conn.execute(select(Portfolio.total_value)).scalar_one()
        assert total == Decimal(1000) + holding.total_value
        audits = conn.execute(
            select(AuditLog.event_type, AuditLog.success, AuditLog.request_id)
        ).all()
    assert len(audits) == 3 and all(a.success and a.request_id for a in audits)


def test_incremental_run_continues_after_the_last_stored_bar(flow_db: Engine) -> None:
    _seed(flow_db, ("AAA",))
    _run(symbols=["AAA"], start=START, end=date(2024, 1, 12), source="simulated")
    _, data = _run(symbols=["AAA"], end=END, source="simulated")
    report = data["reports"][0]
    assert report["start"] == "2024-01-13" and report["inserted"] == 12
    assert _count(flow_db) == 21


def test_partial_failure_malformed_rows_and_unknown_symbols(
    flow_db: Engine, tmp_path: Path
) -> None:
    _seed(flow_db)
    (tmp_path / "AAA.csv").write_text(
        "Date,Open,High,Low,Close,Volume\n"
        "2024-01-02,10,11,9,10.5,100\n"
        "2024-01-03,10,9,11,10,100\n"  # high below low
        "2024-01-04,10,11,9,NaN,100\n"  # NaN close
        "2024-01-05,10,11,9,10,-5\n"  # negative volume
        "2024-01-08,10,11,9,10,100\n"
    )
    (tmp_path / "BBB.csv").write_text("Date,Open,High,Low,Close,Volume\n2024-01-02,1,2,1,2,5\n")
    # CCC.csv is missing: that symbol fails, the others go on
    state, data = _run(
        symbols=["AAA", "BBB", "CCC", "NOPE"],
        start=date(2024, 1, 2),
        end=date(2024, 1, 8),
        source="csv",
        source_options={"path": str(tmp_path)},
    )
    assert not state.is_failed() and state.name == "Partially Completed"
    assert "2 of 4 symbols failed" in state.message
    by_symbol = {r["symbol"]: r for r in data["reports"]}
    assert by_symbol["AAA"]["inserted"] == 2 and by_symbol["AAA"]["rejected"] == 3
    assert "high_below_low=1" in by_symbol["AAA"]["rejected_reasons"]
    assert by_symbol["AAA"]["missing_sessions"] == 3  # the rejected days are gaps too
    assert by_symbol["BBB"]["inserted"] == 1 and by_symbol["BBB"]["missing_sessions"] == 4
    assert by_symbol["CCC"]["error"] and by_symbol["NOPE"]["error"].startswith("unknown symbol")
    with flow_db.connect() as conn:
        audit = conn.execute(select(AuditLog)).one()
    assert audit.success is False and "CCC" in audit.error_message


def _closes(engine: Engine, asset_id: str) -> dict[date, Decimal]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(PriceHistory.price_date, PriceHistory.close_price).where(
                PriceHistory.asset_id == uuid.UUID(asset_id)
            )
        ).all()
    return dict(rows)


def test_a_split_rewrites_the_stored_history_and_is_reported(flow_db: Engine) -> None:
    ids = _seed(flow_db, ("AAA", "BBB"))
    _run(symbols=["AAA", "BBB"], start=START, end=date(2024, 1, 12), source="simulated")
    before = _closes(flow_db, ids["AAA"])
    split = {"split": {"AAA": [{"date": "2024-01-22", "ratio": 2}]}}
    _, data = _run(symbols=["AAA", "BBB"], end=END, source="simulated", source_options=split)
    by_symbol = {r["symbol"]: r for r in data["reports"]}
    assert by_symbol["AAA"]["rewritten"] is True and by_symbol["AAA"]["updated"] == 9
    assert by_symbol["BBB"]["rewritten"] is False and by_symbol["BBB"]["updated"] == 0
    assert by_symbol["AAA"]["inserted"] == by_symbol["BBB"]["inserted"] == 12
    after = _closes(flow_db, ids["AAA"])
    for day, close in before.items():  # adjusted history: every earlier close halved
        assert abs(after[day] - close / 2) <= Decimal("0.01"), day


@pytest.mark.parametrize("bad", [{"symbols": ["AAA"], "source": "nonsense"}])
def test_unknown_source_fails_every_symbol_clearly(flow_db: Engine, bad: dict[str, object]) -> None:
    _seed(flow_db, ("AAA",))
    state, data = _run(start=START, end=END, **bad)
    assert state.is_failed()
    assert "nonsense" in data["reports"][0]["error"]
