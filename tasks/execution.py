"""Tasks that execute runs through brokers (never cached: every call acts)."""

from __future__ import annotations

import uuid
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from sqlalchemy.orm import Session

from models import UserBrokerConnection
from saras.brokers.errors import BrokerError
from saras.db import get_engine
from saras.errors import SarasError
from saras.services.brokers import open_broker
from saras.services.execution import ExecutionSettings, execute_run, live_trading_refusal


def _settings(overrides: dict[str, Any] | None) -> ExecutionSettings:
    return ExecutionSettings(**(overrides or {}))


@task(cache_policy=NO_CACHE, task_run_name="execute-run-{run_id}")
def execute_one_run(run_id: str, settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """Execute (or resume) one run."""
    return execute_run(get_engine(), uuid.UUID(run_id), settings=_settings(settings)).as_dict()


@task(cache_policy=NO_CACHE, task_run_name="execute-connections-{label}")
def execute_connection_runs(
    runs_by_connection: dict[str, list[str]], label: str, settings: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Execute the runs of some connections: one broker per connection, its runs in turn."""
    engine = get_engine()
    outcomes = []
    for connection_id, run_ids in runs_by_connection.items():
        with Session(engine) as session:
            connection = session.get(UserBrokerConnection, uuid.UUID(connection_id))
            assert connection is not None
            session.expunge(connection)
        broker = None
        options = _settings(settings)
        # a connection that may not trade live opens no broker: execute_run ends its runs
        refused = live_trading_refusal(connection) is not None
        timeout: dict[str, Any] = (
            {"timeout": options.request_timeout} if options.request_timeout else {}
        )
        for run_id in run_ids:
            try:
                if broker is None and not refused:
                    broker = open_broker(engine, connection, for_trading=True, **timeout)
                outcome = execute_run(
                    engine, uuid.UUID(run_id), broker=broker, settings=options
                ).as_dict()
            except (SarasError, BrokerError) as exc:
                outcome = {
                    "run_id": run_id,
                    "status": "not_executed",
                    "orders": {},
                    "reason": str(exc),
                }
            outcomes.append(outcome)
    return outcomes


__all__ = ["execute_connection_runs", "execute_one_run"]
