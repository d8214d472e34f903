"""Nightly position snapshot: value our ledger's positions, write them, reconcile with brokers."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, date, datetime
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import (
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.futures import PrefectFuture
from prefect.states import Completed, Failed, State

from saras.domain.inputs import SnapshotParams, parse
from saras.services.snapshots import (
    ConnectionRef,
    ConnectionResult,
    SnapshotReport,
    batches,
    default_snapshot_date,
    failed_result,
)
from tasks import concurrent_writes
from tasks.common import record_audit
from tasks.snapshots import (
    plan_reconciliation,
    reconcile_connection,
    reconcile_connections,
    write_position_snapshot,
)

#: connections reconciled per task run
RECONCILE_BATCH_SIZE = 50


@flow(name="snapshot-positions", log_prints=True)
def snapshot_positions(snapshot_date: date | None = None, batch_size: int | None = None) -> State:
    """Snapshot every active investment's positions for a day and reconcile with the brokers.

    ``snapshot_date`` defaults to today (UTC). Positions come from our own ledger, valued at the
    latest close on or before the day; stale or missing closes are reported. Each broker
    connection used by an active investment is asked for its positions once and compared with
    our ledger; differences are reported (artifact ``reconciliation``, ``audit_logs``), never
    written over our rows.
    """
    logger = get_run_logger()
    began = time.monotonic()
    now = datetime.now(UTC)
    # a snapshot dated in the future (2100) or batch_size <= 0 fails at once, naming it
    parse(SnapshotParams, snapshot_date=snapshot_date, batch_size=batch_size)
    day = snapshot_date or default_snapshot_date(now)

    snapshot = write_position_snapshot.submit(day, now)
    if not concurrent_writes():
        snapshot.wait()
    refs = plan_reconciliation()
    groups = batches(refs, batch_size or RECONCILE_BATCH_SIZE)
    logger.info(
        "snapshot of %s; reconciling %d connections in %d batches", day, len(refs), len(groups)
    )
    futures = []
    for i, group in enumerate(groups):
        futures.append(reconcile_connections.submit(group, f"{i + 1}-of-{len(groups)}"))
        if not concurrent_writes():
            futures[-1].wait()
    results = _reconcile_results(groups, futures)

    snapshot.wait()
    report: SnapshotReport | None = None
    snapshot_error = None
    if snapshot.state.is_completed():
        report = snapshot.result()
    else:
        snapshot_error = str(snapshot.state.message or "the snapshot write failed")
    return _finish(day, report, snapshot_error, results, began)


def _reconcile_results(
    groups: list[list[ConnectionRef]], futures: list[PrefectFuture[list[ConnectionResult]]]
) -> list[ConnectionResult]:
    """Collect batch results; retry alone, with Prefect's retries, what answered retryably."""
    results: list[ConnectionResult] = []
    retries: list[tuple[ConnectionRef, PrefectFuture[ConnectionResult]]] = []
    progress = create_progress_artifact(0.0, description="Reconciliation: connection batches done")
    assert isinstance(progress, uuid.UUID)  # the sync API in a sync flow
    for done, (group, future) in enumerate(zip(groups, futures, strict=True), start=1):
        future.wait()
        update_progress_artifact(progress, 100.0 * done / len(groups))
        if not future.state.is_completed():
            message = str(future.state.message or "the reconciliation batch failed")
            results.extend(failed_result(ref, message) for ref in group)
            continue
        by_id = {ref.connection_id: ref for ref in group}
        for result in future.result():
            if result.retry:
                ref = by_id[result.connection_id]
                retries.append((ref, reconcile_connection.submit(ref)))
            else:
                results.append(result)
    for ref, single in retries:
        single.wait()
        if single.state.is_completed():
            results.append(single.result())
        else:
            results.append(
                failed_result(ref, f"connection {ref.alias}: {single.state.message or 'failed'}")
            )
    return sorted(results, key=lambda r: (r.alias, r.connection_id))


def _finish(
    day: date,
    report: SnapshotReport | None,
    snapshot_error: str | None,
    results: list[ConnectionResult],
    began: float,
) -> State:
    differences = [d.as_row() for r in results for d in r.differences]
    failed = [r for r in results if r.failed]
    stale = [s.as_row() for s in report.stale] if report else []
    totals: dict[str, Any] = report.totals() if report else {"snapshot_date": str(day)}
    totals.update(
        connections=len(results),
        connections_failed=len(failed),
        differences=len(differences),
    )

    stale_text = ", ".join(
        f"{s['symbol']} ({s['exchange']}, last close {s['last_close_date']})" for s in stale
    )
    create_table_artifact(
        [{**totals, "stale": stale_text}],
        key="position-snapshot",
        description=(
            f"Positions on {day}: {totals.get('inserted', 0)} inserted, "
            f"{totals.get('updated', 0)} updated, {totals.get('unchanged', 0)} unchanged, "
            f"{totals.get('removed', 0)} removed; {len(stale)} stale assets"
            + (f"; snapshot failed: {snapshot_error}" if snapshot_error else "")
        ),
    )
    if stale:
        create_table_artifact(
            stale,
            key="stale-prices",
            description=f"Assets valued at an old close, or at none, on {day}",
        )
    create_table_artifact(
        differences,
        key="reconciliation",
        description=(
            f"{len(differences)} differences between our ledger and the brokers over "
            f"{len(results) - len(failed)} reconciled connections (broker - ours)"
            + (f"; {len(failed)} connections failed" if failed else "")
        ),
    )
    create_table_artifact(
        [r.as_row() for r in results],
        key="reconciliation-connections",
        description="Reconciliation per broker connection",
    )

    problems = []
    if snapshot_error:
        problems.append(f"snapshot failed: {snapshot_error}")
    if stale:
        names = ", ".join(f"{s['symbol']} (last close {s['last_close_date']})" for s in stale[:10])
        problems.append(f"{len(stale)} stale prices: {names}" + (" ..." if len(stale) > 10 else ""))
    if failed:
        names = "; ".join(r.error or r.alias for r in failed[:10])
        problems.append(f"{len(failed)} of {len(results)} connections failed: {names}")
    notes = list(problems)
    if differences:
        aliases = sorted({d["connection"] for d in differences})
        notes.append(f"{len(differences)} reconciliation differences on {', '.join(aliases[:10])}")
    message = "; ".join(notes) or None
    record_audit(
        "flow.snapshot_positions",
        success=not problems,
        duration_ms=(time.monotonic() - began) * 1000,
        error_message=message,
        path="flows/position_snapshot.py:snapshot_positions",
    )
    data = {
        "snapshot_date": str(day),
        "totals": totals,
        "stale": stale,
        "differences": differences,
        "connections": [r.as_row() for r in results],
    }
    if snapshot_error:
        return Failed(message=message, data=data)
    if problems:
        return Completed(name="Partially Completed", message=message, data=data)
    summary = (
        f"{totals['positions']} positions of {totals['investments']} active investments on {day}"
        f" ({totals['inserted']} inserted, {totals['updated']} updated, "
        f"{totals['unchanged']} unchanged, {totals['removed']} removed); "
        f"{len(results)} connections reconciled"
    )
    return Completed(message=f"{summary}; {message}" if message else summary, data=data)


if __name__ == "__main__":
    snapshot_positions()
