"""One user's investing: open (or top up) an investment, or start its exit."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from models import Portfolio, Smallcase, UserBrokerConnection, UserSmallcaseInvestment
from models.smallcases import OPEN_INVESTMENT_STATUSES
from saras.domain.enums import ExecutionMode, InvestmentStatus, RunType
from saras.errors import InvalidInputError, NotFoundError
from saras.repositories.connections import select_connection
from saras.services import admin


def _currency(session: Session, smallcase: Smallcase) -> str:
    from models import Asset, SmallcaseConstituent

    currencies = set(
        session.scalars(
            select(Asset.currency)
            .join(SmallcaseConstituent, SmallcaseConstituent.asset_id == Asset.id)
            .where(SmallcaseConstituent.smallcase_id == smallcase.id)
        )
    )
    if len(currencies) != 1:
        raise InvalidInputError(f"smallcase {smallcase.name!r} has no single currency")
    return currencies.pop()


def open_investment(
    session: Session,
    user_ref: str,
    smallcase_ref: str,
    amount: Decimal,
    *,
    broker_alias: str | None = None,
    broker_type: str | None = None,
    paper_trading: bool | None = None,
    portfolio_name: str | None = None,
) -> tuple[UserSmallcaseInvestment, RunType]:
    """Create a pending investment or top up the open one; return it and the run type."""
    if amount <= 0:
        raise InvalidInputError(f"amount {amount} must be positive")
    user = admin.get_user(session, user_ref)
    smallcase = admin.get_smallcase(session, smallcase_ref)
    if not smallcase.is_active:
        raise InvalidInputError(f"smallcase {smallcase.name!r} is not active")
    existing = session.scalars(
        select(UserSmallcaseInvestment).where(
            UserSmallcaseInvestment.user_id == user.id,
            UserSmallcaseInvestment.smallcase_id == smallcase.id,
            UserSmallcaseInvestment.status.in_([s.value for s in OPEN_INVESTMENT_STATUSES]),
        )
    ).first()
    if existing is not None:
        if existing.status != InvestmentStatus.ACTIVE.value:
            raise InvalidInputError(
                f"{user.email}'s investment in {smallcase.name!r} is {existing.status}"
            )
        existing.investment_amount = Decimal(existing.investment_amount) + amount
        session.flush()
        return existing, RunType.TOPUP
    if smallcase.min_investment is not None and amount < smallcase.min_investment:
        raise InvalidInputError(
            f"amount {amount} is below the minimum investment {smallcase.min_investment} "
            f"of {smallcase.name!r}"
        )
    if broker_alias is None and broker_type is None:
        broker_type = "paper"
    connection: UserBrokerConnection = select_connection(
        session, user.id, alias=broker_alias, broker_type=broker_type, paper_trading=paper_trading
    )
    currency = _currency(session, smallcase)
    query = select(Portfolio).where(Portfolio.user_id == user.id, Portfolio.currency == currency)
    if portfolio_name:
        query = query.where(Portfolio.name == portfolio_name)
    portfolios = list(session.scalars(query.order_by(Portfolio.created_at)))
    if not portfolios:
        raise NotFoundError(f"{user.email} has no {currency} portfolio")
    portfolio = portfolios[0]
    if Decimal(portfolio.cash_balance) < amount:
        raise InvalidInputError(
            f"insufficient cash: portfolio {portfolio.name!r} has {portfolio.cash_balance} "
            f"{currency}, the investment needs {amount}"
        )
    investment = UserSmallcaseInvestment(
        user_id=user.id,
        smallcase_id=smallcase.id,
        portfolio_id=portfolio.id,
        broker_connection_id=connection.id,
        investment_amount=amount,
        status=InvestmentStatus.PENDING.value,
        execution_mode=(
            ExecutionMode.PAPER.value if connection.paper_trading else ExecutionMode.LIVE.value
        ),
    )
    session.add(investment)
    session.flush()
    return investment, RunType.INVEST


def start_exit(session: Session, user_ref: str, smallcase_ref: str) -> UserSmallcaseInvestment:
    """Mark the user's open investment in a smallcase as exiting."""
    user = admin.get_user(session, user_ref)
    smallcase = admin.get_smallcase(session, smallcase_ref)
    investment = session.scalars(
        select(UserSmallcaseInvestment).where(
            UserSmallcaseInvestment.user_id == user.id,
            UserSmallcaseInvestment.smallcase_id == smallcase.id,
            UserSmallcaseInvestment.status.in_(
                [InvestmentStatus.ACTIVE.value, InvestmentStatus.EXITING.value]
            ),
        )
    ).first()
    if investment is None:
        raise NotFoundError(f"{user.email} has no active investment in {smallcase.name!r}")
    investment.status = InvestmentStatus.EXITING.value
    session.flush()
    return investment
