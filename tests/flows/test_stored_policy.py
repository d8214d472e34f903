"""A smallcase's stored rebalance policy plans its rebalances, unless a run overrides it."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from flows.investments import invest_in_smallcase
from flows.rebalance import rebalance_smallcase
from saras.services import policy as policy_service

NEW_US = [
    {"symbol": "AAPL", "exchange": "NASDAQ", "weight": "30", "rationale": "a"},
    {"symbol": "MSFT", "exchange": "NASDAQ", "weight": "30", "rationale": "b"},
    {"symbol": "NVDA", "exchange": "NASDAQ", "weight": "25", "rationale": "c"},
    {"symbol": "GOOGL", "exchange": "NASDAQ", "weight": "15", "rationale": "d"},
]


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
