"""A rebalance policy per smallcase: stored in its metadata, set and shown from the CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import typer
from sqlalchemy import select
from typer.testing import CliRunner

from models import Smallcase
from saras import db as saras_db
from saras.cli import app as saras_app
from saras.cli_policy import app as policy_app
from saras.domain.policy import METADATA_KEY, CalendarTrigger, RebalancePolicy
from saras.errors import InvalidInputError
from saras.services import policy as service
from saras.settings import get_settings

runner = CliRunner()


def _app() -> typer.Typer:
    """The console command with the policy group registered as saras.cli does."""
    smallcases = next(g for g in saras_app.registered_groups if g.name == "smallcases")
    group = smallcases.typer_instance
    assert group is not None
    if not any(g.name == "policy" for g in group.registered_groups):
        group.add_typer(policy_app, name="policy")
    return saras_app


@pytest.fixture
def embedded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.delenv("SARAS_DATABASE_URL", raising=False)
    monkeypatch.delenv("SARAS_SECRET_KEYS", raising=False)
    monkeypatch.setenv("SARAS_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    saras_db._engine_for.cache_clear()
    result = runner.invoke(_app(), ["demo", "--seed-only"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    yield tmp_path
    saras_db._engine_for.cache_clear()
    get_settings.cache_clear()


def _run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(_app(), list(args))
    return result.exit_code, result.stdout, result.stderr


def _stored(name: str) -> object:
    with saras_db.session_scope() as session:
        sc = session.scalars(select(Smallcase).where(Smallcase.name == name)).one()
        return (sc.metadata_ or {}).get(METADATA_KEY)


def test_policy_set_and_show(embedded: Path) -> None:
    code, out, _ = _run("smallcases", "policy", "show", "India Bluechips", "--json")
    assert code == 0
    assert json.loads(out)["policy"] == RebalancePolicy().as_record()
    assert _stored("India Bluechips") is None

    code, out, err = _run(
        "smallcases",
        "policy",
        "set",
        "India Bluechips",
        "calendar_trigger=monthly",
        "relative_drift_band_pct=25",
        "drift_band_pct=none",
        "cooldown_days=7",
        "min_trade_value.inr=1000",
        "--json",
    )
    assert code == 0, err
    shown = json.loads(out)["policy"]
    assert shown["calendar_trigger"] == "monthly" and shown["drift_band_pct"] is None
    assert shown["min_trade_value"] == {"INR": "1000", "USD": "1"}
    assert _stored("India Bluechips") == shown

    # a later set keeps what was set before
    code, out, _ = _run("smallcases", "policy", "set", "India Bluechips", "cooldown_days=3")
    assert code == 0 and "cooldown_days" in out
    _, out, _ = _run("smallcases", "policy", "show", "India Bluechips", "--json")
    assert json.loads(out)["policy"]["relative_drift_band_pct"] == "25"
    assert json.loads(out)["policy"]["cooldown_days"] == 3


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("drift_band=2", "unknown field 'drift_band'"),
        ("cooldown_days=soon", "cooldown_days: Input should be a valid integer"),
        ("calendar_trigger=daily", "calendar_trigger"),
        ("min_trade_value.RUPEES=5", "currency 'RUPEES'"),
        ("cooldown_days", "expected key=value"),
    ],
)
def test_bad_policy_fails_naming_the_field_and_writes_nothing(
    embedded: Path, assignment: str, message: str
) -> None:
    before = _stored("US Tech Leaders")
    code, _, err = _run("smallcases", "policy", "set", "US Tech Leaders", assignment)
    assert code == 2
    assert message in err and err.startswith("error: ") and err.count("\n") == 1
    assert _stored("US Tech Leaders") == before


def test_unknown_smallcase(embedded: Path) -> None:
    code, _, err = _run("smallcases", "policy", "show", "Nope")
    assert code == 2 and "no smallcase 'Nope'" in err  # a name that is not there: bad input


def test_effective_policy_merges_run_overrides(embedded: Path) -> None:
    with saras_db.session_scope() as session:
        service.set_policy(
            session, "US Tech Leaders", {"calendar_trigger": "weekly", "cooldown_days": 2}
        )
    with saras_db.session_scope() as session:
        run = RebalancePolicy.model_validate({"min_trade_value": {"USD": "5"}})
        policy = service.effective_policy(session, "US Tech Leaders", run)
        assert policy.calendar_trigger is CalendarTrigger.WEEKLY and policy.cooldown_days == 2
        assert policy.min_trade_value_for("USD") == Decimal(5)
        assert service.policy_record(policy)["min_trade_value"]["USD"] == "5"
        with pytest.raises(InvalidInputError, match="policy parameter: unknown field 'x'"):
            service.effective_policy(session, "US Tech Leaders", {"x": 1})
        # a stored policy edited by hand into nonsense fails naming the smallcase
        sc = session.scalars(select(Smallcase).where(Smallcase.name == "US Tech Leaders")).one()
        sc.metadata_ = {**(sc.metadata_ or {}), METADATA_KEY: {"cooldown_days": -3}}
        session.flush()
        with pytest.raises(InvalidInputError, match="stored policy of smallcase 'US Tech"):
            service.get_policy(session, sc)
