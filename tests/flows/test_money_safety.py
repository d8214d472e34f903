"""Money safety on the planning side (issue 8), through the flows.

Two triggers of one rebalance trade once; an asset is (symbol, exchange); cash committed to
open investments is reserved; a basket trades in one currency; a new composition becomes the
smallcase's only when its plan is approved; every flow run leaves its audit row.
"""

from __future__ import annotations

import threading
import time
from decimal import Decimal
from typing import Any

import pytest
from prefect.flow_runs import resume_flow_run
from sqlalchemy import Engine, func, select, text, update
from sqlalchemy.orm import Session

from flows.investments import invest_in_smallcase
from flows.rebalance import rebalance_smallcase
from models import (
    Asset,
    AuditLog,
    Portfolio,
    PriceHistory,
    Smallcase,
    SmallcaseConstituent,
    SmallcaseExecutionOrder,
    SmallcaseExecutionRun,
    UserSmallcaseInvestment,
)
from saras.secrets import get_secret_box
from saras.services import admin
from tests.fakes.fake_alpaca import (
    FAKE_KEY_ID,
    FAKE_SECRET,
    PROXY_ENVIRONMENT,
    FakeAlpaca,
    Fault,
    RecordedRequest,
)
from tests.support.flows import when_paused
from tests.support.platform import seed_demo_platform

FAST = {"poll_interval": 0.01, "deadline_seconds": 10, "retry_backoff": 0.01}
NEW_US = [
    {"symbol": "AAPL", "exchange": "NASDAQ", "weight": "30", "rationale": "a"},
    {"symbol": "MSFT", "exchange": "NASDAQ", "weight": "30", "rationale": "b"},
    {"symbol": "NVDA", "exchange": "NASDAQ", "weight": "25", "rationale": "c"},
    {"symbol": "GOOGL", "exchange": "NASDAQ", "weight": "15", "rationale": "d"},
]
US_PRICES = {"AAPL": "190", "MSFT": "410", "NVDA": "120", "GOOGL": "170", "AMZN": "180"}


_seed = seed_demo_platform


def _weights(engine: Engine, smallcase: str) -> dict[tuple[str, str], Decimal]:
    with Session(engine) as session:
        rows = session.execute(
            select(Asset.symbol, Asset.exchange, SmallcaseConstituent.weight_percentage)
            .join(SmallcaseConstituent, SmallcaseConstituent.asset_id == Asset.id)
            .join(Smallcase, Smallcase.id == SmallcaseConstituent.smallcase_id)
            .where(Smallcase.name == smallcase)
        ).all()
    return {(s, e): Decimal(str(w)).normalize() for s, e, w in rows}


def _audits(engine: Engine, event_type: str) -> list[AuditLog]:
    with Session(engine) as session:
        return list(session.scalars(select(AuditLog).where(AuditLog.event_type == event_type)))


def _when_paused(action: Any) -> threading.Thread:
    """Call ``action(flow_run_id)`` once a flow run is paused (the newest; within 60 s)."""
    return when_paused(action)


# --- item 1: two triggers of one rebalance ------------------------------------------------------


@pytest.fixture
def slow_alpaca(pg_flow_db: Engine, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The demo platform plus an investor on a fake Alpaca account whose account read is slow."""
    for name in PROXY_ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    fake = FakeAlpaca(cash=Decimal("100000"))
    fake.market_open = True
    with fake:
        for symbol, price in US_PRICES.items():
            fake.add_asset(symbol, price=Decimal(price))

        def extra(session: Session) -> None:
            user = admin.add_user(session, "bo@example.com", "Bo", "Lee")
            admin.add_portfolio(session, user, "main", "USD", Decimal("50000"))
            admin.add_connection(
                session,
                get_secret_box(generate=True),
                user,
                "alpaca",
                alias="alpaca-fake",
                api_key=FAKE_KEY_ID,
                api_secret=FAKE_SECRET,
                metadata={"base_url": fake.url},
            )

        _seed(pg_flow_db, extra)
        # the planning prices are the fake's prices, so the plan and the fills agree
        with pg_flow_db.begin() as conn:
            for symbol, price in US_PRICES.items():
                asset_id = conn.execute(
                    select(Asset.id).where(Asset.symbol == symbol, Asset.exchange == "NASDAQ")
                ).scalar_one()
                conn.execute(
                    PriceHistory.__table__.update()
                    .where(PriceHistory.asset_id == asset_id)
                    .values(
                        open_price=Decimal(price),
                        high_price=Decimal(price),
                        low_price=Decimal(price),
                        close_price=Decimal(price),
                    )
                )
        state = invest_in_smallcase(
            "bo@example.com",
            "US Tech Leaders",
            "10000",
            broker_alias="alpaca-fake",
            execution=FAST,
            return_state=True,
        )
        assert state.is_completed(), state.message
        yield fake


def _posted_orders(fake: FakeAlpaca) -> list[RecordedRequest]:
    return fake.order_posts()


@pytest.mark.parametrize("stagger", [0.0, 1.0])
def test_two_triggers_of_one_rebalance_trade_once(
    pg_flow_db: Engine, slow_alpaca: FakeAlpaca, stagger: float
) -> None:
    fake = slow_alpaca
    before = len(_posted_orders(fake))

    def slow_account(request: RecordedRequest) -> Fault | None:
        if request.method == "GET" and request.path == "/v2/account":
            return Fault.slow(2.0)
        return None

    fake.fault_hook = slow_account
    states: dict[int, Any] = {}

    def trigger(i: int) -> None:
        states[i] = rebalance_smallcase(
            "US Tech Leaders",
            constituents=NEW_US,
            require_approval=False,
            execution=FAST,
            return_state=True,
        )

    threads = [threading.Thread(target=trigger, args=(i,)) for i in range(2)]
    threads[0].start()
    time.sleep(stagger)
    threads[1].start()
    for t in threads:
        t.join(timeout=120)
    fake.fault_hook = None

    with Session(pg_flow_db) as session:
        traded = session.scalars(
            select(SmallcaseExecutionRun.status).where(
                SmallcaseExecutionRun.run_type == "rebalance",
                SmallcaseExecutionRun.status.in_(
                    ["executing", "completed", "partially_completed", "failed"]
                ),
            )
        ).all()
        planned_orders = session.scalar(
            select(func.count())
            .select_from(SmallcaseExecutionOrder)
            .join(SmallcaseExecutionRun)
            .where(
                SmallcaseExecutionRun.run_type == "rebalance",
                SmallcaseExecutionRun.status == "completed",
            )
        )
    assert traded == ["completed"], [s.message for s in states.values()]
    # the broker saw one plan's orders, not two
    assert len(_posted_orders(fake)) - before == planned_orders
    assert fake.positions.get("AMZN", Decimal(0)) == 0
    assert all(s.is_completed() or "another" in (s.message or "") for s in states.values())


# --- item 2: an asset is (symbol, exchange) -----------------------------------------------------


def _add_bse_infy(session: Session) -> None:
    admin.add_asset(
        session,
        "INFY",
        "BSE",
        "INR",
        name="Infosys Ltd (BSE)",
        metadata={"lot_size": 1, "tick_size": "0.05"},
    )


def _infy_on_nse_and_bse(flow_db: Engine) -> None:
    """The demo platform plus INFY on BSE, closing 1 INR above NSE's every day."""
    _seed(flow_db, _add_bse_infy)
    with flow_db.begin() as conn:  # BSE closes a little above NSE's
        nse, bse = (
            conn.execute(
                select(Asset.id).where(Asset.symbol == "INFY", Asset.exchange == exchange)
            ).scalar_one()
            for exchange in ("NSE", "BSE")
        )
        rows = conn.execute(select(PriceHistory).where(PriceHistory.asset_id == nse)).all()
        conn.execute(
            PriceHistory.__table__.insert(),
            [
                {
                    "asset_id": bse,
                    "price_date": r.price_date,
                    "open_price": r.open_price + 1,
                    "high_price": r.high_price + 1,
                    "low_price": r.low_price + 1,
                    "close_price": r.close_price + 1,
                    "volume": r.volume,
                }
                for r in rows
            ],
        )


#: the India Bluechips weights with INFY moved from NSE to BSE
INFY_ON_BSE = [
    {"symbol": "RELIANCE", "weight": "25", "exchange": "NSE"},
    {"symbol": "TCS", "weight": "20", "exchange": "NSE"},
    {"symbol": "INFY", "weight": "20", "exchange": "BSE"},
    {"symbol": "HDFCBANK", "weight": "20", "exchange": "NSE"},
    {"symbol": "SBIN", "weight": "15", "exchange": "NSE"},
]


def test_the_same_symbol_on_two_exchanges_is_two_assets(flow_db: Engine) -> None:
    _infy_on_nse_and_bse(flow_db)
    state = invest_in_smallcase(
        "ravi@example.in", "India Bluechips", "500000", execution=FAST, return_state=True
    )
    assert state.is_completed(), state.message
    # move the INFY weight from NSE to BSE: sell the NSE shares, buy BSE ones
    state = rebalance_smallcase(
        "India Bluechips",
        constituents=INFY_ON_BSE,
        require_approval=True,
        approval_timeout_seconds=1,
        approval_poll_seconds=1,
        return_state=True,
    )
    assert state.is_failed()  # nobody approved
    with Session(flow_db) as session:
        legs = session.execute(
            select(Asset.symbol, Asset.exchange, SmallcaseExecutionOrder.side)
            .join(Asset, Asset.id == SmallcaseExecutionOrder.asset_id)
            .join(SmallcaseExecutionRun)
            .where(SmallcaseExecutionRun.run_type == "rebalance", Asset.symbol == "INFY")
        ).all()
    assert sorted(legs) == [("INFY", "BSE", "buy"), ("INFY", "NSE", "sell")]


def test_a_rebalance_between_two_exchanges_fills_each_at_its_own_price(flow_db: Engine) -> None:
    """The defect's end: the NSE sell priced at NYSE's (here BSE's) close was refused by the
    ledger and the run stayed ``executing``. Each leg fills at its own exchange's close."""
    from models import PortfolioHolding, TradingTransaction

    _infy_on_nse_and_bse(flow_db)
    state = invest_in_smallcase(
        "ravi@example.in", "India Bluechips", "500000", execution=FAST, return_state=True
    )
    assert state.is_completed(), state.message
    state = rebalance_smallcase(
        "India Bluechips",
        constituents=INFY_ON_BSE,
        require_approval=False,
        execution=FAST,
        return_state=True,
    )
    assert state.is_completed(), state.message
    with Session(flow_db) as session:
        close = {
            exchange: Decimal(str(price))
            for exchange, price in session.execute(
                select(Asset.exchange, PriceHistory.close_price)
                .join(PriceHistory, PriceHistory.asset_id == Asset.id)
                .where(Asset.symbol == "INFY")
                .order_by(PriceHistory.price_date)
            )
        }  # the latest close per exchange
        fills = session.execute(
            select(Asset.exchange, TradingTransaction.transaction_type, TradingTransaction.price)
            .join(Asset, Asset.id == TradingTransaction.asset_id)
            .where(Asset.symbol == "INFY")
        ).all()
        held = dict(
            session.execute(
                select(Asset.exchange, PortfolioHolding.quantity)
                .join(Asset, Asset.id == PortfolioHolding.asset_id)
                .where(Asset.symbol == "INFY")
            ).all()
        )
        runs = session.scalars(
            select(SmallcaseExecutionRun.status).where(
                SmallcaseExecutionRun.run_type == "rebalance"
            )
        ).all()
    assert runs == ["completed"]
    assert close["BSE"] == close["NSE"] + 1
    assert {(e, t, Decimal(str(p))) for e, t, p in fills if t == "sell"} == {
        ("NSE", "sell", close["NSE"])
    }
    assert ("BSE", "buy", close["BSE"]) in {(e, t, Decimal(str(p))) for e, t, p in fills}
    assert Decimal(str(held.get("NSE", 0))) == 0 and Decimal(str(held["BSE"])) > 0


# --- item 3: cash is reserved ---------------------------------------------------------------------


def test_a_top_up_beyond_free_cash_is_refused(platform: Engine) -> None:
    state = invest_in_smallcase(
        "asha@example.com", "US Tech Leaders", "60000", execution=FAST, return_state=True
    )
    assert state.is_completed(), state.message
    with Session(platform) as session:
        cash = Decimal(
            str(session.scalar(select(Portfolio.cash_balance).where(Portfolio.currency == "USD")))
        )
    assert cash < Decimal("41000")
    state = invest_in_smallcase(
        "asha@example.com", "US Tech Leaders", "50000", execution=FAST, return_state=True
    )
    assert state.is_failed()
    assert "insufficient free cash" in state.message and "USD" in state.message
    assert "50000" in state.message
    with Session(platform) as session:
        inv = session.scalars(select(UserSmallcaseInvestment)).one()
        assert Decimal(str(inv.investment_amount)) == Decimal("60000")
        assert session.scalar(select(func.count()).select_from(SmallcaseExecutionRun)) == 1
        assert session.scalar(select(func.min(Portfolio.cash_balance))) >= 0


def _second_us_smallcase(session: Session) -> None:
    admin.add_smallcase(
        session,
        "US Chips",
        [admin.ConstituentInput("NVDA", Decimal(60)), admin.ConstituentInput("AAPL", Decimal(40))],
    )


def test_two_pending_investments_cannot_claim_the_same_cash(flow_db: Engine) -> None:
    _seed(flow_db, _second_us_smallcase)
    states: dict[str, Any] = {}

    def first() -> None:
        states["first"] = invest_in_smallcase(
            "asha@example.com",
            "US Tech Leaders",
            "70000",
            require_approval=True,
            execution=FAST,
            return_state=True,
        )

    thread = threading.Thread(target=first)
    thread.start()
    paused = threading.Event()
    _when_paused(lambda _id: paused.set())
    assert paused.wait(60)
    try:
        state = invest_in_smallcase(
            "asha@example.com", "US Chips", "70000", execution=FAST, return_state=True
        )
        assert state.is_failed()
        assert "insufficient free cash" in state.message
        assert "70000" in state.message and "reserved" in state.message
    finally:
        _when_paused(lambda run_id: resume_flow_run(run_id, run_input={"approve": False}))
        thread.join(timeout=60)
    assert states["first"].is_failed()
    # the rejected investment failed and gave its cash back: now the second one fits
    state = invest_in_smallcase(
        "asha@example.com", "US Chips", "70000", execution=FAST, return_state=True
    )
    assert state.is_completed(), state.message
    with Session(flow_db) as session:
        rows = session.execute(
            select(Smallcase.name, UserSmallcaseInvestment.status)
            .join(UserSmallcaseInvestment)
            .order_by(Smallcase.name)
        ).all()
    assert [tuple(r) for r in rows] == [("US Chips", "active"), ("US Tech Leaders", "failed")]


def test_a_rejected_top_up_gives_its_amount_back(platform: Engine) -> None:
    invest_in_smallcase("asha@example.com", "US Tech Leaders", "10000", execution=FAST)
    _when_paused(lambda run_id: resume_flow_run(run_id, run_input={"approve": False}))
    state = invest_in_smallcase(
        "asha@example.com",
        "US Tech Leaders",
        "5000",
        require_approval=True,
        execution=FAST,
        return_state=True,
    )
    assert state.is_failed() and "rejected" in state.message
    with Session(platform) as session:
        inv = session.scalars(select(UserSmallcaseInvestment)).one()
    assert Decimal(str(inv.investment_amount)) == Decimal("10000")


def _until_a_session_waits_for_a_lock(engine: Engine, timeout: float = 60.0) -> None:
    """Return once another session of this database waits for a lock (PostgreSQL's view)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            waiting = conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND wait_event_type = 'Lock'"
                )
            ).scalar_one()
        if waiting:
            return
        time.sleep(0.05)
    raise AssertionError("no session came to wait for the lock")


def _second_while_the_first_holds(
    engine: Engine, first: tuple[str, str], second: tuple[str, str]
) -> Any:
    """Open ``first`` (smallcase, amount) without committing; run the invest flow for
    ``second`` meanwhile, which reads, then waits for a lock; commit; return its state."""
    from saras.services.investments import open_investment

    states: dict[str, Any] = {}
    with Session(engine) as session, session.begin():
        open_investment(session, "asha@example.com", first[0], Decimal(first[1]))

        def run_second() -> None:
            states["second"] = invest_in_smallcase(
                "asha@example.com", second[0], second[1], execution=FAST, return_state=True
            )

        thread = threading.Thread(target=run_second)
        thread.start()
        _until_a_session_waits_for_a_lock(engine)
    thread.join(timeout=60)
    return states["second"]


def test_concurrent_invests_cannot_both_pass_the_cash_check(pg_flow_db: Engine) -> None:
    _seed(pg_flow_db, _second_us_smallcase)
    # a first invest has checked the cash and created its investment, not yet committed
    state = _second_while_the_first_holds(
        pg_flow_db, ("US Tech Leaders", "70000"), ("US Chips", "70000")
    )
    assert state.is_failed(), state.message
    assert "insufficient free cash" in state.message and "70000.00 USD reserved" in state.message
    with Session(pg_flow_db) as session:
        assert session.scalar(select(func.count()).select_from(UserSmallcaseInvestment)) == 1


def test_concurrent_top_ups_both_count(pg_flow_db: Engine) -> None:
    """A top-up waiting for the portfolio lock must add to the amount the first one wrote,
    not to the one it read before: a lost top-up would be spent but no longer reserved."""
    _seed(pg_flow_db)
    state = invest_in_smallcase(
        "asha@example.com", "US Tech Leaders", "10000", execution=FAST, return_state=True
    )
    assert state.is_completed(), state.message
    # a first top-up has checked the cash and added its 5000, not yet committed; the second
    # read the investment before it waits
    second = _second_while_the_first_holds(
        pg_flow_db, ("US Tech Leaders", "5000"), ("US Tech Leaders", "7000")
    )
    assert second.is_completed(), second.message
    with Session(pg_flow_db) as session:
        inv = session.scalars(select(UserSmallcaseInvestment)).one()
    assert Decimal(str(inv.investment_amount)) == Decimal("22000")


# --- item 4: one currency, reachable exchanges ---------------------------------------------------


def test_a_composition_in_another_currency_is_refused(platform: Engine) -> None:
    invest_in_smallcase("asha@example.com", "US Tech Leaders", "10000", execution=FAST)
    before = _weights(platform, "US Tech Leaders")
    mixed = [
        {"symbol": "AAPL", "exchange": "NASDAQ", "weight": "50"},
        {"symbol": "INFY", "weight": "30", "exchange": "NSE"},
        {"symbol": "TCS", "weight": "20", "exchange": "NSE"},
    ]
    state = rebalance_smallcase(
        "US Tech Leaders", constituents=mixed, require_approval=False, return_state=True
    )
    assert state.is_failed()
    assert "INFY (NSE)" in state.message and "TCS (NSE)" in state.message
    assert "USD" in state.message and "AAPL" not in state.message
    assert _weights(platform, "US Tech Leaders") == before
    with Session(platform) as session:
        assert (
            session.scalar(
                select(func.count())
                .select_from(SmallcaseExecutionRun)
                .where(SmallcaseExecutionRun.run_type == "rebalance")
            )
            == 0
        )


# --- item 6: the composition travels with the plan ------------------------------------------------


@pytest.mark.parametrize("decision", ["approve", "reject", "timeout"])
def test_a_new_composition_applies_only_when_approved(platform: Engine, decision: str) -> None:
    invest_in_smallcase("asha@example.com", "US Tech Leaders", "10000", execution=FAST)
    before = _weights(platform, "US Tech Leaders")
    answer = {
        "approve": {"approve": True, "approver_email": "asha@example.com"},
        "reject": {"approve": False},
        "timeout": None,
    }[decision]
    if answer is not None:
        _when_paused(lambda run_id: resume_flow_run(run_id, run_input=answer))
    state = rebalance_smallcase(
        "US Tech Leaders",
        constituents=NEW_US,
        require_approval=True,
        approval_timeout_seconds=2 if decision == "timeout" else 60,
        approval_poll_seconds=1,
        execution=FAST,
        return_state=True,
    )
    after = _weights(platform, "US Tech Leaders")
    if decision == "approve":
        assert state.is_completed(), state.message
        assert after == {(c["symbol"], "NASDAQ"): Decimal(c["weight"]) for c in NEW_US}
    else:
        assert state.is_failed()
        assert after == before


def test_approving_a_superseded_plan_is_a_clear_rejection(platform: Engine) -> None:
    invest_in_smallcase("asha@example.com", "US Tech Leaders", "10000", execution=FAST)
    before = _weights(platform, "US Tech Leaders")
    states: dict[str, Any] = {}

    def first() -> None:
        states["first"] = rebalance_smallcase(
            "US Tech Leaders",
            constituents=NEW_US,
            require_approval=True,
            approval_timeout_seconds=60,
            approval_poll_seconds=1,
            execution=FAST,
            return_state=True,
        )

    thread = threading.Thread(target=first)
    thread.start()
    paused: list[Any] = []
    _when_paused(paused.append).join(timeout=60)
    assert paused
    # one rebalance of a smallcase at a time: a second one is refused while this one waits
    refused = rebalance_smallcase("US Tech Leaders", dry_run=True, return_state=True)
    assert refused.is_failed() and "already being rebalanced" in (refused.message or "")
    # a newer plan for the same investment (a top-up) supersedes the waiting one
    newer = invest_in_smallcase(
        "asha@example.com", "US Tech Leaders", "1000", execution=FAST, return_state=True
    )
    assert newer.is_completed(), newer.message
    resume_flow_run(paused[0], run_input={"approve": True, "approver_email": "asha@example.com"})
    thread.join(timeout=60)
    state = states["first"]
    assert state.is_failed()
    assert "superseded" in state.message and "InvalidTransition" not in state.message
    # the superseded plan's composition never became the smallcase's
    assert _weights(platform, "US Tech Leaders") == before


# --- item 10: every flow run leaves its audit row; failures show their reason ---------------------


def test_an_unexpected_error_still_writes_the_audit_row(platform: Engine) -> None:
    invest_in_smallcase("asha@example.com", "US Tech Leaders", "10000", execution=FAST)
    state = rebalance_smallcase(
        "US Tech Leaders", policy={"no_such_policy_key": "1"}, return_state=True
    )
    assert state.is_failed()
    rows = _audits(platform, "flow.rebalance_smallcase")
    assert len(rows) == 1
    assert rows[0].success is False and "no_such_policy_key" in (rows[0].error_message or "")
    assert rows[0].request_id is not None


def test_a_rejected_rebalance_shows_its_reason(platform: Engine) -> None:
    invest_in_smallcase("asha@example.com", "US Tech Leaders", "10000", execution=FAST)
    _when_paused(lambda run_id: resume_flow_run(run_id, run_input={"approve": False, "note": "no"}))
    state = rebalance_smallcase(
        "US Tech Leaders",
        constituents=NEW_US,
        require_approval=True,
        approval_timeout_seconds=60,
        approval_poll_seconds=1,
        return_state=True,
    )
    assert state.is_failed()
    outcome = state.result(raise_on_failure=False)
    assert isinstance(outcome, Exception)
    assert "rejected by the analyst" in str(outcome)
    assert "cannot be resolved" not in str(outcome)
    rows = _audits(platform, "flow.rebalance_smallcase")
    assert len(rows) == 1 and rows[0].success is False


def test_a_crashing_flow_of_any_kind_writes_its_audit_row(platform: Engine) -> None:
    from flows.execution import execute_run

    state = execute_run("not-a-run-id", execution={"no_such_setting": 1}, return_state=True)
    assert state.is_failed()
    rows = _audits(platform, "flow.execute_run")
    assert len(rows) == 1 and rows[0].success is False
    assert rows[0].path == "flows/execution.py:execute_run"


# --- item 7: "paper" means paper when a connection is chosen --------------------------------------

LIVE_URL = "https://api.alpaca.markets"


def _paper_row_at_the_live_endpoint(engine: Engine) -> None:
    """An Alpaca row stored as paper whose base_url is the live endpoint (an older row)."""
    from models import User, UserBrokerConnection

    with Session(engine) as session, session.begin():
        user_id = session.scalars(select(User.id).where(User.email == "asha@example.com")).one()
        session.add(
            UserBrokerConnection(
                user_id=user_id,
                broker_type="alpaca",
                alias="alpaca-live-url",
                paper_trading=True,
                connection_metadata={"base_url": LIVE_URL},
            )
        )


def test_asking_for_paper_never_picks_a_connection_that_reaches_real_money(
    platform: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from saras.settings import get_settings

    _paper_row_at_the_live_endpoint(platform)
    monkeypatch.setenv("SARAS_LIVE_TRADING", "true")  # live trading is allowed on this platform
    get_settings.cache_clear()
    try:
        by_type = invest_in_smallcase(
            "asha@example.com",
            "US Tech Leaders",
            "1000",
            broker_type="alpaca",
            paper_trading=True,
            execution=FAST,
            return_state=True,
        )
        by_alias = invest_in_smallcase(
            "asha@example.com",
            "US Tech Leaders",
            "1000",
            broker_alias="alpaca-live-url",
            paper_trading=True,
            execution=FAST,
            return_state=True,
        )
    finally:
        get_settings.cache_clear()
    assert by_type.is_failed() and "no active paper alpaca connection" in by_type.message
    assert by_alias.is_failed()
    assert "'alpaca-live-url' reaches a live account, not paper" in by_alias.message
    with Session(platform) as session:
        assert session.scalar(select(func.count()).select_from(UserSmallcaseInvestment)) == 0
        assert session.scalar(select(func.count()).select_from(SmallcaseExecutionRun)) == 0


def test_an_investment_through_a_live_reaching_connection_is_recorded_live(
    platform: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The investment's execution mode says where its orders can go, not the row's flag."""
    from saras.services.investments import open_investment

    _paper_row_at_the_live_endpoint(platform)
    with Session(platform) as session, session.begin():
        investment, _ = open_investment(
            session,
            "asha@example.com",
            "US Tech Leaders",
            Decimal("1000"),
            broker_alias="alpaca-live-url",
        )
        assert investment.execution_mode == "live"


# --- item 3/7: an opening that plans nothing leaves nothing behind -------------------------------


def test_an_investment_that_plans_nothing_frees_its_cash(platform: Engine) -> None:
    """A connection that cannot trade (no keys) plans nothing: the investment must not stay
    ``pending`` with its cash reserved, and the user may invest again through another one."""
    from models import User, UserBrokerConnection

    with Session(platform) as session, session.begin():
        user_id = session.scalars(select(User.id).where(User.email == "asha@example.com")).one()
        session.add(
            UserBrokerConnection(
                user_id=user_id,
                broker_type="alpaca",
                alias="alpaca-no-keys",
                paper_trading=True,
                connection_metadata={"base_url": "http://127.0.0.1:9"},
            )
        )
    state = invest_in_smallcase(
        "asha@example.com",
        "US Tech Leaders",
        "60000",
        broker_alias="alpaca-no-keys",
        execution=FAST,
        return_state=True,
    )
    assert state.is_failed() and "alpaca-no-keys" in (state.message or "")
    assert "the invest of 60000 was not made, its cash is free" in (state.message or "")
    with Session(platform) as session:
        statuses = session.scalars(select(UserSmallcaseInvestment.status)).all()
    assert statuses == ["failed"]
    # the 60000 is free again: the same amount through the paper connection goes through
    state = invest_in_smallcase(
        "asha@example.com", "US Tech Leaders", "60000", execution=FAST, return_state=True
    )
    assert state.is_completed(), state.message


def test_a_stored_paper_connection_the_book_cannot_read_is_skipped_not_fatal(
    pg_flow_db: Engine,
) -> None:
    """A paper row whose settings were stored before they were checked (``paper_fee_bps``
    "abc") cannot open: planning skips its investment as ``connection_unusable``, naming the
    setting, instead of failing the whole rebalance; adding such a row now is refused."""
    from models import UserBrokerConnection
    from saras.services.rebalance import plan_and_write

    _seed(pg_flow_db)
    state = invest_in_smallcase(
        "asha@example.com", "US Tech Leaders", "10000", execution=FAST, return_state=True
    )
    assert state.is_completed(), state.message
    with pg_flow_db.begin() as conn:
        conn.execute(
            update(UserBrokerConnection)
            .where(UserBrokerConnection.broker_type == "paper")
            .values(connection_metadata={"paper_fee_bps": "abc"})
        )
    plan = plan_and_write(pg_flow_db, "US Tech Leaders", constituents=NEW_US, dry_run=True)
    assert plan.runs == ()
    assert len(plan.skipped["connection_unusable"]) == 1
    assert any("fee_bps" in problem for problem in plan.problems), plan.problems
