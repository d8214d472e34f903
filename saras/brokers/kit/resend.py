"""The one resend rule of Saras: an order is sent again only once it is surely absent.

:func:`before_resend` is the rule, written once: look the order up; found -> it is the order;
absent while less than the lookup horizon has passed since it was sent -> still in doubt
(``OrderStillInDoubt``: a venue may take that long to show an order it received); absent past
the horizon, or never sent -> send it. Two layers apply it:

- the adapters (``place_once``), in process: with ``resume`` (an earlier attempt may have sent
  the order) or when this process sent it already (``SendLog``, a monotonic clock);
- the executor (``saras.services.execution``), across processes: an order stored ``submitting``
  or ``unknown`` carries the wall-clock time its send began, so a resume after a crash counts on.

``resolve`` handles an ambiguous answer to a send (timeout, lost response, unreadable body):
look up, wait, look up again; found -> the order; still absent -> ``AmbiguousOrderError`` and a
later look-up under the rule decides. Nothing here sends twice on its own.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from saras.brokers.base import BrokerOrder
from saras.brokers.errors import AmbiguousOrderError, BrokerError, FatalBrokerError

log = logging.getLogger(__name__)


class SendLog:
    """When this process last sent each order (by the id the venue sees). Thread-safe."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._sent: dict[str, float] = {}
        self._lock = threading.Lock()

    def mark(self, key: str) -> None:
        """Record that the order is being sent now."""
        with self._lock:
            self._sent[key] = self._monotonic()

    def forget(self, key: str) -> None:
        """Forget a send the venue proved did not place the order (refused, never sent)."""
        with self._lock:
            self._sent.pop(key, None)

    def age(self, key: str) -> float | None:
        """Seconds since the order was sent by this process, None when it was not."""
        with self._lock:
            sent_at = self._sent.get(key)
        return None if sent_at is None else self._monotonic() - sent_at


class OrderStillInDoubt(AmbiguousOrderError):
    """The order is not in the venue's book yet, but its send is younger than the horizon."""

    def __init__(self, message: str, *, client_order_id: str, broker: str, age: float) -> None:
        super().__init__(message, client_order_id=client_order_id, broker=broker)
        self.age = age


def before_resend(
    find: Callable[[], BrokerOrder | None],
    *,
    client_order_id: str,
    broker: str,
    age: float | None,
    horizon: float,
) -> BrokerOrder | None:
    """Apply the resend rule to an order that may have been sent ``age`` seconds ago.

    Return the order when the venue shows it; None when it may be sent (absent past the
    horizon, or ``age`` None: never sent); raise ``OrderStillInDoubt`` when it is absent but
    was sent less than ``horizon`` seconds ago. Lookup failures propagate.
    """
    found = find()
    if found is not None:
        log.info("%s order %s already placed as %s", broker, client_order_id, found.broker_order_id)
        return found
    if age is not None and age < horizon:
        raise OrderStillInDoubt(
            f"order {client_order_id} is not in the {broker} book {age:.1f} s after it was "
            f"sent; not sending it again before {horizon:g} s",
            client_order_id=client_order_id,
            broker=broker,
            age=age,
        )
    return None


def place_once(
    *,
    key: str,
    client_order_id: str,
    broker: str,
    resume: bool,
    find: Callable[[], BrokerOrder | None],
    send: Callable[[], BrokerOrder],
    sent: SendLog | None = None,
    horizon: float = 0.0,
) -> BrokerOrder:
    """Send an order unless it exists already (the rule of :func:`before_resend`)."""
    age = sent.age(key) if sent is not None else None
    if resume or age is not None:
        found = before_resend(
            find, client_order_id=client_order_id, broker=broker, age=age, horizon=horizon
        )
        if found is not None:
            return found
    if sent is not None:
        sent.mark(key)
    return send()


@dataclass(frozen=True)
class Lookup:
    """What the lookups after an ambiguous answer found."""

    order: BrokerOrder | None
    error: BrokerError | None  # the last lookup's failure, when the lookups could not tell


def resolve(
    find: Callable[[], BrokerOrder | None],
    *,
    delays: Sequence[float],
    sleep: Callable[[float], None],
    final: tuple[type[BaseException], ...] = (FatalBrokerError,),
    stop_when_absent: bool = False,
) -> Lookup:
    """Look an order up after an ambiguous answer, waiting ``delays[i]`` before lookup ``i``.

    A failure in ``final`` ends the loop (raised); any other ``BrokerError`` is remembered and
    the next lookup tried. ``stop_when_absent``: one clean "not there" answer settles it.
    """
    error: BrokerError | None = None
    for attempt, delay in enumerate(delays or (0.0,)):
        if delay > 0:
            sleep(delay)
        try:
            found = find()
        except final:
            raise
        except BrokerError as exc:
            log.info("lookup %d after an ambiguous answer failed: %s", attempt + 1, exc)
            error = exc
            continue
        if found is not None:
            return Lookup(found, None)
        error = None
        if stop_when_absent:
            break
    return Lookup(None, error)
