"""The fixtures every tier shares: databases on PostgreSQL and SQLite, and settings pointed at one.

PostgreSQL comes from ``SARAS_TEST_PG_URL`` (default: the local server, trust auth). A session
migrates one template database per backend and hands out copies (tests/support/databases.py).
Under ``CI=true`` a missing PostgreSQL is a failure, never a skip.

Two kinds of database:

- ``db`` / ``pg_db``: a session on a shared migrated database, in a transaction rolled back at
  the end (SQLAlchemy's savepoint recipe): the test sees a clean database and may commit freely.
  ``engine`` / ``pg_engine`` / ``sqlite_engine`` are the engines under them.
- ``flow_db`` / ``pg_flow_db``: Saras' settings pointed at a committed migrated database (what
  flows and services open through ``saras.db.get_engine``), emptied after each test. A tier
  changes the environment they set by overriding ``flow_env``.

Builders live in tests/support (``databases``, ``platform``, ``flows``, ``execution``) and
tests/factories.py (single rows).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from saras.db import make_engine
from tests.fakes.fake_alpaca import PROXY_ENVIRONMENT
from tests.support.databases import (
    PG_URL,
    PostgresServer,
    SqliteTemplate,
    in_ci,
    point_settings_at,
)
from tests.support.reference import REFERENCE_DIR
from tests.support.wire import WireServer, wire_server


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the tests marked ``slow`` first (otherwise in collection order).

    Under ``-n 2`` (README "Two commands") a long end-to-end test that starts last finishes
    alone while the other worker idles; started first, the rest of the suite runs beside it.
    """
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session", autouse=True)
def _no_proxy() -> Iterator[None]:
    """Every fake and local server is on 127.0.0.1: no request of a test goes through a proxy."""
    patch = pytest.MonkeyPatch()
    for name in PROXY_ENVIRONMENT:
        patch.delenv(name, raising=False)
    yield
    patch.undo()


@pytest.fixture(scope="module")
def wire_http() -> Iterator[WireServer]:
    """One local server per module for the hand-written payloads of tests/fixtures/wire."""
    with wire_server() as server:
        yield server


@pytest.fixture
def wire(wire_http: WireServer) -> Iterator[WireServer]:
    """The module's payload server, emptied before the test and checked after it."""
    wire_http.reset()
    yield wire_http
    wire_http.check()


@pytest.fixture(scope="session", autouse=True)
def _websocket_pings_keep_off_the_global_random() -> Iterator[None]:
    """Give websockets its own random generator for the session.

    Once a flow test has run, the Prefect client keeps an events websocket open in its
    event-loop thread, and websockets draws each keepalive ping's payload from the global
    ``random``. Hypothesis compares the global random state around every draw of a strategy:
    a ping landing in between was reported as "Do not use the `random` module inside
    strategies" against a property test that uses no ``random`` at all.
    """
    import websockets.asyncio.connection
    import websockets.sync.connection

    patch = pytest.MonkeyPatch()
    own = random.Random()
    for module in (websockets.asyncio.connection, websockets.sync.connection):
        patch.setattr(module, "random", own)
    yield
    patch.undo()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """The PostgreSQL server tests run against (skip, or fail under CI, when it is down)."""
    server = PostgresServer(PG_URL)
    try:
        server.check()
    except OperationalError as exc:
        server.close()
        message = f"PostgreSQL is not reachable at {make_url(PG_URL).render_as_string()}: {exc}"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    yield server
    server.close()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> SqliteTemplate:
    """The session's migrated SQLite file, copied for each migrated SQLite database."""
    return SqliteTemplate(tmp_path_factory.mktemp("sqlite-template"))


@pytest.fixture
def migrated_url(
    request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: SqliteTemplate
) -> Iterator[object]:
    """A factory: ``migrated_url("postgresql" | "sqlite")`` is a fresh migrated database's URL.

    PostgreSQL databases (named ``prefix_...``) are dropped after the test; an SQLite database
    is ``saras.sqlite3`` in ``directory`` (a data directory), by default a new one in
    ``tmp_path``.
    """
    made: list[str] = []
    copies = iter(range(1_000))

    def make(backend: str, prefix: str = "saras_test", directory: Path | None = None) -> str:
        if backend == "sqlite":
            return sqlite_template.copy_to(directory or tmp_path / f"sqlite-{next(copies)}")
        url = request.getfixturevalue("pg_server").migrated_database(prefix)
        made.append(url)
        return url

    yield make
    for url in made:
        request.getfixturevalue("pg_server").drop_database(url)


@pytest.fixture(scope="session")
def pg_engine(pg_server: PostgresServer) -> Iterator[Engine]:
    """A PostgreSQL database migrated to head, for the whole test session."""
    url = pg_server.migrated_database()
    engine = make_engine(url)
    yield engine
    engine.dispose()
    pg_server.drop_database(url)


@pytest.fixture(scope="session")
def sqlite_engine(
    tmp_path_factory: pytest.TempPathFactory, sqlite_template: SqliteTemplate
) -> Iterator[Engine]:
    """An embedded SQLite database migrated to head, for the whole test session."""
    engine = make_engine(sqlite_template.copy_to(tmp_path_factory.mktemp("sqlite")))
    yield engine
    engine.dispose()


@pytest.fixture(params=["postgresql", "sqlite"])
def engine(request: pytest.FixtureRequest) -> Engine:
    """A migrated engine, once per backend."""
    name = "pg_engine" if request.param == "postgresql" else "sqlite_engine"
    return request.getfixturevalue(name)


def _isolated_session(engine: Engine) -> Iterator[Session]:
    connection = engine.connect()
    transaction = connection.begin()
    session = Session(bind=connection, join_transaction_mode="create_savepoint")
    try:
        yield session
    finally:
        session.close()
        transaction.rollback()
        connection.close()


@pytest.fixture
def db(engine: Engine) -> Iterator[Session]:
    """A session on each backend whose work is rolled back after the test."""
    yield from _isolated_session(engine)


@pytest.fixture
def pg_db(pg_engine: Engine) -> Iterator[Session]:
    """A PostgreSQL session whose work is rolled back after the test."""
    yield from _isolated_session(pg_engine)


# --- committed databases behind Saras' settings (flows, services, the CLI) ----------------------


@pytest.fixture(scope="session")
def flow_pg_url(pg_server: PostgresServer) -> str:
    """A migrated PostgreSQL database for the whole session (committed work, emptied per test)."""
    return pg_server.migrated_database("saras_flows")


@pytest.fixture(scope="session")
def flow_sqlite_dir(
    tmp_path_factory: pytest.TempPathFactory, sqlite_template: SqliteTemplate
) -> Path:
    """A data directory holding a migrated embedded SQLite database, for the whole session."""
    path = tmp_path_factory.mktemp("flow-sqlite")
    sqlite_template.copy_to(path)
    return path


@pytest.fixture
def flow_env() -> dict[str, str | None]:
    """Environment ``flow_db`` sets (``None`` removes): by default no encryption key.

    Without ``SARAS_SECRET_KEYS`` a key file is generated in the data directory when a test
    asks for one (``get_secret_box(generate=True)``). Override this fixture to change it.
    """
    return {"SARAS_SECRET_KEYS": None}


@pytest.fixture(params=["postgresql", "sqlite"])
def flow_db(
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    flow_env: dict[str, str | None],
) -> Iterator[Engine]:
    """Saras' settings pointed at a committed migrated database of each backend; emptied after."""
    if request.param == "postgresql":
        url = request.getfixturevalue("flow_pg_url")
        yield from point_settings_at(monkeypatch, tmp_path / "data", url, flow_env)
    else:
        data_dir = request.getfixturevalue("flow_sqlite_dir")
        yield from point_settings_at(monkeypatch, data_dir, None, flow_env)


@pytest.fixture
def pg_flow_db(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    flow_pg_url: str,
    flow_env: dict[str, str | None],
) -> Iterator[Engine]:
    """Like ``flow_db``, PostgreSQL only."""
    yield from point_settings_at(monkeypatch, tmp_path / "data", flow_pg_url, flow_env)


@pytest.fixture
def reference_dir() -> Path:
    """The shared reference material, or skip when this checkout has none beside it."""
    if not REFERENCE_DIR.is_dir():
        pytest.skip(f"reference data not available at {REFERENCE_DIR}")
    return REFERENCE_DIR
