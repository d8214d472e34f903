"""Tasks of one user's investing: open or top up an investment, give it back, begin an exit."""

from __future__ import annotations

import uuid
from decimal import Decimal

from prefect import task
from prefect.cache_policies import NO_CACHE
from sqlalchemy.orm import Session

from saras.db import get_engine
from saras.domain.enums import RunType
from saras.services import investments as service


@task(cache_policy=NO_CACHE)
def open_or_top_up(
    user: str,
    smallcase: str,
    amount: str,
    broker_alias: str | None,
    broker_type: str | None,
    paper_trading: bool | None,
    portfolio: str | None,
) -> dict[str, str]:
    """Create the investment (or add to it) and return its id and run type."""
    with Session(get_engine()) as session, session.begin():
        investment, run_type = service.open_investment(
            session,
            user,
            smallcase,
            Decimal(amount),
            broker_alias=broker_alias,
            broker_type=broker_type,
            paper_trading=paper_trading,
            portfolio_name=portfolio,
        )
        return {
            "investment_id": str(investment.id),
            "run_type": run_type.value,
            "user_id": str(investment.user_id),
        }


@task(cache_policy=NO_CACHE)
def abandon_opening(investment_id: str, run_type: str, amount: str) -> None:
    """Fail a new investment, or give a top-up back, whose plan was rejected or not made."""
    with Session(get_engine()) as session, session.begin():
        service.abandon_opening(
            session, uuid.UUID(investment_id), RunType(run_type), Decimal(amount)
        )


@task(cache_policy=NO_CACHE)
def begin_exit(user: str, smallcase: str) -> dict[str, str]:
    """Mark the investment as exiting and return its id."""
    with Session(get_engine()) as session, session.begin():
        investment = service.start_exit(session, user, smallcase)
        return {"investment_id": str(investment.id), "user_id": str(investment.user_id)}
