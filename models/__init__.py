"""SQLAlchemy ORM: the schema of the fifteen tables, and nothing else."""

from models.base import Base
from models.brokers import UserBrokerConnection
from models.corporate_actions import (
    CorporateAction,
    PositionAdjustment,
    Reconciliation,
    ReconciliationDifference,
)
from models.market import Asset, PriceHistory
from models.portfolios import Portfolio, PortfolioHolding, TradingTransaction
from models.run_reports import ExecutionRunReport, ExecutionRunReportLeg
from models.smallcases import (
    Smallcase,
    SmallcaseConstituent,
    SmallcaseExecutionOrder,
    SmallcaseExecutionRun,
    UserSmallcaseInvestment,
    UserSmallcasePositionHistory,
)
from models.users import AuditLog, User, UserSession

__all__ = [
    "Asset",
    "AuditLog",
    "Base",
    "CorporateAction",
    "ExecutionRunReport",
    "ExecutionRunReportLeg",
    "Portfolio",
    "PortfolioHolding",
    "PositionAdjustment",
    "PriceHistory",
    "Reconciliation",
    "ReconciliationDifference",
    "Smallcase",
    "SmallcaseConstituent",
    "SmallcaseExecutionOrder",
    "SmallcaseExecutionRun",
    "TradingTransaction",
    "User",
    "UserBrokerConnection",
    "UserSession",
    "UserSmallcaseInvestment",
    "UserSmallcasePositionHistory",
]
