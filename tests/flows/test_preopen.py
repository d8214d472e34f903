"""The pre-open check of broker sessions, as a flow, against the fake Kite server."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from flows.preopen import check_broker_sessions
from models import AuditLog, UserBrokerConnection
from saras.marketdata import calendars
from saras.secrets import generate_key, get_secret_box
from saras.services import admin
from saras.settings import get_settings
from tests.fakes.fake_alpaca import PROXY_ENVIRONMENT
from tests.fakes.fake_kite import FakeKite


@pytest.fixture
def kite(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeKite]:
    for name in PROXY_ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    with FakeKite() as fake:
        yield fake


def _connect(engine: Engine, kite: FakeKite) -> None:
    box = get_secret_box()
    with Session(engine) as s, s.begin():
        user = admin.add_user(s, "meera@example.in")
        admin.add_connection(
            s,
            box,
            user,
            "zerodha",
            paper_trading=False,
            alias="kite",
            api_key=kite.api_key,
            credentials={"access_token": kite.access_token},
            metadata=kite.connection_metadata(),
        )
        admin.add_connection(s, None, user, "paper", alias="paper")


@pytest.mark.postgres
def test_an_expired_kite_token_is_marked_and_fails_the_check(
    pg_flow_db: Engine, kite: FakeKite, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SARAS_SECRET_KEYS", generate_key())
    get_settings.cache_clear()
    _connect(pg_flow_db, kite)

    state = check_broker_sessions(return_state=True)
    assert state.is_completed(), state.message

    kite.expire_token()
    state = check_broker_sessions(broker_types=["zerodha"], return_state=True)
    assert state.is_failed()
    assert "1 of 1 connections need a new login: meera@example.in/kite" in str(state.message)
    with Session(pg_flow_db) as s:
        rows = s.execute(select(UserBrokerConnection.alias, UserBrokerConnection.status))
        statuses = {alias: status for alias, status in rows}
        audits = s.scalars(
            select(AuditLog.success).where(AuditLog.event_type == "flow.check_broker_sessions")
        ).all()
    assert statuses == {"kite": "expired", "paper": "active"}
    assert sorted(audits) == [False, True]


def test_no_session_no_check(flow_db: Engine) -> None:
    today = datetime.now(UTC).astimezone(calendars.exchange_timezone("NSE")).date()
    state = check_broker_sessions(session_exchange="NSE", return_state=True)
    assert state.is_completed()
    if not calendars.is_session("NSE", today):
        assert "no NSE session" in str(state.message)
