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
from prefect.artifacts import create_table_artifact
from prefect.states import Completed, Failed, State

from saras.marketdata import calendars
from saras.services.connections import CheckOutcome
from tasks.common import AUDIT_HOOKS, record_audit
from tasks.connections import check_broker_connections
from tasks.runners import SarasTaskRunner

PATH = "flows/preopen.py:check_broker_sessions"


@flow(name="check-broker-sessions", task_runner=SarasTaskRunner(), **AUDIT_HOOKS)
def check_broker_sessions(
    broker_types: list[str] | None = None, session_exchange: str | None = None
) -> State:
    """Call every active connection (of ``broker_types``, default all) and report expired ones.

    With ``session_exchange`` (the schedule's ``NSE``), a day that is no session there checks
    nothing: the schedule runs Monday to Friday and the exchange's calendar has the holidays.
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
    create_table_artifact(
        [c.as_row() for c in checks] or [{"outcome": "no active connection"}],
        key="broker-sessions",
        description=(
            f"{len(checks)} connections checked: {len(expired)} need a new login "
            f"(`saras connections update USER ALIAS`), {len(unreachable)} unreachable"
        ),
    )
    message = None
    if expired:
        message = f"{len(expired)} of {len(checks)} connections need a new login: " + ", ".join(
            f"{c.user}/{c.alias}" for c in expired
        )
        logger.error(message)
    elif unreachable:
        message = f"{len(unreachable)} of {len(checks)} connections did not answer"
        logger.warning(message)
    record_audit(
        "flow.check_broker_sessions",
        success=not expired,
        duration_ms=(time.monotonic() - began) * 1000,
        error_message=message,
        path=PATH,
    )
    if expired:
        return Failed(message=message)
    return Completed(message=message or f"{len(checks)} connections answered")


if __name__ == "__main__":
    check_broker_sessions()
