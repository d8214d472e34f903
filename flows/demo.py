"""``saras demo``: migrate the embedded default database, seed it, run the flows end to end.

The story, offline: prices from the simulated source, two users invest through paper brokers,
a nightly snapshot, a rebalance of the US smallcase to a new composition (auto-approved),
its execution, another snapshot, and a summary of what changed. Re-running is safe: nothing
is invested twice and an applied composition is not applied again.

Not a deployment: the story sits above the flows it runs (the CLI calls it lazily).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from saras import migrations
from saras.db import get_engine, session_scope
from saras.secrets import get_secret_box, key_file
from saras.services.demo import seed_demo
from saras.settings import get_settings

US_REBALANCE = [
    {"symbol": "AAPL", "weight": "30", "exchange": "NASDAQ", "rationale": "services growth"},
    {"symbol": "MSFT", "weight": "30", "exchange": "NASDAQ", "rationale": "cloud and AI"},
    {"symbol": "NVDA", "weight": "25", "exchange": "NASDAQ", "rationale": "accelerators"},
    {"symbol": "GOOGL", "weight": "15", "exchange": "NASDAQ", "rationale": "search and cloud"},
]
INVESTMENTS = (
    ("asha@example.com", "US Tech Leaders", "10000"),
    ("ravi@example.in", "India Bluechips", "500000"),
)
FAST_EXECUTION = {"poll_interval": 0.05, "deadline_seconds": 30}
#: The least time the temporary Prefect server gets to start. Its first start creates and
#: migrates its own SQLite database in PREFECT_HOME, which takes minutes on a loaded 2-core
#: machine; Prefect's default (20 s) is read from prefect.toml only when the cwd is the
#: repository, and `saras demo` runs from anywhere.
SERVER_STARTUP_TIMEOUT_S = 300


def _prefect_quietly() -> None:
    # an offline machine: no telemetry, and no UI build needed for the temporary server
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_UI_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


@contextmanager
def _terminate_as_exit() -> Iterator[None]:
    # SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C, so the server below is stopped too
    if os.name != "posix":
        yield
        return
    try:
        previous = signal.signal(signal.SIGTERM, _raise_exit)
    except ValueError:  # not the main thread: the caller owns signals
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _raise_exit(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


@contextmanager
def local_prefect(echo: Callable[[str], None] = print) -> Iterator[str]:
    """Use the Prefect server in PREFECT_API_URL, or run a temporary one and stop it at the end.

    Yields the API URL. The temporary server is given ``SERVER_STARTUP_TIMEOUT_S`` (or Prefect's
    own setting, if larger) to start, and is stopped when the block exits by any route.
    """
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_HOME,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        temporary_settings,
    )

    configured = PREFECT_API_URL.value()
    if configured:
        echo(f"  Prefect server: {configured}")
        yield configured
        return
    timeout = max(
        SERVER_STARTUP_TIMEOUT_S, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value()
    )
    echo(
        f"  starting a temporary Prefect server (database in {PREFECT_HOME.value()}); "
        f"its first start migrates that database: waiting up to {timeout} s"
    )
    server = SubprocessASGIServer()
    began = time.monotonic()
    with _terminate_as_exit():
        try:
            server.start(timeout=timeout)
            echo(f"  Prefect server ready at {server.api_url} in {time.monotonic() - began:.0f} s")
            with temporary_settings({PREFECT_API_URL: server.api_url}):
                yield server.api_url
                _drain_prefect_workers()
        finally:
            server.stop()


def _drain_prefect_workers() -> None:
    # logs and events still queued go out before the server stops (as Prefect's test harness)
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)
    EventsWorker.drain_all(timeout=10)


def _holdings(session: Session) -> dict[tuple[str, str], Decimal]:
    from models import Asset, Portfolio, PortfolioHolding, User

    rows = session.execute(
        select(User.email, Asset.symbol, PortfolioHolding.quantity)
        .join(Portfolio, Portfolio.id == PortfolioHolding.portfolio_id)
        .join(User, User.id == Portfolio.user_id)
        .join(Asset, Asset.id == PortfolioHolding.asset_id)
    ).all()
    return {(e, s): Decimal(str(q)) for e, s, q in rows}


def _state_name(state: Any) -> str:
    return f"{state.name}" + (f" ({state.message})" if state.message else "")


def run_demo(*, seed_only: bool = False, echo: Callable[[str], None] = print) -> None:
    """Run the demo and tell the story of what it did."""
    settings = get_settings()
    where = (
        f"embedded SQLite at {settings.sqlite_path}" if settings.embedded else "SARAS_DATABASE_URL"
    )
    echo(f"Saras demo on {where}")
    fresh_key = settings.secret_keys is None and not key_file(settings).exists()
    get_secret_box(settings, generate=True)
    if fresh_key:
        echo(f"  generated a local encryption key at {key_file(settings)}")
    engine = get_engine()
    migrations.upgrade("head", engine)
    echo(f"  database migrated to {migrations.current_revision(engine)}")
    with session_scope() as session:
        seed = seed_demo(session)
    echo(f"  seeded: {len(seed.created)} created, {len(seed.existing)} already there")
    for item in seed.created:
        echo(f"    + {item}")
    if seed_only:
        return

    _prefect_quietly()
    with local_prefect(echo):
        _run_flows(engine, echo)
    echo(f"Database: {settings.sqlite_path if settings.embedded else 'SARAS_DATABASE_URL'}")


def _run_flows(engine: Any, echo: Callable[[str], None]) -> None:
    from flows.investments import invest_in_smallcase
    from flows.position_snapshot import snapshot_positions
    from flows.price_history import ingest_price_history
    from flows.rebalance import rebalance_smallcase
    from models import Smallcase, SmallcaseExecutionRun, UserSmallcaseInvestment

    echo("1. nightly prices (simulated source, exchange calendars NYSE and NSE)")
    state = ingest_price_history(source="simulated", return_state=True)
    prices: Any = state.result(raise_on_failure=False)
    totals = prices["totals"]
    echo(
        f"   {_state_name(state)}: {totals['inserted']} bars inserted, {totals['unchanged']} "
        f"unchanged, {totals['rejected']} rejected, {totals['failed']} symbols failed"
    )

    with Session(engine) as session:
        before = _holdings(session)
    echo("2. investing through paper brokers")
    for user, smallcase, amount in INVESTMENTS:
        with Session(engine) as session:
            invested = session.scalar(
                select(func.count())
                .select_from(UserSmallcaseInvestment)
                .join(Smallcase)
                .where(Smallcase.name == smallcase)
            )
        if invested:
            echo(f"   {user} already invested in {smallcase!r}: skipped")
            continue
        state = invest_in_smallcase(
            user, smallcase, amount, execution=FAST_EXECUTION, return_state=True
        )
        echo(f"   {user} invests {amount} in {smallcase!r}: {_state_name(state)}")

    echo("3. nightly position snapshot, reconciled against the paper brokers' books")
    state = snapshot_positions(return_state=True)
    echo(f"   {_state_name(state)}")

    echo("4. rebalance 'US Tech Leaders' to a new composition (auto-approved)")
    with Session(engine) as session:
        sc = session.scalars(select(Smallcase).where(Smallcase.name == "US Tech Leaders")).one()
        applied = bool((sc.metadata_ or {}).get("compositions"))
    state = rebalance_smallcase(
        "US Tech Leaders",
        constituents=None if applied else US_REBALANCE,
        require_approval=False,
        execution=FAST_EXECUTION,
        return_state=True,
    )
    data: Any = state.result(raise_on_failure=False)
    plan = (data.get("plan") if isinstance(data, dict) else None) or {}
    summary = plan.get("summary", {})
    skipped = ", ".join(f"{n} {r}" for r, n in summary.get("skipped_by_reason", {}).items())
    echo(
        f"   {_state_name(state)}: {summary.get('investments_changed', 0)} investments changed, "
        f"{summary.get('orders', 0)} orders, plan {str(summary.get('plan_hash', ''))[:12]}"
        + (f"; skipped: {skipped}" if skipped else "")
    )

    echo("5. snapshot again")
    state = snapshot_positions(return_state=True)
    echo(f"   {_state_name(state)}")

    with Session(engine) as session:
        after = _holdings(session)
        runs = session.execute(
            select(SmallcaseExecutionRun.run_type, SmallcaseExecutionRun.status, func.count())
            .group_by(SmallcaseExecutionRun.run_type, SmallcaseExecutionRun.status)
            .order_by(SmallcaseExecutionRun.run_type)
        ).all()
    echo("What changed")
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key, Decimal(0)), after.get(key, Decimal(0))
        if old != new:
            echo(f"   {key[0]:<18} {key[1]:<9} {old.normalize():>16f} -> {new.normalize():f}")
    for run_type, status, count in runs:
        echo(f"   runs: {count} {run_type} {status}")
