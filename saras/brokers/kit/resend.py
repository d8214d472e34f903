"""The one resend loop of every broker kit: an order is sent again only once it is surely absent.

``place_once`` guards a send: with ``resume`` (an earlier attempt may have sent the order), or
when this process sent it already, the order is looked up first and returned when found; it is
sent again only when absent and, for an order this process sent, only after the lookup horizon
(a venue may take that long to show an order it received). ``resolve`` handles an ambiguous
answer to a send (timeout, lost response, unreadable body): look up, wait, look up again; found
-> the order; still absent -> ``AmbiguousOrderError`` and a later ``place_once(resume=True)``
decides. Nothing here sends twice on its own.
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
    """Send an order unless it exists already (see the module docstring)."""
    age = sent.age(key) if sent is not None else None
    if resume or age is not None:
        found = find()
        if found is not None:
            log.info("%s order %s already placed as %s", broker, key, found.broker_order_id)
            return found
        if age is not None and age < horizon:
            raise AmbiguousOrderError(
                f"order {client_order_id} ({key}) is not in the {broker} book {age:.1f} s after "
                f"it was sent; not sending it again before {horizon:g} s",
                client_order_id=client_order_id,
                broker=broker,
            )
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
