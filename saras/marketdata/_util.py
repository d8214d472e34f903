"""Helpers shared by the sources: option parsing, retry policy, request grouping, frames."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import pandas as pd
from pydantic import SecretStr

from saras.marketdata import calendars
from saras.marketdata.base import (
    BAR_COLUMNS,
    BarRequest,
    SourceConfigError,
    UnknownExchangeError,
    empty_bars,
)

Sleep = Callable[[float], None]
Clock = Callable[[], float]


class Options:
    """Typed access to a source's options mapping; unknown keys are a ``SourceConfigError``."""

    def __init__(self, source: str, options: Mapping[str, Any] | None, known: Sequence[str]):
        self.source = source
        self._values = dict(options or {})
        unknown = sorted(k for k in self._values if k not in known)
        if unknown:
            raise SourceConfigError(
                f"unknown option(s) {unknown} for source {source!r}; known: {sorted(known)}",
                option=unknown[0],
                source=source,
            )

    def error(self, option: str, message: str) -> SourceConfigError:
        """Build a ``SourceConfigError`` naming the option."""
        return SourceConfigError(
            f"source {self.source!r}, option {option!r}: {message}",
            option=option,
            source=self.source,
        )

    def has(self, key: str) -> bool:
        """Tell whether the option was given (and is not None)."""
        return self._values.get(key) is not None

    def raw(self, key: str, default: Any = None) -> Any:
        """Return the option as given."""
        value = self._values.get(key)
        return default if value is None else value

    def str_(self, key: str, default: str | None = None, *, required: bool = False) -> str | None:
        """Return a string option."""
        value = self._values.get(key)
        if value is None:
            if required:
                raise self.error(key, "is required")
            return default
        if not isinstance(value, str) or not value.strip():
            raise self.error(key, f"must be a non-empty string, got {type(value).__name__}")
        return value.strip()

    def secret(self, key: str, *, required: bool = False) -> SecretStr | None:
        """Return a secret option (str or SecretStr) as ``SecretStr``; never echo its value."""
        value = self._values.get(key)
        if value is None:
            if required:
                raise self.error(key, "is required")
            return None
        if isinstance(value, SecretStr):
            if not value.get_secret_value():
                raise self.error(key, "must not be empty")
            return value
        if isinstance(value, str) and value:
            return SecretStr(value)
        raise self.error(key, "must be a non-empty string or SecretStr")

    def bool_(self, key: str, default: bool) -> bool:
        """Return a boolean option (accepts bools and 'true'/'false' strings)."""
        value = self._values.get(key)
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        text = value.strip().lower() if isinstance(value, str) else None
        if text in {"true", "1", "yes", "false", "0", "no"}:
            return text in {"true", "1", "yes"}
        raise self.error(key, f"must be a boolean, got {value!r}")

    def number(
        self, key: str, default: float, *, minimum: float | None = None, integer: bool = False
    ) -> Any:
        """Return a numeric option, checked against ``minimum``."""
        value = self._values.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise self.error(key, f"must be a number, got {value!r}")
        try:
            number = int(value) if integer else float(value)
        except ValueError as exc:
            raise self.error(key, f"must be a number, got {value!r}") from exc
        if integer and isinstance(value, float) and not value.is_integer():
            raise self.error(key, f"must be an integer, got {value!r}")
        if minimum is not None and number < minimum:
            raise self.error(key, f"must be >= {minimum}, got {value!r}")
        return number

    def choice(self, key: str, default: str, choices: Sequence[str]) -> str:
        """Return a string option restricted to ``choices`` (case-insensitive)."""
        value = self._values.get(key)
        if value is None:
            return default
        text = str(getattr(value, "value", value)).strip().lower()
        if text not in choices:
            raise self.error(key, f"must be one of {list(choices)}, got {value!r}")
        return text


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff: ``base * 2**attempt`` seconds, capped at ``cap``."""

    max_retries: int = 3
    base: float = 1.0
    cap: float = 60.0

    def delay(self, attempt: int, hint: float | None = None) -> float:
        """Return the wait before retry number ``attempt`` (0-based), honouring a server hint."""
        wait = min(self.cap, self.base * (2**attempt))
        if hint is not None and hint > 0:
            wait = max(wait, min(self.cap, hint))
        return wait

    @classmethod
    def from_options(cls, opts: Options, *, max_retries: int = 3, base: float = 1.0) -> RetryPolicy:
        """Read ``max_retries`` and ``backoff`` (base seconds) from the options."""
        return cls(
            max_retries=opts.number("max_retries", max_retries, minimum=0, integer=True),
            base=opts.number("backoff", base, minimum=0),
        )


def check_unique(requests: Sequence[BarRequest]) -> None:
    """Refuse a batch that asks for the same symbol twice (a caller bug)."""
    seen: set[str] = set()
    dups = []
    for req in requests:
        if req.symbol in seen:
            dups.append(req.symbol)
        seen.add(req.symbol)
    if dups:
        raise ValueError(f"symbol(s) requested more than once in one batch: {sorted(set(dups))}")


def expects_no_sessions(req: BarRequest) -> bool:
    """Tell whether the calendar is sure the request's range holds no session (skip it)."""
    if not calendars.covers(req.exchange, req.start, req.end):
        return False
    return not calendars.sessions(req.exchange, req.start, req.end)


def triage(requests: Sequence[BarRequest], failures: dict[str, str]) -> list[BarRequest]:
    """Return the requests worth sending; record unknown exchanges as failures."""
    check_unique(requests)
    todo: list[BarRequest] = []
    for req in requests:
        try:
            if expects_no_sessions(req):
                continue
        except UnknownExchangeError as exc:
            failures[req.symbol] = str(exc)
            continue
        todo.append(req)
    return todo


def group_by_range(
    requests: Sequence[BarRequest], batch_size: int
) -> Iterator[tuple[date, date, list[BarRequest]]]:
    """Yield batches of at most ``batch_size`` requests sharing one (start, end) range."""
    groups: dict[tuple[date, date], list[BarRequest]] = {}
    for req in requests:
        groups.setdefault((req.start, req.end), []).append(req)
    for (start, end), reqs in groups.items():
        for i in range(0, len(reqs), batch_size):
            yield start, end, reqs[i : i + batch_size]


def bars_frame(
    symbol: str,
    dates: Sequence[date | None] | np.ndarray,
    open_: Any,
    high: Any,
    low: Any,
    close: Any,
    volume: Any,
) -> pd.DataFrame:
    """Build a canonical frame for one symbol from column arrays (numbers coerced to float)."""
    n = len(dates)
    if n == 0:
        return empty_bars()

    def num(values: Any) -> np.ndarray:
        return pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=np.float64)

    return pd.DataFrame(
        {
            "symbol": np.full(n, symbol, dtype=object),
            "price_date": np.asarray(dates, dtype=object),
            "open": num(open_),
            "high": num(high),
            "low": num(low),
            "close": num(close),
            "volume": num(volume),
        },
        columns=list(BAR_COLUMNS),
    )


def clip_to_range(frame: pd.DataFrame, start: date, end: date) -> pd.DataFrame:
    """Keep rows whose price_date lies in [start, end]; rows without a date are kept."""
    if len(frame) == 0:
        return frame
    dates = frame["price_date"]
    keep = np.fromiter(
        (d is None or start <= d <= end for d in dates), dtype=bool, count=len(dates)
    )
    return frame[keep].reset_index(drop=True)


def real_sleep(seconds: float) -> None:
    """Sleep for ``seconds`` (the default, injectable in tests)."""
    if seconds > 0:
        time.sleep(seconds)
