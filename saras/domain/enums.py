"""The closed sets the schema enforces with CHECK constraints, and the code uses as enums.

Each enum's values are exactly what the database accepts; changing one is a migration.
"""

from __future__ import annotations

from enum import StrEnum


class BrokerType(StrEnum):
    """Brokers Saras has adapters for (not a CHECK: a new broker is one new module)."""

    PAPER = "paper"
    ALPACA = "alpaca"
    ZERODHA = "zerodha"


class ConnectionStatus(StrEnum):
    """State of a user's broker connection; only `active` connections are used."""

    ACTIVE = "active"
    INACTIVE = "inactive"
    EXPIRED = "expired"  # credentials no longer valid (e.g. Kite token past 06:00 IST)
    ERROR = "error"
    REVOKED = "revoked"


class InvestmentStatus(StrEnum):
    """Lifecycle of a user's investment in a smallcase."""

    PENDING = "pending"
    ACTIVE = "active"
    EXITING = "exiting"
    CLOSED = "closed"
    FAILED = "failed"


class ExecutionMode(StrEnum):
    """Paper or live money."""

    PAPER = "paper"
    LIVE = "live"


class RunType(StrEnum):
    """Why an execution run exists."""

    INVEST = "invest"
    TOPUP = "topup"
    REBALANCE = "rebalance"
    EXIT = "exit"
    REPAIR = "repair"


class RunStatus(StrEnum):
    """Status of a smallcase execution run."""

    PLANNED = "planned"
    AWAITING_APPROVAL = "awaiting_approval"
    APPROVED = "approved"
    EXECUTING = "executing"
    COMPLETED = "completed"
    PARTIALLY_COMPLETED = "partially_completed"
    FAILED = "failed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"


#: Runs that are not finished: at most one of these per investment (a partial unique index).
UNFINISHED_RUN_STATUSES: tuple[RunStatus, ...] = (
    RunStatus.PLANNED,
    RunStatus.AWAITING_APPROVAL,
    RunStatus.APPROVED,
    RunStatus.EXECUTING,
)


class OrderSide(StrEnum):
    """Buy or sell."""

    BUY = "buy"
    SELL = "sell"


class OrderType(StrEnum):
    """Order types Saras places."""

    MARKET = "market"
    LIMIT = "limit"


class OrderStatus(StrEnum):
    """Status of one of our execution orders (see saras.domain.orders for the state table)."""

    PLANNED = "planned"
    SUBMITTING = "submitting"
    SUBMITTED = "submitted"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    EXPIRED = "expired"
    UNKNOWN = "unknown"


TERMINAL_ORDER_STATUSES: frozenset[OrderStatus] = frozenset(
    {OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.REJECTED, OrderStatus.EXPIRED}
)


class TransactionType(StrEnum):
    """Kinds of ledger rows in trading_transactions."""

    BUY = "buy"
    SELL = "sell"
    DEPOSIT = "deposit"
    WITHDRAWAL = "withdrawal"
    DIVIDEND = "dividend"
    FEE = "fee"
    SPLIT = "split"  # a split or reverse split: the holding after it (quantity, average price)
    BONUS = "bonus"  # a bonus issue: the holding after it
    CASH_IN_LIEU = "cash_in_lieu"  # the fraction of a share a split or bonus could not give
    ADJUSTMENT = "adjustment"  # a reconciliation difference accepted into the ledger


class CorporateActionType(StrEnum):
    """Kinds of corporate actions Saras applies to its ledger."""

    SPLIT = "split"
    REVERSE_SPLIT = "reverse_split"
    BONUS = "bonus"
    DIVIDEND = "dividend"


class CorporateActionStatus(StrEnum):
    """Whether a detected corporate action has been applied to the ledger."""

    DETECTED = "detected"  # known, not yet applied: the asset is not planned
    APPLIED = "applied"
    DISMISSED = "dismissed"  # judged not to be an action (e.g. a vendor's data fix)


class AdjustmentKind(StrEnum):
    """Why an investment's ledger position or cash moved without a fill."""

    SPLIT = "split"
    BONUS = "bonus"
    CASH_IN_LIEU = "cash_in_lieu"
    DIVIDEND = "dividend"
    ACCEPTED_DIFFERENCE = "accepted_difference"


class DifferenceKind(StrEnum):
    """What a reconciliation difference is about."""

    POSITION = "position"
    CASH = "cash"


class DifferenceClass(StrEnum):
    """Why our ledger and the broker differ, where Saras can tell."""

    SPLIT_NOT_APPLIED = "split_not_applied"  # the broker holds ours x a pending action's ratio
    FILL_NOT_RECORDED = "fill_not_recorded"  # an order of ours is still working or in doubt
    EXTERNAL_TRADE = "external_trade"  # nothing of ours explains it: traded outside Saras
    CASH = "cash"  # broker cash moved other than our ledger says
    UNKNOWN = "unknown"


class DifferenceStatus(StrEnum):
    """Lifecycle of a reconciliation difference."""

    OPEN = "open"  # seen at the last reconciliation: the investments on it are not planned
    RESOLVED = "resolved"  # no longer seen
    ACCEPTED = "accepted"  # taken into the ledger by `saras reconcile accept`


class AssetType(StrEnum):
    """Kinds of tradable assets."""

    EQUITY = "equity"
    ETF = "etf"
    INDEX = "index"
    OTHER = "other"


class RiskLevel(StrEnum):
    """Smallcase risk labels."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
