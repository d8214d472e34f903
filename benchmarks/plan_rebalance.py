"""Benchmark: planning and writing a rebalance of one large smallcase against a raw COPY.

Builds, in a throwaway PostgreSQL database (COPY, no ORM), one smallcase of ``--constituents``
fractionable NYSE assets at equal weights, with fresh closes for the last NYSE sessions, and
``--investments`` active investments, each with its own user, paper connection
(``paper_fractional``), portfolio and one completed ``invest`` run whose filled buys hold only
half of the constituents (deliberately off target) and leave about 10% in cash. A rebalance then
sells every held leg and buys every missing one: ``constituents`` orders per investment
(100,000 x 20 = 2,000,000 at full size). Then it measures

(a) **ours**: what the rebalance flow's ``plan_runs`` task does, in one transaction:
    ``saras.services.rebalance.plan_and_write(engine, sc, run_type=REBALANCE,
    require_approval=False, check_brokers=False)``, timed end to end with commit. It streams:
    ``PLAN_CHUNK`` investments at a time are read, planned and written (runs and orders COPYed)
    under one planning lock. A breakdown comes from timing the service's own helpers while it
    runs (load investments, load state, prices, ``plan_batch``, row building, supersede, COPY);
    **planner** is ``plan_batch`` alone (the vectorised planner); **peak RSS** is the process's
    peak resident memory during (a) (``VmHWM``, reset just before; target < 1 GiB);
(b) **raw COPY**: the same order rows, exported from the table after (a) (outside any timer),
    COPYed once into an identical empty table
    (``CREATE TABLE bench_orders (LIKE smallcase_execution_orders INCLUDING ALL)``): the
    database's limit. The same COPY with the real table's two foreign keys is shown as well;
(c) ratio = ours seconds / raw COPY seconds; target <= 3;
(d) the approval path (informative): ``recompute_plan_hash`` (set-based) on a sample of runs
    and on every run, checked against the hash the plan was written with;
(e) how many Prefect task runs the whole rebalance flow creates for this plan (constant).

Usage::

    python benchmarks/plan_rebalance.py                     # 100,000 investments x 20
    python benchmarks/plan_rebalance.py --smoke             # 500 x 20, seconds
    python benchmarks/plan_rebalance.py --investments 20000 --constituents 30

Exit status: 0 when every correctness check held (targets are PASS/MISS; ``--strict`` turns a
MISS into 2), 1 when a check failed (for example ``write_plan`` raising as shipped).
"""

from __future__ import annotations

import argparse
import functools
import io
import os
import random
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import ROUND_DOWN, Decimal
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from uuid_utils.compat import uuid7

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere in the clone
    sys.path.insert(0, str(ROOT))

import throwaway  # noqa: E402 - benchmarks/throwaway.py, beside this script

from models.base import utcnow  # noqa: E402
from saras.db import make_engine  # noqa: E402
from saras.domain.enums import (  # noqa: E402
    RunType,
)
from saras.domain.orders import RunEvent  # noqa: E402
from saras.domain.plan import Plan  # noqa: E402
from saras.marketdata import calendars  # noqa: E402
from saras.repositories import runs as runs_repo  # noqa: E402
from saras.services import rebalance as service  # noqa: E402

DEFAULT_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
EXCHANGE = "NYSE"
RATIO_TARGET = 3.0
RSS_TARGET_MIB = 1024  # peak resident memory while planning and writing
TASK_RUN_BUDGET = 1000  # "in the hundreds at most"
CHUNK = 100_000  # rows per COPY write while building
FILE_CHUNK = 1 << 20
RAW_TABLE = "bench_orders"
RAW_FK_TABLE = "bench_orders_fk"
ORDER_COLUMNS = (
    "id",
    "execution_run_id",
    "asset_id",
    "side",
    "quantity",
    "price",
    "order_type",
    "status",
    "created_at",
    "updated_at",
)

F = TypeVar("F", bound=Callable[..., Any])


# --- small helpers ----------------------------------------------------------------------------


def out(line: str = "") -> None:
    """Print one result line right away."""
    print(line, flush=True)


def verdict(ok: bool) -> str:
    """Return PASS or MISS."""
    return "PASS" if ok else "MISS"


def fmt_int(n: float) -> str:
    """Format a count with thousands separators."""
    return f"{round(n):,}"


def peak_rss_mib() -> float:
    """Return this process's peak resident set size (since the last reset), in MiB."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024.0 if sys.platform != "darwin" else peak / 2**20


def reset_peak_rss() -> bool:
    """Reset the peak resident set size (Linux: ``echo 5 > /proc/self/clear_refs``)."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def load_note() -> str:
    """Describe the machine's load: figures from a busy machine are noisy."""
    cpus = os.cpu_count() or 1
    one, five, _ = os.getloadavg()
    busy = "  (busy: other work competes for the CPUs, figures are noisy)" if five > 0.5 else ""
    return f"{cpus} CPUs, load average {one:.2f} (1 min) {five:.2f} (5 min){busy}"


# --- timing the service's steps ---------------------------------------------------------------


@dataclass
class Phases:
    """Wall time spent inside the service's helpers while the timed code runs."""

    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, name: str, seconds: float) -> None:
        """Add ``seconds`` under ``name``."""
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def wrap(self, name: str | Callable[..., str], fn: F) -> F:
        """Return ``fn`` timed under ``name`` (or under ``name(*args)``)."""

        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                label = name if isinstance(name, str) else name(*args)
                self.add(label, time.perf_counter() - began)

        return timed  # type: ignore[return-value]

    def get(self, name: str) -> float:
        """Return the seconds recorded under ``name`` (0 when none)."""
        return self.seconds.get(name, 0.0)


@contextmanager
def instrumented(phases: Phases | None) -> Iterator[None]:
    """Time the helpers ``plan_smallcase`` and ``write_plan`` call through the module's globals."""
    if phases is None:
        yield
        return
    probes: list[tuple[Any, str, str | Callable[..., str]]] = [
        (service, "load_investments", "load investments"),
        (service, "load_state", "load state"),
        (service, "latest_prices", "latest prices"),
        (service, "check_prices", "check prices"),
        (service, "plan_batch", "plan_batch"),
        (service, "_collect", "build rows + hashes"),
        (service, "_write_runs", "write total"),
        (runs_repo, "lock_planning", "planning lock"),
        (runs_repo, "open_runs", "open runs"),
        (
            runs_repo,
            "move_runs",
            lambda _c, _r, event, **_: (
                "supersede" if event is RunEvent.SUPERSEDED else "state-table moves"
            ),
        ),
        (service, "_copy", lambda _cursor, table, *_: f"COPY {table}"),
    ]
    saved = []
    for module, attr, name in probes:
        original = getattr(module, attr, None)
        if original is None:  # the service changed shape: skip that probe
            continue
        saved.append((module, attr, original))
        setattr(module, attr, phases.wrap(name, original))
    try:
        yield
    finally:
        for module, attr, original in saved:
            setattr(module, attr, original)


# --- database ---------------------------------------------------------------------------------


@dataclass
class Database:
    """The database the benchmark runs in, and how to clean it up."""

    url: str
    engine: Engine
    admin_url: str | None  # set when the database is throwaway (dropped at the end)
    name: str
    created: dict[str, Any] = field(default_factory=dict)

    def close(self) -> None:
        """Drop a throwaway database; in a given one, remove what the benchmark created."""
        if self.admin_url is None:
            try:
                with self.engine.begin() as conn:
                    conn.execute(text(f"DROP TABLE IF EXISTS {RAW_TABLE}, {RAW_FK_TABLE}"))
                    if self.created:
                        _delete_created(conn, self.created)
            finally:
                self.engine.dispose()
            return
        self.engine.dispose()
        throwaway.drop_database(self.admin_url, self.name)


def _delete_created(conn: Connection, created: dict[str, Any]) -> None:
    """Delete the benchmark's rows from a given database, children first."""
    sc = {"sc": created["smallcase"]}
    inv = "SELECT id FROM user_smallcase_investments WHERE smallcase_id = :sc"
    runs = f"SELECT id FROM smallcase_execution_runs WHERE investment_id IN ({inv})"
    conn.execute(
        text(f"DELETE FROM smallcase_execution_orders WHERE execution_run_id IN ({runs})"), sc
    )
    conn.execute(text(f"DELETE FROM smallcase_execution_runs WHERE investment_id IN ({inv})"), sc)
    conn.execute(text("DELETE FROM user_smallcase_investments WHERE smallcase_id = :sc"), sc)
    conn.execute(text("DELETE FROM smallcase_constituents WHERE smallcase_id = :sc"), sc)
    conn.execute(text("DELETE FROM smallcases WHERE id = :sc"), sc)
    ids = {"ids": created["users"]}
    users = "= ANY(CAST(:ids AS uuid[]))"
    conn.execute(text(f"DELETE FROM portfolios WHERE user_id {users}"), ids)
    conn.execute(text(f"DELETE FROM user_broker_connections WHERE user_id {users}"), ids)
    conn.execute(text(f"DELETE FROM users WHERE id {users}"), ids)
    assets = {"ids": created["assets"]}
    conn.execute(text(f"DELETE FROM price_history WHERE asset_id {users}"), assets)
    conn.execute(text(f"DELETE FROM assets WHERE id {users}"), assets)


def open_database(database_url: str | None, admin_url: str) -> Database:
    """Use ``database_url`` as is, or create and migrate a throwaway database on ``admin_url``."""
    if database_url:
        engine = make_engine(database_url)
        return Database(database_url, engine, None, make_url(database_url).database or "")
    url, name = throwaway.create_database(admin_url)
    return Database(url, make_engine(url), admin_url, name)


def checkpoint(engine: Engine) -> None:
    """Flush dirty buffers before a timed phase, so phases do not pay for each other."""
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("CHECKPOINT"))
    except DBAPIError as exc:  # not a superuser (nor pg_checkpoint): measure without it
        out(f"note: CHECKPOINT skipped ({type(exc).__name__})")


def vacuum_analyze(engine: Engine) -> None:
    """VACUUM ANALYZE (fresh statistics and visibility map for the planner)."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))


# --- building the platform --------------------------------------------------------------------


def _copy_lines(conn: Connection, table: str, columns: str, lines: Iterable[str]) -> int:
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


@dataclass
class Built:
    """What the builder created."""

    smallcase_id: str
    asset_ids: list[str]
    symbols: list[str]
    user_ids: list[str]
    counts: dict[str, int]
    seconds: float


def build(engine: Engine, investments: int, constituents: int, seed: int = 11) -> Built:
    """Create assets, prices, one smallcase and its investments with off-target holdings."""
    began = time.perf_counter()
    rng = random.Random(seed)
    tag = f"{os.getpid() % 100000:05d}"
    now = utcnow()
    stamp = now.isoformat()
    last = calendars.last_completed_session(EXCHANGE, now)
    days = calendars.sessions(EXCHANGE, last - timedelta(days=10), last)[-5:]
    counts: dict[str, int] = {}
    n = constituents
    symbols = [f"RB{j:04d}" for j in range(n)]
    asset_ids = [str(uuid7()) for _ in range(n)]
    prices = [Decimal(rng.randint(2_000, 40_000)) / 100 for _ in range(n)]
    # equal weights with 4 decimals; the last one takes the remainder so they sum to 100
    base_weight = (Decimal(100) / n).quantize(Decimal("0.0001"), rounding=ROUND_DOWN)
    weights = [base_weight] * (n - 1) + [Decimal(100) - base_weight * (n - 1)]
    held_legs = max(1, n // 2)

    with engine.begin() as conn:
        taken = conn.execute(
            text("SELECT count(*) FROM assets WHERE exchange = :x AND symbol = ANY(:s)"),
            {"x": EXCHANGE, "s": symbols},
        ).scalar_one()
        if taken:
            raise SystemExit(
                f"{taken} benchmark symbols (RB0000...) already exist in this database"
            )
        counts["assets"] = _copy_lines(
            conn,
            "assets",
            "id, symbol, name, asset_type, exchange, currency, metadata, created_at, updated_at",
            (
                f"{a}\t{s}\tBench {s}\tequity\t{EXCHANGE}\tUSD\t"
                f'{{"fractionable": true}}\t{stamp}\t{stamp}\n'
                for a, s in zip(asset_ids, symbols, strict=True)
            ),
        )
        counts["prices"] = _copy_lines(
            conn,
            "price_history",
            "id, asset_id, open_price, high_price, low_price, close_price, volume, price_date, "
            "created_at",
            (
                f"{uuid7()}\t{a}\t{p}\t{p + 1}\t{p - 1}\t{p}\t100000\t{d}\t{stamp}\n"
                for a, p in zip(asset_ids, prices, strict=True)
                for d in days
            ),
        )
        smallcase_id = str(uuid7())
        _copy_lines(
            conn,
            "smallcases",
            "id, name, is_active, created_at, updated_at",
            [f"{smallcase_id}\tbench-rebalance-{tag}\tt\t{stamp}\t{stamp}\n"],
        )
        _copy_lines(
            conn,
            "smallcase_constituents",
            "id, smallcase_id, asset_id, weight_percentage, created_at, updated_at",
            (
                f"{uuid7()}\t{smallcase_id}\t{a}\t{w}\t{stamp}\t{stamp}\n"
                for a, w in zip(asset_ids, weights, strict=True)
            ),
        )

        users = [str(uuid7()) for _ in range(investments)]
        connections = [str(uuid7()) for _ in range(investments)]
        portfolios = [str(uuid7()) for _ in range(investments)]
        inv_ids = [str(uuid7()) for _ in range(investments)]
        run_ids = [str(uuid7()) for _ in range(investments)]
        counts["users"] = _copy_lines(
            conn,
            "users",
            "id, email, first_name, created_at, updated_at",
            (
                f"{u}\trb{tag}-{i}@bench.example\tBench\t{stamp}\t{stamp}\n"
                for i, u in enumerate(users)
            ),
        )
        _copy_lines(
            conn,
            "user_broker_connections",
            "id, user_id, broker_type, alias, paper_trading, status, connection_metadata, "
            "created_at, updated_at",
            (
                f"{c}\t{u}\tpaper\tpaper_primary\tt\tactive\t"
                f'{{"paper_fractional": true}}\t{stamp}\t{stamp}\n'
                for c, u in zip(connections, users, strict=True)
            ),
        )
        _copy_lines(
            conn,
            "portfolios",
            "id, user_id, name, currency, cash_balance, total_value, created_at, updated_at",
            (
                f"{p}\t{u}\tbench\tUSD\t0\t0\t{stamp}\t{stamp}\n"
                for p, u in zip(portfolios, users, strict=True)
            ),
        )

        def amount(i: int) -> Decimal:
            return Decimal(10_000 + (i % 97) * 100)

        counts["investments"] = _copy_lines(
            conn,
            "user_smallcase_investments",
            "id, user_id, smallcase_id, portfolio_id, broker_connection_id, investment_amount, "
            "status, execution_mode, invested_at, created_at, updated_at",
            (
                f"{inv}\t{users[i]}\t{smallcase_id}\t{portfolios[i]}\t{connections[i]}\t"
                f"{amount(i)}\tactive\tpaper\t{stamp}\t{stamp}\t{stamp}\n"
                for i, inv in enumerate(inv_ids)
            ),
        )
        filled_at = (now - timedelta(days=30)).isoformat()
        counts["runs"] = _copy_lines(
            conn,
            "smallcase_execution_runs",
            "id, investment_id, broker_connection_id, run_type, status, total_amount, "
            "started_at, completed_at, created_at, updated_at",
            (
                f"{r}\t{inv}\t{connections[i]}\tinvest\tcompleted\t{amount(i)}\t"
                f"{filled_at}\t{filled_at}\t{filled_at}\t{filled_at}\n"
                for i, (r, inv) in enumerate(zip(run_ids, inv_ids, strict=True))
            ),
        )

        # 90% of the amount in half of the legs (equal values), the rest stays cash: a
        # rebalance sells every held leg (weight ~18% -> 5%) and buys every other one.
        quantities: dict[tuple[int, int], str] = {}

        def quantity(i: int, j: int) -> str:
            key = (i % 97, j)
            q = quantities.get(key)
            if q is None:
                value = amount(i) * Decimal("0.9") / held_legs
                q = quantities[key] = (
                    f"{(value / prices[j]).quantize(Decimal('0.000001'), ROUND_DOWN)}"
                )
            return q

        def orders() -> Iterator[str]:
            for i, run in enumerate(run_ids):
                for k in range(held_legs):
                    j = (i + k) % n
                    q = quantity(i, j)
                    p = prices[j]
                    meta = (
                        f'{{"filled_quantity": "{q}", "average_fill_price": "{p}", '
                        f'"fees": "0", "filled_at": "{filled_at}"}}'
                    )
                    yield (
                        f"{uuid7()}\t{run}\t{asset_ids[j]}\tbuy\t{q}\t{p}\tmarket\tfilled\t"
                        f"{meta}\t{filled_at}\t{filled_at}\n"
                    )

        counts["filled_orders"] = _copy_lines(
            conn,
            "smallcase_execution_orders",
            "id, execution_run_id, asset_id, side, quantity, price, order_type, status, "
            "order_metadata, created_at, updated_at",
            orders(),
        )
    vacuum_analyze(engine)
    return Built(smallcase_id, asset_ids, symbols, users, counts, time.perf_counter() - began)


# --- ours -------------------------------------------------------------------------------------


@dataclass
class Ours:
    """What the timed plan + write did."""

    plan: Plan
    seconds: float  # plan + write + commit
    write_seconds: float  # inside the service's writes (supersede, COPY of runs and orders)
    peak_rss_mib: float  # peak resident memory of the process while it ran
    rss_reset: bool  # whether the peak was reset before (else: the process's peak so far)

    @property
    def plan_seconds(self) -> float:
        """Everything but the writes: reads, planning, row building."""
        return self.seconds - self.write_seconds


def run_ours(engine: Engine, smallcase_id: str, phases: Phases | None) -> Ours:
    """Plan and write like the ``plan_runs`` task (auto-approved, no broker checks); time it.

    ``plan_and_write`` owns the transaction: planning lock, then chunk after chunk of
    investments: state, plan, supersede, COPY of runs and orders, the state-table moves; commit.
    """
    timing = phases if phases is not None else Phases()
    reset = reset_peak_rss()
    with instrumented(timing):
        began = time.perf_counter()
        plan = service.plan_and_write(
            engine,
            smallcase_id,
            run_type=RunType.REBALANCE,
            require_approval=False,
            check_brokers=False,
        )
        total = time.perf_counter() - began
    return Ours(plan, total, timing.get("write total"), peak_rss_mib(), reset)


def written_orders(engine: Engine, smallcase_id: str) -> tuple[int, int]:
    """Count the planned runs and orders of the smallcase now in the database."""
    with engine.connect() as conn:
        runs, orders = conn.execute(
            text(
                "SELECT count(DISTINCT r.id), count(o.id) FROM smallcase_execution_runs r "
                "JOIN user_smallcase_investments i ON i.id = r.investment_id "
                "LEFT JOIN smallcase_execution_orders o ON o.execution_run_id = r.id "
                "AND o.status = 'planned' "
                "WHERE i.smallcase_id = :sc AND r.run_type = 'rebalance' AND r.status = 'approved'"
            ),
            {"sc": smallcase_id},
        ).one()
    return int(runs), int(orders)


# --- the physical limit -----------------------------------------------------------------------


def export_orders(engine: Engine, smallcase_id: str, path: Path) -> int:
    """Write the planned order rows now in the table as COPY text (the columns ``write_plan``
    COPYs), for the raw COPY: outside any timer."""
    columns = ", ".join(f"o.{c}" for c in ORDER_COLUMNS)
    query = (
        f"SELECT {columns} FROM smallcase_execution_orders o "
        "JOIN smallcase_execution_runs r ON r.id = o.execution_run_id "
        "JOIN user_smallcase_investments i ON i.id = r.investment_id "
        f"WHERE i.smallcase_id = '{smallcase_id}' AND o.status = 'planned' "
        "AND r.run_type = 'rebalance'"
    )
    raw = engine.raw_connection()
    try:
        with (
            path.open("wb") as fh,
            raw.driver_connection.cursor() as cursor,  # type: ignore[union-attr]
            cursor.copy(f"COPY ({query}) TO STDOUT") as copy,
        ):
            rows = 0
            for block in copy:
                fh.write(block)
                rows += bytes(block).count(b"\n")
        raw.driver_connection.commit()  # type: ignore[union-attr]
        return rows
    finally:
        raw.close()


def raw_copy(engine: Engine, path: Path, table: str, *, foreign_keys: bool) -> float:
    """COPY the prepared text into an empty twin of the orders table in one transaction."""
    with engine.begin() as conn:
        conn.execute(text(f"DROP TABLE IF EXISTS {table}"))
        conn.execute(text(f"CREATE TABLE {table} (LIKE smallcase_execution_orders INCLUDING ALL)"))
        if foreign_keys:
            conn.execute(
                text(
                    f"ALTER TABLE {table} ADD CONSTRAINT fk_{table}_run FOREIGN KEY "
                    "(execution_run_id) REFERENCES smallcase_execution_runs (id) "
                    "ON DELETE RESTRICT"
                )
            )
            conn.execute(
                text(
                    f"ALTER TABLE {table} ADD CONSTRAINT fk_{table}_asset FOREIGN KEY "
                    "(asset_id) REFERENCES assets (id) ON DELETE RESTRICT"
                )
            )
    checkpoint(engine)
    raw = engine.raw_connection()
    try:
        dbapi = raw.driver_connection
        began = time.perf_counter()
        with (
            path.open("rb") as fh,
            dbapi.cursor() as cursor,  # type: ignore[union-attr]
            cursor.copy(f"COPY {table} ({', '.join(ORDER_COLUMNS)}) FROM STDIN") as copy,
        ):
            while block := fh.read(FILE_CHUNK):
                copy.write(block)
        dbapi.commit()  # type: ignore[union-attr]
        return time.perf_counter() - began
    finally:
        raw.close()


def same_orders(engine: Engine, smallcase_id: str) -> tuple[int, int]:
    """Return (rows only in ours, rows only in bench_orders), values compared."""
    names = (
        "id",
        "execution_run_id",
        "asset_id",
        "side",
        "quantity",
        "price",
        "order_type",
        "status",
    )
    cols = ", ".join(names)
    ours = (
        f"SELECT {', '.join('o.' + c for c in names)} FROM smallcase_execution_orders o "
        "JOIN smallcase_execution_runs r ON r.id = o.execution_run_id "
        "JOIN user_smallcase_investments i ON i.id = r.investment_id "
        "WHERE i.smallcase_id = :sc AND o.status = 'planned'"
    )
    with engine.connect() as conn:
        left = conn.execute(
            text(f"SELECT count(*) FROM ({ours} EXCEPT ALL SELECT {cols} FROM {RAW_TABLE}) d"),
            {"sc": smallcase_id},
        ).scalar_one()
        right = conn.execute(
            text(f"SELECT count(*) FROM (SELECT {cols} FROM {RAW_TABLE} EXCEPT ALL {ours}) d"),
            {"sc": smallcase_id},
        ).scalar_one()
    return int(left), int(right)


# --- task runs of the flow --------------------------------------------------------------------


def flow_task_runs(plan: Plan) -> tuple[int, str]:
    """Count the task runs the rebalance flow creates for this plan; return (count, how)."""
    from flows.kit.review import MAX_EXECUTION_TASKS  # imports Prefect: only when asked

    connections = len({r.connection_id for r in plan.runs})
    execution = min(connections, MAX_EXECUTION_TASKS)
    approval = 2  # recompute_plan_hash + decide (with require_approval, the default)
    total = 1 + approval + execution + 1 + 1
    how = (
        f"plan_runs 1 + approval {approval} (recompute_plan_hash, decide) + "
        f"execute_connection_runs min({fmt_int(connections)} connections, "
        f"MAX_EXECUTION_TASKS {MAX_EXECUTION_TASKS}) = {execution} + revalue_portfolios 1 + "
        f"record_audit 1"
    )
    return total, how


# --- main -------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--investments", type=int, default=100_000, help="active investments")
    p.add_argument("--constituents", type=int, default=20, help="assets in the smallcase")
    p.add_argument(
        "--database-url",
        default=None,
        help="an existing database migrated to head (default: a throwaway database created on "
        "--admin-url and dropped at the end); what the benchmark adds is removed at the end",
    )
    p.add_argument(
        "--admin-url",
        default=os.environ.get("SARAS_BENCH_ADMIN_URL")
        or os.environ.get("SARAS_TEST_PG_URL")
        or DEFAULT_ADMIN_URL,
        help="server URL used to create/drop the throwaway database",
    )
    p.add_argument("--smoke", action="store_true", help="500 investments x 20, in seconds")
    p.add_argument(
        "--approval-sample",
        type=int,
        default=2000,
        help="runs whose hash recompute_plan_hash times (0: skip the approval path)",
    )
    p.add_argument("--no-breakdown", action="store_true", help="do not time the service's steps")
    p.add_argument("--no-verify", action="store_true", help="skip the row-by-row comparison")
    p.add_argument("--strict", action="store_true", help="exit 2 when a target is missed")
    args = p.parse_args(argv)
    if args.smoke:
        args.investments, args.constituents = 500, 20
        args.approval_sample = min(args.approval_sample, 200)
    if args.investments < 1 or args.constituents < 2:
        p.error("--investments must be >= 1 and --constituents >= 2")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; return the process exit status."""
    args = parse_args(argv)
    phases = None if args.no_breakdown else Phases()
    problems: list[str] = []
    misses: list[str] = []
    db = open_database(args.database_url, args.admin_url)
    try:
        engine = db.engine
        out(
            f"database  {make_url(db.url).render_as_string()}  "
            f"({'throwaway' if db.admin_url else 'given'})"
        )
        out(f"machine   {load_note()}")
        out(
            f"workload  1 smallcase x {args.constituents} constituents, "
            f"{args.investments:,} active investments (paper, fractional), each holding "
            f"{max(1, args.constituents // 2)} legs off target"
        )
        built = build(engine, args.investments, args.constituents)
        db.created = {
            "smallcase": built.smallcase_id,
            "users": built.user_ids,
            "assets": built.asset_ids,
        }
        out(
            f"built     {built.counts['investments']:,} investments, "
            f"{built.counts['filled_orders']:,} filled orders, {built.counts['prices']:,} prices "
            f"in {built.seconds:.1f} s (COPY, then VACUUM ANALYZE)"
        )
        expected = args.investments * args.constituents

        # (a) ours
        checkpoint(engine)
        load_before = load_note()
        ours = run_ours(engine, built.smallcase_id, phases)
        plan = ours.plan
        runs, written = written_orders(engine, built.smallcase_id)
        if plan.order_count != expected or written != expected:
            problems.append(
                f"planned {plan.order_count:,} and wrote {written:,} orders, expected "
                f"{expected:,} ({args.constituents} per investment); skipped: "
                f"{ {k: len(v) for k, v in plan.skipped.items()} }"
            )
        if runs != len(plan.runs):
            problems.append(f"wrote {runs:,} runs, planned {len(plan.runs):,}")

        # (b) the physical limit
        with tempfile.TemporaryDirectory(prefix="saras_bench_") as tmp:
            path = Path(tmp) / "orders.tsv"
            began = time.perf_counter()
            raw_rows = export_orders(engine, built.smallcase_id, path)
            prep = time.perf_counter() - began
            raw_s = raw_copy(engine, path, RAW_TABLE, foreign_keys=False)
            raw_fk_s = raw_copy(engine, path, RAW_FK_TABLE, foreign_keys=True)
            copy_bytes = path.stat().st_size
        if not args.no_verify:
            only_ours, only_raw = same_orders(engine, built.smallcase_id)
            if only_ours or only_raw:
                problems.append(
                    f"tables differ: {only_ours:,} rows only in ours, {only_raw:,} only in "
                    f"{RAW_TABLE}"
                )
        ratio = ours.seconds / raw_s if raw_s else float("inf")

        out()
        label = "ours"
        rate = written / ours.seconds if ours.seconds else 0.0
        out(
            f"{label:<10} {fmt_int(written):>11} orders {fmt_int(runs):>9} runs  "
            f"{ours.seconds:8.2f} s  {fmt_int(rate):>9} orders/s  "
            f"(plan_and_write: reads + planning {ours.plan_seconds:.2f} s + writes/commit "
            f"{ours.write_seconds:.2f} s, in chunks of {service.PLAN_CHUNK:,} investments)"
        )
        if phases is not None:
            plan_parts = [
                "load investments",
                "load state",
                "latest prices",
                "check prices",
                "plan_batch",
                "build rows + hashes",
                "planning lock",
                "open runs",
            ]
            shown = ", ".join(f"{k} {phases.get(k):.2f}" for k in plan_parts)
            other = ours.plan_seconds - sum(phases.get(k) for k in plan_parts)
            out(f"           plan  : {shown}, other (state matrices, grouping) {other:.2f} s")
            out(
                f"planner    {phases.get('plan_batch'):8.2f} s  plan_batch alone (the vectorised "
                f"planner) for {args.investments:,} investments x {args.constituents} legs"
            )
            write_parts = ["supersede", "COPY smallcase_execution_runs"]
            shown = ", ".join(f"{k} {phases.get(k):.2f}" for k in write_parts)
            other = ours.write_seconds - sum(phases.get(k) for k in write_parts)
            out(
                f"           write : {shown} (COPY = text + send), order rows + their COPY "
                f"+ commit {other:.2f} s"
            )
        raw_rate = raw_rows / raw_s if raw_s else 0.0
        out(
            f"raw COPY   {fmt_int(raw_rows):>11} orders {'':>14}  {raw_s:8.2f} s  "
            f"{fmt_int(raw_rate):>9} orders/s  (one COPY of prepared text, "
            f"{copy_bytes / 2**20:,.0f} MiB, into {RAW_TABLE}; preparing it took {prep:.1f} s, "
            "untimed)"
        )
        out(
            f"  with FKs {fmt_int(raw_rows):>11} orders {'':>14}  {raw_fk_s:8.2f} s  "
            f"{fmt_int(raw_rows / raw_fk_s if raw_fk_s else 0):>9} orders/s  (the same, plus the "
            "real table's foreign keys to runs and assets)"
        )
        ratio_ok = ratio <= RATIO_TARGET
        out(
            f"ratio      {ratio:.2f}  (ours / raw COPY; target <= {RATIO_TARGET:g})  "
            + verdict(ratio_ok)
        )
        if not ratio_ok:
            misses.append("ratio")

        # (d) the approval path
        run_ids = [r.run_id for r in plan.runs]
        if args.approval_sample and run_ids:
            sample = run_ids[: args.approval_sample]
            began = time.perf_counter()
            sample_hash = service.recompute_plan_hash(engine, sample)
            sample_s = time.perf_counter() - began
            began = time.perf_counter()
            all_hash = service.recompute_plan_hash(engine, run_ids)
            all_s = time.perf_counter() - began
            if all_hash != plan.plan_hash or not sample_hash:
                problems.append("recompute_plan_hash differs from the plan's hash")
            out(
                f"approval   recompute_plan_hash {sample_s:.2f} s on {len(sample):,} runs, "
                f"{all_s:.2f} s on all {len(run_ids):,} runs (set-based; same hash as planned)"
            )

        # (e) task runs
        tasks, how = flow_task_runs(plan)
        tasks_ok = tasks < TASK_RUN_BUDGET
        out(
            f"task runs  {tasks}  for the whole rebalance flow: {how}; independent of the "
            f"{fmt_int(len(plan.runs))} runs and {fmt_int(plan.order_count)} orders "
            f"(target: hundreds at most)  {verdict(tasks_ok)}"
        )
        if not tasks_ok:
            misses.append("task runs")
        rss_ok = ours.peak_rss_mib < RSS_TARGET_MIB
        since = "reset just before" if ours.rss_reset else "the process's peak so far"
        out(
            f"peak RSS   {ours.peak_rss_mib:,.0f} MiB while planning and writing ({since}; "
            f"target < {RSS_TARGET_MIB:,} MiB)  {verdict(rss_ok)}"
        )
        if not rss_ok:
            misses.append("peak RSS")
        out(f"machine   {load_before} before ours")
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
