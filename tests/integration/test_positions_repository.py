"""The position snapshot write and ledger reads, on PostgreSQL and SQLite."""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from models import (
    Asset,
    PriceHistory,
    SmallcaseExecutionOrder,
    SmallcaseExecutionRun,
    UserBrokerConnection,
    UserSmallcaseInvestment,
    UserSmallcasePositionHistory,
)
from saras.repositories import positions as repo
from saras.services.snapshots import expected_session, find_stale
from tests import factories as f

DAY = date(2024, 3, 15)  # a Friday: an NYSE and NSE session
SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "snapshot_positions.py"


def at(day: date, hour: int = 15) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


# --- ledger builders: runs and orders as execution records them -------------------------------


@dataclass
class Ledger:
    """Writes runs and filled orders with the metadata execution writes (average cost)."""

    db: Session
    book: dict[tuple[uuid.UUID, uuid.UUID], tuple[Decimal, Decimal]] = field(default_factory=dict)

    def run(self, inv: UserSmallcaseInvestment, run_type: str = "invest") -> SmallcaseExecutionRun:
        row = SmallcaseExecutionRun(
            investment_id=inv.id,
            broker_connection_id=inv.broker_connection_id,
            run_type=run_type,
            status="completed",
        )
        self.db.add(row)
        self.db.flush()
        return row

    def fill(
        self,
        run: SmallcaseExecutionRun,
        asset: Asset,
        side: str,
        qty: str,
        price: str,
        when: datetime,
        *,
        status: str = "filled",
        ordered: str | None = None,
    ) -> SmallcaseExecutionOrder:
        key = (run.investment_id, asset.id)
        held, average = self.book.get(key, (Decimal(0), Decimal(0)))
        q, p = Decimal(qty), Decimal(price)
        if side == "buy":
            average = ((held * average + q * p) / (held + q)).quantize(Decimal("1e-6"))
            held += q
        else:
            held -= q
        self.book[key] = (held, average)
        metadata = {
            "filled_quantity": qty,
            "average_fill_price": price,
            "fees": "0",
            "filled_at": when.isoformat(),
            "position_quantity": str(held),
            "position_average_price": str(average),
        }
        return self.order(run, asset, side, ordered or qty, status=status, metadata=metadata)

    def order(
        self,
        run: SmallcaseExecutionRun,
        asset: Asset,
        side: str,
        qty: str,
        *,
        status: str,
        metadata: dict[str, Any] | None = None,
    ) -> SmallcaseExecutionOrder:
        row = SmallcaseExecutionOrder(
            execution_run_id=run.id,
            asset_id=asset.id,
            side=side,
            quantity=Decimal(qty),
            status=status,
            order_metadata=metadata,
        )
        self.db.add(row)
        self.db.flush()
        return row


def close(db: Session, asset: Asset, day: date, price: str) -> None:
    p = Decimal(price)
    db.add(
        PriceHistory(
            asset_id=asset.id,
            price_date=day,
            open_price=p,
            high_price=p,
            low_price=p,
            close_price=p,
            volume=Decimal(100),
        )
    )
    db.flush()


def investment(db: Session, status: str = "active") -> UserSmallcaseInvestment:
    owner = f.user(db)
    conn = f.connection(db, owner)
    return f.investment(db, owner, f.smallcase(db, {}), f.portfolio(db, owner), conn, status=status)


def history(db: Session, day: date = DAY) -> dict[tuple[uuid.UUID, uuid.UUID], Any]:
    rows = db.execute(
        select(UserSmallcasePositionHistory).where(
            UserSmallcasePositionHistory.snapshot_date == repo.snapshot_timestamp(day)
        )
    ).scalars()
    return {(r.investment_id, r.asset_id): r for r in rows}


def write(db: Session, day: date = DAY) -> repo.SnapshotCounts:
    counts = repo.write_snapshot(db.connection(), day)
    db.expire_all()
    return counts


def q(value: Any, places: str) -> Decimal | None:
    return None if value is None else Decimal(str(value)).quantize(Decimal(places))


# --- the snapshot ------------------------------------------------------------------------------


def test_positions_are_valued_at_the_close(db: Session) -> None:
    ledger = Ledger(db)
    aaa, bbb = f.asset(db, "AAA", "NYSE"), f.asset(db, "BBB", "NYSE")
    inv = investment(db)
    invest = ledger.run(inv)
    ledger.fill(invest, aaa, "buy", "10", "100", at(DAY - timedelta(days=10)))
    ledger.fill(invest, bbb, "buy", "2.5", "40.123457", at(DAY - timedelta(days=10)))
    rebalance = ledger.run(inv, "rebalance")
    ledger.fill(rebalance, aaa, "buy", "5", "130", at(DAY - timedelta(days=3)))  # avg 110
    # cancelled after a partial fill: the fill counts; the average stays 110 on a sell
    ledger.fill(
        rebalance,
        aaa,
        "sell",
        "3",
        "140",
        at(DAY - timedelta(days=2)),
        status="cancelled",
        ordered="4",
    )
    ledger.order(rebalance, bbb, "sell", "1", status="rejected", metadata={"filled_quantity": "0"})
    ledger.order(rebalance, bbb, "buy", "1", status="planned")  # no fill, no metadata
    close(db, aaa, DAY - timedelta(days=1), "118")
    close(db, aaa, DAY, "120")
    close(db, aaa, DAY + timedelta(days=3), "999")  # after the day: not used
    close(db, bbb, DAY, "41")
    # investments that are not active are not snapshotted
    closed = investment(db, status="closed")
    ledger.fill(ledger.run(closed), aaa, "buy", "1", "100", at(DAY - timedelta(days=5)))

    counts = write(db)

    assert (counts.positions, counts.inserted, counts.updated, counts.unchanged) == (2, 2, 0, 0)
    assert counts.positions_by_asset == {aaa.id: 1, bbb.id: 1}
    assert counts.closes[aaa.id].close == Decimal("120")
    assert counts.closes[aaa.id].price_date == DAY
    rows = history(db)
    assert set(rows) == {(inv.id, aaa.id), (inv.id, bbb.id)}
    a, b = rows[(inv.id, aaa.id)], rows[(inv.id, bbb.id)]
    assert q(a.quantity, "1e-9") == Decimal("12")
    assert q(a.average_price, "1e-6") == Decimal("110")
    assert q(a.market_value, "1e-4") == Decimal("1440")
    assert q(a.unrealized_pnl, "1e-4") == Decimal("120")
    assert a.broker_connection_id == inv.broker_connection_id
    assert a.snapshot_date == datetime(2024, 3, 15, tzinfo=UTC)
    assert q(b.quantity, "1e-9") == Decimal("2.5")
    assert q(b.average_price, "1e-6") == Decimal("40.123457")
    assert q(b.market_value, "1e-4") == Decimal("102.5")
    # (41 - 40.123457) * 2.5 = 2.1913575, rounded half away from zero to 4 places
    assert q(b.unrealized_pnl, "1e-4") == Decimal("2.1914")
    uuid_version = a.id.version
    assert uuid_version == 7


def test_a_rerun_changes_nothing_and_changes_are_updated(db: Session) -> None:
    ledger = Ledger(db)
    aaa, bbb = f.asset(db, "AAA", "NYSE"), f.asset(db, "BBB", "NYSE")
    inv, other = investment(db), investment(db)
    run = ledger.run(inv)
    ledger.fill(run, aaa, "buy", "4", "10", at(DAY - timedelta(days=4)))
    ledger.fill(run, bbb, "buy", "6", "20", at(DAY - timedelta(days=4)))
    ledger.fill(ledger.run(other), aaa, "buy", "1", "11", at(DAY - timedelta(days=4)))
    close(db, aaa, DAY, "12")
    close(db, bbb, DAY, "21")
    write(db)
    before = {k: (r.id, r.created_at) for k, r in history(db).items()}
    ctids = _ctids(db)

    again = write(db)
    assert (again.inserted, again.updated, again.removed, again.unchanged) == (0, 0, 0, 3)
    if db.get_bind().dialect.name == "postgresql":  # the planner setting is the caller's again
        assert db.execute(text("SHOW enable_nestloop")).scalar_one() == "on"
    assert {k: (r.id, r.created_at) for k, r in history(db).items()} == before
    assert _ctids(db) == ctids  # PostgreSQL: no row rewritten nor locked (SQLite: n/a)

    # a new fill and a corrected close: only the rows they touch are updated
    ledger.fill(ledger.run(inv, "topup"), bbb, "buy", "2", "23", at(DAY - timedelta(days=1)))
    db.execute(
        update(PriceHistory)
        .where(PriceHistory.asset_id == aaa.id, PriceHistory.price_date == DAY)
        .values(close_price=Decimal("12.5"))
    )
    changed = write(db)
    assert (changed.inserted, changed.updated, changed.unchanged) == (0, 3, 0)
    rows = history(db)
    assert q(rows[(inv.id, bbb.id)].quantity, "1e-9") == Decimal(8)
    assert q(rows[(inv.id, bbb.id)].average_price, "1e-6") == Decimal("20.75")
    assert q(rows[(other.id, aaa.id)].market_value, "1e-4") == Decimal("12.5")
    assert {k: r.id for k, r in rows.items()} == {k: v[0] for k, v in before.items()}

    # selling everything removes the day's row: the day matches the ledger
    ledger.fill(ledger.run(inv, "exit"), aaa, "sell", "4", "12", at(DAY - timedelta(hours=12)))
    closed = write(db)
    assert (closed.removed, closed.positions, closed.unchanged) == (1, 2, 2)
    assert set(history(db)) == {(inv.id, bbb.id), (other.id, aaa.id)}
    assert write(db).removed == 0


def _ctids(db: Session) -> dict[str, str] | None:
    if db.get_bind().dialect.name != "postgresql":
        return None
    # ctid moves when a row is rewritten; xmax is set when a row is locked (as ON CONFLICT does)
    rows = db.execute(text("SELECT id, ctid, xmax FROM user_smallcase_position_history")).all()
    return {str(r[0]): f"{r[1]} {r[2]}" for r in rows}


def test_a_day_is_the_ledger_as_of_its_end(db: Session) -> None:
    ledger = Ledger(db)
    aaa = f.asset(db, "AAA", "NSE")
    inv = investment(db)
    run = ledger.run(inv)
    ledger.fill(run, aaa, "buy", "10", "100", at(DAY, 4))
    # the next day's fill, recorded before the earlier one: not part of DAY's snapshot
    later = ledger.run(inv, "topup")
    ledger.fill(later, aaa, "buy", "10", "200", at(DAY + timedelta(days=3), 4))
    close(db, aaa, DAY, "100")

    write(db)
    row = history(db)[(inv.id, aaa.id)]
    assert q(row.quantity, "1e-9") == Decimal(10) and q(row.average_price, "1e-6") == Decimal(100)
    monday = DAY + timedelta(days=3)
    write(db, monday)
    row = history(db, monday)[(inv.id, aaa.id)]
    assert q(row.quantity, "1e-9") == Decimal(20) and q(row.average_price, "1e-6") == Decimal(150)
    # valued at Friday's close (the latest on or before Monday): flagged stale by the service
    assert q(row.market_value, "1e-4") == Decimal(2000)


def test_the_average_price_is_the_latest_fills_whatever_the_row_order(db: Session) -> None:
    ledger = Ledger(db)
    aaa = f.asset(db, "AAA", "NYSE")
    inv = investment(db)
    run = ledger.run(inv)
    # the latest fill in time is written first, and its text sorts before the other's
    ledger.order(
        run,
        aaa,
        "buy",
        "2",
        status="filled",
        metadata={
            "filled_quantity": "2",
            "filled_at": "2024-03-13T22:00:00+00:00",
            "position_quantity": "5",
            "position_average_price": "12.4",
        },
    )
    ledger.order(
        run,
        aaa,
        "buy",
        "3",
        status="filled",
        metadata={
            "filled_quantity": "3",
            "filled_at": "2024-03-14T01:00:00+05:30",  # 2024-03-13 19:30 UTC: earlier
            "position_quantity": "3",
            "position_average_price": "10",
        },
    )
    close(db, aaa, DAY, "13")
    write(db)
    row = history(db)[(inv.id, aaa.id)]
    assert q(row.quantity, "1e-9") == Decimal(5)
    assert q(row.average_price, "1e-6") == Decimal("12.4")
    assert q(row.unrealized_pnl, "1e-4") == Decimal("3")


def test_no_close_leaves_value_and_pnl_empty(db: Session) -> None:
    ledger = Ledger(db)
    fresh, old, never = (f.asset(db, s, "NYSE") for s in ("FRESH", "OLD", "NEVER"))
    inv = investment(db)
    run = ledger.run(inv)
    for a in (fresh, old, never):
        ledger.fill(run, a, "buy", "2", "10", at(DAY - timedelta(days=20)))
    close(db, fresh, DAY, "11")
    close(db, old, DAY - timedelta(days=7), "9")

    counts = write(db)
    rows = history(db)
    assert q(rows[(inv.id, old.id)].market_value, "1e-4") == Decimal(18)  # the old close
    assert q(rows[(inv.id, old.id)].unrealized_pnl, "1e-4") == Decimal(-2)
    nothing = rows[(inv.id, never.id)]
    assert nothing.market_value is None and nothing.unrealized_pnl is None
    assert q(nothing.quantity, "1e-9") == Decimal(2)
    assert q(nothing.average_price, "1e-6") == Decimal(10)
    assert counts.closes[never.id].close is None and counts.closes[never.id].price_date is None
    assert write(db).unchanged == 3  # NULLs compare as equal: no rewrite

    # the service turns the closes into the stale report, by each exchange's calendar
    stale = find_stale(counts.closes, counts.positions_by_asset, DAY, at(DAY, 23))
    by_symbol = {s.symbol: s for s in stale}
    assert set(by_symbol) == {"OLD", "NEVER"}
    assert by_symbol["OLD"].last_close_date == DAY - timedelta(days=7)
    assert by_symbol["OLD"].expected_session == DAY
    assert by_symbol["NEVER"].last_close_date is None


def test_expected_session_follows_the_calendar() -> None:
    good_friday = date(2024, 3, 29)  # NYSE closed
    assert expected_session("NYSE", good_friday, at(good_friday, 23)) == date(2024, 3, 28)
    assert expected_session("NYSE", date(2024, 3, 16), at(date(2024, 3, 16))) == DAY  # Saturday
    # today's session is expected only once it has closed
    assert expected_session("NYSE", DAY, at(DAY, 15)) == date(2024, 3, 14)
    assert expected_session("NYSE", DAY, at(DAY, 21)) == DAY
    assert expected_session("NOWHERE", DAY, at(DAY)) is None


def test_malformed_ledger_metadata_fails_loudly(db: Session) -> None:
    ledger = Ledger(db)
    aaa = f.asset(db, "AAA", "NYSE")
    inv = investment(db)
    ledger.order(
        ledger.run(inv), aaa, "buy", "1", status="filled", metadata={"filled_quantity": "lots"}
    )
    with pytest.raises((repo.LedgerError, DBAPIError), match="lots"):
        repo.write_snapshot(db.connection(), DAY)


# --- reconciliation reads -----------------------------------------------------------------------


def test_ledger_quantities_per_connection_and_symbol(db: Session) -> None:
    ledger = Ledger(db)
    nse = f.asset(db, "INFY", "NSE")
    bse = f.asset(db, "INFY", "BSE")
    tcs = f.asset(db, "TCS", "NSE")
    owner = f.user(db)
    conn = f.connection(db, owner, alias="zerodha_primary")
    pf = f.portfolio(db, owner)
    first = f.investment(db, owner, f.smallcase(db, {}), pf, conn)
    exiting = f.investment(db, owner, f.smallcase(db, {}), pf, conn, status="exiting")
    closed = f.investment(db, owner, f.smallcase(db, {}), pf, conn, status="closed")
    ledger.fill(ledger.run(first), nse, "buy", "3", "1500", at(DAY))
    ledger.fill(ledger.run(first, "topup"), bse, "buy", "2", "1500", at(DAY))
    ledger.fill(ledger.run(exiting), tcs, "buy", "5", "3000", at(DAY))
    run = ledger.run(closed)
    ledger.fill(run, tcs, "buy", "1", "3000", at(DAY))
    ledger.fill(run, tcs, "sell", "1", "3100", at(DAY))
    lonely = f.connection(db, owner, alias="unused")

    quantities = repo.ledger_quantities_by_connection(db.connection(), [conn.id, lonely.id])
    # an asset is a (symbol, exchange) pair: INFY on NSE and INFY on BSE are not summed
    assert quantities == {
        conn.id: {
            ("INFY", "NSE"): Decimal(3),
            ("INFY", "BSE"): Decimal(2),
            ("TCS", "NSE"): Decimal(5),
        },
        lonely.id: {},
    }

    listed = repo.connections_with_active_investments(db.connection())
    assert [(c.connection_id, c.alias, c.active_investments) for c in listed] == [
        (conn.id, "zerodha_primary", 1)
    ]
    assert repo.count_active_investments(db.connection()) == 1
    assert db.get(UserBrokerConnection, conn.id) is not None


# --- the benchmark -----------------------------------------------------------------------------


@pytest.mark.postgres
def test_benchmark_smoke(pg_server: Any) -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--admin-url", pg_server.admin_url],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert re.search(r"^ours\s+1,000 rows\s+[\d.]+ s", out, re.M), out
    assert re.search(r"^ratio\s+\d+\.\d\d\s", out, re.M), out
    assert re.search(
        r"^re-run\s.*0 inserted, 0 updated, 1,000 unchanged; 0 row versions", out, re.M
    )
    assert "FAILED" not in out
    name = re.search(r"^database\s+\S+/(saras_bench_\d+)\s", out, re.M)
    assert name, out
    with pg_server._admin.connect() as conn:
        left = conn.execute(
            text("SELECT count(*) FROM pg_database WHERE datname = :n"), {"n": name.group(1)}
        ).scalar_one()
    assert left == 0
