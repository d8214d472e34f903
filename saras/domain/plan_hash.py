"""A stable fingerprint of an execution plan, so execution can refuse anything but the approved one.

The hash is SHA-256 over canonical JSON: keys sorted, no whitespace, every ``Decimal`` written as
a plain decimal string without trailing zeros or exponent (``Decimal("1.50")`` and
``Decimal("1.5")`` hash alike, and so does the string ``"1.5"`` that a jsonb round trip gives
back). Floats are refused: money and quantities are ``Decimal``, and a float has no canonical
decimal text.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from collections.abc import Mapping
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
