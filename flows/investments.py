"""One user's investing: invest in (or top up) a smallcase, or exit it."""

from __future__ import annotations

import time
from typing import Any

from prefect import flow
from prefect.states import State

from flows.kit.audit import AUDIT_HOOKS
from flows.kit.review import approve_or_reject, execute_planned, finish, publish_plan
from flows.kit.runners import SarasTaskRunner
from saras.domain.enums import RunType
from saras.domain.inputs import InvestmentParams, parse
from saras.domain.parameters import ExecutionParameters, settings_kwargs
from saras.errors import SarasError
from tasks.investments import abandon_opening, begin_exit, open_or_top_up
from tasks.rebalance import plan_runs


def _plan_and_run(
    event: str,
    path: str,
    began: float,
    smallcase: str,
    run_type: str,
    investment: dict[str, str],
    amount: str | None,
    require_approval: bool,
    execution: dict[str, Any] | None,
) -> State:
    opening = run_type in (RunType.INVEST.value, RunType.TOPUP.value) and amount is not None
    try:
        plan = plan_runs(
            smallcase,
            run_type=run_type,
            investment_ids=[investment["investment_id"]],
            amounts={investment["investment_id"]: amount} if amount else None,
            require_approval=require_approval,
        )
    except SarasError:
        if opening:
            abandon_opening(investment["investment_id"], run_type, str(amount))
        raise
    markdown = publish_plan(plan, key=f"{run_type}-plan")
    if not plan.runs:
        if opening:
            # nothing will buy with the money (an unusable connection, an amount too small for
            # one order): a pending investment must not keep its cash reserved for ever
            abandon_opening(investment["investment_id"], run_type, str(amount))
        return finish(
            event,
            began,
            plan,
            [],
            message="nothing to trade"
            + (f"; the {run_type} of {amount} was not made, its cash is free" if opening else ""),
            failed=opening,
            user_id=investment["user_id"],
            path=path,
        )
    if require_approval:
        approved, why = approve_or_reject(plan, markdown, timeout_seconds=3600, poll_seconds=10)
        if not approved:
            if opening:
                abandon_opening(investment["investment_id"], run_type, str(amount))
            return finish(
                event,
                began,
                plan,
                [],
                message=why,
                failed=True,
                user_id=investment["user_id"],
                path=path,
            )
    results = execute_planned(plan, execution)
    return finish(event, began, plan, results, user_id=investment["user_id"], path=path)


@flow(name="invest-in-smallcase", task_runner=SarasTaskRunner(), **AUDIT_HOOKS)
def invest_in_smallcase(
    user: str,
    smallcase: str,
    amount: str,
    broker_alias: str | None = None,
    broker_type: str | None = None,
    paper_trading: bool | None = None,
    portfolio: str | None = None,
    require_approval: bool = False,
    execution: ExecutionParameters | None = None,
) -> State:
    """Invest ``amount`` of a user's cash in a smallcase (a top-up if already invested).

    The user's connection is chosen by the broker selection query: ``broker_alias``, or the
    single active connection of ``broker_type`` (paper by default), paper or live.

    Args:
        user: The investor's e-mail.
        smallcase: Name or id of the smallcase.
        amount: Cash to invest, in the smallcase's currency (a decimal, e.g. "10000").
        broker_alias: The user's broker connection to trade through, by alias.
        broker_type: Without an alias: the broker whose single active connection is used.
        paper_trading: Only a paper (true) or only a live (false) connection: what it can
            reach, not its row's flag alone; with an alias, one of the other kind is refused.
        portfolio: The user's portfolio to take the cash from, by name; empty: the oldest in
            the smallcase's currency.
        require_approval: Pause for an analyst's approval of the plan before trading.
        execution: How patient the execution is (polling, deadline, timeouts); empty: the
            defaults.
    """
    began = time.monotonic()
    path = "flows/investments.py:invest_in_smallcase"
    try:
        # "abc", "NaN", "1e30" or "-5" fails here, naming it, before anything is written
        amount = f"{parse(InvestmentParams, amount=amount).amount:f}"
        investment = open_or_top_up(
            user, smallcase, amount, broker_alias, broker_type, paper_trading, portfolio
        )
        return _plan_and_run(
            "flow.invest_in_smallcase",
            path,
            began,
            smallcase,
            investment["run_type"],
            investment,
            amount,
            require_approval,
            settings_kwargs(execution),
        )
    except SarasError as exc:
        return finish(
            "flow.invest_in_smallcase", began, None, [], message=str(exc), failed=True, path=path
        )


@flow(name="exit-smallcase", task_runner=SarasTaskRunner(), **AUDIT_HOOKS)
def exit_smallcase(
    user: str,
    smallcase: str,
    require_approval: bool = False,
    execution: ExecutionParameters | None = None,
) -> State:
    """Sell everything a user's investment in a smallcase holds and close it.

    Args:
        user: The investor's e-mail.
        smallcase: Name or id of the smallcase.
        require_approval: Pause for an analyst's approval of the sells before trading.
        execution: How patient the execution is (polling, deadline, timeouts); empty: the
            defaults.
    """
    began = time.monotonic()
    path = "flows/investments.py:exit_smallcase"
    try:
        investment = begin_exit(user, smallcase)
        return _plan_and_run(
            "flow.exit_smallcase",
            path,
            began,
            smallcase,
            "exit",
            investment,
            None,
            require_approval,
            settings_kwargs(execution),
        )
    except SarasError as exc:
        return finish(
            "flow.exit_smallcase", began, None, [], message=str(exc), failed=True, path=path
        )
