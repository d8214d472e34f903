"""The exchange table is the one list of exchanges: schedules, calendars and validation agree."""

from __future__ import annotations

from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml

from saras.domain import exchanges as xt
from saras.domain.enums import BrokerType
from saras.marketdata import calendars

PREFECT_YAML = Path(__file__).resolve().parents[2] / "prefect.yaml"


def _price_schedules() -> list[dict[str, object]]:
    spec = yaml.safe_load(PREFECT_YAML.read_text())
    for deployment in spec["deployments"]:
        if deployment["entrypoint"] == "flows/price_history.py:ingest_price_history":
            return list(deployment["schedules"])
    raise AssertionError("no price-history deployment in prefect.yaml")


def _scheduled_exchanges() -> dict[str, list[str]]:
    return {
        str(s["slug"]): list(s["parameters"]["exchanges"])  # type: ignore[index]
        for s in _price_schedules()
    }


def test_every_scheduled_exchange_is_in_the_table() -> None:
    for slug, codes in _scheduled_exchanges().items():
        for code in codes:
            row = xt.exchange(code)  # raises for a code the table does not know
            schedule = next(s for s in _price_schedules() if s["slug"] == slug)
            assert ZoneInfo(str(schedule["timezone"])).key == row.timezone, (slug, code)


def test_every_exchange_an_asset_may_have_is_in_some_nightly_schedule() -> None:
    scheduled = {code for codes in _scheduled_exchanges().values() for code in codes}
    may_have = set(xt.EXCHANGES) | set(xt.LEGACY_ALIASES)
    assert may_have - scheduled == set()


def test_no_exchange_is_in_two_nightly_schedules() -> None:
    seen: list[str] = [c for codes in _scheduled_exchanges().values() for c in codes]
    assert len(seen) == len(set(seen))


def _all_schedules() -> list[tuple[str, dict[str, object]]]:
    """Every schedule of every deployment, with the deployment's entrypoint."""
    spec = yaml.safe_load(PREFECT_YAML.read_text())
    return [(d["entrypoint"], s) for d in spec["deployments"] for s in d.get("schedules") or []]


def test_every_exchange_any_schedule_names_is_in_the_table_on_its_clock() -> None:
    named = 0
    for entrypoint, schedule in _all_schedules():
        parameters: dict[str, object] = schedule.get("parameters") or {}  # type: ignore[assignment]
        codes = list(parameters.get("exchanges") or [])  # type: ignore[call-overload]
        if parameters.get("session_exchange"):
            codes.append(parameters["session_exchange"])
        for code in codes:
            row = xt.exchange(str(code))  # raises for a code the table does not know
            assert str(schedule["timezone"]) == row.timezone, (entrypoint, schedule["slug"], code)
            named += 1
    assert named > 0  # the schedules above do name exchanges: this test reads them


def test_every_calendar_has_a_nightly_rebalance_trigger() -> None:
    covered = {
        calendars.calendar_for(str(code))
        for entrypoint, schedule in _all_schedules()
        if entrypoint == "flows/evaluate_rebalances.py:evaluate_rebalances"
        for code in (schedule.get("parameters") or {}).get("exchanges") or []  # type: ignore[union-attr]
    }
    assert xt.calendar_names() - covered == set()


def test_us_is_refused_for_new_assets_but_old_rows_still_read() -> None:
    with pytest.raises(xt.UnknownExchange, match="a country, not a venue"):
        xt.check_code("US")
    assert xt.exchange("US").code == "NYSE"
    assert calendars.calendar_for("US") == "XNYS"


@pytest.mark.parametrize("code", sorted(xt.EXCHANGES))
def test_calendars_read_the_table(code: str) -> None:
    row = xt.EXCHANGES[code]
    assert calendars.calendar_for(code) == row.calendar
    assert calendars.calendar_for(code.lower()) == row.calendar
    assert row.currency in xt.CURRENCIES
    assert BrokerType.PAPER in row.brokers


def test_unknown_exchange_names_the_code() -> None:
    with pytest.raises(xt.UnknownExchange, match="'LSE'"):
        xt.check_code("LSE")


def test_input_limits_are_the_columns_own() -> None:
    from sqlalchemy import Numeric, String

    from models import (
        Asset,
        Portfolio,
        PriceHistory,
        Smallcase,
        SmallcaseConstituent,
        User,
        UserBrokerConnection,
    )
    from saras.domain import inputs

    def length(column: object) -> int | None:
        type_ = column.type  # type: ignore[attr-defined]
        assert isinstance(type_, String)
        return type_.length

    def numeric(column: object) -> tuple[int | None, int | None]:
        type_ = column.type  # type: ignore[attr-defined]
        assert isinstance(type_, Numeric)
        return type_.precision, type_.scale

    assert length(User.__table__.c.email) == inputs.EMAIL_MAX
    assert length(User.__table__.c.first_name) == inputs.PERSON_NAME_MAX
    assert length(Asset.__table__.c.symbol) == inputs.SYMBOL_MAX
    assert length(Asset.__table__.c.exchange) == inputs.EXCHANGE_MAX
    assert length(Asset.__table__.c.name) == inputs.ASSET_NAME_MAX
    assert length(Portfolio.__table__.c.name) == inputs.PORTFOLIO_NAME_MAX
    assert length(Smallcase.__table__.c.name) == inputs.SMALLCASE_NAME_MAX
    assert length(Smallcase.__table__.c.category) == inputs.CATEGORY_MAX
    assert length(UserBrokerConnection.__table__.c.alias) == inputs.ALIAS_MAX
    assert numeric(Portfolio.__table__.c.cash_balance) == inputs.MONEY
    assert numeric(SmallcaseConstituent.__table__.c.weight_percentage) == inputs.WEIGHT
    assert numeric(PriceHistory.__table__.c.high_price) == inputs.PRICE
    assert numeric(PriceHistory.__table__.c.volume) == inputs.VOLUME
    assert all(len(code) <= inputs.EXCHANGE_MAX for code in xt.EXCHANGES)
    assert all(len(c) == 3 for c in xt.CURRENCIES)
