"""Tasks of the price-history flow: plan, ingest one batch, revalue."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from saras.db import get_engine, session_scope
from saras.marketdata.base import is_retryable
from saras.services import prices as service
from tasks import retry_when


@task(cache_policy=NO_CACHE)
def plan_price_ingestion(
    now: datetime,
    symbols: list[str] | None,
    start: date | None,
    end: date | None,
    source: str | None,
    exchanges: list[str] | None = None,
) -> tuple[list[service.IngestionItem], list[service.SymbolReport]]:
    """Decide which assets and days to ingest."""
    with session_scope() as session:
        return service.plan_ingestion(
            session,
            now=now,
            symbols=symbols,
            start=start,
            end=end,
            source=source,
            exchanges=exchanges,
        )


@task(
    retries=3,
    retry_delay_seconds=[5, 30, 120],
    retry_condition_fn=retry_when(is_retryable),
    cache_policy=NO_CACHE,
    task_run_name="ingest-{label}",
)
def ingest_price_batch(
    items: list[service.IngestionItem],
    now: datetime,
    source_options: dict[str, Any] | None,
    label: str,
) -> list[service.SymbolReport]:
    """Fetch, validate and write one batch of symbols."""
    return service.ingest_batch(get_engine(), items, now=now, source_options=source_options)


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def revalue_portfolios() -> int:
    """Revalue holdings and portfolios at the latest closes."""
    return service.revalue_portfolios(get_engine())
