"""The ``saras`` command on an embedded database in a temporary data directory."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from saras import db as saras_db
from saras import migrations
from saras.cli import app
from saras.settings import get_settings

runner = CliRunner()


@pytest.fixture
def embedded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point Saras at a fresh embedded database for one test."""
    monkeypatch.delenv("SARAS_DATABASE_URL", raising=False)
    monkeypatch.delenv("SARAS_SECRET_KEYS", raising=False)
    monkeypatch.setenv("SARAS_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    saras_db._engine_for.cache_clear()
    yield tmp_path
    for engine in list(saras_db._engine_for.cache_info() and []):  # pragma: no cover
        engine.dispose()
    saras_db._engine_for.cache_clear()
    get_settings.cache_clear()


def invoke(*args: str, input: str | None = None) -> str:
    result = runner.invoke(app, list(args), input=input, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_db_commands(embedded: Path) -> None:
    head = migrations.head_revisions()[0]
    assert "current:  (empty)" in invoke("db", "current")
    assert f"database at {head}" in invoke("db", "upgrade")
    assert "database at 0001_baseline" in invoke("db", "downgrade", "0001_baseline")
    invoke("db", "upgrade")
    out = invoke("db", "current")
    assert f"current:  {head}" in out and f"head:     {head}" in out
    assert "Upgrade the database" in invoke("db", "--help")


def test_demo_seed_is_safe_to_rerun(embedded: Path) -> None:
    first = invoke("demo", "--seed-only")
    assert "generated a local encryption key" in first
    assert "18 created" in first
    assert str(embedded) in first
    second = invoke("demo", "--seed-only")
    assert "0 created, 18 already there" in second
    assert "generated" not in second
    smallcases = json.loads(invoke("smallcases", "list", "--json"))
    assert {s["name"] for s in smallcases} == {"US Tech Leaders", "India Bluechips"}


def test_admin_commands_and_secrets_from_stdin(
    embedded: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    invoke("demo", "--seed-only")
    invoke("users", "add", "New.Person@Example.com", "--first-name", "New")
    users = json.loads(invoke("users", "list", "--json"))
    assert "new.person@example.com" in {u["email"] for u in users}
    invoke("assets", "add", "TSLA", "--exchange", "NASDAQ", "--currency", "USD", "--fractionable")
    csv_path = embedded / "c.csv"
    csv_path.write_text("symbol,weight,rationale\nAAPL,60,core\nTSLA,40,growth\n")
    invoke("smallcases", "add", "Two Stocks", "--constituents", str(csv_path))
    out = invoke(
        "connections",
        "add",
        "new.person@example.com",
        "alpaca",
        "--secrets-from-stdin",
        "--json",
        input='{"api_key": "PKPLAINKEY123", "api_secret": "plain-secret-456"}',
    )
    assert json.loads(out)[0]["alias"] == "alpaca_primary"
    listing = invoke("connections", "list", "--json")
    assert "PKPLAINKEY123" not in listing and "plain-secret-456" not in listing
    files = list(embedded.glob("saras.sqlite3*"))  # the database and its write-ahead log
    assert files
    stored = b"".join(p.read_bytes() for p in files)
    assert b"alpaca_primary" in stored  # the row is there, so the search below means something
    assert b"PKPLAINKEY123" not in stored and b"plain-secret-456" not in stored


def test_bad_constituents_fail_clearly_and_change_nothing(embedded: Path) -> None:
    invoke("demo", "--seed-only")
    csv_path = embedded / "bad.csv"
    csv_path.write_text("symbol,weight\nAAPL,60\nNOPE,40\n")
    result = runner.invoke(app, ["smallcases", "add", "Bad", "--constituents", str(csv_path)])
    assert result.exit_code == 2
    assert "unknown symbol 'NOPE'" in result.output
    csv_path.write_text("symbol,weight\nAAPL,60\nMSFT,30\n")
    result = runner.invoke(app, ["smallcases", "add", "Bad", "--constituents", str(csv_path)])
    assert result.exit_code == 2 and "weights sum to 90" in result.output
    names = {s["name"] for s in json.loads(invoke("smallcases", "list", "--json"))}
    assert "Bad" not in names


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_files_are_private_on_creation_and_checked_on_start(embedded: Path) -> None:
    data = embedded / "private"
    os.environ["SARAS_DATA_DIR"] = str(data)  # the fixture's monkeypatch restores it
    get_settings.cache_clear()
    invoke("demo", "--seed-only")
    db_file, key = data / "saras.sqlite3", data / "secret.key"
    assert (_mode(data), _mode(db_file), _mode(key)) == (0o700, 0o600, 0o600)
    data.chmod(0o755)
    db_file.chmod(0o644)
    key.chmod(0o644)
    invoke("users", "list")
    assert (_mode(data), _mode(db_file), _mode(key)) == (0o700, 0o600, 0o600)


def test_zerodha_connections_are_live(embedded: Path) -> None:
    invoke("demo", "--seed-only")
    invoke("users", "add", "kite@example.com")
    result = runner.invoke(app, ["connections", "add", "kite@example.com", "zerodha"])
    assert result.exit_code == 2
    assert "paper_trading" in result.stderr and "--live" in result.stderr
    out = json.loads(
        invoke("connections", "add", "kite@example.com", "zerodha", "--live", "--json")
    )
    assert out[0]["broker_type"] == "zerodha"
    rows = json.loads(invoke("connections", "list", "--json"))
    assert [r["paper"] for r in rows if r["user"] == "kite@example.com"] == [False]


def test_a_paper_row_at_alpacas_live_endpoint_is_listed_live(embedded: Path) -> None:
    """A row written as paper before the CLI refused it: the list shows where orders go."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from models import User, UserBrokerConnection

    invoke("db", "upgrade", "head")
    invoke("users", "add", "old@example.com")
    with Session(saras_db.get_engine()) as session, session.begin():
        user_id = session.scalars(select(User.id).where(User.email == "old@example.com")).one()
        session.add(
            UserBrokerConnection(
                user_id=user_id,
                broker_type="alpaca",
                alias="old-row",
                paper_trading=True,
                connection_metadata={"base_url": "https://api.alpaca.markets"},
            )
        )
    rows = json.loads(invoke("connections", "list", "--json"))
    assert [r["paper"] for r in rows if r["alias"] == "old-row"] == [False]
