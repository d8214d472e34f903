"""Pre-open check of broker sessions: find expired logins before the market opens.

Scheduled at 08:30 Asia/Kolkata (prefect.yaml), 45 minutes before NSE's 09:15 open: Kite access
tokens expire at 06:00 IST every day, and a run that meets an expired token stops at the first
order. Each active connection gets one cheap authenticated call; the refused ones are marked
(Kite ``expired``, others ``error``), listed in the ``broker-sessions`` artifact, and fail the
run, so that the failure automation alerts (deployments/automations/). Renew with
``saras connections update USER ALIAS``.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from prefect import flow, get_run_logger
from prefect.states import Completed, State

from flows.kit.audit import AUDIT_HOOKS
from flows.kit.finish import ResultsTable, finish_flow
from flows.kit.runners import SarasTaskRunner
from saras.marketdata import calendars
from saras.services.connections import CheckOutcome
from tasks.connections import check_broker_connections

PATH = "flows/preopen.py:check_broker_sessions"


@flow(name="check-broker-sessions", task_runner=SarasTaskRunner(), **AUDIT_HOOKS)
def check_broker_sessions(
    broker_types: list[str] | None = None, session_exchange: str | None = None
) -> State:
    """Call every active connection (of ``broker_types``, default all) and report expired ones.

    With ``session_exchange`` (the schedule's ``NSE``), a day that is no session there checks
    nothing: the schedule runs Monday to Friday and the exchange's calendar has the holidays.

    Args:
        broker_types: Only connections of these brokers (e.g. ["zerodha"]); empty: all.
        session_exchange: Check only on this exchange's trading days (e.g. "NSE").
    """
    logger = get_run_logger()
    began = time.monotonic()
    now = datetime.now(UTC)
    if session_exchange is not None:
        today = now.astimezone(calendars.exchange_timezone(session_exchange)).date()
        if not calendars.is_session(session_exchange, today):
            return Completed(message=f"{today} is no {session_exchange} session: nothing checked")
    checks = check_broker_connections(broker_types)
    expired = [c for c in checks if c.needs_login]
    unreachable = [c for c in checks if c.outcome is CheckOutcome.UNREACHABLE]
    summary = f"{len(checks)} connections answered"
    problems = []
    if expired:
        problems.append(
            f"{len(expired)} of {len(checks)} connections need a new login: "
            + ", ".join(f"{c.user}/{c.alias}" for c in expired)
        )
        logger.error(problems[0])
    elif unreachable:
        # a venue that did not answer is retried tomorrow, not a login to renew
        summary = f"{len(unreachable)} of {len(checks)} connections did not answer"
        logger.warning(summary)
    return finish_flow(
        "flow.check_broker_sessions",
        began,
        path=PATH,
        summary=None if expired else summary,
        problems=problems,
        failed=bool(expired),
        results=ResultsTable(
            [c.as_row() for c in checks],
            key="broker-sessions",
            description=(
                f"{len(checks)} connections checked: {len(expired)} need a new login "
                f"(`saras connections update USER ALIAS`), {len(unreachable)} unreachable"
            ),
            empty_row={"outcome": "no active connection"},
        ),
    )


if __name__ == "__main__":
    check_broker_sessions()
