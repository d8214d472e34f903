"""Plan a rebalance for review: the policy it runs under, who is left out, and the report.

The rebalance flow's planning step: the smallcase's stored policy with the run's overrides
(:func:`saras.services.policy.effective_policy`) becomes the planner's policy in the
smallcase's currency; ``exclude_investments`` leaves investments out; the plan records the
policy it used; and the planner's per-investment plans become the plan report
(:mod:`saras.domain.plan_report`), for at most :data:`REPORT_LIMIT` investments.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, select, tuple_
from sqlalchemy.orm import Session

from models import Asset, Smallcase, User, UserSmallcaseInvestment
from saras.domain.enums import InvestmentStatus, RunType
from saras.domain.plan import Plan
from saras.domain.plan_report import InvestmentReport, report_from_plan
from saras.domain.policy import METADATA_KEY, RebalancePolicy
from saras.domain.rebalance import BatchPlan, PlanningPolicy
from saras.domain.triggers import AssetKey
from saras.errors import InvalidInputError
from saras.services import admin
from saras.services import rebalance as planner
from saras.services.policy import effective_policy

#: investments the plan report shows at most (the plan itself has no limit)
REPORT_LIMIT = 5000


@dataclass(frozen=True)
class PlanReview:
    """A plan, the policy it used, and its report per investment."""

    plan: Plan
    policy: RebalancePolicy
    reports: tuple[InvestmentReport, ...]
    reported_all: bool  # False when more than REPORT_LIMIT investments were planned


def composition_currency(session: Session, constituents: Sequence[Mapping[str, Any]]) -> str | None:
    """Return the one currency of a composition's known assets (None if none or mixed)."""
    pairs = [
        (str(c.get("symbol", "")).upper(), str(c.get("exchange", "")).upper()) for c in constituents
    ]
    currencies = set(
        session.scalars(
            select(Asset.currency).where(tuple_(Asset.symbol, Asset.exchange).in_(pairs))
        )
    )
    return currencies.pop() if len(currencies) == 1 else None


def run_policy(
    session: Session,
    smallcase: Smallcase,
    constituents: Sequence[Mapping[str, Any]] | None,
    overrides: RebalancePolicy | Mapping[str, Any] | None,
) -> tuple[RebalancePolicy, PlanningPolicy | None, str | None]:
    """Return the run's policy, the planner's policy in the smallcase's currency, the currency.

    With neither a stored policy nor overrides and no single currency (an empty smallcase),
    the planner keeps its own defaults (None).
    """
    policy = effective_policy(session, smallcase, overrides)
    currency = composition_currency(session, constituents) if constituents else None
    currency = currency or planner.smallcase_currency(session.connection(), smallcase.id)
    if currency is None:
        if overrides is None and METADATA_KEY not in (smallcase.metadata_ or {}):
            return policy, None, None
        raise InvalidInputError(
            f"smallcase {smallcase.name!r} trades in no single currency: the policy's minimum "
            "trade value cannot be chosen; nothing was planned"
        )
    return policy, policy.planning_policy(currency), currency


def included_investments(
    session: Session, smallcase: Smallcase, exclude: Sequence[uuid.UUID | str] | None
) -> list[uuid.UUID] | None:
    """Return the active investments minus ``exclude`` (None: exclude nothing, plan all).

    An excluded id that is not an active investment of the smallcase is refused, named.
    """
    if not exclude:
        return None
    excluded = {uuid.UUID(str(i)) for i in exclude}
    active = {
        uuid.UUID(str(i))
        for i in session.scalars(
            select(UserSmallcaseInvestment.id).where(
                UserSmallcaseInvestment.smallcase_id == smallcase.id,
                UserSmallcaseInvestment.status == InvestmentStatus.ACTIVE.value,
            )
        )
    }
    unknown = sorted(str(i) for i in excluded - active)
    if unknown:
        raise InvalidInputError(
            f"exclude_investments: {', '.join(unknown)} is not an active investment of "
            f"smallcase {smallcase.name!r}"
        )
    return sorted(active - excluded)


class _Collector:
    """The planner's batch hook: each investment's plan as a report row (up to a limit)."""

    def __init__(self, currency: str | None, limit: int) -> None:
        self.currency = currency
        self.limit = limit
        self.reports: list[InvestmentReport] = []
        self.seen = 0

    def __call__(
        self,
        batch: BatchPlan,
        members: Sequence[planner.InvestmentRow],
        assets: Mapping[str, planner.PlanAsset],
    ) -> None:
        keys = {label: AssetKey(a.symbol, a.exchange) for label, a in assets.items()}
        for k, inv in enumerate(members):
            self.seen += 1
            if len(self.reports) >= self.limit:
                continue
            currency = self.currency or next(iter(assets.values())).currency
            self.reports.append(
                report_from_plan(
                    batch.investment_plan(k),
                    assets=keys,
                    user=str(inv.user_id),
                    connection=inv.connection_alias,
                    broker_type=inv.broker_type,
                    currency=currency,
                    costs=planner.planning_capabilities(inv).costs,
                )
            )


def _with_emails(engine: Engine, reports: list[InvestmentReport]) -> list[InvestmentReport]:
    ids = {r.user for r in reports}
    if not ids:
        return reports
    with engine.connect() as conn:
        emails = {
            str(uid): email
            for uid, email in conn.execute(
                select(User.id, User.email).where(User.id.in_([uuid.UUID(i) for i in ids]))
            )
        }
    return [dataclasses.replace(r, user=emails.get(r.user, r.user)) for r in reports]


def plan_for_review(
    engine: Engine,
    smallcase_ref: str,
    *,
    constituents: Sequence[Mapping[str, Any]] | None = None,
    policy: RebalancePolicy | Mapping[str, Any] | None = None,
    exclude_investments: Sequence[uuid.UUID | str] | None = None,
    dry_run: bool = False,
    require_approval: bool = True,
    limit: int = REPORT_LIMIT,
) -> PlanReview:
    """Plan a rebalance under the run's policy (and write it unless dry); report it."""
    with Session(engine) as session:
        smallcase = admin.get_smallcase(session, smallcase_ref)
        used, planning, currency = run_policy(session, smallcase, constituents, policy)
        investment_ids = included_investments(session, smallcase, exclude_investments)
    collector = _Collector(currency, limit)
    plan = planner.plan_and_write(
        engine,
        smallcase_ref,
        run_type=RunType.REBALANCE,
        constituents=constituents,
        investment_ids=investment_ids,
        policy=planning,
        dry_run=dry_run,
        require_approval=require_approval,
        on_batch=collector,
    )
    plan = dataclasses.replace(plan, policy=used.as_record())
    reports = _with_emails(engine, collector.reports)
    return PlanReview(plan, used, tuple(reports), collector.seen <= limit)
