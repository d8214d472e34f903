"""Price-ingestion benchmark: the flow's write path against a raw COPY of the same rows.

Steps (all on PostgreSQL, by default in a throwaway database ``saras_bench_<pid>``):

1. create ``--symbols`` NYSE assets (S0000, S0001, ...) in bulk;
2. **ours**: ``saras.services.prices.ingest_batch`` batch by batch (``--batch-size`` symbols
   each, items built the way ``plan_ingestion`` builds them, source ``simulated``), so every
   symbol gets exactly ``--days`` NYSE sessions ending on ``--end``; timed end to end
   (fetch + validate + write + commit);
3. **raw COPY**: the same rows (generated again from the simulated source and written to a
   text file *outside* the timer) COPYed once into an identical empty table
   (``LIKE price_history INCLUDING ALL`` plus the same foreign key); timed. This is the
   database's limit; ours additionally pays generation and validation;
4. ratio = ours rows/s / raw COPY rows/s (target >= 0.8), and the same ratio in CPU seconds
   (this process + the server backends, read from ``/proc`` when the server is local), which
   stays steady when other work shares the machine while wall time does not;
5. nightly increment: the next session for every symbol through ``ingest_batch``;
6. identical re-run of that increment: nothing may be inserted, updated or rewritten, and
   ``price_history`` may not grow;
7. peak memory (max RSS of this process) against the 1.5 GiB budget.

Run ``python benchmarks/ingest_prices.py`` (full size, several minutes) or ``--smoke``
(seconds). ``--workers N`` runs N batches at once, as the flow's thread-pool task runner does.
Exit status: 0 when every correctness check held (performance targets are reported as
PASS/MISS; ``--strict`` turns a MISS into exit status 2), 1 when a check failed.
"""

from __future__ import annotations

import argparse
import functools
import os
import resource
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
from sqlalchemy import Engine, insert, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from uuid_utils.compat import uuid7

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere in the clone
    sys.path.insert(0, str(ROOT))

import throwaway  # noqa: E402 - benchmarks/throwaway.py, beside this script

from models import Asset  # noqa: E402
from saras.db import make_engine  # noqa: E402
from saras.marketdata import calendars  # noqa: E402
from saras.marketdata import simulated as simulated_module  # noqa: E402
from saras.marketdata.base import BarRequest  # noqa: E402
from saras.marketdata.registry import get_source  # noqa: E402
from saras.repositories import prices as price_repo  # noqa: E402
from saras.services import prices as price_service  # noqa: E402
from saras.services.prices import IngestionItem, SymbolReport, batches, ingest_batch  # noqa: E402

DEFAULT_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
EXCHANGE = "NYSE"
SOURCE = "simulated"
RATIO_TARGET = 0.8
MEMORY_BUDGET_MIB = 1536.0
COPY_COLUMNS = "id, asset_id, price_date, open_price, high_price, low_price, close_price, volume"
CHUNK = 1 << 20

F = TypeVar("F", bound=Callable[..., Any])


# --- small helpers ----------------------------------------------------------------------------


def fmt_int(n: float) -> str:
    """Format a count with thousands separators."""
    return f"{round(n):,}"


def fmt_bytes(n: int) -> str:
    """Format a byte size in MiB."""
    return f"{n / 2**20:,.1f} MiB"


def peak_rss_mib() -> float:
    """Return this process's peak resident set size so far, in MiB (Linux: ru_maxrss in KiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024.0 if sys.platform != "darwin" else peak / 2**20


def load_note() -> str:
    """Describe the machine's load: figures from a busy machine are noisy."""
    cpus = os.cpu_count() or 1
    one, five, _ = os.getloadavg()
    busy = "  (busy: other work competes for the CPUs, figures are noisy)" if five > 0.5 else ""
    return f"{cpus} CPUs, load average {one:.2f} (1 min) {five:.2f} (5 min){busy}"


def verdict(ok: bool) -> str:
    """Return PASS or MISS."""
    return "PASS" if ok else "MISS"


def out(line: str = "") -> None:
    """Print one result line right away."""
    print(line, flush=True)


@dataclass
class Phases:
    """Wall time spent inside the service's steps while ``ingest_batch`` runs (instrumented)."""

    seconds: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wrap(self, name: str, fn: F) -> F:
        """Return ``fn`` timed under ``name``."""

        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent = time.perf_counter() - began
                with self.lock:
                    self.seconds[name] = self.seconds.get(name, 0.0) + spent

        return timed  # type: ignore[return-value]

    def reset(self) -> None:
        """Forget what was measured so far."""
        self.seconds.clear()


@contextmanager
def instrumented(phases: Phases | None) -> Iterator[None]:
    """Time fetch, validate, write and COPY-text generation inside ``ingest_batch``."""
    if phases is None:
        yield
        return
    patches: list[tuple[Any, str, Any]] = [
        (simulated_module.SimulatedSource, "fetch_daily_bars", "fetch"),
        (price_service, "validate_bars", "validate"),
        (price_repo, "write_bars", "write"),
        (price_repo, "_copy_text", "write: COPY text"),
    ]
    saved = []
    for owner, attr, name in patches:
        original = getattr(owner, attr, None)
        if original is None:  # the repository changed shape: skip that probe
            continue
        saved.append((owner, attr, original))
        setattr(owner, attr, phases.wrap(name, original))
    try:
        yield
    finally:
        for owner, attr, original in saved:
            setattr(owner, attr, original)


# --- database setup ---------------------------------------------------------------------------


@dataclass
class Database:
    """The database the benchmark runs in, and how to clean it up."""

    url: str
    engine: Engine
    admin_url: str | None  # set when the database is throwaway (dropped at the end)
    name: str
    asset_ids: list[str] = field(default_factory=list)

    def close(self) -> None:
        """Drop a throwaway database; in a given one, remove what the benchmark created."""
        if self.admin_url is None:
            with self.engine.begin() as conn:
                conn.execute(text("DROP TABLE IF EXISTS bench_copy"))
                if self.asset_ids:
                    ids = {"ids": self.asset_ids}
                    mine = "= ANY(CAST(:ids AS uuid[]))"
                    conn.execute(text(f"DELETE FROM price_history WHERE asset_id {mine}"), ids)
                    conn.execute(text(f"DELETE FROM assets WHERE id {mine}"), ids)
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


def checkpoint(engine: Engine) -> None:
    """Flush dirty buffers before a timed phase, so phases do not pay for each other."""
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("CHECKPOINT"))
    except DBAPIError as exc:  # not a superuser (nor pg_checkpoint): measure without it
        out(f"note: CHECKPOINT skipped ({type(exc).__name__})")


def create_assets(engine: Engine, n: int) -> list[tuple[str, str]]:
    """Insert ``n`` NYSE assets in one statement; return (asset_id, symbol) pairs."""
    width = max(4, len(str(n - 1)))
    rows = [
        {
            "id": uuid.UUID(str(uuid7())),
            "symbol": f"S{i:0{width}d}",
            "exchange": EXCHANGE,
            "currency": "USD",
            "name": f"Benchmark {i}",
        }
        for i in range(n)
    ]
    with engine.begin() as conn:
        taken = conn.execute(
            text("SELECT count(*) FROM assets WHERE exchange = :x AND symbol = ANY(:s)"),
            {"x": EXCHANGE, "s": [r["symbol"] for r in rows]},
        ).scalar_one()
        if taken:
            raise SystemExit(f"{taken} benchmark symbols already exist in this database")
        conn.execute(insert(Asset), rows)
    return [(str(r["id"]), str(r["symbol"])) for r in rows]


def price_history_rows(engine: Engine) -> int:
    """Count the rows of ``price_history``."""
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM price_history")).scalar_one())


def table_sizes(engine: Engine, table: str = "price_history") -> tuple[int, int]:
    """Return (heap + index main forks, pg_total_relation_size) of ``table`` in bytes."""
    with engine.connect() as conn:
        main, total = conn.execute(
            text(
                "SELECT pg_relation_size(c.oid, 'main') + coalesce((SELECT "
                "sum(pg_relation_size(i.indexrelid, 'main')) FROM pg_index i "
                "WHERE i.indrelid = c.oid), 0), pg_total_relation_size(c.oid) "
                "FROM pg_class c WHERE c.oid = CAST(:t AS regclass)"
            ),
            {"t": table},
        ).one()
    return int(main), int(total)


class CpuMeter:
    """CPU seconds used by this process and by the server backends of the benchmark database.

    Backends are read from ``/proc`` (a server on this machine only; otherwise the database's
    share is unknown). Unlike wall time, CPU time barely moves when other work shares the
    machine, so the CPU ratio is the steadier figure on a busy host.
    """

    def __init__(self, engine: Engine, database: str):
        self.engine = engine
        self.database = database
        self.tick = float(os.sysconf("SC_CLK_TCK")) if hasattr(os, "sysconf") else 100.0
        self._python = 0.0
        self._backends: dict[int, float] | None = {}

    def _read_backends(self) -> dict[int, float] | None:
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
                return None  # not a local server (or not ours to read)
            if not comm.startswith("postgres"):
                return None  # a pid of another machine or namespace
            fields = stat[stat.rindex(")") + 2 :].split()
            used[int(pid)] = (int(fields[11]) + int(fields[12])) / self.tick
        return used

    def start(self) -> None:
        """Remember the CPU time used so far."""
        self._backends = self._read_backends()
        self._python = time.process_time()

    def stop(self) -> tuple[float, float | None]:
        """Return (this process's, the backends') CPU seconds since ``start``."""
        python = time.process_time() - self._python
        after = self._read_backends()
        if after is None or self._backends is None:
            return python, None
        return python, sum(v - self._backends.get(pid, 0.0) for pid, v in after.items())


def fmt_cpu(python: float, postgres: float | None) -> str:
    """Describe CPU seconds of the client and the server."""
    if postgres is None:
        return f"{python:.1f} CPU-s in Python (server CPU unknown: not a local server)"
    return f"{python + postgres:.1f} CPU-s (Python {python:.1f} + PostgreSQL {postgres:.1f})"


def current_xid(engine: Engine) -> int:
    """Return the current transaction id (32-bit), to find rows written after this point."""
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT txid_current() % 4294967296")).scalar_one())


def rows_written_since(engine: Engine, xid: int) -> int:
    """Count price_history row versions created by transactions after ``xid`` (wrap-safe)."""
    with engine.connect() as conn:
        return int(
            conn.execute(
                text(
                    "SELECT count(*) FROM price_history "
                    "WHERE age(xmin) < age(CAST(CAST(:x AS text) AS xid))"
                ),
                {"x": xid},
            ).scalar_one()
        )


# --- the runs ---------------------------------------------------------------------------------


def session_window(days: int, end: date) -> tuple[date, date, date]:
    """Return (first, last, next) NYSE sessions so that first..last holds ``days`` sessions."""
    all_days = calendars.session_dates(EXCHANGE)
    known = calendars.session_days(EXCHANGE)
    last_idx = int(np.searchsorted(known, np.datetime64(end, "D"), "right")) - 1
    first_idx = last_idx - days + 1
    if first_idx < 0 or all_days[first_idx] < simulated_module.EPOCH:
        raise SystemExit(f"{days} sessions before {end} reach before the simulated epoch")
    if last_idx + 1 >= len(all_days):
        raise SystemExit(f"the {EXCHANGE} calendar knows no session after {end}")
    return all_days[first_idx], all_days[last_idx], all_days[last_idx + 1]


@dataclass
class RunResult:
    """What a series of ``ingest_batch`` calls did."""

    seconds: float
    reports: list[SymbolReport]

    def total(self, name: str) -> int:
        """Add up one count over the reports."""
        return sum(int(getattr(r, name)) for r in self.reports)

    @property
    def failed(self) -> list[SymbolReport]:
        """Reports of symbols that failed."""
        return [r for r in self.reports if r.failed]


def run_ingest(
    engine: Engine,
    items: Sequence[IngestionItem],
    batch_size: int,
    now: datetime,
    workers: int = 1,
) -> RunResult:
    """Call ``ingest_batch`` once per batch, the way the flow's tasks do; time the whole run.

    ``workers`` > 1 runs batches on that many threads at once, as the flow's thread-pool task
    runner does (each batch still commits on its own connection).
    """
    groups = batches(items, batch_size)
    reports: list[SymbolReport] = []
    began = time.perf_counter()
    if workers <= 1:
        for group in groups:
            reports.extend(ingest_batch(engine, group, now=now))
    else:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ingest") as pool:
            for done in pool.map(lambda g: ingest_batch(engine, g, now=now), groups):
                reports.extend(done)
    return RunResult(time.perf_counter() - began, reports)


def write_copy_file(
    assets: Sequence[tuple[str, str]], start: date, end: date, batch_size: int, path: Path
) -> int:
    """Write the rows ours wrote (same source values, stored scales) as COPY text; count rows."""
    source = get_source(SOURCE)
    rows = 0
    with path.open("w", encoding="utf-8", newline="\n") as fh:
        for i in range(0, len(assets), batch_size):
            chunk = assets[i : i + batch_size]
            bars = source.fetch_daily_bars([BarRequest(s, EXCHANGE, start, end) for _, s in chunk])
            asset_of = dict((s, a) for a, s in chunk)
            frame = pd.DataFrame(
                {
                    "id": [str(uuid7()) for _ in range(len(bars.bars))],
                    "asset_id": bars.bars["symbol"].map(asset_of),
                    "price_date": bars.bars["price_date"],
                    **{
                        c: bars.bars[c].round(price_repo.PRICE_DECIMALS)
                        for c in ("open", "high", "low", "close")
                    },
                    "volume": bars.bars["volume"].round(price_repo.VOLUME_DECIMALS),
                }
            )
            frame.to_csv(fh, sep="\t", header=False, index=False, lineterminator="\n")
            rows += len(frame)
    return rows


def raw_copy(engine: Engine, path: Path, meter: CpuMeter) -> float:
    """COPY the prepared text into an empty twin of price_history in one transaction; time it."""
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS bench_copy"))
        conn.execute(text("CREATE TABLE bench_copy (LIKE price_history INCLUDING ALL)"))
        conn.execute(
            text(
                "ALTER TABLE bench_copy ADD CONSTRAINT fk_bench_copy_asset_id "
                "FOREIGN KEY (asset_id) REFERENCES assets (id) ON DELETE RESTRICT"
            )
        )
    checkpoint(engine)
    raw = engine.raw_connection()
    try:
        dbapi = raw.driver_connection
        meter.start()
        began = time.perf_counter()
        with (
            path.open("rb") as fh,
            dbapi.cursor() as cursor,  # type: ignore[union-attr]
            cursor.copy(f"COPY bench_copy ({COPY_COLUMNS}) FROM STDIN") as copy,
        ):
            while block := fh.read(CHUNK):
                copy.write(block)
        dbapi.commit()  # type: ignore[union-attr]
        return time.perf_counter() - began
    finally:
        raw.close()


def same_rows(engine: Engine) -> tuple[int, int]:
    """Return (rows only in price_history, rows only in bench_copy), values compared."""
    cols = "asset_id, price_date, open_price, high_price, low_price, close_price, volume"
    with engine.connect() as conn:
        left = conn.execute(
            text(
                f"SELECT count(*) FROM (SELECT {cols} FROM price_history "
                f"EXCEPT ALL SELECT {cols} FROM bench_copy) d"
            )
        ).scalar_one()
        right = conn.execute(
            text(
                f"SELECT count(*) FROM (SELECT {cols} FROM bench_copy "
                f"EXCEPT ALL SELECT {cols} FROM price_history) d"
            )
        ).scalar_one()
    return int(left), int(right)


# --- main -------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--symbols", type=int, default=2000, help="assets to ingest (default 2000)")
    p.add_argument("--days", type=int, default=2520, help="NYSE sessions per asset (default 2520)")
    p.add_argument("--batch-size", type=int, default=100, help="symbols per ingest_batch call")
    p.add_argument(
        "--end",
        type=date.fromisoformat,
        default=date(2024, 12, 31),
        help="last session of the initial load (default 2024-12-31)",
    )
    p.add_argument(
        "--database-url",
        default=None,
        help="an existing database migrated to head with an empty price_history "
        "(default: a throwaway database created on --admin-url and dropped at the end)",
    )
    p.add_argument(
        "--admin-url",
        default=os.environ.get("SARAS_BENCH_ADMIN_URL")
        or os.environ.get("SARAS_TEST_PG_URL")
        or DEFAULT_ADMIN_URL,
        help="server URL used to create/drop the throwaway database",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="batches in flight at once (default 1: one after the other; the flow's thread-pool "
        "task runner runs several)",
    )
    p.add_argument("--smoke", action="store_true", help="20 symbols x 60 days, in seconds")
    p.add_argument("--no-breakdown", action="store_true", help="do not time the service's steps")
    p.add_argument("--no-verify", action="store_true", help="skip the row-by-row comparison")
    p.add_argument("--strict", action="store_true", help="exit 2 when a target is missed")
    args = p.parse_args(argv)
    if args.smoke:
        args.symbols, args.days, args.batch_size = 20, 60, 10
    if min(args.symbols, args.days, args.batch_size, args.workers) < 1:
        p.error("--symbols, --days, --batch-size and --workers must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; return the process exit status."""
    args = parse_args(argv)
    first, last, following = session_window(args.days, args.end)
    now = datetime(following.year, following.month, following.day, 23, 0, tzinfo=UTC)
    phases = None if args.no_breakdown else Phases()
    problems: list[str] = []
    misses: list[str] = []

    db = open_database(args.database_url, args.admin_url)
    try:
        engine = db.engine
        if price_history_rows(engine):
            raise SystemExit("price_history is not empty: the benchmark needs an empty table")
        out(
            f"database  {make_url(db.url).render_as_string()}  "
            f"({'throwaway' if db.admin_url else 'given'})"
        )
        out(f"machine   {load_note()}")
        out(
            f"workload  {args.symbols:,} symbols x {args.days:,} {EXCHANGE} sessions "
            f"({first}..{last}), source {SOURCE}, batches of {args.batch_size}, "
            f"{args.workers} worker{'s' if args.workers > 1 else ''}"
        )
        began = time.perf_counter()
        assets = create_assets(engine, args.symbols)
        db.asset_ids = [a for a, _ in assets]
        out(f"assets    {len(assets):,} created in {time.perf_counter() - began:.2f} s")
        expected = args.symbols * args.days

        # 2. ours: the flow's per-batch work, end to end
        items = [IngestionItem(a, s, EXCHANGE, SOURCE, first, last) for a, s in assets]
        meter = CpuMeter(engine, make_url(db.url).database or "")
        checkpoint(engine)
        meter.start()
        with instrumented(phases):
            ours = run_ingest(engine, items, args.batch_size, now, args.workers)
        ours_cpu = meter.stop()
        ours_rss = peak_rss_mib()
        rows = ours.total("inserted")
        stored = price_history_rows(engine)
        if ours.failed:
            problems.append(f"{len(ours.failed)} symbols failed: {ours.failed[0].error}")
        if rows != expected or stored != expected:
            problems.append(
                f"ingest wrote {rows:,} rows ({stored:,} stored), expected {expected:,}"
            )
        for name in ("updated", "rejected", "missing_sessions"):
            if ours.total(name):
                problems.append(f"ingest reported {ours.total(name):,} {name}")
        ours_rate = rows / ours.seconds if ours.seconds else float("inf")

        # 3. the physical limit: one COPY of the same rows, text prepared outside the timer
        with engine.begin() as conn:  # both tables start the comparison equally tidy
            conn.execute(text("ANALYZE price_history"))
        with tempfile.TemporaryDirectory(prefix="saras_bench_") as tmp:
            path = Path(tmp) / "bars.tsv"
            began = time.perf_counter()
            raw_rows = write_copy_file(assets, first, last, args.batch_size, path)
            prep = time.perf_counter() - began
            copy_s = raw_copy(engine, path, meter)
            raw_cpu = meter.stop()
        raw_rate = raw_rows / copy_s if copy_s else float("inf")
        ratio = ours_rate / raw_rate if raw_rate else 0.0
        if raw_rows != expected:
            problems.append(f"raw COPY text has {raw_rows:,} rows, expected {expected:,}")
        if not args.no_verify:
            only_ours, only_raw = same_rows(engine)
            if only_ours or only_raw:
                problems.append(
                    f"tables differ: {only_ours:,} rows only in price_history, "
                    f"{only_raw:,} only in bench_copy"
                )
        raw_main, raw_total = table_sizes(engine, "bench_copy")
        ours_main, ours_total = table_sizes(engine)
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE bench_copy"))

        out()
        calls = len(batches(items, args.batch_size))
        out(
            f"ingest     {fmt_int(rows):>11} rows  {ours.seconds:8.1f} s  "
            f"{fmt_int(ours_rate):>9} rows/s  (ingest_batch x {calls}: "
            f"fetch + validate + write + commit)"
        )
        if phases is not None:
            shown = ", ".join(f"{k} {v:.1f} s" for k, v in phases.seconds.items())
            summed = " (summed over workers)" if args.workers > 1 else ""
            out(f"           of which  {shown}{summed}")
        out(
            f"raw COPY   {fmt_int(raw_rows):>11} rows  {copy_s:8.1f} s  {fmt_int(raw_rate):>9} "
            f"rows/s  (one COPY of prepared text; preparing it took {prep:.1f} s, untimed)"
        )
        ratio_ok = ratio >= RATIO_TARGET
        out(
            f"ratio      {ratio:.2f}  (ours / raw COPY; target >= {RATIO_TARGET})  "
            + verdict(ratio_ok)
        )
        out(f"cpu        ingest {fmt_cpu(*ours_cpu)}")
        out(f"           raw COPY {fmt_cpu(*raw_cpu)}")
        if ours_cpu[1] is not None and raw_cpu[1] is not None:
            cpu_ratio = (raw_cpu[0] + raw_cpu[1]) / (ours_cpu[0] + ours_cpu[1])
            out(
                f"cpu ratio  {cpu_ratio:.2f}  (raw COPY CPU-s / ours CPU-s for the same rows: "
                "the ratio in CPU time, steadier on a busy machine)"
            )
        out(
            f"size       price_history {fmt_bytes(ours_total)} "
            f"(heap+indexes {fmt_bytes(ours_main)}), "
            f"bench_copy {fmt_bytes(raw_total)} (heap+indexes {fmt_bytes(raw_main)})"
        )
        if not ratio_ok:
            misses.append("ratio")

        # 5. nightly increment: one more session for every symbol
        increment = [
            IngestionItem(a, s, EXCHANGE, SOURCE, following, following, last, first)
            for a, s in assets
        ]
        if phases is not None:
            phases.reset()
        checkpoint(engine)
        with instrumented(phases):
            inc = run_ingest(engine, increment, args.batch_size, now, args.workers)
        inc_rows = inc.total("inserted")
        if inc.failed or inc_rows != args.symbols or inc.total("updated") or inc.total("rewritten"):
            problems.append(
                f"increment: {inc_rows:,} inserted, {inc.total('updated'):,} updated, "
                f"{len(inc.failed)} failed (expected {args.symbols:,} inserted)"
            )
        out(
            f"increment  {fmt_int(inc_rows):>11} rows  {inc.seconds:8.2f} s  "
            f"{fmt_int(inc_rows / inc.seconds if inc.seconds else 0):>9} rows/s  "
            f"({following}, one session per symbol)"
        )

        # 6. identical re-run of the increment: nothing written, no growth
        main_before, total_before = table_sizes(engine)
        xid = current_xid(engine)
        if phases is not None:
            phases.reset()
        checkpoint(engine)
        with instrumented(phases):
            rerun = run_ingest(engine, increment, args.batch_size, now, args.workers)
        rewritten = rows_written_since(engine, xid)
        main_after, total_after = table_sizes(engine)
        ins, upd, same = (rerun.total(k) for k in ("inserted", "updated", "unchanged"))
        rerun_ok = (
            ins == 0
            and upd == 0
            and rewritten == 0
            and main_after == main_before
            and total_after == total_before
            and not rerun.failed
            and same == args.symbols
        )
        out(
            f"re-run     {fmt_int(ins + upd):>11} rows  {rerun.seconds:8.2f} s  "
            f"({ins} inserted, {upd} updated, {same:,} unchanged; {rewritten} row versions "
            f"written; target 0/0)  {verdict(rerun_ok)}"
        )
        out(
            f"           price_history {fmt_bytes(total_before)} -> {fmt_bytes(total_after)} "
            f"({total_after - total_before:+,} bytes; heap+indexes "
            f"{main_after - main_before:+,} bytes)"
        )
        if not rerun_ok:
            problems.append("the identical re-run wrote rows or grew the table")

        # 7. memory
        peak = peak_rss_mib()
        mem_ok = ours_rss < MEMORY_BUDGET_MIB and peak < MEMORY_BUDGET_MIB
        out(
            f"peak RSS   {ours_rss:,.0f} MiB after the load, {peak:,.0f} MiB overall "
            f"(target < {MEMORY_BUDGET_MIB:,.0f} MiB)  {verdict(mem_ok)}"
        )
        if not mem_ok:
            misses.append("memory")
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
