"""Whole flows under Prefect's test harness, on the shared committed databases.

Flows open their own connections through settings: ``flow_db`` / ``pg_flow_db``
(tests/conftest.py) point ``SARAS_DATABASE_URL`` at a migrated database and empty every table
after each test. ``platform`` is the demo platform on it (tests/support/platform.py);
``when_paused`` (tests/support/flows.py) answers a paused run from a watcher thread.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prefect.events.worker import EventsWorker
from prefect.logging.handlers import APILogWorker
from prefect.testing.utilities import prefect_test_harness
from sqlalchemy import Engine

from tests.support.flows import stop_pause_watchers, when_paused
from tests.support.platform import seed_demo_platform

__all__ = ["when_paused"]  # older tests import it from here


@pytest.fixture(scope="session", autouse=True)
def prefect_harness() -> Iterator[None]:
    """One temporary Prefect server and database for the whole test session (per worker)."""
    with prefect_test_harness(server_startup_timeout=120):
        yield
        # send what is still queued with a bound first: the harness's own drain has none,
        # and once hung for minutes at the end of a session on a loaded machine
        APILogWorker.drain_all(timeout=10)
        EventsWorker.drain_all(timeout=10)


@pytest.fixture(autouse=True)
def _stop_pause_watchers() -> Iterator[None]:
    """End the test's ``when_paused`` watchers with it, so none answers a later test's run."""
    yield
    stop_pause_watchers()


@pytest.fixture
def platform(flow_db: Engine) -> Engine:
    """The demo platform with fresh simulated prices up to the last completed sessions."""
    return seed_demo_platform(flow_db)
