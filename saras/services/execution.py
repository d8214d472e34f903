"""Execute one approved run through its broker, exactly once, resumable after any crash.

The pipeline, per batch of orders (``ExecutionSettings.batch_size``: a whole phase for the
paper broker, one order for a remote broker): mark the batch ``submitting`` and commit (one
guarded set-based write, durable before any of them is sent); send each with the client order id
derived from its row (the paper broker places a batch in one transaction); record the answers,
fills and statuses, in one transaction. A crash in between leaves the batch in doubt, resolved
as below. An answer that cannot be told (timeout, lost
response) parks the order in ``unknown``, and nothing is sent again until a lookup at the
broker by our id resolves it; the broker's silence counts as "absent" only once the lookup
horizon (longer than the client's request timeout) has passed since the send began: the kit's
one resend rule (``saras.brokers.kit.resend.before_resend``), which the adapters apply in process
and the executor across processes (the send's start is stored with the order). Sells go
first and are polled until done; then the buys are re-sized to the cash the sells really freed
(plus the run's own cash), and a buy whose money is not there is cancelled with the reason,
never sent. Fills are recorded in the ledger from the broker's own per-fill prices (see
``repositories.execution``). Every status change goes through the state tables, written with
``WHERE status = <old>``; connections that can reach real money need ``SARAS_LIVE_TRADING``.

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
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import ROUND_DOWN, Decimal
from typing import Any

from sqlalchemy import Engine, select, text, update
from sqlalchemy.orm import Session

from models import (
    Portfolio,
    SmallcaseExecutionRun,
    UserBrokerConnection,
    UserSmallcaseInvestment,
)
from models.base import utcnow
from saras.brokers.base import (
    LOOKUP_HORIZON_KEY,
    Broker,
    BrokerCapabilities,
    BrokerOrder,
    BrokerOrderStatus,
    OrderRequest,
    default_lookup_horizon,
    metadata_seconds,
)
from saras.brokers.errors import (
    AmbiguousOrderError,
    FatalBrokerError,
    NonRetryableBrokerError,
    OrderNotFoundError,
    RetryableBrokerError,
)
from saras.brokers.ids import client_order_id
from saras.brokers.kit.resend import OrderStillInDoubt, before_resend
from saras.brokers.registry import capabilities
from saras.domain.enums import (
    TERMINAL_ORDER_STATUSES,
    ConnectionStatus,
    InvestmentStatus,
    OrderSide,
    OrderStatus,
    OrderType,
    RunStatus,
    RunType,
)
from saras.domain.orders import (
    FillState,
    OrderEvent,
    RunEvent,
    UnresolvedOrders,
    finish_event,
    summarize_run_outcome,
)
from saras.errors import InvalidInputError, SarasError
from saras.repositories import execution as repo
from saras.repositories.connections import reaches_real_money
from saras.services.brokers import connection_config, mark_connection, open_broker
from saras.settings import get_settings

log = logging.getLogger(__name__)


class RunRefused(SarasError):
    """The run cannot be executed now (another executor has it, not approved, plan changed)."""


class MarketClosedError(SarasError):
    """The market is closed and the run is configured not to wait; nothing was sent."""


@dataclass(frozen=True)
class ExecutionSettings:
    """How patient an execution is (the flows' ``execution`` parameter, by field name).

    ``request_timeout`` (seconds, the broker client's HTTP timeout) and ``lookup_horizon``
    (seconds after a send began before an order the broker does not show may be concluded
    absent and sent again) override the connection's ``connection_metadata`` values of the same
    names; unset, the connection's, else the adapter's defaults (horizon 30 s). The horizon is
    always longer than the request timeout.

    ``batch_size``: how many orders are marked ``submitting`` in one commit, then sent, then
    recorded in one transaction. Unset: ``LOCAL_BATCH_SIZE`` for a broker in our own database
    (the paper broker, which places a batch in one transaction too), 1 for a remote broker,
    whose requests, rate limit and lookups of orders in doubt cost more than our commits.
    """

    poll_interval: float = 1.0
    deadline_seconds: float = 600.0
    submit_attempts: int = 4
    retry_backoff: float = 1.0
    wait_for_open: bool = False
    cancel_unfilled_at_deadline: bool = True
    request_timeout: float | None = None
    lookup_horizon: float | None = None
    batch_size: int | None = None

    def __post_init__(self) -> None:
        if self.batch_size is not None and int(self.batch_size) < 1:
            raise InvalidInputError(
                f"execution.batch_size must be at least 1, not {self.batch_size}"
            )
        for name in ("request_timeout", "lookup_horizon"):
            value = getattr(self, name)
            if value is not None and not (0 < float(value) < float("inf")):
                raise InvalidInputError(f"execution.{name} must be a positive number, not {value}")
        if (
            self.request_timeout is not None
            and self.lookup_horizon is not None
            and self.lookup_horizon <= self.request_timeout
        ):
            raise InvalidInputError(
                f"execution.lookup_horizon ({self.lookup_horizon}) must be longer than "
                f"execution.request_timeout ({self.request_timeout})"
            )


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

#: orders per batch for a broker that is not remote (see ``ExecutionSettings.batch_size``)
LOCAL_BATCH_SIZE = 100


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
_IN_DOUBT = (OrderStatus.SUBMITTING, OrderStatus.UNKNOWN)
_WORKING = (
    OrderStatus.SUBMITTING,
    OrderStatus.SUBMITTED,
    OrderStatus.PARTIALLY_FILLED,
    OrderStatus.UNKNOWN,
)


def _event_for(current: OrderStatus, report: BrokerOrder) -> OrderEvent:
    status = report.status
    if status in (BrokerOrderStatus.PENDING, BrokerOrderStatus.OPEN) and report.filled_quantity > 0:
        status = BrokerOrderStatus.PARTIALLY_FILLED
    if current in _IN_DOUBT:
        return _RESOLVED[status]
    return _DIRECT[status]


def _as_recorded(report: BrokerOrder, recorded: Decimal) -> BrokerOrder:
    """Return the report as far as its fills are recorded.

    A broker may list an order's fills a moment after it reports the quantity filled: the order
    then stays working here (and is polled again) until every fill is in the ledger, so that an
    order is never final with fewer shares recorded than the broker filled.
    """
    if recorded >= report.filled_quantity:
        return report
    status = BrokerOrderStatus.PARTIALLY_FILLED if recorded > 0 else BrokerOrderStatus.OPEN
    return replace(report, status=status, filled_quantity=recorded)


@dataclass(frozen=True)
class BuySizing:
    """The cash a run's buys may spend once its sells settled, in the run's currency."""

    currency: str
    planned_sells: Decimal
    freed: Decimal  # what the sells really freed (net of fees)
    own_cash: Decimal  # what the plan spent beyond its sells (the cash there was)
    portfolio_cash: Decimal
    planned_buys: Decimal

    @property
    def budget(self) -> Decimal:
        """Return what the buys may spend: own cash plus what was freed, never above the cash."""
        return max(min(self.own_cash + self.freed, self.portfolio_cash), Decimal(0))

    def reason(self) -> str:
        """Return the explanation recorded on a buy that was cut or skipped."""
        c = self.currency
        return (
            f"not enough cash for the planned buys ({self.planned_buys:.2f} {c}): the sells "
            f"freed {self.freed:.2f} {c} of {self.planned_sells:.2f} {c} planned, plus "
            f"{self.own_cash:.2f} {c} of the run's own cash, leaving {self.budget:.2f} {c} "
            f"(portfolio cash {self.portfolio_cash:.2f} {c})"
        )


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
        capabilities: BrokerCapabilities,
        lookup_horizon: float,
        batch_size: int = 1,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = utcnow,
        checkpoint: Checkpoint = _no_checkpoint,
    ):
        self.engine = engine
        self.run_id = run_id
        self.broker = broker
        self.connection = connection
        self.ctx = ctx
        self.settings = settings
        self.capabilities = capabilities
        self.lookup_horizon = lookup_horizon
        self.batch_size = max(1, batch_size)
        self.sleep = sleep
        self.monotonic = monotonic
        self.checkpoint = checkpoint
        self.wall = wall
        self.deadline = monotonic() + settings.deadline_seconds

    def now(self) -> datetime:
        """Return the wall time (aware), compared with the send times stored on orders."""
        return self.wall()

    # -- persistence: one transaction per change, every status through the state table -----

    def record(self, order: repo.OrderRow, report: BrokerOrder) -> None:
        """Record an order's new fills and move it to what the broker reports, atomically."""
        self.record_many([(order, report)])

    def record_many(self, answers: list[tuple[repo.OrderRow, BrokerOrder]]) -> None:
        """Record the broker's answers for many orders in one transaction (set-based statuses).

        The fills go to the ledger set-based, then the status changes are written together,
        guarded; orders of one asset go in separate steps (each needs the one before it stored).
        """
        if not answers:
            return
        segments: list[list[tuple[repo.OrderRow, BrokerOrder]]] = [[]]
        for answer in answers:
            if any(o.asset_id == answer[0].asset_id for o, _ in segments[-1]):
                segments.append([])
            segments[-1].append(answer)
        now = utcnow()
        with self.engine.begin() as conn:
            for segment in segments:
                fills = repo.record_fills_many(conn, self.ctx, segment, now)
                changes = []
                for (order, report), fill in zip(segment, fills, strict=True):
                    seen = _as_recorded(report, fill.filled_quantity)
                    changes.append(
                        repo.OrderChange(
                            order,
                            _event_for(order.status, seen),
                            reason=seen.reason,
                            broker_order_id=seen.broker_order_id,
                            fill=replace(fill, broker_status=report.status.value),
                        )
                    )
                repo.apply_order_events(conn, changes)

    def change(
        self,
        order: repo.OrderRow,
        event: OrderEvent,
        reason: str | None = None,
        fill: FillState | None = None,
    ) -> None:
        """Apply one event to an order in its own transaction."""
        with self.engine.begin() as conn:
            repo.apply_order_event(conn, order, event, reason=reason, fill=fill)

    def cancel_unsent(self, orders: list[repo.OrderRow], reason: str) -> None:
        """Cancel every order not sent yet (the run stops)."""
        for order in orders:
            if order.status is OrderStatus.PLANNED:
                self.change(order, OrderEvent.CANCEL, reason=reason)

    # -- submitting -----------------------------------------------------------------------

    def _request(self, order: repo.OrderRow) -> OrderRequest:
        quantity = order.send_quantity
        return OrderRequest(
            client_order_id=client_order_id(order.id),
            symbol=order.symbol,
            side=order.side,
            quantity=quantity,
            order_type=OrderType(order.order_type),
            limit_price=order.price if order.order_type == OrderType.LIMIT.value else None,
            exchange=order.exchange,
            fractionable=order.fractionable and quantity != quantity.to_integral(),
        )

    def submit(self, order: repo.OrderRow) -> None:
        """Send a planned order once; an order in doubt is only looked up (see ``resolve``)."""
        if order.status in _IN_DOUBT:
            self.resolve(order)
            return
        if order.status is OrderStatus.PLANNED:
            self.submit_batch([order])

    def submit_all(self, orders: list[repo.OrderRow]) -> None:
        """Send the planned orders in batches of ``batch_size`` (orders in doubt: looked up)."""
        for order in orders:
            if order.status in _IN_DOUBT:
                self.resolve(order)
        planned = [o for o in orders if o.status is OrderStatus.PLANNED]
        for start in range(0, len(planned), self.batch_size):
            self.submit_batch(planned[start : start + self.batch_size])

    def submit_batch(self, batch: list[repo.OrderRow]) -> None:
        """Mark a batch ``submitting`` (one commit, durable before any send), send, record.

        A crash after the mark leaves the batch in doubt: a resume looks each order up by our id
        and sends only those the broker proves absent. Orders of the batch not handed to the
        broker when a fatal error stops the run go back to ``planned`` (then cancelled unsent).
        The answers are recorded in one transaction, even when the sending stopped half-way.
        """
        started = self.now()
        with self.engine.begin() as conn:
            repo.apply_order_events(
                conn,
                [
                    repo.OrderChange(
                        o, OrderEvent.SUBMIT_STARTED, fill=replace(o.fill, send_started_at=started)
                    )
                    for o in batch
                ],
            )
        self.checkpoint("marked_submitting")
        answers: list[tuple[repo.OrderRow, BrokerOrder]] = []
        handed = 0
        try:
            place_orders = getattr(self.broker, "place_orders", None)
            if len(batch) > 1 and callable(place_orders):
                handed = len(batch)
                results = place_orders([self._request(o) for o in batch])
                for order, result in zip(batch, results, strict=True):
                    if isinstance(result, BrokerOrder):
                        self.checkpoint("broker_answered")
                        answers.append((order, result))
                    else:
                        self._refused(order, result)
            else:
                for order in batch:
                    handed += 1
                    report = self._send(order)
                    if report is not None:
                        self.checkpoint("broker_answered")
                        answers.append((order, report))
        except FatalBrokerError:
            for order in batch[handed:]:
                self.change(order, OrderEvent.RESOLVED_ABSENT, reason="not sent: the run stopped")
            raise
        finally:
            self.record_many(answers)
        for _ in answers:
            self.checkpoint("answer_recorded")

    def _refused(self, order: repo.OrderRow, exc: Exception) -> None:
        """Record a batch placement's per-order failure: a rejection, or an order in doubt."""
        if isinstance(exc, NonRetryableBrokerError):
            self.change(order, OrderEvent.REJECT, reason=getattr(exc, "reason", str(exc)))
            return
        doubt = replace(order.fill, send_started_at=self.now())
        self.change(order, OrderEvent.AMBIGUOUS, reason=str(exc), fill=doubt)

    def _send(self, order: repo.OrderRow) -> BrokerOrder | None:
        """Send one order marked ``submitting``; return the answer, None when there is none."""
        request = self._request(order)
        resume = False
        for attempt in range(self.settings.submit_attempts):
            try:
                return self.broker.place_order(request, resume=resume)
            except AmbiguousOrderError as exc:
                # it may be at the broker: only lookups from here, until found or the horizon,
                # which counts from now (the request left no earlier than this answer)
                if order.status is not OrderStatus.UNKNOWN:
                    doubt = replace(order.fill, send_started_at=self.now())
                    self.change(order, OrderEvent.AMBIGUOUS, reason=str(exc), fill=doubt)
                return None
            except NonRetryableBrokerError as exc:
                self.change(order, OrderEvent.REJECT, reason=getattr(exc, "reason", str(exc)))
                return None
            except FatalBrokerError as exc:
                if not resume:
                    # refused at the door (credentials, expired token): nothing was placed
                    self.change(order, OrderEvent.REJECT, reason=str(exc))
                raise
            except RetryableBrokerError as exc:
                # nothing reached the broker: try again after a pause, still looking up first
                log.info("order %s: %s (attempt %d)", order.id, exc, attempt + 1)
                resume = True
                self.sleep(exc.retry_after or self.settings.retry_backoff * (2**attempt))
        log.warning(
            "order %s still %s after %d attempts",
            order.id,
            order.status,
            self.settings.submit_attempts,
        )
        return None

    def resolve(self, order: repo.OrderRow) -> None:
        """Look an order in doubt up at the broker; send it again only once proven absent.

        The kit's resend rule (:func:`saras.brokers.kit.resend.before_resend`), with the age
        of the send in wall time from the stored ``send_started_at``, so it holds across
        processes: "absent" only when the broker does not show the order ``lookup_horizon``
        seconds after its send began (longer than the client's request timeout). Until then
        the order stays ``unknown`` and the run waits (or stays ``executing``, to be resumed).
        """
        started = order.fill.send_started_at
        age = 0.0 if started is None else (self.now() - started).total_seconds()
        try:
            report = before_resend(
                lambda: self._look_up(order),
                client_order_id=client_order_id(order.id),
                broker=self.broker.broker_type,
                age=age,
                horizon=self.lookup_horizon,
            )
        except OrderStillInDoubt as exc:
            if started is None:  # rows from before the horizon was recorded: count from now
                fill = replace(order.fill, send_started_at=self.now())
                self.change(order, OrderEvent.AMBIGUOUS, reason=str(exc), fill=fill)
            elif order.status is OrderStatus.SUBMITTING:
                self.change(order, OrderEvent.AMBIGUOUS, reason=str(exc))
            return
        except RetryableBrokerError as exc:
            log.info("order %s: lookup failed (%s); will look again", order.id, exc)
            return
        if report is not None:
            self.record(order, report)
            return
        # the broker proves it never got it: back to planned, sent again under the same id
        self.change(
            order,
            OrderEvent.RESOLVED_ABSENT,
            reason=f"not at the broker {age:.1f} s after it was sent: sending it again",
        )
        self.submit(order)

    def _look_up(self, order: repo.OrderRow) -> BrokerOrder | None:
        try:
            return self.broker.get_order_by_client_id(client_order_id(order.id))
        except OrderNotFoundError:
            return None

    # -- polling --------------------------------------------------------------------------

    def refresh(self, order: repo.OrderRow) -> None:
        """Ask the broker about an order we sent (or may have sent) and record the answer."""
        if order.status in _IN_DOUBT:
            self.resolve(order)
            return
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
        if report is not None:
            self.record(order, report)

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
            self.change(order, OrderEvent.CANCEL, reason="deadline passed before it was sent")
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
                self.change(order, OrderEvent.CANCEL, reason="cancelled at the execution deadline")

    # -- sizing the buys on what the sells freed ------------------------------------------

    def size_buys(self, sells: list[repo.OrderRow], buys: list[repo.OrderRow]) -> None:
        """Re-size the planned buys to the cash the sells really freed plus the run's own cash.

        Done once, when no buy has been sized or sent yet (a resume keeps the first sizing). A
        buy is never made larger than approved; one whose money is not there is cancelled with
        the reason, never sent.
        """
        if not buys or any(
            b.status is not OrderStatus.PLANNED or b.fill.sized_quantity is not None for b in buys
        ):
            return
        with self.engine.begin() as conn:
            cash = conn.execute(
                select(Portfolio.cash_balance).where(Portfolio.id == self.ctx.portfolio_id)
            ).scalar_one()
            planned_sells = sum((o.quantity * (o.price or 0) for o in sells), Decimal(0))
            planned_buys = sum((o.quantity * (o.price or 0) for o in buys), Decimal(0))
            sizing = BuySizing(
                currency=self.ctx.currency,
                planned_sells=planned_sells,
                freed=sum((o.fill.net_proceeds for o in sells), Decimal(0)),
                own_cash=max(planned_buys - planned_sells, Decimal(0)),
                portfolio_cash=Decimal(str(cash)),
                planned_buys=planned_buys,
            )
            factor = Decimal(1)
            if sizing.budget < planned_buys:
                factor = sizing.budget / planned_buys if planned_buys > 0 else Decimal(0)
                log.warning("run %s: %s", self.run_id, sizing.reason())
            changes: list[repo.OrderChange] = []
            for order in buys:
                if factor >= 1:
                    quantity = order.quantity
                elif order.price is None:
                    quantity = Decimal(0)
                else:
                    step = self.capabilities.quantity_step(order.fractionable)
                    quantity = (order.quantity * factor / step).to_integral_value(ROUND_DOWN) * step
                value = quantity * (order.price or Decimal(0))
                if quantity <= 0 or (
                    order.price is not None and value < self.capabilities.min_order_value
                ):
                    reason = "skipped: " + sizing.reason()
                    changes.append(repo.OrderChange(order, OrderEvent.CANCEL, reason=reason))
                    continue
                note = None if quantity == order.quantity else f"re-sized to {quantity:f}: "
                changes.append(
                    repo.OrderChange(
                        order,
                        OrderEvent.SIZED,
                        reason=None if note is None else note + sizing.reason(),
                        fill=replace(order.fill, sized_quantity=quantity),
                    )
                )
            repo.apply_order_events(conn, changes)

    # -- the run --------------------------------------------------------------------------

    def execute(self, orders: list[repo.OrderRow]) -> None:
        """Resolve orders in doubt, then sells, then buys sized on what the sells freed."""
        for order in orders:
            if order.status in _IN_DOUBT:
                self.resolve(order)
        sells = [o for o in orders if o.side is OrderSide.SELL]
        buys = [o for o in orders if o.side is OrderSide.BUY]
        self.submit_all(sells)
        self.settle(sells)
        self.checkpoint("sells_settled")
        if any(o.status in _IN_DOUBT for o in sells):
            return  # what the sells freed is not known yet: the run stays open, buys wait
        self.size_buys(sells, buys)
        self.submit_all(buys)
        self.settle(buys)


def _counts(orders: list[repo.OrderRow]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for o in orders:
        counts[o.status.value] = counts.get(o.status.value, 0) + 1
    return counts


def _finish_run(
    engine: Engine,
    run_id: uuid.UUID,
    orders: list[repo.OrderRow],
    *,
    reason: str | None,
    fatal: bool,
) -> RunOutcome:
    counts = _counts(orders)
    try:
        outcome = summarize_run_outcome(
            [o.status for o in orders], filled_quantities=[o.filled_quantity for o in orders]
        )
    except UnresolvedOrders as exc:
        return RunOutcome(str(run_id), RunStatus.EXECUTING.value, counts, f"orders in doubt: {exc}")
    if fatal and outcome is RunStatus.COMPLETED:
        outcome = RunStatus.FAILED
    # (a buy skipped for want of cash keeps its reason on the order: the run's own
    # outcome_reason is for a failed connection, which repair reads as "not repairable")
    return _end_run(engine, run_id, finish_event(outcome), counts, reason)


def _end_run(
    engine: Engine,
    run_id: uuid.UUID,
    event: RunEvent,
    counts: dict[str, int],
    reason: str | None,
) -> RunOutcome:
    with Session(engine) as session, session.begin():
        conn = session.connection()
        run = session.get_one(SmallcaseExecutionRun, run_id)
        plan = dict(run.execution_plan or {})
        if reason:
            plan["outcome_reason"] = reason
        plan["outcome_orders"] = counts
        now = utcnow()
        new_status = repo.apply_run_event(
            conn,
            run_id,
            RunStatus(run.status),
            event,
            completed_at=now,
            execution_plan=plan,
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
    elif (
        run.run_type == RunType.EXIT.value
        and status is RunStatus.CANCELLED
        and investment.status == InvestmentStatus.EXITING.value
    ):
        values = {"status": InvestmentStatus.ACTIVE.value}  # nothing sold: exit again later
    if values:
        result = conn.execute(
            update(UserSmallcaseInvestment)
            .where(
                UserSmallcaseInvestment.id == investment.id,
                UserSmallcaseInvestment.status == investment.status,
            )
            .values(**values)
        )
        if result.rowcount != 1:
            raise repo.StaleStatusError(
                f"investment {investment.id} is no longer {investment.status}: not updated"
            )


def live_trading_refusal(connection: UserBrokerConnection) -> str | None:
    """Return why orders through a connection may not be sent now, None when they may.

    Every connection that can reach a real broker (the broker's capability, not the row's
    ``paper_trading`` flag alone) needs ``SARAS_LIVE_TRADING=true``.
    """
    if not reaches_real_money(connection):
        return None
    if get_settings().live_trading:
        return None
    return (
        f"connection {connection.alias!r} ({connection.broker_type}) can reach a real broker "
        "account and SARAS_LIVE_TRADING is off: nothing was sent"
    )


def _refuse_live(engine: Engine, run_id: uuid.UUID, status: RunStatus, reason: str) -> RunOutcome:
    """End an approved run that may not trade live, leaving nothing behind."""
    if status is not RunStatus.APPROVED:
        # an executing run may have orders at the broker: nothing may be concluded here
        raise RunRefused(reason + f" (run {run_id} is {status.value}; resume it once allowed)")
    with engine.begin() as conn:
        orders = repo.load_orders(conn, run_id)
        for order in orders:
            if order.status is OrderStatus.PLANNED:
                repo.apply_order_event(conn, order, OrderEvent.CANCEL, reason=reason)
    return _end_run(engine, run_id, RunEvent.CANCEL, _counts(orders), reason)


def _lookup_horizon(
    broker: Broker, connection: UserBrokerConnection, settings: ExecutionSettings
) -> float:
    try:
        configured = metadata_seconds(connection_config(connection), LOOKUP_HORIZON_KEY)
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from None
    timeout = getattr(broker, "request_timeout", None)
    if not isinstance(timeout, int | float):
        timeout = None
    horizon = settings.lookup_horizon or configured or default_lookup_horizon(timeout)
    if timeout is not None and horizon <= timeout:
        raise InvalidInputError(
            f"the lookup horizon ({horizon:g} s) must be longer than the request timeout of "
            f"connection {connection.alias!r} ({timeout:g} s)"
        )
    return horizon


def execute_run(
    engine: Engine,
    run_id: uuid.UUID | str,
    *,
    broker: Broker | None = None,
    settings: ExecutionSettings | None = None,
    sleep: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
    wall: Callable[[], datetime] = utcnow,
    checkpoint: Checkpoint = _no_checkpoint,
) -> RunOutcome:
    """Execute an approved run (or resume an executing one) and return how it ended.

    Re-running a finished run changes nothing and returns its outcome. Raises ``RunRefused``
    when another executor holds the run, when it is not approved, or when its orders differ
    from the approved plan; ``MarketClosedError`` when the market is closed and waiting is off.
    ``sleep``/``monotonic`` pace polling and the deadline; ``wall`` is the time the lookup
    horizon is measured in (stored with each send, so a resume counts on). An approved run
    whose connection can reach real money while ``SARAS_LIVE_TRADING`` is off
    ends ``cancelled`` with the reason, its orders cancelled unsent.
    """
    run_id = uuid.UUID(str(run_id))
    settings = settings or ExecutionSettings()
    with run_lock(engine, run_id):
        loaded = _load_run(engine, run_id)
        if isinstance(loaded, RunOutcome):
            return loaded
        status, connection, investment, currency = loaded
        refusal = live_trading_refusal(connection)
        if refusal is not None:
            return _refuse_live(engine, run_id, status, refusal)
        if connection.status != ConnectionStatus.ACTIVE.value:
            raise RunRefused(f"connection {connection.alias!r} is {connection.status}, not active")
        caps = capabilities(connection_config(connection))
        if broker is None:
            overrides: dict[str, Any] = {}
            if caps.remote and settings.request_timeout is not None:
                overrides["timeout"] = settings.request_timeout
            broker = open_broker(
                engine,
                connection,
                for_trading=True,
                lookup_horizon=settings.lookup_horizon if caps.remote else None,
                **overrides,
            )
        horizon = _lookup_horizon(broker, connection, settings)
        ctx = repo.RunContext(run_id, investment.id, investment.portfolio_id, currency)
        if status is RunStatus.APPROVED:
            _check_market(broker, connection, caps, settings, sleep, monotonic)
        with engine.begin() as conn:
            event = RunEvent.START if status is RunStatus.APPROVED else RunEvent.RESUME
            values: dict[str, Any] = {}
            if status is RunStatus.APPROVED:
                values["started_at"] = utcnow()
            repo.apply_run_event(conn, run_id, status, event, **values)
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
            capabilities=caps,
            lookup_horizon=horizon,
            batch_size=settings.batch_size or (1 if caps.remote else LOCAL_BATCH_SIZE),
            sleep=sleep,
            monotonic=monotonic,
            wall=wall,
            checkpoint=checkpoint,
        )
        try:
            executor.execute(orders)
        except FatalBrokerError as exc:
            return _stop_on_fatal(engine, executor, connection, caps, orders, exc)
        return _finish_run(engine, run_id, orders, reason=None, fatal=False)


def _check_market(
    broker: Broker,
    connection: UserBrokerConnection,
    caps: BrokerCapabilities,
    settings: ExecutionSettings,
    sleep: Callable[[float], None],
    monotonic: Callable[[], float],
) -> None:
    if caps.orders_outside_hours:
        return  # outside market hours the broker queues the orders for the open (Kite AMO)
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
    "BuySizing",
    "ExecutionSettings",
    "MarketClosedError",
    "RunExecutor",
    "RunOutcome",
    "RunRefused",
    "execute_run",
    "live_trading_refusal",
    "run_lock",
]


def _load_run(
    engine: Engine, run_id: uuid.UUID
) -> RunOutcome | tuple[RunStatus, UserBrokerConnection, UserSmallcaseInvestment, str]:
    """Read a run to execute: its outcome when finished, else what executing it needs.

    Raises ``RunRefused`` for a missing run, one neither approved nor executing, or one whose
    orders no longer match the approved plan.
    """
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
            return RunOutcome(
                str(run_id),
                status.value,
                _counts(orders),
                (run.execution_plan or {}).get("outcome_reason"),
            )
        if status not in (RunStatus.APPROVED, RunStatus.EXECUTING):
            raise RunRefused(f"run {run_id} is {status.value}: only approved runs are executed")
        approved = (run.execution_plan or {}).get("approved_hash")
        current = repo.current_orders_hash(conn, run_id)
        if not approved or approved != current:
            raise RunRefused(
                f"run {run_id}: its orders do not match the approved plan "
                f"(approved {str(approved)[:12]}, now {current[:12]}): refusing to execute"
            )
        connection = session.scalars(
            select(UserBrokerConnection).where(UserBrokerConnection.id == run.broker_connection_id)
        ).one()
        investment = session.scalars(
            select(UserSmallcaseInvestment).where(UserSmallcaseInvestment.id == run.investment_id)
        ).one()
        currency = session.scalars(
            select(Portfolio.currency).where(Portfolio.id == investment.portfolio_id)
        ).one()
    return status, connection, investment, currency


def _stop_on_fatal(
    engine: Engine,
    executor: RunExecutor,
    connection: UserBrokerConnection,
    caps: BrokerCapabilities,
    orders: list[repo.OrderRow],
    exc: FatalBrokerError,
) -> RunOutcome:
    """End (or hold open) a run whose connection failed fatally: nothing more is sent."""
    run_id = executor.run_id
    reason = f"the {connection.broker_type} connection {connection.alias!r} failed: {exc}"
    if not caps.marks_connection_on_fatal:
        mark_connection(engine, connection.id, ConnectionStatus.ERROR.value, str(exc))
    executor.cancel_unsent(orders, "run stopped: " + str(exc))
    working = [o for o in orders if o.status in _WORKING]
    if working:
        # orders still live at the broker: keep the run open so that a resume, once the
        # connection works again, records their fills
        return RunOutcome(
            str(run_id),
            RunStatus.EXECUTING.value,
            _counts(orders),
            reason + f"; {len(working)} order(s) still working: resume after fixing it",
        )
    return _finish_run(engine, run_id, orders, reason=reason, fatal=True)
