"""Nightly price history ingestion: fetch OHLCV per asset and trading day, write, revalue."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, date, datetime
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.states import State

from flows.kit.audit import AUDIT_HOOKS
from flows.kit.batches import submit_batches
from flows.kit.finish import ResultsTable, finish_flow
from flows.kit.runners import SarasTaskRunner
from saras.domain.inputs import PriceHistoryParams, parse
from saras.services.prices import SymbolReport, batches, fail_batch, summarize
from saras.services.source_credentials import check_source_options
from saras.settings import get_settings
from tasks.prices import ingest_price_batch, plan_price_ingestion, revalue_portfolios


@flow(name="ingest-price-history", log_prints=True, task_runner=SarasTaskRunner(), **AUDIT_HOOKS)
def ingest_price_history(
    symbols: list[str] | None = None,
    start: date | None = None,
    end: date | None = None,
    source: str | None = None,
    source_options: dict[str, Any] | None = None,
    batch_size: int | None = None,
    exchanges: list[str] | None = None,
) -> State:
    """Ingest daily bars for the given symbols (default: every held or constituent asset).

    Days run from the day after each asset's last stored bar (or ``start``) to its exchange's
    last completed session (or ``end``). ``source`` overrides the per-exchange default;
    ``exchanges`` limits the run to assets listed there (the nightly US and Indian schedules).

    Args:
        symbols: Only these symbols; empty: every held or constituent asset.
        start: First day to fetch; empty: the day after each asset's last stored bar.
        end: Last day to fetch; empty: each exchange's last completed session.
        source: Market-data source (yfinance, alpaca, kite, csv, simulated); empty: the
            per-exchange default (SARAS_PRICE_SOURCES).
        source_options: Options of the source, never secrets: e.g. {"connection":
            "user@example.com/alias"} for broker credentials, {"path": ..., "date_format":
            "%d-%m-%Y"} for csv.
        batch_size: Symbols per ingestion task; empty: SARAS_INGESTION_BATCH_SIZE. At least 1.
        exchanges: Only assets listed on these exchanges (e.g. ["NYSE", "NASDAQ"]).
    """
    logger = get_run_logger()
    began = time.monotonic()
    now = datetime.now(UTC)
    # bad parameters fail the run at once, naming the parameter (saras.domain.inputs)
    parse(PriceHistoryParams, start=start, end=end, batch_size=batch_size, exchanges=exchanges)
    check_source_options(source_options)
    items, reports = plan_price_ingestion(now, symbols, start, end, source, exchanges)
    groups = batches(items, batch_size or get_settings().ingestion_batch_size)
    logger.info("ingesting %d symbols in %d batches", len(items), len(groups))
    progress = create_progress_artifact(0.0, description="Price ingestion: batches done")
    assert isinstance(progress, uuid.UUID)  # the sync API in a sync flow
    futures = submit_batches(
        lambda i, group: ingest_price_batch.submit(
            group, now, source_options, f"{group[0].source}-{i + 1}"
        ),
        groups,
    )
    for done, (group, future) in enumerate(zip(groups, futures, strict=True), start=1):
        future.wait()
        if future.state.is_completed():
            reports.extend(future.result())
        else:
            message = str(future.state.message or "the batch failed")
            reports.extend(fail_batch(group, message))
        update_progress_artifact(progress, 100.0 * done / max(len(groups), 1))
    revalued = revalue_portfolios()
    update_progress_artifact(progress, 100.0)
    return _finish(reports, revalued, began)


def _finish(reports: list[SymbolReport], revalued: int, began: float) -> State:
    totals = summarize(reports)
    failed = [r for r in reports if r.failed]
    problems = []
    if failed:
        names = ", ".join(r.symbol for r in failed[:10]) + (" ..." if len(failed) > 10 else "")
        problems.append(f"{len(failed)} of {len(reports)} symbols failed: {names}")
    return finish_flow(
        "flow.ingest_price_history",
        began,
        path="flows/price_history.py:ingest_price_history",
        summary=f"{totals['symbols'] - len(failed)} symbols ingested",
        problems=problems,
        failed=bool(failed) and len(failed) == len(reports),
        data={"totals": totals, "reports": [r.as_row() for r in reports]},
        results=ResultsTable(
            [r.as_row() for r in sorted(reports, key=lambda r: (r.failed is False, r.symbol))],
            key="price-ingestion",
            description=(
                f"{totals['symbols']} symbols: {totals['inserted']} inserted, "
                f"{totals['updated']} updated, {totals['unchanged']} unchanged, "
                f"{totals['rejected']} rejected, {totals['missing_sessions']} missing sessions, "
                f"{totals['failed']} failed; {revalued} holdings revalued"
            ),
        ),
    )


if __name__ == "__main__":
    ingest_price_history()
