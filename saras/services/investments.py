"""One user's investing: open (or top up) an investment, or start its exit."""

from __future__ import annotations

import uuid
from decimal import Decimal

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from models import Portfolio, Smallcase, UserBrokerConnection, UserSmallcaseInvestment
from models.smallcases import OPEN_INVESTMENT_STATUSES
from saras.domain.enums import ExecutionMode, InvestmentStatus, RunType
from saras.domain.inputs import InvestmentParams, parse
from saras.errors import InvalidInputError, NotFoundError
from saras.repositories.connections import reaches_real_money, select_connection
from saras.services import admin
from saras.services.rebalance import spent_cash


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


def free_cash(session: Session, portfolio: Portfolio) -> tuple[Decimal, Decimal]:
    """Return a portfolio's cash reserved for its open investments, and the cash still free.

    An open investment (pending, active or exiting) reserves what it was given and has not
    spent yet (its amount minus the net cash its fills spent): the cash its unfinished runs will
    buy with. Lock the portfolio first (``lock_portfolio``) when the answer decides a write.
    """
    open_ = list(
        session.execute(
            select(UserSmallcaseInvestment.id, UserSmallcaseInvestment.investment_amount).where(
                UserSmallcaseInvestment.portfolio_id == portfolio.id,
                UserSmallcaseInvestment.status.in_([s.value for s in OPEN_INVESTMENT_STATUSES]),
            )
        )
    )
    spent = spent_cash(session.connection(), [i for i, _ in open_])
    reserved = sum(
        (max(Decimal(str(amount)) - spent.get(i, Decimal(0)), Decimal(0)) for i, amount in open_),
        Decimal(0),
    )
    return reserved, Decimal(str(portfolio.cash_balance)) - reserved


def lock_portfolio(session: Session, portfolio_id: uuid.UUID) -> Portfolio:
    """Return the portfolio, locked until the transaction ends (money decisions serialise).

    PostgreSQL: a row lock (``SELECT ... FOR UPDATE``); SQLite has one writer at a time, and a
    transaction that read before another's commit cannot write afterwards: it fails, loudly.
    """
    portfolio = session.scalars(
        select(Portfolio)
        .where(Portfolio.id == portfolio_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()
    return portfolio


def _check_cash(session: Session, portfolio: Portfolio, amount: Decimal, what: str) -> None:
    reserved, free = free_cash(session, portfolio)
    if amount > free:
        cur = portfolio.currency
        raise InvalidInputError(
            f"insufficient free cash in portfolio {portfolio.name!r}: "
            f"{_money(Decimal(str(portfolio.cash_balance)))} {cur} cash, "
            f"{_money(reserved)} {cur} reserved for open investments and unfinished runs, "
            f"{_money(max(free, Decimal(0)))} {cur} free; the {what} needs {amount:f} {cur}; "
            "nothing was written"
        )


def _money(value: Decimal) -> str:
    return f"{value.quantize(Decimal('0.01')):f}"


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
    amount = parse(InvestmentParams, amount=amount).amount  # finite, positive, fits
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
        portfolio = lock_portfolio(session, existing.portfolio_id)
        # read again under the lock, and lock the row: a concurrent top-up may have committed
        # its amount (or an exit its status) since the read above, and an exit starting now
        # waits for this top-up (start_exit locks the same row); adding to the old amount
        # would lose it
        session.refresh(existing, with_for_update=True)
        if existing.status != InvestmentStatus.ACTIVE.value:
            raise InvalidInputError(
                f"{user.email}'s investment in {smallcase.name!r} is {existing.status}"
            )
        _check_cash(session, portfolio, amount, "top-up")
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
    portfolio = lock_portfolio(session, portfolios[0].id)
    _check_cash(session, portfolio, amount, "investment")
    investment = UserSmallcaseInvestment(
        user_id=user.id,
        smallcase_id=smallcase.id,
        portfolio_id=portfolio.id,
        broker_connection_id=connection.id,
        investment_amount=amount,
        status=InvestmentStatus.PENDING.value,
        # where its orders can go (a "paper" row at a live endpoint is live), not the row's flag
        execution_mode=(
            ExecutionMode.LIVE if reaches_real_money(connection) else ExecutionMode.PAPER
        ).value,
    )
    session.add(investment)
    session.flush()
    return investment, RunType.INVEST


def abandon_opening(
    session: Session, investment_id: uuid.UUID, run_type: RunType, amount: Decimal
) -> None:
    """Undo what ``open_investment`` committed when its plan is rejected or cannot be made.

    A new investment (still ``pending``) becomes ``failed``; a top-up gives its amount back.
    Either frees the cash it reserved. Written with ``WHERE status = <old>``: an investment
    that moved on meanwhile is left alone.
    """
    inv = UserSmallcaseInvestment
    if run_type is RunType.INVEST:
        session.execute(
            update(inv)
            .where(inv.id == investment_id, inv.status == InvestmentStatus.PENDING.value)
            .values(status=InvestmentStatus.FAILED.value)
        )
    elif run_type is RunType.TOPUP:
        session.execute(
            update(inv)
            .where(inv.id == investment_id, inv.status == InvestmentStatus.ACTIVE.value)
            .values(investment_amount=inv.investment_amount - amount)
        )


def start_exit(session: Session, user_ref: str, smallcase_ref: str) -> UserSmallcaseInvestment:
    """Mark the user's open investment in a smallcase as exiting."""
    user = admin.get_user(session, user_ref)
    smallcase = admin.get_smallcase(session, smallcase_ref)
    investment = session.scalars(
        select(UserSmallcaseInvestment)
        .where(
            UserSmallcaseInvestment.user_id == user.id,
            UserSmallcaseInvestment.smallcase_id == smallcase.id,
            UserSmallcaseInvestment.status.in_(
                [InvestmentStatus.ACTIVE.value, InvestmentStatus.EXITING.value]
            ),
        )
        # the row stays locked until commit: a run finishing the investment meanwhile waits,
        # and an investment no longer open is not marked exiting
        .with_for_update()
    ).first()
    if investment is None:
        raise NotFoundError(f"{user.email} has no active investment in {smallcase.name!r}")
    investment.status = InvestmentStatus.EXITING.value
    session.flush()
    return investment
