"""Tasks of the pre-open check: call every live broker connection (never cached)."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from saras.db import get_engine
from saras.services import connections as service


@task(cache_policy=NO_CACHE)
def check_broker_connections(broker_types: list[str] | None) -> list[service.ConnectionCheck]:
    """Call each active connection once; mark those whose credentials the broker refuses."""
    return service.check_connections(get_engine(), broker_types=broker_types)
