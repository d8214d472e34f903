"""Whole flows under Prefect's test harness, on a committed database per backend.

Flows open their own connections through settings, so these tests point ``SARAS_DATABASE_URL``
at a dedicated migrated database and empty every table after each test.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.sorting import FlowRunSort
from prefect.testing.utilities import prefect_test_harness
from sqlalchemy import Engine, text

from models import Base
from saras import db as saras_db
from saras import migrations
from saras.db import make_engine
from saras.settings import get_settings


@pytest.fixture(scope="session", autouse=True)
def prefect_harness() -> Iterator[None]:
    """One temporary Prefect server and database for the whole test session."""
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def flow_pg_url(pg_server) -> Iterator[str]:  # type: ignore[no-untyped-def]
    url = pg_server.create_database("saras_flows")
    engine = make_engine(url)
    migrations.upgrade("head", engine)
    engine.dispose()
    yield url
    pg_server.drop_database(url)


@pytest.fixture(scope="session")
def flow_sqlite_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("flow-sqlite")
    engine = make_engine(f"sqlite:///{path / 'saras.sqlite3'}")
    migrations.upgrade("head", engine)
    engine.dispose()
    return path


def _empty_all_tables(engine: Engine) -> None:
    tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
    with engine.begin() as conn:
        paper = [
            r[0]
            for r in conn.execute(
                text(
                    "SELECT table_name FROM information_schema.tables "
                    "WHERE table_schema = 'public' AND table_name LIKE 'paper%'"
                )
                if engine.dialect.name == "postgresql"
                else text(
                    "SELECT name FROM sqlite_master WHERE type='table' AND name LIKE 'paper%'"
                )
            )
        ]
        if engine.dialect.name == "postgresql":
            conn.execute(text(f"TRUNCATE {', '.join(tables + paper)} CASCADE"))
        else:
            order = {"paper_fills": 0, "paper_positions": 1, "paper_orders": 2, "paper_accounts": 3}
            for name in sorted(paper, key=lambda n: order.get(n, -1)) + tables:
                conn.execute(text(f"DELETE FROM {name}"))


@pytest.fixture(params=["postgresql", "sqlite"])
def flow_db(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[Engine]:
    """Point Saras' settings at a migrated database of each backend; empty it afterwards."""
    monkeypatch.setenv("SARAS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("SARAS_SECRET_KEYS", raising=False)
    if request.param == "postgresql":
        monkeypatch.setenv("SARAS_DATABASE_URL", request.getfixturevalue("flow_pg_url"))
    else:
        monkeypatch.delenv("SARAS_DATABASE_URL", raising=False)
        monkeypatch.setenv("SARAS_DATA_DIR", str(request.getfixturevalue("flow_sqlite_dir")))
    get_settings.cache_clear()
    saras_db._engine_for.cache_clear()
    engine = saras_db.get_engine()
    try:
        yield engine
    finally:
        _empty_all_tables(engine)
        engine.dispose()
        saras_db._engine_for.cache_clear()
        get_settings.cache_clear()


@pytest.fixture
def pg_flow_db(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, flow_pg_url: str
) -> Iterator[Engine]:
    """Like ``flow_db``, PostgreSQL only."""
    monkeypatch.setenv("SARAS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SARAS_DATABASE_URL", flow_pg_url)
    get_settings.cache_clear()
    saras_db._engine_for.cache_clear()
    engine = saras_db.get_engine()
    try:
        yield engine
    finally:
        _empty_all_tables(engine)
        engine.dispose()
        saras_db._engine_for.cache_clear()
        get_settings.cache_clear()


#: stop signals of the ``when_paused`` watchers still running; each test's end sets them
_WATCHERS: list[threading.Event] = []


@pytest.fixture(autouse=True)
def _stop_pause_watchers() -> Iterator[None]:
    """End the test's ``when_paused`` watchers with it, so none answers a later test's run."""
    yield
    while _WATCHERS:
        _WATCHERS.pop().set()


def when_paused(action: Callable[[uuid.UUID], None], *, within: float = 60) -> threading.Thread:
    """Call ``action(flow_run_id)`` once a flow run is paused: the newest paused run.

    The harness's server is shared by the whole session: a run an earlier test left paused
    must not be the one answered, so the newest paused run is; and the watcher ends with its
    test (a watcher whose run never paused must not answer the next test's run).
    """
    stop = threading.Event()
    _WATCHERS.append(stop)

    def run() -> None:
        deadline = time.monotonic() + within
        with get_client(sync_client=True) as client:
            while time.monotonic() < deadline and not stop.is_set():
                # filtered and sorted by the server: an unfiltered read returns one page of
                # runs in id order, and a long session has more runs than a page holds
                paused = client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(
                        state=FlowRunFilterState(
                            type=FlowRunFilterStateType(any_=[StateType.PAUSED])
                        )
                    ),
                    sort=FlowRunSort.START_TIME_DESC,
                    limit=20,
                )
                paused = sorted(
                    (r for r in paused if r.state and r.state.is_paused()),
                    key=lambda r: r.created or datetime.min.replace(tzinfo=UTC),
                    reverse=True,
                )
                if paused:
                    action(paused[0].id)
                    return
                time.sleep(0.2)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread
