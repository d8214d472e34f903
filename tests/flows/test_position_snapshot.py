"""The position-snapshot flow end to end under Prefect's test harness, on both backends."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar, cast

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

import flows.position_snapshot as flow_module
from flows.position_snapshot import snapshot_positions
from models import (
    Asset,
    AuditLog,
    PriceHistory,
    SmallcaseExecutionOrder,
    SmallcaseExecutionRun,
    UserBrokerConnection,
    UserSmallcaseInvestment,
    UserSmallcasePositionHistory,
)
from saras.brokers import registry
from saras.brokers.base import (
    AccountInfo,
    BrokerCredentials,
    BrokerPosition,
    ConnectionConfig,
    OrderRequest,
)
from saras.brokers.errors import RetryableBrokerError
from saras.brokers.paper import PaperBroker
from saras.domain.enums import OrderSide
from saras.secrets import get_secret_box
from saras.services.admin import add_connection
from saras.services.brokers import open_broker
from tasks.snapshots import reconcile_connection
from tests import factories as f
from tests.fakes.fake_kite import FakeKite

DAY = date(2024, 3, 15)  # a Friday: an NYSE and NSE session
FILLED_AT = datetime(2024, 3, 14, 15, tzinfo=UTC)


# --- seeding -----------------------------------------------------------------------------------


def _close(db: Session, asset: Asset, day: date, price: str) -> None:
    p = Decimal(price)
    db.add(
        PriceHistory(
            asset_id=asset.id,
            price_date=day,
            open_price=p,
            high_price=p,
            low_price=p,
            close_price=p,
            volume=Decimal(1),
        )
    )


def _assets(engine: Engine, closes: dict[str, str | None], exchange: str = "NYSE") -> None:
    with Session(engine) as db, db.begin():
        for symbol, price in closes.items():
            asset = f.asset(db, symbol, exchange)
            if price is not None:
                _close(db, asset, DAY, price)


def _investor(engine: Engine, broker_type: str = "paper", **kw: Any) -> tuple[str, str]:
    """Create a user with one connection and one active investment; return their ids."""
    with Session(engine) as db, db.begin():
        owner = f.user(db)
        if broker_type == "zerodha":
            conn = add_connection(
                db, get_secret_box(generate=True), owner, "zerodha", alias=kw["alias"], **kw["add"]
            )
        else:
            conn = f.connection(db, owner, broker_type, alias=kw.get("alias"))
        inv = f.investment(db, owner, f.smallcase(db, {}), f.portfolio(db, owner), conn)
        return str(inv.id), str(conn.id)


def _asset_of(db: Session, symbol: str) -> Asset:
    """Return the asset named ``SYMBOL`` (unique symbol) or ``SYMBOL@EXCHANGE``."""
    name, _, exchange = symbol.partition("@")
    query = select(Asset).where(Asset.symbol == name)
    if exchange:
        query = query.where(Asset.exchange == exchange)
    return db.scalars(query).one()


def _ledger(engine: Engine, investment_id: str, fills: Sequence[tuple[str, str, str, str]]) -> None:
    """Write one completed run whose orders filled as given: (symbol, side, quantity, price).

    ``symbol`` may name its exchange, ``INFY@NSE``.
    """
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
        held: dict[str, tuple[Decimal, Decimal]] = {}
        for symbol, side, qty, price in fills:
            asset = _asset_of(db, symbol)
            q, p = Decimal(qty), Decimal(price)
            have, avg = held.get(symbol, (Decimal(0), Decimal(0)))
            if side == "buy":
                avg = ((have * avg + q * p) / (have + q)).quantize(Decimal("1e-6"))
                have += q
            else:
                have -= q
            held[symbol] = (have, avg)
            db.add(
                SmallcaseExecutionOrder(
                    execution_run_id=run.id,
                    asset_id=asset.id,
                    side=side,
                    quantity=q,
                    status="filled",
                    order_metadata={
                        "filled_quantity": qty,
                        "average_fill_price": price,
                        "fees": "0",
                        "filled_at": FILLED_AT.isoformat(),
                        "position_quantity": str(have),
                        "position_average_price": str(avg),
                    },
                )
            )


def _trade_on_paper(
    engine: Engine, investment_id: str, connection_id: str, orders: Sequence[tuple[str, str]]
) -> None:
    """Buy through the paper broker, then record exactly what it filled in our ledger."""
    with Session(engine) as db:
        row = db.get(UserBrokerConnection, uuid.UUID(connection_id))
        assert row is not None
        db.expunge(row)
    broker = open_broker(engine, row)
    fills = []
    for symbol, qty in orders:
        placed = broker.place_order(
            OrderRequest(f"t-{uuid.uuid4().hex[:12]}", symbol, OrderSide.BUY, Decimal(qty))
        )
        assert placed.filled_quantity == Decimal(qty)
        fills.append((symbol, "buy", qty, str(placed.average_fill_price)))
    _ledger(engine, investment_id, fills)


def _run(**kw: Any) -> tuple[Any, Any]:
    state = snapshot_positions(return_state=True, **kw)
    return state, state.result(raise_on_failure=False)


def _history(engine: Engine) -> dict[tuple[str, str], Any]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                UserSmallcasePositionHistory.investment_id,
                Asset.symbol,
                UserSmallcasePositionHistory.quantity,
                UserSmallcasePositionHistory.market_value,
                UserSmallcasePositionHistory.snapshot_date,
                UserSmallcasePositionHistory.broker_connection_id,
            ).join(Asset, Asset.id == UserSmallcasePositionHistory.asset_id)
        ).all()
    return {(str(r.investment_id), r.symbol): r for r in rows}


def _audits(engine: Engine, event_type: str) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(select(AuditLog).where(AuditLog.event_type == event_type)))


def _artifact_rows(state: Any, key: str) -> list[dict[str, Any]]:
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])
            )
        )
    (artifact,) = [a for a in artifacts if a.key == key]
    data = artifact.data
    return cast(list[dict[str, Any]], json.loads(data) if isinstance(data, str) else data)


def _q(value: Any) -> Decimal:
    return Decimal(str(value)).quantize(Decimal("1e-9"))


# --- the tests ---------------------------------------------------------------------------------


def test_snapshot_rerun_and_reconciliation_with_a_drifted_book(flow_db: Engine) -> None:
    _assets(flow_db, {"AAA": "100", "BBB": "50"})
    matched_inv, matched_conn = _investor(flow_db, alias="paper_matched")
    drifted_inv, drifted_conn = _investor(flow_db, alias="paper_drifted")
    _trade_on_paper(flow_db, matched_inv, matched_conn, [("AAA", "3"), ("BBB", "2.5")])
    _trade_on_paper(flow_db, drifted_inv, drifted_conn, [("AAA", "5")])
    # trades made outside Saras: more AAA, and a symbol we never bought
    with Session(flow_db) as db:
        row = db.get(UserBrokerConnection, uuid.UUID(drifted_conn))
        assert row is not None
        db.expunge(row)
    drifted = open_broker(flow_db, row)
    assert isinstance(drifted, PaperBroker)
    drifted.set_position("AAA", Decimal(7))
    drifted.set_position("ZZZ", Decimal(3), Decimal(10))

    state, data = _run(snapshot_date=DAY)

    assert state.is_completed() and state.name == "Partially Completed", state.message
    totals = data["totals"]
    assert (totals["investments"], totals["positions"], totals["inserted"]) == (2, 3, 3)
    assert (totals["connections"], totals["connections_failed"], data["stale"]) == (2, 0, [])
    outside = "nothing of ours explains it: traded outside Saras (accept it to book it)"
    expected = [
        {"connection": "paper_drifted", "kind": "position", "symbol": "AAA", "exchange": "NYSE",
         "currency": "", "ours": "5", "broker": "7", "difference": "2",
         "classification": "external_trade", "detail": outside},
        {"connection": "paper_drifted", "kind": "position", "symbol": "ZZZ", "exchange": "",
         "currency": "", "ours": "0", "broker": "3", "difference": "3",
         "classification": "external_trade", "detail": outside},
    ]  # fmt: skip
    assert data["differences"] == expected
    assert _artifact_rows(state, "reconciliation") == expected
    assert "2 reconciliation differences on paper_drifted" in state.message
    statuses = {c["connection"]: c["status"] for c in data["connections"]}
    assert statuses == {"paper_matched": "matched", "paper_drifted": "differences"}

    # our rows say what our ledger says: the broker's drift is not written over them
    rows = _history(flow_db)
    assert set(rows) == {(matched_inv, "AAA"), (matched_inv, "BBB"), (drifted_inv, "AAA")}
    assert _q(rows[(drifted_inv, "AAA")].quantity) == Decimal(5)
    assert str(rows[(drifted_inv, "AAA")].broker_connection_id) == drifted_conn
    assert Decimal(str(rows[(matched_inv, "BBB")].market_value)) == Decimal("125")
    assert rows[(matched_inv, "AAA")].snapshot_date.replace(tzinfo=UTC) == datetime(
        2024, 3, 15, tzinfo=UTC
    )
    (difference,) = _audits(flow_db, "reconciliation.difference")
    assert difference.success is False and difference.request_id is not None
    assert "paper_drifted" in difference.error_message and "ZZZ" in difference.error_message
    with Session(flow_db) as db:
        owner = db.scalar(
            select(UserBrokerConnection.user_id).where(
                UserBrokerConnection.id == uuid.UUID(drifted_conn)
            )
        )
    assert difference.user_id == owner
    (run_audit,) = _audits(flow_db, "flow.snapshot_positions")
    # a difference is never silent: the run is not a success
    assert run_audit.success is False and run_audit.request_id == difference.request_id

    # a re-run changes nothing
    state, data = _run(snapshot_date=DAY)
    totals = data["totals"]
    assert (totals["inserted"], totals["updated"], totals["unchanged"]) == (0, 0, 3)
    with flow_db.connect() as conn:
        count = conn.execute(select(func.count()).select_from(UserSmallcasePositionHistory))
        assert count.scalar_one() == 3
    assert len(_audits(flow_db, "flow.snapshot_positions")) == 2


class FlakyBroker:
    """A broker type registered by the test: its first two positions calls fail retryably."""

    broker_type = "flaky"
    calls: ClassVar[dict[str, int]] = {}

    def __init__(self, config: ConnectionConfig, credentials: BrokerCredentials, **_: Any):
        self.config = config

    def get_positions(self) -> list[BrokerPosition]:
        n = self.calls[self.config.connection_id] = self.calls.get(self.config.connection_id, 0) + 1
        if n <= 2:
            raise RetryableBrokerError("503 Service Unavailable", broker="flaky", status_code=503)
        return [BrokerPosition("INFY", Decimal(4))]

    def get_account(self) -> AccountInfo:
        return AccountInfo(cash=Decimal(1000), buying_power=Decimal(1000), currency="INR")


@pytest.fixture
def flaky_broker(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[FlakyBroker]]:
    registry.register("flaky", FlakyBroker)  # type: ignore[arg-type]  # positions only
    FlakyBroker.calls.clear()
    # the same task, without waiting between its retries
    monkeypatch.setattr(
        flow_module,
        "reconcile_connection",
        reconcile_connection.with_options(retry_delay_seconds=0),
    )
    yield FlakyBroker
    registry._registered.pop("flaky", None)


def test_an_expired_kite_token_is_reported_and_the_others_go_on(
    flow_db: Engine, flaky_broker: type[FlakyBroker]
) -> None:
    _assets(flow_db, {"INFY": "1500", "TCS": "3000"}, exchange="NSE")
    with FakeKite(prices={"INFY": "1500"}) as kite:
        kite_inv, kite_conn = _investor(
            flow_db,
            "zerodha",
            alias="kite_main",
            add={
                "api_key": kite.api_key,
                "credentials": {"access_token": kite.access_token},
                "metadata": kite.connection_metadata(),
            },
        )
        _ledger(flow_db, kite_inv, [("TCS", "buy", "1", "3000")])
        flaky_inv, flaky_conn = _investor(flow_db, "flaky", alias="flaky_main")
        _ledger(flow_db, flaky_inv, [("INFY", "buy", "4", "1500")])
        paper_inv, paper_conn = _investor(flow_db, alias="paper_main")
        _trade_on_paper(flow_db, paper_inv, paper_conn, [("TCS", "2")])
        kite.expire_token()

        state, data = _run(snapshot_date=DAY)

    assert state.is_completed() and state.name == "Partially Completed"
    assert "1 of 3 connections failed" in state.message and "kite_main" in state.message
    by_alias = {c["connection"]: c for c in data["connections"]}
    assert by_alias["kite_main"]["status"] == "failed"
    assert "kite_main" in by_alias["kite_main"]["error"]
    # failed in its batch, then in its own task, which Prefect retried: the third call worked
    assert by_alias["flaky_main"]["status"] == "matched"
    assert by_alias["paper_main"]["status"] == "matched"
    assert flaky_broker.calls == {flaky_conn: 3}
    assert data["differences"] == []
    # the snapshot itself was written for every investment, whatever their brokers said
    assert data["totals"]["positions"] == 3
    assert set(_history(flow_db)) == {(kite_inv, "TCS"), (flaky_inv, "INFY"), (paper_inv, "TCS")}
    with flow_db.connect() as conn:
        status = conn.execute(
            select(UserBrokerConnection.status).where(
                UserBrokerConnection.id == uuid.UUID(kite_conn)
            )
        ).scalar_one()
    assert status == "expired"  # the Kite adapter marked it
    (run_audit,) = _audits(flow_db, "flow.snapshot_positions")
    assert run_audit.success is False and "kite_main" in run_audit.error_message
    assert kite.access_token not in (state.message + json.dumps(data))

    # the next night an expired connection is reported without being contacted
    state, data = _run(snapshot_date=DAY)
    (kite_row,) = [c for c in data["connections"] if c["connection"] == "kite_main"]
    assert "expired: not contacted" in kite_row["error"]


def test_stale_and_missing_prices_are_reported(flow_db: Engine) -> None:
    _assets(flow_db, {"FRESH": "10", "NOCLOSE": None})
    with Session(flow_db) as db, db.begin():
        _close(db, f.asset(db, "OLD", "NYSE"), DAY - timedelta(days=7), "20")
    inv, _ = _investor(flow_db, alias="paper_main")
    _ledger(
        flow_db,
        inv,
        [("FRESH", "buy", "1", "9"), ("NOCLOSE", "buy", "2", "5"), ("OLD", "buy", "3", "19")],
    )

    state, data = _run(snapshot_date=DAY)

    assert state.name == "Partially Completed"
    assert "2 stale prices" in state.message
    assert "NOCLOSE (last close none)" in state.message and "OLD (last close 2024-03-08)" in (
        state.message
    )
    stale = {s["symbol"]: s for s in data["stale"]}
    assert set(stale) == {"NOCLOSE", "OLD"}
    assert stale["OLD"]["expected_session"] == "2024-03-15"
    assert _artifact_rows(state, "stale-prices") == data["stale"]
    rows = _history(flow_db)
    assert rows[(inv, "NOCLOSE")].market_value is None
    assert Decimal(str(rows[(inv, "OLD")].market_value)) == Decimal(60)  # the old close, flagged
    # the paper broker holds nothing: every symbol differs, and is reported, not a failure
    assert {d["symbol"] for d in data["differences"]} == {"FRESH", "NOCLOSE", "OLD"}


def test_one_symbol_on_two_exchanges_is_reconciled_as_two_assets(flow_db: Engine) -> None:
    _assets(flow_db, {"INFY": "1500"}, exchange="NSE")
    _assets(flow_db, {"INFY": "18"}, exchange="NYSE")
    inv, conn_id = _investor(flow_db, alias="paper_infy")
    _ledger(flow_db, inv, [("INFY@NSE", "buy", "5", "1500"), ("INFY@NYSE", "buy", "3", "18")])
    with Session(flow_db) as db:
        row = db.get(UserBrokerConnection, uuid.UUID(conn_id))
        assert row is not None
        db.expunge(row)
    broker = open_broker(flow_db, row)
    assert isinstance(broker, PaperBroker)
    # the broker holds the same 8 INFY, but 3 on NSE and 5 on NYSE
    broker.set_position("INFY", Decimal(3), Decimal(1500), exchange="NSE")
    broker.set_position("INFY", Decimal(5), Decimal(18), exchange="NYSE")

    state, data = _run(snapshot_date=DAY)

    rows = {(d["symbol"], d["exchange"]): (d["ours"], d["broker"]) for d in data["differences"]}
    assert rows == {("INFY", "NSE"): ("5", "3"), ("INFY", "NYSE"): ("3", "5")}
    assert state.name == "Partially Completed"
