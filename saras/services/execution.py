"""Execute one approved run through its broker, exactly once, resumable after any crash.

The pipeline per order: mark it ``submitting`` and commit; send it with the client order id
derived from its row; record the answer. An answer that cannot be told (timeout, lost
response) parks the order in ``unknown``, and nothing is sent again until a lookup at the
broker by our id resolves it. Sells go first and are polled until done, then buys. Fills are
recorded in the ledger from the broker's cumulative report (see ``repositories.execution``).

Only one executor works on a run at a time: on PostgreSQL a session advisory lock keyed on the
run (held by the database for the executor's connection, released if the process dies); on
the embedded SQLite database an OS file lock in the data directory.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select, text, update
from sqlalchemy.orm import Session

from models import SmallcaseExecutionRun, UserBrokerConnection, UserSmallcaseInvestment
from models.base import utcnow
from saras.brokers.base import Broker, BrokerOrder, BrokerOrderStatus, OrderRequest
from saras.brokers.errors import (
    AmbiguousOrderError,
    FatalBrokerError,
    NonRetryableBrokerError,
    OrderNotFoundError,
    RetryableBrokerError,
)
from saras.brokers.ids import client_order_id
from saras.domain.enums import (
    TERMINAL_ORDER_STATUSES,
    BrokerType,
    ConnectionStatus,
    InvestmentStatus,
    OrderSide,
    OrderStatus,
    OrderType,
    RunStatus,
    RunType,
)
from saras.domain.orders import (
    OrderEvent,
    RunEvent,
    UnresolvedOrders,
    finish_event,
    summarize_run_outcome,
    transition,
    transition_run,
)
from saras.errors import SarasError
from saras.repositories import execution as repo
from saras.services.brokers import mark_connection, open_broker
from saras.settings import get_settings

log = logging.getLogger(__name__)


class RunRefused(SarasError):
    """The run cannot be executed now (another executor has it, not approved, plan changed)."""


class MarketClosedError(SarasError):
    """The market is closed and the run is configured not to wait; nothing was sent."""


@dataclass(frozen=True)
class ExecutionSettings:
    """How patient an execution is."""

    poll_interval: float = 1.0
    deadline_seconds: float = 600.0
    submit_attempts: int = 4
    retry_backoff: float = 1.0
    wait_for_open: bool = False
    cancel_unfilled_at_deadline: bool = True


@dataclass
class RunOutcome:
    """What an execution ended with."""

    run_id: str
    status: str
    orders: dict[str, int] = field(default_factory=dict)
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """Return a JSON-able summary."""
        return {
            "run_id": self.run_id,
            "status": self.status,
            "orders": self.orders,
            "reason": self.reason,
        }


Checkpoint = Callable[[str], None]


def _no_checkpoint(_: str) -> None:
    return None


# --- one executor per run ---------------------------------------------------------------------


def _lock_keys(run_id: uuid.UUID) -> tuple[int, int]:
    digest = hashlib.sha256(b"saras-run:" + run_id.bytes).digest()
    return (
        int.from_bytes(digest[:4], "big", signed=True),
        int.from_bytes(digest[4:8], "big", signed=True),
    )


@contextmanager
def run_lock(engine: Engine, run_id: uuid.UUID) -> Iterator[None]:
    """Hold the run's execution lock, or raise RunRefused when another executor has it."""
    if engine.dialect.name == "postgresql":
        k1, k2 = _lock_keys(run_id)
        conn = engine.connect()
        try:
            got = conn.execute(
                text("SELECT pg_try_advisory_lock(:a, :b)"), {"a": k1, "b": k2}
            ).scalar()
            conn.commit()
            if not got:
                raise RunRefused(f"run {run_id} is being executed by another process")
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:a, :b)"), {"a": k1, "b": k2})
                conn.commit()
        finally:
            conn.close()
        return
    lock_dir = get_settings().data_dir / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / f"run-{run_id}.lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunRefused(f"run {run_id} is being executed by another process") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --- the executor -----------------------------------------------------------------------------


_RESOLVED = {
    BrokerOrderStatus.PENDING: OrderEvent.RESOLVED_SUBMITTED,
    BrokerOrderStatus.OPEN: OrderEvent.RESOLVED_SUBMITTED,
    BrokerOrderStatus.PARTIALLY_FILLED: OrderEvent.RESOLVED_PARTIALLY_FILLED,
    BrokerOrderStatus.FILLED: OrderEvent.RESOLVED_FILLED,
    BrokerOrderStatus.CANCELLED: OrderEvent.RESOLVED_CANCELLED,
    BrokerOrderStatus.REJECTED: OrderEvent.RESOLVED_REJECTED,
    BrokerOrderStatus.EXPIRED: OrderEvent.RESOLVED_EXPIRED,
}
_DIRECT = {
    BrokerOrderStatus.PENDING: OrderEvent.ACCEPTED,
    BrokerOrderStatus.OPEN: OrderEvent.ACCEPTED,
    BrokerOrderStatus.PARTIALLY_FILLED: OrderEvent.PARTIAL_FILL,
    BrokerOrderStatus.FILLED: OrderEvent.FILL,
    BrokerOrderStatus.CANCELLED: OrderEvent.BROKER_CANCELLED,
    BrokerOrderStatus.REJECTED: OrderEvent.REJECT,
    BrokerOrderStatus.EXPIRED: OrderEvent.EXPIRE,
}


def _event_for(current: OrderStatus, report: BrokerOrder) -> OrderEvent:
    status = report.status
    if status in (BrokerOrderStatus.PENDING, BrokerOrderStatus.OPEN) and report.filled_quantity > 0:
        status = BrokerOrderStatus.PARTIALLY_FILLED
    if current in (OrderStatus.UNKNOWN, OrderStatus.SUBMITTING) and status not in (
        BrokerOrderStatus.PENDING,
        BrokerOrderStatus.OPEN,
    ):
        return _RESOLVED[status]
    if current is OrderStatus.UNKNOWN:
        return _RESOLVED[status]
    return _DIRECT[status]


class RunExecutor:
    """Drives one run's orders to a final state (see the module docstring)."""

    def __init__(
        self,
        engine: Engine,
        run_id: uuid.UUID,
        broker: Broker,
        *,
        connection: UserBrokerConnection,
        ctx: repo.RunContext,
        settings: ExecutionSettings,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        checkpoint: Checkpoint = _no_checkpoint,
    ):
        self.engine = engine
        self.run_id = run_id
        self.broker = broker
        self.connection = connection
        self.ctx = ctx
        self.settings = settings
        self.sleep = sleep
        self.monotonic = monotonic
        self.checkpoint = checkpoint
        self.deadline = monotonic() + settings.deadline_seconds

    # -- persistence ----------------------------------------------------------------------

    def _apply(self, order: repo.OrderRow, report: BrokerOrder) -> None:
        """Move an order to what the broker reports and record new fills, in one transaction."""
        event = _event_for(order.status, report)
        new_status = transition(order.status, event)
        with self.engine.begin() as conn:
            repo.record_fills(conn, self.ctx, order, report, utcnow())
            repo.set_order_status(
                conn,
                order,
                new_status,
                broker_order_id=report.broker_order_id,
                reason=report.reason,
                extra={"broker_status": report.status.value},
            )

    def _set(self, order: repo.OrderRow, event: OrderEvent, reason: str | None = None) -> None:
        new_status = transition(order.status, event)
        with self.engine.begin() as conn:
            repo.set_order_status(conn, order, new_status, reason=reason)

    # -- submitting -----------------------------------------------------------------------

    def _request(self, order: repo.OrderRow) -> OrderRequest:
        return OrderRequest(
            client_order_id=client_order_id(order.id),
            symbol=order.symbol,
            side=order.side,
            quantity=order.quantity,
            order_type=OrderType(order.order_type),
            limit_price=order.price if order.order_type == OrderType.LIMIT.value else None,
            exchange=order.exchange,
            fractionable=order.fractionable and order.quantity != order.quantity.to_integral(),
        )

    def submit(self, order: repo.OrderRow) -> None:
        """Send one order exactly once, resolving any doubt by lookup before re-sending."""
        resume = order.status in (OrderStatus.SUBMITTING, OrderStatus.UNKNOWN)
        if order.status is OrderStatus.PLANNED:
            self._set(order, OrderEvent.SUBMIT_STARTED)
            self.checkpoint("marked_submitting")
        elif not resume:
            return
        request = self._request(order)
        for attempt in range(self.settings.submit_attempts):
            try:
                report = self.broker.place_order(request, resume=resume)
            except AmbiguousOrderError as exc:
                if order.status is not OrderStatus.UNKNOWN:
                    self._set(order, OrderEvent.AMBIGUOUS, reason=str(exc))
                resume = True
            except NonRetryableBrokerError as exc:
                event = (
                    OrderEvent.RESOLVED_REJECTED
                    if order.status is OrderStatus.UNKNOWN
                    else OrderEvent.REJECT
                )
                self._set(order, event, reason=getattr(exc, "reason", str(exc)))
                return
            except FatalBrokerError as exc:
                if not resume:
                    # refused at the door (credentials, expired token): nothing was placed
                    self._set(order, OrderEvent.REJECT, reason=str(exc))
                raise
            except RetryableBrokerError as exc:
                # nothing reached the broker: try again after a pause, still looking up first
                log.info("order %s: %s (attempt %d)", order.id, exc, attempt + 1)
                resume = True
                self.sleep(exc.retry_after or self.settings.retry_backoff * (2**attempt))
                continue
            else:
                self.checkpoint("broker_answered")
                self._apply(order, report)
                self.checkpoint("answer_recorded")
                return
            self.sleep(self.settings.retry_backoff * (2**attempt))
        log.warning(
            "order %s still %s after %d attempts",
            order.id,
            order.status,
            self.settings.submit_attempts,
        )

    # -- polling --------------------------------------------------------------------------

    def refresh(self, order: repo.OrderRow) -> None:
        """Ask the broker about an order we sent (or may have sent) and record the answer."""
        try:
            if order.broker_order_id:
                report: BrokerOrder | None = self.broker.get_order(order.broker_order_id)
            else:
                report = self.broker.get_order_by_client_id(client_order_id(order.id))
        except OrderNotFoundError:
            report = None
        except RetryableBrokerError as exc:
            log.info("order %s: refresh failed (%s); will poll again", order.id, exc)
            return
        if report is None:
            if order.status in (OrderStatus.UNKNOWN, OrderStatus.SUBMITTING):
                # the broker proves it never got it: back to planned, sent again under the same id
                self._set(order, OrderEvent.RESOLVED_ABSENT)
                self.submit(order)
            return
        self._apply(order, report)

    def settle(self, orders: list[repo.OrderRow]) -> None:
        """Poll until every order is terminal or the deadline passes (then cancel the rest)."""
        pending = [o for o in orders if o.status not in TERMINAL_ORDER_STATUSES]
        while pending and self.monotonic() < self.deadline:
            for order in pending:
                if order.status is OrderStatus.PLANNED:
                    self.submit(order)
                else:
                    self.refresh(order)
            pending = [o for o in pending if o.status not in TERMINAL_ORDER_STATUSES]
            if pending:
                self.sleep(self.settings.poll_interval)
        if pending and self.settings.cancel_unfilled_at_deadline:
            for order in pending:
                self._cancel(order)

    def _cancel(self, order: repo.OrderRow) -> None:
        if order.status is OrderStatus.PLANNED:
            self._set(order, OrderEvent.CANCEL, reason="deadline passed before it was sent")
            return
        if (
            order.status in (OrderStatus.SUBMITTED, OrderStatus.PARTIALLY_FILLED)
            and order.broker_order_id
        ):
            try:
                self.broker.cancel_order(order.broker_order_id)
            except (RetryableBrokerError, NonRetryableBrokerError) as exc:
                log.warning("order %s: cancel failed: %s", order.id, exc)
            self.refresh(order)
            if order.status in (OrderStatus.SUBMITTED, OrderStatus.PARTIALLY_FILLED):
                self._set(order, OrderEvent.CANCEL, reason="cancelled at the execution deadline")

    # -- the run --------------------------------------------------------------------------

    def execute(self, orders: list[repo.OrderRow]) -> None:
        """Resolve orders in doubt, then sells, then buys."""
        for order in orders:
            if order.status in (OrderStatus.SUBMITTING, OrderStatus.UNKNOWN):
                self.submit(order)
        sells = [o for o in orders if o.side is OrderSide.SELL]
        buys = [o for o in orders if o.side is OrderSide.BUY]
        for order in sells:
            self.submit(order)
        self.settle(sells)
        self.checkpoint("sells_settled")
        for order in buys:
            self.submit(order)
        self.settle(buys)


def _finish_run(
    engine: Engine,
    run_id: uuid.UUID,
    orders: list[repo.OrderRow],
    *,
    reason: str | None,
    fatal: bool,
) -> RunOutcome:
    counts: dict[str, int] = {}
    for o in orders:
        counts[o.status.value] = counts.get(o.status.value, 0) + 1
    try:
        outcome = summarize_run_outcome(
            [o.status for o in orders], filled_quantities=[o.filled_quantity for o in orders]
        )
    except UnresolvedOrders as exc:
        return RunOutcome(str(run_id), RunStatus.EXECUTING.value, counts, f"orders in doubt: {exc}")
    if fatal and outcome is RunStatus.COMPLETED:
        outcome = RunStatus.FAILED
    with Session(engine) as session, session.begin():
        conn = session.connection()
        run = session.get_one(SmallcaseExecutionRun, run_id)
        new_status = transition_run(run.status, finish_event(outcome))
        plan = dict(run.execution_plan or {})
        if reason:
            plan["outcome_reason"] = reason
        plan["outcome_orders"] = counts
        now = utcnow()
        conn.execute(
            update(SmallcaseExecutionRun)
            .where(SmallcaseExecutionRun.id == run_id)
            .values(status=new_status.value, completed_at=now, execution_plan=plan)
        )
        _update_investment(conn, run, new_status, now)
    return RunOutcome(str(run_id), new_status.value, counts, reason)


def _update_investment(
    conn: Any, run: SmallcaseExecutionRun, status: RunStatus, now: datetime
) -> None:
    investment = conn.execute(
        select(UserSmallcaseInvestment.id, UserSmallcaseInvestment.status).where(
            UserSmallcaseInvestment.id == run.investment_id
        )
    ).one()
    values: dict[str, Any] = {}
    filled = status in (RunStatus.COMPLETED, RunStatus.PARTIALLY_COMPLETED)
    if run.run_type == RunType.INVEST.value and investment.status == InvestmentStatus.PENDING.value:
        values = (
            {"status": InvestmentStatus.ACTIVE.value, "invested_at": now}
            if filled
            else {"status": InvestmentStatus.FAILED.value}
        )
    elif run.run_type == RunType.EXIT.value and status is RunStatus.COMPLETED:
        values = {"status": InvestmentStatus.CLOSED.value, "closed_at": now}
    if values:
        conn.execute(
            update(UserSmallcaseInvestment)
            .where(UserSmallcaseInvestment.id == investment.id)
            .values(**values)
        )


def execute_run(
    engine: Engine,
    run_id: uuid.UUID | str,
    *,
    broker: Broker | None = None,
    settings: ExecutionSettings | None = None,
    sleep: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
    checkpoint: Checkpoint = _no_checkpoint,
) -> RunOutcome:
    """Execute an approved run (or resume an executing one) and return how it ended.

    Re-running a finished run changes nothing and returns its outcome. Raises ``RunRefused``
    when another executor holds the run, when it is not approved, or when its orders differ
    from the approved plan; ``MarketClosedError`` when the market is closed and waiting is off.
    """
    run_id = uuid.UUID(str(run_id))
    settings = settings or ExecutionSettings()
    with run_lock(engine, run_id):
        with Session(engine, expire_on_commit=False) as session:
            conn = session.connection()
            run = session.scalars(
                select(SmallcaseExecutionRun).where(SmallcaseExecutionRun.id == run_id)
            ).one_or_none()
            if run is None:
                raise RunRefused(f"no execution run {run_id}")
            status = RunStatus(run.status)
            if status in (RunStatus.COMPLETED, RunStatus.PARTIALLY_COMPLETED, RunStatus.FAILED):
                orders = repo.load_orders(conn, run_id)
                counts: dict[str, int] = {}
                for o in orders:
                    counts[o.status.value] = counts.get(o.status.value, 0) + 1
                return RunOutcome(
                    str(run_id),
                    status.value,
                    counts,
                    (run.execution_plan or {}).get("outcome_reason"),
                )
            if status not in (RunStatus.APPROVED, RunStatus.EXECUTING):
                raise RunRefused(f"run {run_id} is {status.value}: only approved runs are executed")
            plan = run.execution_plan or {}
            approved = plan.get("approved_hash")
            current = repo.current_orders_hash(conn, run_id)
            if not approved or approved != current:
                raise RunRefused(
                    f"run {run_id}: its orders do not match the approved plan "
                    f"(approved {str(approved)[:12]}, now {current[:12]}): refusing to execute"
                )
            connection = session.scalars(
                select(UserBrokerConnection).where(
                    UserBrokerConnection.id == run.broker_connection_id
                )
            ).one()
            investment = session.scalars(
                select(UserSmallcaseInvestment).where(
                    UserSmallcaseInvestment.id == run.investment_id
                )
            ).one()
        if connection.status != ConnectionStatus.ACTIVE.value:
            raise RunRefused(f"connection {connection.alias} is {connection.status}, not active")
        broker = broker or open_broker(engine, connection, for_trading=True)
        ctx = repo.RunContext(run_id, investment.id, investment.portfolio_id)
        if status is RunStatus.APPROVED:
            _check_market(broker, connection, settings, sleep, monotonic)
        with engine.begin() as conn:
            event = RunEvent.START if status is RunStatus.APPROVED else RunEvent.RESUME
            values: dict[str, Any] = {"status": transition_run(status, event).value}
            if status is RunStatus.APPROVED:
                values["started_at"] = utcnow()
            conn.execute(
                update(SmallcaseExecutionRun)
                .where(SmallcaseExecutionRun.id == run_id)
                .values(**values)
            )
        checkpoint("run_started")
        with engine.connect() as conn:
            orders = repo.load_orders(conn, run_id)
        executor = RunExecutor(
            engine,
            run_id,
            broker,
            connection=connection,
            ctx=ctx,
            settings=settings,
            sleep=sleep,
            monotonic=monotonic,
            checkpoint=checkpoint,
        )
        try:
            executor.execute(orders)
        except FatalBrokerError as exc:
            reason = f"the {connection.broker_type} connection {connection.alias!r} failed: {exc}"
            if connection.broker_type != BrokerType.ZERODHA.value:  # Kite marks itself expired
                mark_connection(engine, connection.id, ConnectionStatus.ERROR.value, str(exc))
            for order in orders:
                if order.status is OrderStatus.PLANNED:
                    executor._set(order, OrderEvent.CANCEL, reason="run stopped: " + str(exc))
            working = [
                o
                for o in orders
                if o.status
                in (
                    OrderStatus.SUBMITTING,
                    OrderStatus.SUBMITTED,
                    OrderStatus.PARTIALLY_FILLED,
                    OrderStatus.UNKNOWN,
                )
            ]
            if working:
                # orders still live at the broker: keep the run open so that a resume, once
                # the connection works again, records their fills
                counts: dict[str, int] = {}
                for o in orders:
                    counts[o.status.value] = counts.get(o.status.value, 0) + 1
                return RunOutcome(
                    str(run_id),
                    RunStatus.EXECUTING.value,
                    counts,
                    reason + f"; {len(working)} order(s) still working: resume after fixing it",
                )
            return _finish_run(engine, run_id, orders, reason=reason, fatal=True)
        return _finish_run(engine, run_id, orders, reason=None, fatal=False)


def _check_market(
    broker: Broker,
    connection: UserBrokerConnection,
    settings: ExecutionSettings,
    sleep: Callable[[float], None],
    monotonic: Callable[[], float],
) -> None:
    if connection.broker_type == BrokerType.ZERODHA.value:
        return  # outside market hours the Kite adapter places after-market (AMO) orders
    clock = broker.get_clock()
    if clock.is_open:
        return
    if settings.wait_for_open and clock.next_open is not None:
        wait = (clock.next_open - utcnow()).total_seconds()
        if 0 < wait <= settings.deadline_seconds:
            sleep(wait)
            return
    raise MarketClosedError(
        f"the market is closed for {connection.alias} (next open {clock.next_open}); "
        "the run was not started"
    )


__all__ = [
    "ExecutionSettings",
    "MarketClosedError",
    "RunExecutor",
    "RunOutcome",
    "RunRefused",
    "execute_run",
    "run_lock",
]
