"""Stable fingerprints of execution plans, so execution can refuse anything but the approved one.

Two fingerprints live here, and nowhere else:

- the **execution plan hash** (``run_orders_hash``, ``combined_plan_hash``): per run, SHA-256 over
  ``run:<run id>`` and its sorted order lines ``id|symbol|side|quantity``; per plan, SHA-256 over
  the runs' hashes. Planning writes it, approval recomputes it from the database, execution
  refuses a run whose orders no longer hash to the approved value;
- the **document hash** (``plan_hash``) of a JSON plan document (the pure planner's output).

The document hash is SHA-256 over canonical JSON: keys sorted, no whitespace, every ``Decimal``
written as a plain decimal string without trailing zeros or exponent (``Decimal("1.50")`` and
``Decimal("1.5")`` hash alike, and so does the string ``"1.5"`` that a jsonb round trip gives
back). Floats are refused: money and quantities are ``Decimal``, and a float has no canonical
decimal text.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from collections.abc import Iterable, Mapping
from decimal import Decimal
from enum import Enum
from typing import Any


def decimal_to_str(value: Decimal) -> str:
    """Return the canonical text of a finite Decimal: plain notation, no trailing zeros."""
    if not value.is_finite():
        raise ValueError(f"cannot write non-finite decimal {value}")
    if value.is_zero():
        return "0"
    text = format(value.normalize(), "f")
    return text


def canonical(obj: object) -> Any:
    """Return ``obj`` as plain JSON values with Decimals, enums, UUIDs and dates as strings."""
    if obj is None or isinstance(obj, bool):
        return obj
    if isinstance(obj, Enum):  # StrEnum included: its value, not its repr
        return canonical(obj.value)
    if isinstance(obj, str):
        return obj
    if isinstance(obj, int):
        return obj
    if isinstance(obj, Decimal):
        return decimal_to_str(obj)
    if isinstance(obj, float):
        raise TypeError(f"floats have no canonical form ({obj!r}): use Decimal")
    if isinstance(obj, uuid.UUID):
        return str(obj)
    if isinstance(obj, dt.datetime | dt.date):
        return obj.isoformat()
    if isinstance(obj, Mapping):
        out: dict[str, Any] = {}
        for key, value in obj.items():
            if isinstance(key, Enum):
                key = key.value
            if not isinstance(key, str):
                raise TypeError(f"plan keys must be strings, got {key!r}")
            out[key] = canonical(value)
        return out
    if isinstance(obj, list | tuple):
        return [canonical(item) for item in obj]
    raise TypeError(f"cannot put {type(obj).__name__} into a plan: {obj!r}")


def canonical_json(plan: Mapping[str, object]) -> str:
    """Return the canonical JSON text of a plan (sorted keys, no whitespace)."""
    return json.dumps(
        canonical(plan),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )


def plan_hash(plan: Mapping[str, object]) -> str:
    """Return the SHA-256 hex digest of a plan's canonical JSON."""
    return hashlib.sha256(canonical_json(plan).encode("utf-8")).hexdigest()


# --- the execution plan's hash: the one place it is computed ---------------------------------


def order_line(order_id: str, symbol: str, side: str, quantity_text: str) -> str:
    """Return one order's line in its run's hash: ``id|symbol|side|9-decimal quantity``."""
    return f"{order_id}|{symbol}|{side}|{quantity_text}"


def run_orders_hash(run_id: object, lines: Iterable[str]) -> str:
    """Return a run's hash over its order lines (order-independent: the lines are sorted)."""
    body = "\n".join(sorted(lines))
    return hashlib.sha256(("run:" + str(run_id) + "\n" + body).encode()).hexdigest()


def combined_plan_hash(run_hashes: Iterable[str]) -> str:
    """Return a whole plan's hash from its runs' hashes, in the plan's run order."""
    overall = hashlib.sha256()
    for run_hash in run_hashes:
        overall.update(run_hash.encode())
    return overall.hexdigest()
