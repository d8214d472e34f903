"""`saras connections check|update` against the fake Kite and Alpaca servers, through the SDKs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session
from typer.testing import CliRunner, Result

from models import UserBrokerConnection
from saras import db as saras_db
from saras.cli import app
from saras.secrets import generate_key
from saras.settings import get_settings
from tests.fakes.fake_alpaca import FAKE_KEY_ID, FAKE_SECRET, PROXY_ENVIRONMENT, FakeAlpaca
from tests.fakes.fake_kite import FakeKite

runner = CliRunner()
USER = "kiran@example.in"
NEW_TOKEN = "renewed-kite-token-7f3a9c"


@pytest.fixture(params=["postgresql", "sqlite"])
def database(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    migrated_url: Any,
) -> Iterator[str]:
    """A fresh migrated database of each backend in settings, with an encryption key."""
    for name in PROXY_ENVIRONMENT:  # the fakes are on 127.0.0.1: never through a proxy
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SARAS_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SARAS_SECRET_KEYS", generate_key())
    if request.param == "postgresql":
        monkeypatch.setenv("SARAS_DATABASE_URL", migrated_url("postgresql", "saras_conn"))
    else:
        monkeypatch.delenv("SARAS_DATABASE_URL", raising=False)
        migrated_url("sqlite", directory=tmp_path)  # the data dir's embedded database
    get_settings.cache_clear()
    saras_db._engine_for.cache_clear()
    yield request.param
    saras_db.get_engine().dispose()
    saras_db._engine_for.cache_clear()
    get_settings.cache_clear()


def cli(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
    return runner.invoke(app, list(args), input=input, env=env, catch_exceptions=False)


def connection(alias: str) -> UserBrokerConnection:
    with Session(saras_db.get_engine()) as s:
        return s.scalars(
            select(UserBrokerConnection).where(UserBrokerConnection.alias == alias)
        ).one()


def checks(result: Result) -> dict[str, dict[str, Any]]:
    return {row["alias"]: row for row in json.loads(result.stdout)}


@pytest.fixture
def kite() -> Iterator[FakeKite]:
    with FakeKite() as fake:
        yield fake


@pytest.fixture
def alpaca() -> Iterator[FakeAlpaca]:
    with FakeAlpaca() as fake:
        yield fake


def test_check_marks_refused_logins_and_update_renews_them(
    database: str, kite: FakeKite, alpaca: FakeAlpaca
) -> None:
    assert cli("users", "add", USER).exit_code == 0
    added = cli(
        "connections",
        "add",
        USER,
        "zerodha",
        "--live",
        "--alias",
        "kite",
        "--metadata",
        json.dumps(kite.connection_metadata()),
        env={"SARAS_BROKER_API_KEY": kite.api_key, "SARAS_BROKER_ACCESS_TOKEN": kite.access_token},
    )
    assert added.exit_code == 0, added.output
    added = cli(
        "connections",
        "add",
        USER,
        "alpaca",
        "--alias",
        "alpaca",
        "--metadata",
        json.dumps({"base_url": alpaca.url}),
        env={"SARAS_BROKER_API_KEY": FAKE_KEY_ID, "SARAS_BROKER_API_SECRET": "an-old-secret"},
    )
    assert added.exit_code == 0, added.output
    assert cli("connections", "add", USER, "paper", "--alias", "paper").exit_code == 0

    # Alpaca refuses the old secret (401): marked error; Kite and paper answer
    first = cli("connections", "check", "--json")
    assert first.exit_code == 1
    rows = checks(first)
    assert rows["kite"]["outcome"] == "ok" and rows["paper"]["outcome"] == "ok"
    assert rows["alpaca"]["outcome"] == "expired" and rows["alpaca"]["status"] == "error"
    assert "saras connections update kiran@example.in alpaca" in first.stderr
    assert connection("alpaca").status == "error"
    assert (connection("alpaca").connection_metadata or {})["status_reason"]
    assert "an-old-secret" not in first.output

    # 06:00 IST: Kite expires the token; the check finds it before the open
    kite.expire_token()
    second = cli("connections", "check", "--json")
    assert second.exit_code == 1
    rows = checks(second)
    assert set(rows) == {"kite", "paper"}  # only active connections are called
    assert rows["kite"]["outcome"] == "expired" and rows["kite"]["status"] == "expired"
    assert connection("kite").status == "expired"

    # renewal: secrets from stdin or the environment, never arguments; nothing else changes
    kite.set_access_token(NEW_TOKEN)
    renewed = cli(
        "connections",
        "update",
        USER,
        "kite",
        "--secrets-from-stdin",
        input=json.dumps({"access_token": NEW_TOKEN}),
    )
    assert renewed.exit_code == 0, renewed.output
    assert NEW_TOKEN not in renewed.output
    kite_row = connection("kite")
    assert kite_row.status == "active" and "status_reason" not in (
        kite_row.connection_metadata or {}
    )
    assert NEW_TOKEN not in json.dumps(kite_row.credentials)  # encrypted at rest
    assert kite_row.api_key is not None  # the API key stayed
    renewed = cli(
        "connections", "update", USER, "alpaca", env={"SARAS_BROKER_API_SECRET": FAKE_SECRET}
    )
    assert renewed.exit_code == 0, renewed.output
    third = cli("connections", "check", "--json")
    assert third.exit_code == 0, third.output
    assert {r["outcome"] for r in checks(third).values()} == {"ok"}
    assert len(checks(third)) == 3


def test_update_refuses_what_it_cannot_do_and_writes_nothing(database: str, kite: FakeKite) -> None:
    assert cli("users", "add", USER).exit_code == 0
    added = cli(
        "connections",
        "add",
        USER,
        "zerodha",
        "--live",
        "--alias",
        "kite",
        "--metadata",
        json.dumps(kite.connection_metadata()),
        env={"SARAS_BROKER_API_KEY": kite.api_key, "SARAS_BROKER_ACCESS_TOKEN": kite.access_token},
    )
    assert added.exit_code == 0, added.output
    kite.expire_token()
    assert cli("connections", "check").exit_code == 1
    before = connection("kite")

    nothing = cli("connections", "update", USER, "kite", env={"SARAS_BROKER_ACCESS_TOKEN": ""})
    assert nothing.exit_code != 0 and "no secrets given" in nothing.stderr
    unknown = cli("connections", "update", USER, "nope", env={"SARAS_BROKER_ACCESS_TOKEN": "x"})
    assert unknown.exit_code != 0 and "'nope'" in unknown.stderr
    bad = cli("connections", "update", USER, "kite", "--secrets-from-stdin", input='{"pin": "1"}')
    assert bad.exit_code != 0 and "'pin'" in bad.stderr
    after = connection("kite")
    assert (
        (after.status, after.credentials)
        == (before.status, before.credentials)
        == (
            "expired",
            before.credentials,
        )
    )
