"""A smallcase's stored rebalance policy plans its rebalances, unless a run overrides it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from flows.investments import invest_in_smallcase
from flows.rebalance import rebalance_smallcase
from saras.secrets import get_secret_box
from saras.services import policy as policy_service
from saras.services import prices
from saras.services.demo import seed_demo

NEW_US = [
    {"symbol": "AAPL", "exchange": "NASDAQ", "weight": "30", "rationale": "a"},
    {"symbol": "MSFT", "exchange": "NASDAQ", "weight": "30", "rationale": "b"},
    {"symbol": "NVDA", "exchange": "NASDAQ", "weight": "25", "rationale": "c"},
    {"symbol": "GOOGL", "exchange": "NASDAQ", "weight": "15", "rationale": "d"},
]


@pytest.fixture
def platform(flow_db: Engine) -> Engine:
    get_secret_box(generate=True)
    with Session(flow_db) as session, session.begin():
        seed_demo(session)
    now = datetime.now(UTC)
    with Session(flow_db) as session:
        items, _ = prices.plan_ingestion(session, now=now, source="simulated")
    prices.ingest_batch(flow_db, items, now=now)
    return flow_db


def _buys(**kwargs: Any) -> int:
    """Plan the new composition (dry run); return how many buy orders it has."""
    state = rebalance_smallcase(
        "US Tech Leaders", constituents=NEW_US, dry_run=True, return_state=True, **kwargs
    )
    assert state.is_completed(), state.message
    plan = state.result(raise_on_failure=False)["plan"]
    return sum(int(a["orders"]) for a in plan["assets"] if a["side"] == "buy")


def test_stored_policy_is_the_default_and_a_run_overrides_it(platform: Engine) -> None:
    fast = {"poll_interval": 0.01, "deadline_seconds": 10, "retry_backoff": 0.01}
    invest_in_smallcase("asha@example.com", "US Tech Leaders", "10000", execution=fast)
    assert _buys() > 0  # no stored policy: today's defaults trade
    # a minimum trade value no order reaches: the stored policy alone stops every buy (the
    # sell of the removed constituent is a liquidation, which no minimum holds back)
    with Session(platform) as session, session.begin():
        policy_service.set_policy(
            session, "US Tech Leaders", {"min_trade_value": {"USD": "100000000"}}
        )
    assert _buys() == 0
    # a run's own policy replaces the stored one
    assert _buys(policy={"min_trade_value": {"USD": "1"}}) > 0
