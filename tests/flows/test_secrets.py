"""Secrets are encrypted at rest, rotate, and never show in a repr, log, error, artifact or plan."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from prefect.client.orchestration import get_client
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

from flows.investments import invest_in_smallcase
from models import AuditLog, SmallcaseExecutionRun, User, UserBrokerConnection
from saras.secrets import SecretKeyError, generate_key, get_secret_box
from saras.services import admin, prices
from saras.services.brokers import connection_credentials
from saras.services.demo import seed_demo
from saras.services.keys import rotate_all
from saras.settings import Settings, get_settings
from tests.fakes.fake_alpaca import FakeAlpaca

KEY_ID = "PKSECRETPLAINKEY0042"
SECRET = "plain-secret-value-do-not-leak-7e1c"
FAST = {"poll_interval": 0.01, "deadline_seconds": 10, "retry_backoff": 0.01}


def test_secret_box_round_trip_and_rotation(tmp_path) -> None:  # type: ignore[no-untyped-def]
    old, new = generate_key(), generate_key()
    box_old = get_secret_box(Settings(secret_keys=old, data_dir=tmp_path))
    token = box_old.encrypt("hunter2")
    assert "hunter2" not in token and "hunter2" not in repr(box_old)
    both = get_secret_box(Settings(secret_keys=f"{new},{old}", data_dir=tmp_path))
    rotated = both.rotate(token)
    only_new = get_secret_box(Settings(secret_keys=new, data_dir=tmp_path))
    assert only_new.decrypt(rotated).get_secret_value() == "hunter2"
    with pytest.raises(SecretKeyError, match="cannot be decrypted") as info:
        only_new.decrypt(token)
    assert "hunter2" not in str(info.value)
    with pytest.raises(SecretKeyError, match="not a valid Fernet key"):
        get_secret_box(Settings(secret_keys="not-a-key", data_dir=tmp_path))
    with pytest.raises(SecretKeyError, match="no encryption key"):
        get_secret_box(Settings(data_dir=tmp_path / "empty"))


@pytest.fixture
def keyed(flow_db: Engine, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    monkeypatch.setenv("SARAS_SECRET_KEYS", generate_key())
    get_settings.cache_clear()
    yield flow_db
    get_settings.cache_clear()


def test_keys_rotate_every_stored_secret(keyed: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    with Session(keyed) as session, session.begin():
        user = admin.add_user(session, "rot@example.com")
        admin.add_connection(
            session,
            get_secret_box(),
            user,
            "zerodha",
            api_key="kite-key-1",
            credentials={"access_token": "tok-1"},
        )
    old = get_settings().secret_keys.get_secret_value()  # type: ignore[union-attr]
    monkeypatch.setenv("SARAS_SECRET_KEYS", f"{generate_key()},{old}")
    get_settings.cache_clear()
    with Session(keyed) as session, session.begin():
        assert rotate_all(session, get_secret_box()) == 1
    newest = get_settings().secret_keys.get_secret_value().split(",")[0]  # type: ignore[union-attr]
    monkeypatch.setenv("SARAS_SECRET_KEYS", newest)  # the old key is gone
    get_settings.cache_clear()
    with Session(keyed) as session:
        row = session.scalars(select(UserBrokerConnection)).one()
        creds = connection_credentials(row, get_secret_box())
    assert creds.api_key is not None and creds.api_key.get_secret_value() == "kite-key-1"
    assert creds.access_token is not None and creds.access_token.get_secret_value() == "tok-1"
    assert "kite-key-1" not in repr(creds) and "tok-1" not in repr(creds)


def test_no_secret_reaches_logs_errors_artifacts_plans_or_the_database(
    keyed: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with FakeAlpaca(key_id=KEY_ID, secret_key=SECRET) as fake:
        fake.market_open = True
        with Session(keyed) as session, session.begin():
            seed_demo(session)
            asha = session.scalars(select(User).where(User.email == "asha@example.com")).one()
            admin.add_connection(
                session,
                get_secret_box(),
                asha,
                "alpaca",
                alias="alpaca_main",
                api_key=KEY_ID,
                api_secret=SECRET,
                metadata={"base_url": fake.url},
            )
            admin.add_connection(
                session,
                get_secret_box(),
                asha,
                "alpaca",
                alias="alpaca_wrong",
                api_key=KEY_ID + "X",
                api_secret=SECRET + "X",
                metadata={"base_url": fake.url},
            )
        now = datetime.now(UTC)
        with Session(keyed) as session:
            items, _ = prices.plan_ingestion(session, now=now, source="simulated")
        prices.ingest_batch(keyed, items, now=now)

        ok = invest_in_smallcase(
            "asha@example.com",
            "US Tech Leaders",
            "5000",
            broker_alias="alpaca_main",
            execution=FAST,
            return_state=True,
        )
        assert ok.is_completed() and ok.name == "Completed", ok.message
        assert fake.order_posts(), ok.result(raise_on_failure=False)  # orders went through the keys
        from sqlalchemy import update

        from models import UserSmallcaseInvestment

        with keyed.begin() as conn:  # free the smallcase for a second investment through bad keys
            conn.execute(update(UserSmallcaseInvestment).values(status="closed"))
        bad = invest_in_smallcase(
            "asha@example.com",
            "US Tech Leaders",
            "5000",
            broker_alias="alpaca_wrong",
            execution=FAST,
            return_state=True,
        )
        assert not bad.is_completed() or bad.name == "Partially Completed"

    texts = [r.getMessage() for r in caplog.records] + [
        str(r.exc_info) for r in caplog.records if r.exc_info
    ]
    texts += [
        str(ok.message),
        str(bad.message),
        json.dumps(bad.result(raise_on_failure=False), default=str),
    ]
    with get_client(sync_client=True) as client:
        texts += [
            json.dumps(a.data, default=str) + str(a.description) for a in client.read_artifacts()
        ]
    with keyed.connect() as conn:
        texts += [
            json.dumps(p, default=str)
            for p in conn.execute(select(SmallcaseExecutionRun.execution_plan)).scalars()
        ]
        texts += [str(m) for m in conn.execute(select(AuditLog.error_message)).scalars()]
        texts += [str(row) for row in conn.execute(text("SELECT * FROM user_broker_connections"))]
    with Session(keyed) as session:
        texts += [
            repr(c) + repr(connection_credentials(c, get_secret_box()))
            for c in session.scalars(select(UserBrokerConnection))
        ]
    assert any(
        "alpaca_wrong" in t or "40110000" in t or "not authorized" in t.lower() for t in texts
    )
    blob = "\n".join(texts)
    for plain in (KEY_ID, SECRET):
        assert plain not in blob
