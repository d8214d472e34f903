"""Flows refuse bad parameters naming them, and no market-data secret is ever a parameter."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL
from sqlalchemy import Engine, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from flows.evaluate_rebalances import evaluate_rebalances
from flows.execution import execute_run
from flows.investments import invest_in_smallcase
from flows.position_snapshot import snapshot_positions
from flows.price_history import ingest_price_history
from flows.rebalance import rebalance_smallcase
from flows.repair import repair_run
from models import PriceHistory, SmallcaseExecutionRun, UserSmallcaseInvestment
from saras.errors import InvalidInputError
from saras.secrets import generate_key, get_secret_box
from saras.services import admin
from saras.settings import get_settings

KEY = "PKMARKETDATA0042KEY"
SECRET = "market-data-secret-do-not-store-9f3a"
FAKES = Path(__file__).resolve().parents[1] / "marketdata" / "fakes.py"


def _fakes() -> ModuleType:
    name = "saras_test_marketdata_fakes"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, FAKES)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.mark.parametrize(
    ("parameters", "culprit"),
    [
        ({"batch_size": -1}, "batch_size '-1'"),
        ({"batch_size": 0}, "batch_size '0'"),
        ({"start": date(2024, 2, 1), "end": date(2024, 1, 1)}, "start 2024-02-01 is after end"),
        ({"end": date(2100, 1, 1)}, "end '2100-01-01': in the future"),
        ({"exchanges": ["LSE"]}, "exchanges.0 'LSE'"),
        ({"source_options": {"api_key": "PK-SHOULD-NOT-BE-HERE"}}, "source_options 'api_key'"),
        ({"source_options": {"access_token": "x"}}, "source_options 'access_token'"),
        ({"source_options": {"connection": "no-slash"}}, "source_options 'connection'"),
    ],
)
def test_price_flow_refuses_bad_parameters_naming_them(
    flow_db: Engine, parameters: dict[str, Any], culprit: str
) -> None:
    with pytest.raises(InvalidInputError) as caught:
        ingest_price_history(**parameters)
    assert culprit in str(caught.value)
    assert "PK-SHOULD-NOT-BE-HERE" not in str(caught.value)


@pytest.mark.parametrize(
    ("parameters", "culprit"),
    [
        ({"snapshot_date": date(2100, 1, 1)}, "snapshot_date '2100-01-01': in the future"),
        ({"batch_size": -1}, "batch_size '-1'"),
    ],
)
def test_snapshot_flow_refuses_bad_parameters_naming_them(
    flow_db: Engine, parameters: dict[str, Any], culprit: str
) -> None:
    with pytest.raises(InvalidInputError, match=culprit):
        snapshot_positions(**parameters)


@pytest.fixture
def alpaca_data() -> Iterator[Any]:
    with _fakes().FakeAlpacaData(key=KEY, secret=SECRET) as server:
        server.add_bars(
            "ACME",
            [
                ("2024-01-02", 50.0, 51.0, 49.0, 50.5, 100_000),
                ("2024-01-03", 50.5, 52.0, 50.0, 51.5, 120_000),
            ],
        )
        yield server


def test_market_data_credentials_come_from_a_connection_and_never_reach_prefect(
    pg_flow_db: Engine, alpaca_data: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SARAS_SECRET_KEYS", generate_key())
    get_settings.cache_clear()
    with Session(pg_flow_db) as session, session.begin():
        user = admin.add_user(session, "md@example.com")
        admin.add_connection(
            session,
            get_secret_box(),
            user,
            "alpaca",
            alias="md",
            api_key=KEY,
            api_secret=SECRET,
            metadata={"data_url": alpaca_data.url},
        )
        admin.add_asset(session, "ACME", "NASDAQ", "USD")

    state = ingest_price_history(
        symbols=["ACME"],
        start=date(2024, 1, 1),
        end=date(2024, 1, 5),
        source="alpaca",
        source_options={"connection": "md@example.com/md"},
        return_state=True,
    )
    assert state.is_completed(), state.message
    with Session(pg_flow_db) as session:
        assert session.scalar(select(func.count()).select_from(PriceHistory)) == 2

    # Prefect's own database (the test harness's SQLite file) holds neither the key nor secret
    database = make_url(PREFECT_API_DATABASE_CONNECTION_URL.value()).database
    assert database and Path(database).is_file()
    stored = b"".join(p.read_bytes() for p in Path(database).parent.glob(Path(database).name + "*"))
    assert b"md@example.com/md" in stored  # the parameters are there ...
    assert KEY.encode() not in stored and SECRET.encode() not in stored  # ... the secrets not


@pytest.mark.parametrize(
    ("amount", "culprit"),
    [
        ("abc", "amount 'abc': not a decimal number"),
        ("NaN", "amount 'NaN': not a finite number"),
        ("1e30", "amount '1e30': out of range"),
        ("-5", "amount '-5': must be positive"),
        ("\uff15\uff10\uff10", "amount '\uff15\uff10\uff10': not a decimal number"),
    ],
)
def test_invest_refuses_a_bad_amount_naming_it_and_opens_nothing(
    platform: Engine, amount: str, culprit: str
) -> None:
    with Session(platform) as session:
        before = session.scalar(select(func.count()).select_from(UserSmallcaseInvestment))
    state = invest_in_smallcase("asha@example.com", "US Tech Leaders", amount, return_state=True)
    assert state.is_failed() and culprit in str(state.message), state.message
    with Session(platform) as session:
        after = session.scalar(select(func.count()).select_from(UserSmallcaseInvestment))
    assert after == before


@pytest.mark.parametrize("flow_fn", [execute_run, repair_run], ids=["execute", "repair"])
def test_a_run_id_that_is_no_id_is_named(flow_db: Engine, flow_fn: Any) -> None:
    state = flow_fn("not-a-uuid", return_state=True)
    assert state.is_failed()
    assert "run_id 'not-a-uuid': not a run id" in str(state.message), state.message


def test_evaluating_triggers_in_2100_is_refused(flow_db: Engine) -> None:
    state = evaluate_rebalances(
        as_of=datetime(2100, 1, 1, 16, tzinfo=UTC), start_runs=False, return_state=True
    )
    assert state.is_failed()
    assert "as_of '2100-01-01T16:00:00+00:00': in the future" in str(state.message)


@pytest.mark.parametrize(
    ("waits", "culprit"),
    [
        ({"approval_timeout_seconds": -1}, "approval_timeout_seconds '-1'"),
        ({"approval_timeout_seconds": 2, "approval_poll_seconds": 0}, "approval_poll_seconds '0'"),
    ],
    ids=["timeout-negative", "poll-zero"],
)
def test_a_rebalance_refuses_bad_waits_before_planning(
    platform: Engine, waits: dict[str, int], culprit: str
) -> None:
    state = rebalance_smallcase("US Tech Leaders", **waits, return_state=True)
    assert state.is_failed() and culprit in str(state.message), state.message
    with Session(platform) as session:
        assert session.scalar(select(func.count()).select_from(SmallcaseExecutionRun)) == 0
