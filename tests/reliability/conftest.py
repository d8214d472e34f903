"""Execution reliability: fake brokers on virtual time and a platform over each (no Prefect).

The scenario kit (``Platform``, ``build_platform``, ``assert_invariants``, ``Clock``,
``Checkpoints``) is tests/support/execution.py; the databases are the shared ``flow_db`` and
``pg_flow_db`` of tests/conftest.py, here with an encryption key and live trading switched on.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest
from sqlalchemy import Engine

from saras.secrets import generate_key
from tests.fakes.fake_alpaca import FakeAlpaca
from tests.fakes.fake_kite import FakeKite
from tests.support.execution import Clock, Platform, allow_live_trading, build_platform


@pytest.fixture
def flow_env() -> dict[str, str | None]:
    """An encryption key in the environment, and live trading on.

    Kite has no paper environment: the fake Kite connections are live, so trading through
    them needs the live flag (the fake Alpaca connections stay paper).
    """
    return {"SARAS_SECRET_KEYS": generate_key(), "SARAS_LIVE_TRADING": "true"}


@pytest.fixture
def clock() -> Clock:
    """The test's virtual clock."""
    return Clock()


@pytest.fixture
def alpaca_fake(clock: Clock) -> Iterator[FakeAlpaca]:
    """A fake Alpaca account (market open, $100k) on the virtual clock."""
    fake = FakeAlpaca(clock=clock, cash=Decimal("100000"))
    fake.market_open = True
    with fake:
        yield fake


@pytest.fixture
def kite_fake(clock: Clock) -> Iterator[FakeKite]:
    """A fake Kite account (Rs 10 lakh) whose rate-limit windows run on the virtual clock."""
    with FakeKite(cash="1000000", rate_clock=clock) as fake:
        yield fake


@pytest.fixture
def alpaca(pg_flow_db: Engine, alpaca_fake: FakeAlpaca, clock: Clock) -> Platform:
    """An Alpaca platform on PostgreSQL."""
    return build_platform(pg_flow_db, "alpaca", alpaca_fake, clock)


@pytest.fixture
def kite(
    pg_flow_db: Engine, kite_fake: FakeKite, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> Platform:
    """A Kite platform on PostgreSQL (Kite is live by nature: live trading is switched on)."""
    allow_live_trading(monkeypatch)
    return build_platform(pg_flow_db, "kite", kite_fake, clock)
