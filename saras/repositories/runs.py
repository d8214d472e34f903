"""Execution runs as planning and approval change them: every status write goes through the
run state table of ``saras.domain.orders`` and says ``WHERE status = <old>``, so a lost race
(an approval meeting a newer plan, two triggers of one rebalance) fails loudly.

Transactions belong to the caller (the task or service entry point): nothing here commits.

Planning of an investment is serialised by :func:`lock_planning`, taken as the first statement
of the planning transaction and held until its commit: on PostgreSQL transaction-scoped advisory
locks (a whole-smallcase plan takes the smallcase's lock exclusively; one investment's plan takes
it shared plus the investment's own lock); on SQLite, a no-op write on the smallcase's row, which
takes the database's single write lock.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, select, text, update

from models import (
    Smallcase,
    SmallcaseExecutionOrder,
    SmallcaseExecutionRun,
    UserSmallcaseInvestment,
)
from models.base import utcnow
from saras.domain.enums import OrderStatus, RunStatus
from saras.domain.orders import (
    TERMINAL_RUN_STATUSES,
    InvalidTransition,
    OrderEvent,
    RunEvent,
    transition,
    transition_run,
)
from saras.errors import SarasError

#: ids per statement: PostgreSQL takes at most 65,535 bound parameters
ID_CHUNK = 10_000

#: runs a new plan replaces (never started, never approved)
SUPERSEDABLE = (RunStatus.PLANNED, RunStatus.AWAITING_APPROVAL)
#: runs that are committed to trade: a new plan for their investment waits for them
IN_PROGRESS = (RunStatus.APPROVED, RunStatus.EXECUTING)


class RunsChanged(SarasError):
    """Runs were not in the status the caller read: another process changed them first."""


def _key(kind: str, ident: uuid.UUID) -> tuple[int, int]:
    digest = hashlib.sha256(f"saras-plan:{kind}:".encode() + ident.bytes).digest()
    return (
        int.from_bytes(digest[:4], "big", signed=True),
        int.from_bytes(digest[4:8], "big", signed=True),
    )


def lock_planning(
    conn: Connection, smallcase_id: uuid.UUID, investment_ids: Sequence[uuid.UUID] | None = None
) -> None:
    """Serialise planning until the transaction ends: the whole smallcase, or these investments.

    Blocks while another planning transaction holds a conflicting lock. Call it first in the
    planning transaction, before reading any state.
    """
    if conn.dialect.name == "postgresql":
        if investment_ids is None:
            conn.execute(
                text("SELECT pg_advisory_xact_lock(:a, :b)"),
                dict(zip("ab", _key("smallcase", smallcase_id), strict=True)),
            )
            return
        conn.execute(
            text("SELECT pg_advisory_xact_lock_shared(:a, :b)"),
            dict(zip("ab", _key("smallcase", smallcase_id), strict=True)),
        )
        for inv in sorted(investment_ids):  # one order everywhere: no deadlock
            conn.execute(
                text("SELECT pg_advisory_xact_lock(:a, :b)"),
                dict(zip("ab", _key("investment", inv), strict=True)),
            )
        return
    # SQLite: one writer at a time; writing first takes the write lock before anything is read
    conn.execute(
        update(Smallcase).where(Smallcase.id == smallcase_id).values(is_active=Smallcase.is_active)
    )


def born_status(*, auto_approve: bool) -> RunStatus:
    """Return the status a new run is written with: ``planned``, moved by the state table."""
    event = RunEvent.AUTO_APPROVE if auto_approve else RunEvent.REQUEST_APPROVAL
    return transition_run(RunStatus.PLANNED, event)


def open_runs(
    conn: Connection, smallcase_id: uuid.UUID, statuses: Iterable[RunStatus]
) -> list[tuple[uuid.UUID, uuid.UUID, RunStatus]]:
    """Return (run id, investment id, status) of the smallcase's runs in these statuses."""
    run = SmallcaseExecutionRun
    rows = conn.execute(
        select(run.id, run.investment_id, run.status)
        .join(UserSmallcaseInvestment, UserSmallcaseInvestment.id == run.investment_id)
        .where(
            UserSmallcaseInvestment.smallcase_id == smallcase_id,
            run.status.in_([s.value for s in statuses]),
        )
    ).all()
    return [(uuid.UUID(str(r)), uuid.UUID(str(i)), RunStatus(s)) for r, i, s in rows]


def move_runs(
    conn: Connection,
    runs: Mapping[uuid.UUID, RunStatus],
    event: RunEvent,
    *,
    values: Mapping[str, Any] | None = None,
) -> RunStatus | None:
    """Apply ``event`` to runs read in the given statuses; raise RunsChanged on a lost race.

    Runs sharing a status move in one ``UPDATE ... WHERE id IN (...) AND status = <old>`` per
    chunk; a run that is no longer in its old status makes the whole call fail.
    """
    by_status: dict[RunStatus, list[uuid.UUID]] = {}
    for run_id, status in runs.items():
        by_status.setdefault(status, []).append(run_id)
    new: RunStatus | None = None
    for old, ids in by_status.items():
        new = transition_run(old, event)
        extra = dict(values or {})
        if new in TERMINAL_RUN_STATUSES:
            extra.setdefault("completed_at", utcnow())
        for lo in range(0, len(ids), ID_CHUNK):
            chunk = ids[lo : lo + ID_CHUNK]
            result = conn.execute(
                update(SmallcaseExecutionRun)
                .where(
                    SmallcaseExecutionRun.id.in_(chunk),
                    SmallcaseExecutionRun.status == old.value,
                )
                .values(status=new.value, **extra)
            )
            if (result.rowcount or 0) != len(chunk):
                raise RunsChanged(
                    f"{len(chunk) - (result.rowcount or 0)} of {len(chunk)} runs are no longer "
                    f"{old.value}: another process changed them; nothing was changed"
                )
        if new in TERMINAL_RUN_STATUSES:
            cancel_planned_orders(conn, ids)
    return new


def cancel_planned_orders(conn: Connection, run_ids: Sequence[uuid.UUID]) -> None:
    """Cancel the never-sent orders of runs that will not execute (order state table)."""
    cancelled = transition(OrderStatus.PLANNED, OrderEvent.CANCEL)
    for lo in range(0, len(run_ids), ID_CHUNK):
        conn.execute(
            update(SmallcaseExecutionOrder)
            .where(
                SmallcaseExecutionOrder.execution_run_id.in_(list(run_ids[lo : lo + ID_CHUNK])),
                SmallcaseExecutionOrder.status == OrderStatus.PLANNED.value,
            )
            .values(status=cancelled.value, updated_at=utcnow())
        )


def statuses_of(conn: Connection, run_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, RunStatus]:
    """Return the current status of each run (set-based)."""
    out: dict[uuid.UUID, RunStatus] = {}
    ids = list(run_ids)
    for lo in range(0, len(ids), ID_CHUNK):
        for run_id, status in conn.execute(
            select(SmallcaseExecutionRun.id, SmallcaseExecutionRun.status).where(
                SmallcaseExecutionRun.id.in_(ids[lo : lo + ID_CHUNK])
            )
        ):
            out[uuid.UUID(str(run_id))] = RunStatus(status)
    return out


def decide(
    conn: Connection,
    run_ids: Sequence[uuid.UUID],
    event: RunEvent,
    *,
    note: str | None = None,
    approved_hashes: Mapping[uuid.UUID, str] | None = None,
) -> int:
    """Move a plan's runs through approval (approve, reject, timeout) in the caller's transaction.

    Raises RunsChanged, naming what happened, when a run is not where the plan left it (a newer
    plan superseded it, another decision came first): nothing is changed then.
    """
    current = statuses_of(conn, run_ids)
    missing = [r for r in run_ids if r not in current]
    if missing:
        raise RunsChanged(f"{len(missing)} runs of the plan no longer exist (first {missing[0]})")
    moved: dict[RunStatus, list[uuid.UUID]] = {}
    for run_id, status in current.items():
        try:
            transition_run(status, event)
        except InvalidTransition:
            moved.setdefault(status, []).append(run_id)
    if moved:
        what = ", ".join(f"{len(v)} {k.value}" for k, v in sorted(moved.items()))
        superseded = RunStatus.CANCELLED in moved
        raise RunsChanged(
            ("the plan was superseded by a newer plan" if superseded else "the plan changed")
            + f" ({what}): cannot {event.value} it; nothing was changed"
        )
    move_runs(conn, current, event)
    if note or approved_hashes:
        _stamp(conn, run_ids, note=note, approved_hashes=approved_hashes or {})
    return len(current)


def _stamp(
    conn: Connection,
    run_ids: Sequence[uuid.UUID],
    *,
    note: str | None,
    approved_hashes: Mapping[uuid.UUID, str],
) -> None:
    """Record the approval note and approved hashes in the runs' plan documents."""
    run = SmallcaseExecutionRun
    for lo in range(0, len(run_ids), ID_CHUNK):
        chunk = list(run_ids[lo : lo + ID_CHUNK])
        rows = conn.execute(select(run.id, run.execution_plan).where(run.id.in_(chunk))).all()
        for run_id, body in rows:
            doc = dict(body or {}) if not isinstance(body, str) else json.loads(body)
            if note:
                doc["approval_note"] = note
            approved = approved_hashes.get(uuid.UUID(str(run_id)))
            if approved:
                doc["approved_hash"] = approved
            conn.execute(update(run).where(run.id == run_id).values(execution_plan=doc))
