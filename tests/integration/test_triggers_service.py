"""The trigger service on a real database: what it refuses to guess."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.orm import Session

from saras.services.triggers import evaluate_smallcase
from tests import factories

NOW = datetime(2026, 11, 27, 22, tzinfo=UTC)


def test_a_smallcase_without_a_known_calendar_is_reported_not_due(db: Session) -> None:
    sc = factories.smallcase(db, {factories.asset(db, "ZZZ", exchange="LSE"): "100"})
    evaluation = evaluate_smallcase(db.connection(), sc, NOW)
    assert not evaluation.due
    assert evaluation.decision.reasons[0].startswith("no trading calendar: unknown exchange")


def test_a_smallcase_on_two_calendars_or_without_investments(db: Session) -> None:
    mixed = factories.smallcase(
        db,
        {
            factories.asset(db, "AAA", exchange="NSE"): "50",
            factories.asset(db, "BBB", exchange="NYSE"): "50",
        },
    )
    evaluation = evaluate_smallcase(db.connection(), mixed, NOW)
    assert evaluation.decision.reasons == ("constituents trade on several calendars (NSE, NYSE)",)
    alone = factories.smallcase(db, {factories.asset(db, "CCC", exchange="NASDAQ"): "100"})
    evaluation = evaluate_smallcase(db.connection(), alone, NOW)
    assert evaluation.decision.reasons == ("no active investment",)
    assert evaluation.day.isoformat() == "2026-11-27"  # New York's date at 22:00 UTC
