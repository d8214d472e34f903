"""Position-snapshot benchmark: the flow's write path against one plain INSERT ... SELECT.

Steps (all on PostgreSQL, by default in a throwaway database ``saras_bench_<pid>``):

1. build the ledger in bulk (COPY): ``--investments`` active investments (plus 5% closed ones
   the snapshot must skip), each holding ``--assets`` NYSE assets bought by an invest run, 20% of
   them with a rebalance run that buys more of one asset and sells part of another; closes for
   the sessions before the snapshot day. One position per active investment and asset:
   100,000 x 20 = 2,000,000 rows;
2. **ours**: ``saras.repositories.positions.write_snapshot``, the function the flow's task calls,
   into the empty ``user_smallcase_position_history``, committed; timed;
3. **limit**: one plain ``INSERT ... SELECT`` computing the same rows from the same ledger
   (no conflict handling, no counting, no change detection; ids with the same in-SQL UUIDv7,
   which measured faster than random v4 ids because the primary key index fills in order)
   into an identical empty table: ``CREATE TABLE ... (LIKE user_smallcase_position_history
   INCLUDING ALL)`` *plus the real table's three foreign keys* (LIKE does not copy foreign
   keys, and their per-row checks are most of the cost of writing this table); timed;
4. the same limit into the LIKE copy without foreign keys, to show what those checks cost;
5. both tables must hold exactly the same rows; ratio = ours / limit (target <= 1.5), in wall
   time and in CPU time (steadier on a busy machine);
6. identical re-run of (2): nothing may be inserted, updated or rewritten (row versions counted
   by ``xmin``), and the table may not grow.

``--repeat N`` runs steps 2-4 N times (tables emptied in between) and keeps each one's best.

Run ``python benchmarks/snapshot_positions.py`` (full size, several minutes) or ``--smoke``
(200 x 5, seconds). Exit status: 0 when every correctness check held (performance targets are
reported as PASS/MISS; ``--strict`` turns a MISS into exit status 2), 1 when a check failed.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from sqlalchemy import Connection, Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from uuid_utils.compat import uuid7

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import throwaway

from saras.db import make_engine
from saras.marketdata import calendars
from saras.repositories import positions as repo

DEFAULT_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
SNAPSHOT_DATE = date(2025, 6, 13)  # a Friday, an NYSE session
SMALLCASES = 10
CLOSED_SHARE = 0.05  # extra closed investments the snapshot must skip
REBALANCED_SHARE = 0.2  # investments that also have a rebalance run (a buy and a sell)
RATIO_TARGET = 1.5
CHUNK = 100_000
HISTORY = "user_smallcase_position_history"
LIMIT_FK = "bench_position_history_limit"
LIMIT_NO_FK = "bench_position_history_nofk"
VALUE_COLUMNS = (
    "investment_id, asset_id, broker_connection_id, quantity, average_price, market_value, "
    "unrealized_pnl, snapshot_date"
)
FOREIGN_KEYS = (
    ("investment_id", "user_smallcase_investments"),
    ("asset_id", "assets"),
    ("broker_connection_id", "user_broker_connections"),
)


# --- output and measurement -------------------------------------------------------------------


def out(line: str = "") -> None:
    """Print one result line right away."""
    print(line, flush=True)


def verdict(ok: bool) -> str:
    """Return PASS or MISS."""
    return "PASS" if ok else "MISS"


def load_note() -> str:
    """Describe the machine's load: figures from a busy machine are noisy."""
    cpus = os.cpu_count() or 1
    one, five, _ = os.getloadavg()
    busy = "  (busy: other work competes for the CPUs, figures are noisy)" if five > 0.5 else ""
    return f"{cpus} CPUs, load average {one:.2f} (1 min) {five:.2f} (5 min){busy}"


class CpuMeter:
    """CPU seconds used by the server backends of the benchmark database (read from /proc).

    Only for a server on this machine; elsewhere the server's CPU is unknown (None).
    """

    def __init__(self, engine: Engine, database: str):
        self.engine = engine
        self.database = database
        self.tick = float(os.sysconf("SC_CLK_TCK")) if hasattr(os, "sysconf") else 100.0
        self._start: dict[int, float] | None = None

    def _read(self) -> dict[int, float] | None:
        with self.engine.connect() as conn:
            pids = list(
                conn.execute(
                    text("SELECT pid FROM pg_stat_activity WHERE datname = :d"),
                    {"d": self.database},
                ).scalars()
            )
        used = {}
        for pid in pids:
            try:
                comm = Path(f"/proc/{pid}/comm").read_text().strip()
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                return None
            if not comm.startswith("postgres"):
                return None
            fields = stat[stat.rindex(")") + 2 :].split()
            used[int(pid)] = (int(fields[11]) + int(fields[12])) / self.tick
        return used

    def start(self) -> None:
        """Remember the CPU time used so far."""
        self._start = self._read()

    def stop(self) -> float | None:
        """Return the backends' CPU seconds since ``start``."""
        after = self._read()
        if after is None or self._start is None:
            return None
        return sum(v - self._start.get(pid, 0.0) for pid, v in after.items())


@dataclass
class Timing:
    """Best wall and CPU seconds over the repeats of one measurement."""

    wall: float = float("inf")
    cpu: float | None = None

    def add(self, wall: float, cpu: float | None) -> None:
        """Keep the best of each."""
        self.wall = min(self.wall, wall)
        if cpu is not None:
            self.cpu = cpu if self.cpu is None else min(self.cpu, cpu)


def checkpoint(engine: Engine) -> None:
    """Flush dirty buffers before a timed phase, so phases do not pay for each other."""
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("CHECKPOINT"))
    except DBAPIError as exc:  # not a superuser (nor pg_checkpoint): measure without it
        out(f"note: CHECKPOINT skipped ({type(exc).__name__})")


# --- the database -----------------------------------------------------------------------------


@dataclass
class Database:
    """The database the benchmark runs in, and how to clean it up."""

    url: str
    engine: Engine
    admin_url: str | None  # set when the database is throwaway (dropped at the end)
    name: str

    def close(self) -> None:
        """Drop a throwaway database; in a given one, drop the benchmark's own tables."""
        if self.admin_url is None:
            with self.engine.begin() as conn:
                conn.execute(text(f"DROP TABLE IF EXISTS {LIMIT_FK}, {LIMIT_NO_FK}"))
            self.engine.dispose()
            return
        self.engine.dispose()
        throwaway.drop_database(self.admin_url, self.name)


def open_database(database_url: str | None, admin_url: str) -> Database:
    """Use ``database_url`` as is, or create and migrate a throwaway database on ``admin_url``."""
    if database_url:
        engine = make_engine(database_url)
        return Database(database_url, engine, None, make_url(database_url).database or "")
    url, name = throwaway.create_database(admin_url)
    return Database(url, make_engine(url), admin_url, name)


# --- building the ledger ----------------------------------------------------------------------


def _copy(conn: Connection, table: str, columns: str, lines: Iterator[str]) -> int:
    """COPY text lines into a table in chunks; return the number of rows."""
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    n = 0
    with cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
        buffer = io.StringIO()
        for n, line in enumerate(lines, start=1):
            buffer.write(line)
            if n % CHUNK == 0:
                copy.write(buffer.getvalue().encode())
                buffer = io.StringIO()
        copy.write(buffer.getvalue().encode())
    return n


def _ts(value: datetime) -> str:
    return value.isoformat()


def build(engine: Engine, investments: int, assets_per: int, seed: int = 7) -> dict[str, int]:
    """Write users, connections, smallcases, assets, prices, investments, runs and orders."""
    rng = random.Random(seed)
    n_sc = min(SMALLCASES, investments)
    n_users = -(-investments // n_sc)
    now = datetime(2025, 6, 13, 22, 0, tzinfo=UTC)
    stamp = _ts(now)
    counts: dict[str, int] = {}
    with engine.begin() as conn:
        users = [str(uuid7()) for _ in range(n_users)]
        connections = [str(uuid7()) for _ in range(n_users)]
        portfolios = [str(uuid7()) for _ in range(n_users)]
        counts["users"] = _copy(
            conn,
            "users",
            "id, email, first_name, created_at, updated_at",
            (f"{u}\tb{i}@bench.example\tBench\t{stamp}\t{stamp}\n" for i, u in enumerate(users)),
        )
        _copy(
            conn,
            "user_broker_connections",
            "id, user_id, broker_type, alias, paper_trading, status, connection_metadata, "
            "created_at, updated_at",
            (
                f"{c}\t{u}\tpaper\tpaper_primary\tt\tactive\t{{}}\t{stamp}\t{stamp}\n"
                for c, u in zip(connections, users, strict=True)
            ),
        )
        _copy(
            conn,
            "portfolios",
            "id, user_id, name, currency, cash_balance, total_value, created_at, updated_at",
            (
                f"{p}\t{u}\tbench\tUSD\t0\t0\t{stamp}\t{stamp}\n"
                for p, u in zip(portfolios, users, strict=True)
            ),
        )
        smallcases = [str(uuid7()) for _ in range(n_sc)]
        assets = [[str(uuid7()) for _ in range(assets_per)] for _ in range(n_sc)]
        _copy(
            conn,
            "smallcases",
            "id, name, is_active, created_at, updated_at",
            (f"{s}\tbench-{i}\tt\t{stamp}\t{stamp}\n" for i, s in enumerate(smallcases)),
        )
        counts["assets"] = _copy(
            conn,
            "assets",
            "id, symbol, asset_type, exchange, currency, created_at, updated_at",
            (
                f"{a}\tB{i:02d}{j:03d}\tequity\tNYSE\tUSD\t{stamp}\t{stamp}\n"
                for i, row in enumerate(assets)
                for j, a in enumerate(row)
            ),
        )
        weight = Decimal(100) / assets_per
        _copy(
            conn,
            "smallcase_constituents",
            "id, smallcase_id, asset_id, weight_percentage, created_at, updated_at",
            (
                f"{uuid7()}\t{s}\t{a}\t{weight:.4f}\t{stamp}\t{stamp}\n"
                for s, row in zip(smallcases, assets, strict=True)
                for a in row
            ),
        )
        days = calendars.sessions("NYSE", SNAPSHOT_DATE - timedelta(days=10), SNAPSHOT_DATE)
        base_price = {a: Decimal(rng.randint(1000, 50000)) / 100 for row in assets for a in row}
        counts["prices"] = _copy(
            conn,
            "price_history",
            "id, asset_id, open_price, high_price, low_price, close_price, volume, price_date, "
            "created_at",
            (
                f"{uuid7()}\t{a}\t{p}\t{p + 1}\t{p - 1}\t{p + k}\t1000\t{d}\t{stamp}\n"
                for a, p in base_price.items()
                for k, d in enumerate(days)
            ),
        )

        closed = round(investments * CLOSED_SHARE)
        inv_ids = [str(uuid7()) for _ in range(investments + closed)]
        # active ones: user j // n_sc holds smallcases 0..n_sc-1 (one open investment per user
        # and smallcase); closed ones are spread over the users again
        owner = [j // n_sc if j < investments else (j - investments) % n_users for j in
                 range(len(inv_ids))]  # fmt: skip
        counts["investments"] = _copy(
            conn,
            "user_smallcase_investments",
            "id, user_id, smallcase_id, portfolio_id, broker_connection_id, investment_amount, "
            "status, execution_mode, created_at, updated_at",
            (
                f"{inv}\t{users[owner[j]]}\t{smallcases[j % n_sc]}\t{portfolios[owner[j]]}\t"
                f"{connections[owner[j]]}\t10000\t{'active' if j < investments else 'closed'}\t"
                f"paper\t{stamp}\t{stamp}\n"
                for j, inv in enumerate(inv_ids)
            ),
        )
        counts["active_investments"] = investments
        runs: list[tuple[str, str, str, str]] = []  # run id, investment, connection, type
        for j, inv in enumerate(inv_ids):
            runs.append((str(uuid7()), inv, connections[owner[j]], "invest"))
            if rng.random() < REBALANCED_SHARE:
                runs.append((str(uuid7()), inv, connections[owner[j]], "rebalance"))
        counts["runs"] = _copy(
            conn,
            "smallcase_execution_runs",
            "id, investment_id, broker_connection_id, run_type, status, created_at, updated_at",
            (f"{r}\t{i}\t{c}\t{t}\tcompleted\t{stamp}\t{stamp}\n" for r, i, c, t in runs),
        )
        inv_index = {inv: j for j, inv in enumerate(inv_ids)}
        counts["orders"] = _copy(
            conn,
            "smallcase_execution_orders",
            "id, execution_run_id, asset_id, side, quantity, price, order_type, status, "
            "broker_order_id, order_metadata, created_at, updated_at",
            _orders(runs, inv_index, assets, base_price, n_sc, rng, now),
        )
    vacuum(engine)
    return counts


def vacuum(engine: Engine) -> None:
    """VACUUM ANALYZE every table (fresh statistics and visibility map for the planner)."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))


def _orders(
    runs: list[tuple[str, str, str, str]],
    inv_index: dict[str, int],
    assets: list[list[str]],
    base_price: dict[str, Decimal],
    n_sc: int,
    rng: random.Random,
    now: datetime,
) -> Iterator[str]:
    """Yield order lines: an invest run buys every asset; a rebalance buys one, sells one."""
    held: dict[tuple[str, str], tuple[Decimal, Decimal]] = {}
    for run_id, inv, _conn, run_type in runs:
        sc_assets = assets[inv_index[inv] % n_sc]
        if run_type == "invest":
            filled_at = now - timedelta(days=30)
            plan = [("buy", a, Decimal(rng.randint(1, 40))) for a in sc_assets]
        else:
            filled_at = now - timedelta(days=2)
            buy, sell = rng.sample(sc_assets, 2)
            plan = [("buy", buy, Decimal(rng.randint(1, 10)))]
            plan.append(("sell", sell, min(Decimal(1), held[(inv, sell)][0] - 1)))
        for side, asset, qty in plan:
            if qty <= 0:
                continue
            price = base_price[asset] + Decimal(rng.randint(-100, 100)) / 100
            pos_qty, pos_avg = held.get((inv, asset), (Decimal(0), Decimal(0)))
            if side == "buy":
                new_qty = pos_qty + qty
                pos_avg = ((pos_qty * pos_avg + qty * price) / new_qty).quantize(Decimal("1e-6"))
                pos_qty = new_qty
            else:
                pos_qty -= qty
            held[(inv, asset)] = (pos_qty, pos_avg)
            order_id = uuid7()
            metadata = json.dumps(
                {
                    "filled_quantity": str(qty),
                    "average_fill_price": str(price),
                    "fees": "0",
                    "filled_at": filled_at.isoformat(),
                    "position_quantity": str(pos_qty),
                    "position_average_price": str(pos_avg),
                }
            )
            stamp = _ts(filled_at)
            yield (
                f"{order_id}\t{run_id}\t{asset}\t{side}\t{qty}\t\\N\tmarket\tfilled\t"
                f"B-{order_id.hex}\t{metadata}\t{stamp}\t{stamp}\n"
            )


# --- the measurements -------------------------------------------------------------------------


def limit_sql(table: str) -> str:
    """Return the plain INSERT ... SELECT computing the snapshot rows from the ledger."""
    return f"""
    INSERT INTO {table} (id, {VALUE_COLUMNS}, created_at)
    SELECT {repo.UUIDV7_SQL}, p.investment_id, p.asset_id, p.broker_connection_id, p.quantity,
           p.average_price, round(p.quantity * c.close_price, 4),
           round((c.close_price - p.average_price) * p.quantity, 4), :day, now()
    FROM (
        SELECT i.id AS investment_id, o.asset_id, i.broker_connection_id,
               round(sum(CASE WHEN o.side = 'sell' THEN -f.filled ELSE f.filled END), 9)
                   AS quantity,
               round((max(ARRAY[extract(epoch FROM f.filled_at), f.average_price]))[2], 6)
                   AS average_price
        FROM user_smallcase_investments i
        JOIN smallcase_execution_runs r ON r.investment_id = i.id
        JOIN smallcase_execution_orders o ON o.execution_run_id = r.id
        CROSS JOIN LATERAL (
            SELECT (o.order_metadata ->> 'filled_quantity')::numeric AS filled,
                   coalesce((o.order_metadata ->> 'filled_at')::timestamptz, o.updated_at)
                       AS filled_at,
                   (o.order_metadata ->> 'position_average_price')::numeric AS average_price
        ) f
        WHERE i.status = 'active' AND f.filled > 0 AND f.filled_at < :cutoff
        GROUP BY i.id, o.asset_id
    ) p
    LEFT JOIN (
        SELECT a.id AS asset_id, (
            SELECT ph.close_price FROM price_history ph
            WHERE ph.asset_id = a.id AND ph.price_date <= :d
            ORDER BY ph.price_date DESC LIMIT 1
        ) AS close_price
        FROM assets a
    ) c ON c.asset_id = p.asset_id
    WHERE p.quantity <> 0
    """


def create_limit_tables(engine: Engine) -> None:
    """Create the two empty copies of the position history (with and without foreign keys)."""
    with engine.begin() as conn:
        for table in (LIMIT_FK, LIMIT_NO_FK):
            conn.execute(text(f"DROP TABLE IF EXISTS {table}"))
            conn.execute(text(f"CREATE TABLE {table} (LIKE {HISTORY} INCLUDING ALL)"))
        for column, target in FOREIGN_KEYS:
            conn.execute(
                text(f"ALTER TABLE {LIMIT_FK} ADD FOREIGN KEY ({column}) REFERENCES {target} (id)")
            )


def empty_tables(engine: Engine) -> None:
    """Empty the position history and both copies between repeats."""
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {HISTORY}, {LIMIT_FK}, {LIMIT_NO_FK}"))


def run_ours(engine: Engine, meter: CpuMeter) -> tuple[repo.SnapshotCounts, float, float | None]:
    """Time the flow's write path (committed)."""
    checkpoint(engine)
    meter.start()
    began = time.perf_counter()
    with engine.begin() as conn:
        counts = repo.write_snapshot(conn, SNAPSHOT_DATE)
    return counts, time.perf_counter() - began, meter.stop()


def run_limit(engine: Engine, meter: CpuMeter, table: str) -> tuple[int, float, float | None]:
    """Time the plain INSERT ... SELECT into ``table`` (committed)."""
    checkpoint(engine)
    meter.start()
    began = time.perf_counter()
    with engine.begin() as conn:
        rows = conn.execute(
            text(limit_sql(table)),
            {
                "day": repo.snapshot_timestamp(SNAPSHOT_DATE),
                "cutoff": repo.fills_cutoff(SNAPSHOT_DATE),
                "d": SNAPSHOT_DATE,
            },
        ).rowcount
    return int(rows), time.perf_counter() - began, meter.stop()


def differing_rows(engine: Engine, table: str) -> int:
    """Count rows in one table and not the other (both ways) over the snapshot's values."""
    with engine.connect() as conn:
        return int(
            conn.execute(
                text(
                    f"SELECT (SELECT count(*) FROM (SELECT {VALUE_COLUMNS} FROM {HISTORY} "
                    f"EXCEPT ALL SELECT {VALUE_COLUMNS} FROM {table}) a) + "
                    f"(SELECT count(*) FROM (SELECT {VALUE_COLUMNS} FROM {table} "
                    f"EXCEPT ALL SELECT {VALUE_COLUMNS} FROM {HISTORY}) b)"
                )
            ).scalar_one()
        )


def table_size(engine: Engine) -> int:
    """Return pg_total_relation_size of the position history."""
    with engine.connect() as conn:
        return int(conn.execute(text(f"SELECT pg_total_relation_size('{HISTORY}')")).scalar_one())


def current_xid(engine: Engine) -> int:
    """Return the current transaction id (32-bit), to find rows written after this point."""
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT txid_current() % 4294967296")).scalar_one())


def rows_written_since(engine: Engine, xid: int) -> int:
    """Count position-history row versions created by transactions after ``xid``."""
    with engine.connect() as conn:
        return int(
            conn.execute(
                text(
                    f"SELECT count(*) FROM {HISTORY} "
                    "WHERE age(xmin) < age(CAST(CAST(:x AS text) AS xid))"
                ),
                {"x": xid},
            ).scalar_one()
        )


def rows_locked(engine: Engine) -> int:
    """Count position-history rows carrying a locker or deleter (ON CONFLICT locks the rows)."""
    with engine.connect() as conn:
        return int(
            conn.execute(
                text(f"SELECT count(*) FROM {HISTORY} WHERE xmax <> CAST('0' AS xid)")
            ).scalar_one()
        )


def fmt_cpu(cpu: float | None) -> str:
    """Describe server CPU seconds."""
    return "server CPU unknown" if cpu is None else f"{cpu:.2f} CPU-s in PostgreSQL"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--investments", type=int, default=100_000, help="active investments")
    p.add_argument("--assets", type=int, default=20, help="assets held per investment")
    p.add_argument(
        "--database-url",
        default=None,
        help="an existing, empty database migrated to head (it keeps the ledger built in it; "
        "default: a throwaway database created on --admin-url and dropped at the end)",
    )
    p.add_argument(
        "--admin-url",
        default=os.environ.get("SARAS_BENCH_ADMIN_URL")
        or os.environ.get("SARAS_TEST_PG_URL")
        or DEFAULT_ADMIN_URL,
        help="server URL used to create/drop the throwaway database",
    )
    p.add_argument("--repeat", type=int, default=1, help="runs of ours and the limit (best kept)")
    p.add_argument("--smoke", action="store_true", help="200 investments x 5 assets, in seconds")
    p.add_argument("--no-verify", action="store_true", help="skip the row-by-row comparison")
    p.add_argument("--strict", action="store_true", help="exit 2 when a target is missed")
    args = p.parse_args(argv)
    if args.smoke:
        args.investments, args.assets = 200, 5
    if min(args.investments, args.assets, args.repeat) < 1:
        p.error("--investments, --assets and --repeat must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; return the process exit status."""
    args = parse_args(argv)
    expected = args.investments * args.assets
    problems: list[str] = []
    misses: list[str] = []
    db = open_database(args.database_url, args.admin_url)
    try:
        engine = db.engine
        with engine.connect() as conn:
            if conn.execute(text(f"SELECT count(*) FROM {HISTORY}")).scalar_one():
                raise SystemExit(f"{HISTORY} is not empty: the benchmark needs an empty table")
        out(
            f"database  {make_url(db.url).render_as_string()}  "
            f"({'throwaway' if db.admin_url else 'given'})"
        )
        out(f"machine   {load_note()}")
        out(
            f"workload  {args.investments:,} active investments x {args.assets} assets = "
            f"{expected:,} positions on {SNAPSHOT_DATE}"
        )
        began = time.perf_counter()
        built = build(engine, args.investments, args.assets)
        out(
            f"build     {built['orders']:,} orders in {built['runs']:,} runs of "
            f"{built['investments']:,} investments ({built['active_investments']:,} active), "
            f"{built['prices']:,} closes: {time.perf_counter() - began:.1f} s (COPY)"
        )

        meter = CpuMeter(engine, db.name)
        create_limit_tables(engine)
        ours, limit, nofk = Timing(), Timing(), Timing()
        for attempt in range(args.repeat):
            if attempt:
                empty_tables(engine)
            counts, wall, cpu = run_ours(engine, meter)
            ours.add(wall, cpu)
            if (counts.inserted, counts.positions) != (expected, expected):
                problems.append(
                    f"ours wrote {counts.inserted:,} of {counts.positions:,} positions, "
                    f"expected {expected:,}"
                )
            for table, timing in ((LIMIT_FK, limit), (LIMIT_NO_FK, nofk)):
                rows, wall, cpu = run_limit(engine, meter, table)
                timing.add(wall, cpu)
                if rows != expected:
                    problems.append(f"the limit wrote {rows:,} rows into {table}, not {expected:,}")
        if not args.no_verify:
            for table in (LIMIT_FK, LIMIT_NO_FK):
                if differing := differing_rows(engine, table):
                    problems.append(f"{differing:,} rows differ between {HISTORY} and {table}")

        best = f" (best of {args.repeat})" if args.repeat > 1 else ""
        for label, timing, what in (
            ("ours", ours, "repositories.positions.write_snapshot into the empty history"),
            ("limit", limit, "one INSERT ... SELECT into LIKE ... INCLUDING ALL + the 3 FKs"),
            ("no-FK", nofk, "the same into the LIKE copy alone, which has no foreign keys"),
        ):
            out(
                f"{label:<9} {expected:>11,} rows  {timing.wall:8.2f} s  "
                f"{expected / timing.wall:>9,.0f} rows/s  {fmt_cpu(timing.cpu)}{best}  ({what})"
            )
        ratio = ours.wall / limit.wall
        ratio_ok = ratio <= RATIO_TARGET
        out(
            f"ratio     {ratio:.2f}  (ours / limit, wall time; target <= {RATIO_TARGET})  "
            f"{verdict(ratio_ok)}"
        )
        if not ratio_ok:
            misses.append("ratio")
        if ours.cpu is not None and limit.cpu and nofk.cpu:
            out(
                f"cpu ratio {ours.cpu / limit.cpu:.2f}  (ours / limit in server CPU-s: steadier "
                "on a busy machine)"
            )
            out(
                f"no-FK     ours / no-FK limit {ours.wall / nofk.wall:.2f} wall, "
                f"{ours.cpu / nofk.cpu:.2f} CPU: the foreign-key checks alone cost "
                f"{limit.cpu - nofk.cpu:.2f} of the limit's {limit.cpu:.2f} CPU-s  "
                f"{verdict(ours.wall / nofk.wall <= RATIO_TARGET)} (reference)"
            )

        size_before = table_size(engine)
        xid = current_xid(engine)
        checkpoint(engine)
        began = time.perf_counter()
        with engine.begin() as conn:
            rerun = repo.write_snapshot(conn, SNAPSHOT_DATE)
        rerun_wall = time.perf_counter() - began
        rewritten = rows_written_since(engine, xid)
        locked = rows_locked(engine)
        size_after = table_size(engine)
        rerun_ok = (
            rerun.inserted == rerun.updated == rerun.removed == rewritten == locked == 0
            and rerun.unchanged == expected
            and size_after == size_before
        )
        out(
            f"re-run    {rerun.inserted + rerun.updated:>11,} rows  {rerun_wall:8.2f} s  "
            f"({rerun.inserted} inserted, {rerun.updated} updated, {rerun.unchanged:,} "
            f"unchanged; {rewritten} row versions written, {locked} locked; table "
            f"{size_after - size_before:+,} bytes; target 0)  {verdict(rerun_ok)}"
        )
        if not rerun_ok:
            problems.append("the identical re-run wrote rows or grew the table")
    finally:
        db.close()

    out(f"machine   {load_note()} at the end")
    out()
    for problem in problems:
        out(f"FAILED: {problem}")
    if misses:
        out(f"targets missed: {', '.join(misses)}")
    if problems:
        return 1
    return 2 if misses and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
