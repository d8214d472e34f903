"""The plan's fingerprint, so execution can refuse anything but the approved plan.

One hash, computed here and nowhere else: per run, SHA-256 over ``run:<run id>`` and its sorted
order lines ``id|symbol|side|quantity`` (quantity as a 9-decimal text); per plan, SHA-256 over
the runs' hashes in the plan's order. Planning writes it, approval recomputes it from the
database, execution refuses a run whose orders no longer hash to the approved value.
``decimal_to_str`` is the canonical text of a Decimal in plan documents.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from decimal import Decimal


def decimal_to_str(value: Decimal) -> str:
    """Return the canonical text of a finite Decimal: plain notation, no trailing zeros."""
    if not value.is_finite():
        raise ValueError(f"cannot write non-finite decimal {value}")
    if value.is_zero():
        return "0"
    text = format(value.normalize(), "f")
    return text


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
