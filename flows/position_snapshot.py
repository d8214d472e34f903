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
from prefect.states import State

from flows.kit.alerts import announce_reconciliation_differences
from flows.kit.audit import AUDIT_HOOKS
from flows.kit.batches import in_turn, submit_batches
from flows.kit.finish import ResultsTable, finish_flow
from flows.kit.runners import SarasTaskRunner
from saras.domain.inputs import SnapshotParams, parse
from saras.services.corporate_actions import AppliedAction
from saras.services.snapshots import (
    ConnectionRef,
    ConnectionResult,
    SnapshotReport,
    batches,
    default_snapshot_date,
    failed_result,
)
from tasks.snapshots import (
    apply_corporate_actions,
    plan_reconciliation,
    reconcile_connection,
    reconcile_connections,
    write_position_snapshot,
)

#: connections reconciled per task run
RECONCILE_BATCH_SIZE = 50


@flow(name="snapshot-positions", log_prints=True, task_runner=SarasTaskRunner(), **AUDIT_HOOKS)
def snapshot_positions(snapshot_date: date | None = None, batch_size: int | None = None) -> State:
    """Snapshot every active investment's positions for a day and reconcile with the brokers.

    ``snapshot_date`` defaults to today (UTC). Positions come from our own ledger, valued at the
    latest close on or before the day; stale or missing closes are reported. Each broker
    connection used by an active investment is asked for its positions once and compared with
    our ledger; differences are reported (artifact ``reconciliation``, ``audit_logs``), never
    written over our rows.

    Args:
        snapshot_date: The day to snapshot; empty: today (UTC). Not in the future.
        batch_size: Investments per snapshot task; empty: the default. At least 1.
    """
    logger = get_run_logger()
    began = time.monotonic()
    now = datetime.now(UTC)
    # a snapshot dated in the future (2100) or batch_size <= 0 fails at once, naming it
    parse(SnapshotParams, snapshot_date=snapshot_date, batch_size=batch_size)
    day = snapshot_date or default_snapshot_date(now)

    # the ledger follows the market first: splits, bonus issues, dividends due by the day
    applying = apply_corporate_actions(day, return_state=True)
    applied: list[AppliedAction] = applying.result() if applying.is_completed() else []
    actions_error = None if applying.is_completed() else str(applying.message or "failed")
    snapshot = in_turn(write_position_snapshot.submit(day, now))
    refs = plan_reconciliation()
    groups = batches(refs, batch_size or RECONCILE_BATCH_SIZE)
    logger.info(
        "snapshot of %s; reconciling %d connections in %d batches", day, len(refs), len(groups)
    )
    futures = submit_batches(
        lambda i, group: reconcile_connections.submit(group, f"{i + 1}-of-{len(groups)}", day),
        groups,
    )
    results = _reconcile_results(groups, futures, day)

    snapshot.wait()
    report: SnapshotReport | None = None
    snapshot_error = None
    if snapshot.state.is_completed():
        report = snapshot.result()
    else:
        snapshot_error = str(snapshot.state.message or "the snapshot write failed")
    return _finish(day, report, snapshot_error, results, began, applied, actions_error)


def _reconcile_results(
    groups: list[list[ConnectionRef]],
    futures: list[PrefectFuture[list[ConnectionResult]]],
    day: date,
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
                retries.append((ref, reconcile_connection.submit(ref, day)))
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
    applied: list[AppliedAction],
    actions_error: str | None = None,
) -> State:
    differences = [d.as_row() for r in results for d in r.differences]
    failed = [r for r in results if r.failed]
    stale = [s.as_row() for s in report.stale] if report else []
    totals: dict[str, Any] = report.totals() if report else {"snapshot_date": str(day)}
    totals.update(
        connections=len(results),
        connections_failed=len(failed),
        differences=len(differences),
        corporate_actions_applied=len(applied),
    )
    _publish(day, totals, stale, applied, differences, results, snapshot_error)
    summary = None
    if report is not None:
        summary = (
            f"{totals['positions']} positions of {totals['investments']} active investments on "
            f"{day} ({totals['inserted']} inserted, {totals['updated']} updated, "
            f"{totals['unchanged']} unchanged, {totals['removed']} removed); "
            f"{len(results)} connections reconciled"
        )
    return finish_flow(
        "flow.snapshot_positions",
        began,
        path="flows/position_snapshot.py:snapshot_positions",
        summary=summary,
        problems=_problems(actions_error, snapshot_error, stale, results, failed, differences),
        failed=snapshot_error is not None,
        data={
            "snapshot_date": str(day),
            "totals": totals,
            "corporate_actions": [str(a.action_id) for a in applied],
            "stale": stale,
            "differences": differences,
            "connections": [r.as_row() for r in results],
        },
        results=ResultsTable(
            [r.as_row() for r in results],
            key="reconciliation-connections",
            description="Reconciliation per broker connection",
        ),
    )


def _problems(
    actions_error: str | None,
    snapshot_error: str | None,
    stale: list[dict[str, Any]],
    results: list[ConnectionResult],
    failed: list[ConnectionResult],
    differences: list[dict[str, Any]],
) -> list[str]:
    """Say what the snapshot could not do, or found wrong."""
    problems = []
    if actions_error:
        problems.append(f"corporate actions could not be applied: {actions_error}")
    if snapshot_error:
        problems.append(f"snapshot failed: {snapshot_error}")
    if stale:
        names = ", ".join(f"{s['symbol']} (last close {s['last_close_date']})" for s in stale[:10])
        problems.append(f"{len(stale)} stale prices: {names}" + (" ..." if len(stale) > 10 else ""))
    if failed:
        names = "; ".join(r.error or r.alias for r in failed[:10])
        problems.append(f"{len(failed)} of {len(results)} connections failed: {names}")
    if differences:
        # never silent: the investments on these connections are not planned until the
        # differences are resolved or accepted (`saras reconcile accept`)
        aliases = sorted({d["connection"] for d in differences})
        problems.append(
            f"{len(differences)} reconciliation differences on {', '.join(aliases[:10])}"
        )
    return problems


def _publish(
    day: date,
    totals: dict[str, Any],
    stale: list[dict[str, Any]],
    applied: list[AppliedAction],
    differences: list[dict[str, Any]],
    results: list[ConnectionResult],
    snapshot_error: str | None,
) -> None:
    """Publish the snapshot's artifacts and announce the reconciliation differences."""
    failed = [r for r in results if r.failed]
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
    if applied:
        create_table_artifact(
            [
                {
                    "symbol": a.symbol,
                    "exchange": a.exchange,
                    "action": a.action_type,
                    "ex_date": str(a.ex_date),
                    "investments": a.investments,
                    "quantity_added": f"{a.quantity_added.normalize():f}",
                    "cash": f"{a.cash.normalize():f}",
                }
                for a in applied
            ],
            key="corporate-actions",
            description=f"Corporate actions applied to the ledger on {day}",
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
    announce_reconciliation_differences(day, differences)  # alerts (issue 13, helper ops)


if __name__ == "__main__":
    snapshot_positions()
