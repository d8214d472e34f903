"""Corporate actions and reconciliation end to end on PostgreSQL.

A split (AAA 4:1), a split with a fractional entitlement paid as cash in lieu (BBB 3:2, the way
Yahoo reports an Indian 1:2 bonus issue), a dividend (CCC) and a trade made outside Saras (DDD
sold at the broker) each go through ingestion (the real yfinance against a local Yahoo that
speaks the chart API's ``events``), the nightly snapshot (ledger rows, the paper broker's own
book, reconciliation) and the next rebalance (dry run), ending with ledger == broker.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from flows.position_snapshot import snapshot_positions
from flows.price_history import ingest_price_history
from flows.rebalance import rebalance_smallcase
from models import (
    Asset,
    CorporateAction,
    SmallcaseExecutionOrder,
    SmallcaseExecutionRun,
    TradingTransaction,
    UserBrokerConnection,
    UserSmallcaseInvestment,
)
from saras.brokers.base import OrderRequest
from saras.brokers.paper import PaperBroker
from saras.cli import app
from saras.domain.enums import OrderSide
from saras.marketdata import calendars, registry
from saras.repositories.positions import ledger_quantities_by_connection
from saras.services.brokers import open_broker
from tests import factories as f

# --- a local Yahoo -----------------------------------------------------------------------------


def _fakes() -> Any:
    import importlib.util
    import sys

    name = "saras_tests_marketdata_fakes"
    if name not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "marketdata" / "fakes.py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture
def yahoo(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    """A local Yahoo behind the source name ``localyahoo`` (the real yfinance source)."""
    import yfinance as yf

    from saras.marketdata.yfinance_source import YFinanceSource

    fakes = _fakes()
    yf.set_tz_cache_location(str(tmp_path / "yf-cache"))
    server = fakes.FakeYahoo().start()

    class LocalYahoo(YFinanceSource):
        def __init__(self, options: Mapping[str, Any] | None = None, **kw: Any) -> None:
            session = fakes.LocalYahooSession(server.url)
            super().__init__({"session": session, "threads": 1, "max_retries": 0}, **kw)

    real = registry.source_class
    monkeypatch.setattr(
        registry,
        "source_class",
        lambda name: LocalYahoo if name == "localyahoo" else real(name),
    )
    try:
        yield server
    finally:
        server.stop()


# --- the market --------------------------------------------------------------------------------

NOW = datetime.now(UTC)
SESSIONS = calendars.sessions(
    "NYSE",
    calendars.last_completed_session("NYSE", NOW) - timedelta(days=30),
    calendars.last_completed_session("NYSE", NOW),
)
LAST = SESSIONS[-1]
ACTION_DAY = SESSIONS[-2]  # the split and the bonus; the dividend's ex-date is the last session
BEFORE = SESSIONS[-3]  # the last day ingested before the actions
PRICES = {"AAA": Decimal(100), "BBB": Decimal(48), "CCC": Decimal(100), "DDD": Decimal(20)}
WEIGHTS = {"AAA": "20", "BBB": "40", "CCC": "40"}  # DDD: held from an earlier composition
BOUGHT = {"AAA": "15", "BBB": "61", "CCC": "29", "DDD": "11"}


def _bars(symbol: str, days: Sequence[date], factor: Mapping[date, float]) -> list[tuple[Any, ...]]:
    out = []
    for day in days:
        price = float(PRICES[symbol]) / factor.get(day, 1.0)
        out.append((day.isoformat(), price, price, price, price, 1000))
    return out


def _serve(server: Any, adjusted: bool) -> None:
    """Serve the history: before the actions (unadjusted), or after them (adjusted, events)."""
    days = [d for d in SESSIONS if adjusted or d <= BEFORE]
    # adjusted: the days before the split at the post-split price, like the days after it
    split = {d: 4.0 for d in days} if adjusted else {}
    bonus = {d: 1.5 for d in days} if adjusted else {}
    # after a dividend, Yahoo scales the earlier closes by (1 - dividend / close)
    dividend = {d: 1 / 0.995 for d in days if d < LAST} if adjusted else {}
    server.add_symbol(
        "AAA",
        _bars("AAA", days, split),
        splits={ACTION_DAY.isoformat(): (4, 1)} if adjusted else None,
    )
    server.add_symbol(
        "BBB",
        _bars("BBB", days, bonus),
        splits={ACTION_DAY.isoformat(): (3, 2)} if adjusted else None,
    )
    server.add_symbol(
        "CCC", _bars("CCC", days, dividend), dividends={LAST.isoformat(): 0.5} if adjusted else None
    )
    server.add_symbol("DDD", _bars("DDD", days, {}))


# --- the platform ------------------------------------------------------------------------------


def _platform(engine: Engine) -> tuple[str, str]:
    """One investor on a whole-share paper account; return (investment id, connection id)."""
    with Session(engine) as db, db.begin():
        assets = {s: f.asset(db, s, "NYSE") for s in PRICES}
        owner = f.user(db)
        conn = f.connection(
            db, owner, "paper", alias="paper_ca", connection_metadata={"paper_fractional": "false"}
        )
        sc = f.smallcase(db, {assets[s]: w for s, w in WEIGHTS.items()}, name="Actions")
        spent = sum(Decimal(q) * PRICES[s] for s, q in BOUGHT.items())
        inv = f.investment(db, owner, sc, f.portfolio(db, owner), conn, amount=str(spent))
        return str(inv.id), str(conn.id)


def _broker(engine: Engine, connection_id: str) -> PaperBroker:
    with Session(engine) as db:
        row = db.get(UserBrokerConnection, uuid.UUID(connection_id))
        assert row is not None
        db.expunge(row)
    broker = open_broker(engine, row)
    assert isinstance(broker, PaperBroker)
    return broker


def _buy(engine: Engine, investment_id: str, connection_id: str) -> None:
    """Buy through the paper broker, and record exactly what it filled, as execution does."""
    broker = _broker(engine, connection_id)
    filled_at = datetime.combine(BEFORE, datetime.min.time(), tzinfo=UTC) + timedelta(hours=15)
    with Session(engine) as db, db.begin():
        inv = db.get(UserSmallcaseInvestment, uuid.UUID(investment_id))
        assert inv is not None
        run = SmallcaseExecutionRun(
            investment_id=inv.id,
            broker_connection_id=inv.broker_connection_id,
            run_type="invest",
            status="completed",
        )
        db.add(run)
        db.flush()
        for symbol, qty in BOUGHT.items():
            asset = db.scalars(select(Asset).where(Asset.symbol == symbol)).one()
            placed = broker.place_order(
                OrderRequest(f"buy-{symbol}", symbol, OrderSide.BUY, Decimal(qty), exchange="NYSE")
            )
            price = placed.average_fill_price
            assert placed.filled_quantity == Decimal(qty) and price == PRICES[symbol]
            db.add(
                SmallcaseExecutionOrder(
                    execution_run_id=run.id,
                    asset_id=asset.id,
                    side="buy",
                    quantity=Decimal(qty),
                    status="filled",
                    order_metadata={
                        "filled_quantity": qty,
                        "average_fill_price": str(price),
                        "fees": "0",
                        "filled_at": filled_at.isoformat(),
                        "position_quantity": qty,
                        "position_average_price": str(price),
                    },
                )
            )


def _ingest(**kw: Any) -> dict[str, Any]:
    state: Any = ingest_price_history(
        symbols=list(PRICES), source="localyahoo", return_state=True, **kw
    )
    assert state.is_completed(), state.message
    data: dict[str, Any] = state.result()
    return {r["symbol"]: r for r in data["reports"]}


def _snapshot(day: date) -> tuple[Any, dict[str, Any]]:
    state: Any = snapshot_positions(snapshot_date=day, return_state=True)
    return state, state.result(raise_on_failure=False)


def _dry_run() -> tuple[Any, dict[str, Any]]:
    state: Any = rebalance_smallcase("Actions", dry_run=True, return_state=True)
    plan: dict[str, Any] = state.result(raise_on_failure=False)["plan"]
    return state, plan


def _ledger(engine: Engine, connection_id: str) -> dict[str, Decimal]:
    key = uuid.UUID(connection_id)
    with engine.connect() as conn:
        book = ledger_quantities_by_connection(conn, [key])[key]
    return {s: q for (s, _), q in book.items() if q}


def _book(engine: Engine, connection_id: str) -> dict[str, Decimal]:
    return {p.symbol: p.quantity for p in _broker(engine, connection_id).get_positions()}


def _rows(engine: Engine, kind: str) -> list[tuple[str, Decimal, Decimal | None]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(Asset.symbol, TradingTransaction.quantity, TradingTransaction.price)
            .join(Asset, Asset.id == TradingTransaction.asset_id)
            .where(TradingTransaction.transaction_type == kind)
            .order_by(Asset.symbol)
        ).all()
    return [(s, Decimal(str(q)), None if p is None else Decimal(str(p))) for s, q, p in rows]


def test_split_bonus_dividend_and_an_external_trade_reach_the_ledger(
    pg_flow_db: Engine, yahoo: Any
) -> None:
    engine = pg_flow_db
    inv, conn_id = _platform(engine)
    _serve(yahoo, adjusted=False)
    reports = _ingest(start=SESSIONS[0], end=BEFORE)
    assert all(r["error"] == "" and r["actions"] == 0 for r in reports.values()), reports
    _buy(engine, inv, conn_id)

    # the market moves: a split, a 3:2 split, a dividend; and DDD is sold outside Saras
    _serve(yahoo, adjusted=True)
    _broker(engine, conn_id).set_position("DDD", Decimal(0), exchange="NYSE")
    reports = _ingest(end=LAST)
    assert reports["AAA"]["rewritten"] and reports["AAA"]["actions"] == 1
    assert reports["BBB"]["rewritten"] and reports["BBB"]["actions"] == 1
    assert reports["CCC"]["actions"] == 1
    with engine.connect() as conn:
        actions = {
            (s, t): (r, c, st)
            for s, t, r, c, st in conn.execute(
                select(
                    Asset.symbol,
                    CorporateAction.action_type,
                    CorporateAction.ratio,
                    CorporateAction.cash_amount,
                    CorporateAction.status,
                ).join(Asset, Asset.id == CorporateAction.asset_id)
            )
        }
    assert set(actions) == {("AAA", "split"), ("BBB", "split"), ("CCC", "dividend")}
    assert Decimal(str(actions[("AAA", "split")][0])) == 4
    assert Decimal(str(actions[("BBB", "split")][0])) == Decimal("1.5")
    assert Decimal(str(actions[("CCC", "dividend")][1])) == Decimal("0.5")
    assert {a[2] for a in actions.values()} == {"detected"}

    # a plan made now would trade on a ledger that has not followed the market: refused
    state, plan = _dry_run()
    assert plan["summary"]["skipped_by_reason"] == {"corporate_action_pending": 1}
    assert plan["summary"]["orders"] == 0
    assert "AAA (NYSE): split (ratio 4)" in state.message  # shown to the analyst

    # the nightly snapshot applies the actions to the ledger; the paper broker applied them too
    state, data = _snapshot(LAST)
    assert state.name == "Partially Completed", state.message
    assert data["totals"]["corporate_actions_applied"] == 3
    (difference,) = data["differences"]
    assert (difference["symbol"], difference["ours"], difference["broker"]) == ("DDD", "11", "0")
    assert difference["classification"] == "external_trade"
    assert _rows(engine, "split") == [
        ("AAA", Decimal(60), Decimal(25)),
        ("BBB", Decimal(91), Decimal(32)),
    ]
    # 61 x 1.5 = 91.5: half a share the whole-share account cannot hold, paid at the close
    assert _rows(engine, "cash_in_lieu") == [("BBB", Decimal("0.5"), Decimal(32))]
    assert _rows(engine, "dividend") == [("CCC", Decimal(29), Decimal("0.5"))]
    book = _book(engine, conn_id)
    assert book == {"AAA": Decimal(60), "BBB": Decimal(91), "CCC": Decimal(29)}
    assert _ledger(engine, conn_id) == {**book, "DDD": Decimal(11)}

    # the difference stops the next plan, with its reason
    state, plan = _dry_run()
    assert plan["summary"]["skipped_by_reason"] == {"reconciliation_difference": 1}
    assert any("DDD" in p for p in plan["summary"]["problems"])

    # accepted by an explicit command (never silently)
    runner = CliRunner()
    listed = runner.invoke(app, ["reconcile", "differences", "--json"])
    assert listed.exit_code == 0, listed.output
    (open_difference,) = json.loads(listed.output)
    refused = runner.invoke(app, ["reconcile", "accept", "not-an-id"])
    assert refused.exit_code == 2
    accepted = runner.invoke(app, ["reconcile", "accept", open_difference["id"], "--by", "ana"])
    assert accepted.exit_code == 0, accepted.output
    again = runner.invoke(app, ["reconcile", "accept", open_difference["id"]])
    assert again.exit_code == 2 and "not open" in again.output

    # the next night: everything matches, cash included; applying again changed nothing
    with engine.connect() as conn:
        rows_before = conn.execute(select(func.count()).select_from(TradingTransaction)).scalar()
    state, data = _snapshot(LAST + timedelta(days=1))
    assert state.name == "Completed", state.message
    assert data["differences"] == [] and data["totals"]["corporate_actions_applied"] == 0
    with engine.connect() as conn:
        rows_after = conn.execute(select(func.count()).select_from(TradingTransaction)).scalar()
    assert rows_after == rows_before
    assert _ledger(engine, conn_id) == _book(engine, conn_id)
    broker_cash = _broker(engine, conn_id).get_account().cash
    assert broker_cash == Decimal(100000) - sum(
        Decimal(q) * PRICES[s] for s, q in BOUGHT.items()
    ) + Decimal("16") + Decimal("14.5")

    # and the plan trades nothing it should not: no sale, no AAA bought back after its split
    state, plan = _dry_run()
    assert state.is_completed(), state.message
    assert plan["summary"]["skipped_by_reason"].get("reconciliation_difference") is None
    assert plan["summary"]["skipped_by_reason"].get("corporate_action_pending") is None
    sides = {(a["symbol"], a["side"]) for a in plan["assets"]}
    assert not any(side == "sell" for _, side in sides), plan["assets"]
    assert ("AAA", "buy") not in sides and ("BBB", "buy") not in sides, plan["assets"]
    assert Decimal(plan["summary"]["est_buy_value"]) <= Decimal("30.5")  # its cash: 16 + 14.5
