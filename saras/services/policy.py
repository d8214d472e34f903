"""A rebalance policy per smallcase, stored in ``smallcases.metadata`` under one key.

The stored policy is the full validated policy (every field, decimals as strings), so that a
later change of a default never silently changes a smallcase's behaviour. A run's overrides are
merged on top (:func:`effective_policy`) and the result is what the plan records.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError
from sqlalchemy.orm import Session

from models import Smallcase
from saras.domain.policy import METADATA_KEY, RebalancePolicy, policy_error_message
from saras.errors import InvalidInputError
from saras.services import admin


def _smallcase(session: Session, smallcase: Smallcase | str | uuid.UUID) -> Smallcase:
    if isinstance(smallcase, Smallcase):
        return smallcase
    return admin.get_smallcase(session, str(smallcase))


def stored_policy(smallcase: Smallcase) -> RebalancePolicy:
    """Return the policy stored with a smallcase (the defaults when none is stored)."""
    data = (smallcase.metadata_ or {}).get(METADATA_KEY)
    if data is None:
        return RebalancePolicy()
    try:
        return RebalancePolicy.model_validate(data)
    except ValidationError as exc:
        raise InvalidInputError(
            policy_error_message(exc, prefix=f"stored policy of smallcase {smallcase.name!r}")
        ) from exc


def get_policy(session: Session, smallcase: Smallcase | str | uuid.UUID) -> RebalancePolicy:
    """Return a smallcase's policy, by row, name or id."""
    return stored_policy(_smallcase(session, smallcase))


def parse_policy(
    changes: Mapping[str, Any], *, base: RebalancePolicy | None = None, where: str = "policy"
) -> RebalancePolicy:
    """Return ``base`` (default: the defaults) with ``changes`` applied, or InvalidInputError."""
    try:
        return (base or RebalancePolicy()).with_overrides(changes)
    except ValidationError as exc:
        raise InvalidInputError(policy_error_message(exc, prefix=where)) from exc


def set_policy(
    session: Session,
    smallcase: Smallcase | str | uuid.UUID,
    changes: Mapping[str, Any],
    *,
    reset: bool = False,
) -> RebalancePolicy:
    """Validate ``changes`` on top of the stored policy (or the defaults) and store the result.

    Nothing is written when a change is refused; the error names the field.
    """
    row = _smallcase(session, smallcase)
    base = RebalancePolicy() if reset else stored_policy(row)
    policy = parse_policy(changes, base=base, where=f"policy of smallcase {row.name!r}")
    metadata = dict(row.metadata_ or {})
    metadata[METADATA_KEY] = policy.as_record()
    row.metadata_ = metadata  # a new dict: JSON columns do not track in-place changes
    session.flush()
    return policy


def effective_policy(
    session: Session,
    smallcase: Smallcase | str | uuid.UUID,
    overrides: RebalancePolicy | Mapping[str, Any] | None = None,
) -> RebalancePolicy:
    """Return the policy a run uses: the smallcase's, with the run's overrides on top."""
    row = _smallcase(session, smallcase)
    if overrides is None:
        return stored_policy(row)
    try:
        return stored_policy(row).with_overrides(overrides)
    except ValidationError as exc:
        raise InvalidInputError(policy_error_message(exc, prefix="policy parameter")) from exc


def policy_record(policy: RebalancePolicy) -> dict[str, Any]:
    """Return what a plan records of the policy it used (JSON-able)."""
    return policy.as_record()
