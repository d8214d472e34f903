"""The one rate limiter of every broker kit, with a pluggable shared budget.

A ``RateLimiter`` reserves a send time for each request from three rules, all optional:

- sliding windows ``(n, seconds)``: at most ``n`` requests in any window (Kite counts this way;
  a bucket of N refilled at N/W would let 2N through some window);
- pacing (GCRA form of a token bucket): ``burst`` requests at once, then one per ``interval``;
- a hold set by the venue (``defer`` after a 429, ``hold_until`` from rate-limit headers).

Pacing and holds reserve a slot and sleep outside the lock; windows count each request when it
is let through (waiting in turn), as the venue counts them. Within one process
the limiter of an account is shared (``shared``). Across processes, ``budgets`` name the venue's
per-account limits and a ``RateBackend`` enforces them for every process at once (the Prefect
backend in ``flows/kit/rate_budgets.py`` uses global concurrency limits with slot decay); without a
backend installed the in-process rules are the only ones.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

Clock = Callable[[], float]
Sleep = Callable[[float], None]
L = TypeVar("L")


@dataclass(frozen=True)
class Budget:
    """A venue limit of one account shared by every process: ``limit`` requests per ``seconds``.

    ``name`` is the limit's full name, e.g. ``broker:<connection id>:orders``.
    """

    name: str
    limit: int
    seconds: float

    @property
    def decay_per_second(self) -> float:
        """How many used slots free up each second (``limit / seconds``)."""
        return self.limit / self.seconds


class RateBackend(Protocol):
    """Where shared budgets are counted (another process sees the same counts)."""

    def take(self, budgets: Sequence[Budget]) -> None:
        """Block until one request fits every budget, and count it."""
        ...


_backend: RateBackend | None = None


def install_backend(backend: RateBackend | None) -> RateBackend | None:
    """Install the shared-budget backend for this process; return the one it replaces."""
    global _backend
    previous, _backend = _backend, backend
    return previous


def current_backend() -> RateBackend | None:
    """Return the installed shared-budget backend (None: in-process limits only)."""
    return _backend


class RateLimiter:
    """Pace the requests of one account (see the module docstring). Thread-safe."""

    def __init__(
        self,
        windows: Iterable[tuple[int, float]] = (),
        *,
        interval: float | None = None,
        burst: int = 1,
        margin: float = 0.0,
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
        max_wait: float = 60.0,
        budgets: Sequence[Budget] = (),
    ) -> None:
        self._windows = [(int(n), float(w) + margin) for n, w in windows]
        if any(n <= 0 for n, _ in self._windows):
            raise ValueError("rate limits need a positive number of calls")
        if burst < 1 or (interval is not None and interval < 0):
            raise ValueError("burst >= 1 and interval >= 0")
        self._events = [deque[float](maxlen=n) for n, _ in self._windows]
        self.interval = interval or 0.0
        self._tolerance = (burst - 1) * self.interval
        self._clock = clock
        self._sleep = sleep
        self._max_wait = max_wait
        self.budgets = tuple(budgets)
        self._lock = threading.Lock()
        self._tat = -math.inf  # pacing: theoretical arrival time of the next request
        self._not_before = -math.inf  # the venue's hold

    def _needed(self, now: float) -> float:
        """Seconds from ``now`` until the next request fits every rule (lock held)."""
        send_at = max(now, self._not_before, self._tat - self._tolerance)
        for (n, window), events in zip(self._windows, self._events, strict=True):
            if len(events) == n:
                send_at = max(send_at, events[0] + window)
        return send_at - now

    def _record(self, at: float) -> None:
        """Count a request sent at ``at`` (lock held)."""
        for events in self._events:
            events.append(at)
        if self.interval:
            self._tat = max(self._tat, at) + self.interval

    def reserve(self) -> float:
        """Reserve the next request slot; return how many seconds to wait before sending."""
        with self._lock:
            now = self._clock()
            wait = max(self._needed(now), 0.0)
            self._record(now + wait)
            return wait

    def acquire(self, sleep: Sleep | None = None) -> float:
        """Wait until a request may be sent; return the seconds waited (local rules only).

        Without windows a slot is reserved and the wait happens outside the lock. With windows
        the caller waits holding the lock and the request is counted when it is let through, so
        a late wake-up (a loaded machine) can never squeeze N+1 requests into a window.
        With a shared backend installed and budgets declared, the request also takes its slot
        in every budget (which may wait for other processes' requests to decay).
        """
        sleep = sleep or self._sleep
        if self._windows:
            wait = self._wait_in_turn(sleep)
        else:
            wait = self.reserve()
            if wait > 0:
                sleep(wait)
        backend = _backend
        if backend is not None and self.budgets:
            backend.take(self.budgets)
        return wait

    def _wait_in_turn(self, sleep: Sleep) -> float:
        waited = 0.0
        with self._lock:
            while True:
                now = self._clock()
                wait = self._needed(now)
                if wait <= 0:
                    self._record(now)
                    return waited
                sleep(wait)
                waited += wait

    def defer(self, seconds: float) -> None:
        """Hold every request back for ``seconds`` from now (after a 429), at most ``max_wait``."""
        with self._lock:
            now = self._clock()
            wait = min(max(seconds, 0.0), self._max_wait)
            self._not_before = max(self._not_before, now + wait)

    def hold_until(self, instant: float) -> None:
        """Hold every request back until ``instant`` (clock time), at most ``max_wait`` away."""
        with self._lock:
            now = self._clock()
            self._not_before = max(self._not_before, min(instant, now + self._max_wait))


_SHARED: dict[str, object] = {}
_SHARED_LOCK = threading.Lock()


def shared(key: str, make: Callable[[], L]) -> L:
    """Return the process-wide limiter stored under ``key``, building it on first use."""
    with _SHARED_LOCK:
        limiter = _SHARED.get(key)
        if limiter is None:
            limiter = _SHARED[key] = make()
        return limiter  # type: ignore[return-value]
