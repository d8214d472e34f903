"""The broker protocol: what the flows need from any broker, in our own types.

SDK objects never leave an adapter. Money and quantities are ``Decimal``; times are aware UTC.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Protocol, runtime_checkable

from pydantic import SecretStr

from saras.domain.costs import CostModel, no_costs
from saras.domain.enums import OrderSide, OrderType


class BrokerOrderStatus(StrEnum):
    """An order's status as the broker reports it, mapped explicitly by each adapter."""

    PENDING = "pending"  # received, not yet working (new, pending_new, accepted, AMO req received)
    OPEN = "open"  # working at the exchange
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    EXPIRED = "expired"


TERMINAL_BROKER_STATUSES: frozenset[BrokerOrderStatus] = frozenset(
    {
        BrokerOrderStatus.FILLED,
        BrokerOrderStatus.CANCELLED,
        BrokerOrderStatus.REJECTED,
        BrokerOrderStatus.EXPIRED,
    }
)


@dataclass(frozen=True)
class BrokerCredentials:
    """Decrypted credentials for one connection; every value masked in repr."""

    api_key: SecretStr | None = None
    api_secret: SecretStr | None = None
    access_token: SecretStr | None = None  # Kite's daily access token
    extra: dict[str, SecretStr] = field(default_factory=dict)


@dataclass(frozen=True)
class ConnectionConfig:
    """What an adapter needs to know about a connection row (no secrets here)."""

    connection_id: str
    broker_type: str
    paper_trading: bool
    metadata: dict[str, object] = field(default_factory=dict)  # base_url, data_url, root, ...


@dataclass(frozen=True)
class BrokerCapabilities:
    """What a connection's broker can do, as data, so services never branch on broker_type.

    ``real_money``: an order sent through this connection can reach a real broker account (live
    money), so it needs ``SARAS_LIVE_TRADING``. ``fractional`` and ``quantity_decimals`` say how
    quantities may be sized (whole shares when not fractional). ``min_order_value`` is the
    smallest buy the broker takes, in the account's currency. ``remote``: the adapter talks to a
    broker over HTTP (so a request timeout and a lookup horizon apply). ``costs``: the kit's
    cost model (its ``costs.py``), the expected charges of an investment's orders.
    """

    real_money: bool
    fractional: bool
    quantity_decimals: int
    min_order_value: Decimal = Decimal(0)
    remote: bool = True
    orders_outside_hours: bool = False  # queued for the next open (Kite AMO): no clock check
    marks_connection_on_fatal: bool = False  # the adapter marks its own connection (Kite)
    needs_credentials: bool = True  # the connection holds secrets (the paper broker has none)
    paper_environment: bool = True  # the broker offers paper accounts (Kite does not)
    costs: CostModel = no_costs

    def quantity_step(self, fractionable_asset: bool) -> Decimal:
        """Return the smallest quantity step for an asset (1 when only whole shares trade)."""
        if self.fractional and fractionable_asset:
            return Decimal(1).scaleb(-self.quantity_decimals)
        return Decimal(1)


def undeclared_capabilities(config: ConnectionConfig) -> BrokerCapabilities:
    """Return what an adapter that declares nothing can do: only its row says paper or live.

    It never reaches real money only when its row says ``paper_trading`` (otherwise the
    live-trading gate applies); its sizing follows the ``paper_fractional`` setting.
    """
    return BrokerCapabilities(
        real_money=not config.paper_trading,
        fractional=paper_fractional(config),
        quantity_decimals=9,
        min_order_value=Decimal(0),
        remote=not config.paper_trading,
    )


def paper_fractional(config: ConnectionConfig) -> bool:
    """Tell whether a connection's ``paper_fractional`` setting allows fractions (default yes)."""
    return str(config.metadata.get("paper_fractional", "true")).lower() not in ("false", "0", "no")


#: ``connection_metadata`` keys for patience: the HTTP request timeout and the lookup horizon
REQUEST_TIMEOUT_KEY = "request_timeout"
LOOKUP_HORIZON_KEY = "lookup_horizon"
DEFAULT_LOOKUP_HORIZON = 30.0


def default_lookup_horizon(request_timeout: float | None) -> float:
    """Return the horizon when none is set: 30 s, or twice a longer request timeout."""
    return max(DEFAULT_LOOKUP_HORIZON, 2 * (request_timeout or 0.0))


def metadata_seconds(config: ConnectionConfig, key: str) -> float | None:
    """Return a positive number of seconds from a connection's metadata, None when unset."""
    value = config.metadata.get(key)
    if value is None or value == "":
        return None
    try:
        seconds = float(str(value))
    except ValueError:
        raise ValueError(
            f"connection {config.connection_id}: connection_metadata.{key} must be a number of "
            f"seconds, not {value!r}"
        ) from None
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError(
            f"connection {config.connection_id}: connection_metadata.{key} must be positive "
            f"and finite, not {value!r}"
        )
    return seconds


@dataclass(frozen=True)
class AccountInfo:
    """Cash and buying power of a broker account."""

    cash: Decimal
    buying_power: Decimal
    currency: str


@dataclass(frozen=True)
class BrokerPosition:
    """A position as the broker reports it."""

    symbol: str
    quantity: Decimal
    average_price: Decimal | None = None
    market_value: Decimal | None = None
    exchange: str | None = None


@dataclass(frozen=True)
class OrderRequest:
    """An order to place, carrying our own deterministic id.

    ``client_order_id`` is derived from our order row (see ``saras.brokers.ids``); the adapter
    may shorten or re-encode it to the broker's rules (Kite ``tag``), deterministically.
    Exactly one of ``quantity`` and ``notional`` is set.
    """

    client_order_id: str
    symbol: str
    side: OrderSide
    quantity: Decimal | None = None
    notional: Decimal | None = None
    order_type: OrderType = OrderType.MARKET
    limit_price: Decimal | None = None
    exchange: str | None = None
    fractionable: bool = False

    def __post_init__(self) -> None:
        if (self.quantity is None) == (self.notional is None):
            raise ValueError(
                f"order {self.client_order_id}: give exactly one of quantity, notional"
            )
        if self.quantity is not None and self.quantity <= 0:
            raise ValueError(f"order {self.client_order_id}: quantity must be positive")
        if self.notional is not None and self.notional <= 0:
            raise ValueError(f"order {self.client_order_id}: notional must be positive")
        if self.order_type is OrderType.LIMIT and self.limit_price is None:
            raise ValueError(f"order {self.client_order_id}: a limit order needs a limit price")


@dataclass(frozen=True)
class Fill:
    """One execution (trade) of an order."""

    fill_id: str  # broker's trade / activity id, unique per broker order
    quantity: Decimal
    price: Decimal
    fees: Decimal
    filled_at: datetime


@dataclass(frozen=True)
class BrokerOrder:
    """An order as the broker knows it."""

    broker_order_id: str
    client_order_id: str | None
    symbol: str
    side: OrderSide
    quantity: Decimal | None
    filled_quantity: Decimal
    average_fill_price: Decimal | None
    status: BrokerOrderStatus
    submitted_at: datetime | None = None
    updated_at: datetime | None = None
    reason: str | None = None  # the broker's rejection / cancellation reason
    fees: Decimal = Decimal("0")
    fills: tuple[Fill, ...] = ()
    #: ``fills`` is the broker's own per-fill record (possibly still behind ``filled_quantity``);
    #: when False the broker gave cumulative figures only
    fills_reported: bool = False

    @property
    def is_terminal(self) -> bool:
        """Whether the broker will not change this order any more."""
        return self.status in TERMINAL_BROKER_STATUSES


@dataclass(frozen=True)
class MarketClock:
    """Whether the market is open now, and when it next opens."""

    is_open: bool
    next_open: datetime | None
    next_close: datetime | None = None


@dataclass(frozen=True)
class BrokerAsset:
    """An instrument from a broker's own list (for the asset master)."""

    symbol: str
    exchange: str
    currency: str
    name: str | None = None
    asset_type: str = "equity"
    tradable: bool = True
    metadata: dict[str, object] = field(default_factory=dict)  # fractionable, lot_size, ...


@runtime_checkable
class AssetLister(Protocol):
    """A broker that can list its tradable instruments."""

    def list_assets(self, exchange: str | None = None) -> Sequence[BrokerAsset]:
        """Return the broker's instruments (on one exchange, when given)."""
        ...


@runtime_checkable
class Broker(Protocol):
    """What the flows need from a broker account."""

    broker_type: str

    def get_account(self) -> AccountInfo:
        """Return cash, buying power and currency."""
        ...

    def get_positions(self) -> Sequence[BrokerPosition]:
        """Return every position the broker holds for the account."""
        ...

    def place_order(self, request: OrderRequest, *, resume: bool = False) -> BrokerOrder:
        """Place an order exactly once.

        With ``resume=True`` (the order may already have been sent by an earlier attempt) the
        adapter first looks the order up by our id and returns it if found. An ambiguous answer
        (timeout or lost response after sending) is resolved by looking the order up before
        anything is sent again; if it still cannot be told, ``AmbiguousOrderError`` is raised and
        a later ``place_order(..., resume=True)`` resolves it. No caller can place it twice: an
        order is concluded absent only once the connection's lookup horizon (longer than its
        request timeout) has passed since it was sent.
        """
        ...

    def get_order_by_client_id(self, client_order_id: str) -> BrokerOrder | None:
        """Look an order up by our id; None when the broker has no such order."""
        ...

    def get_order(self, broker_order_id: str) -> BrokerOrder:
        """Look an order up by the broker's id."""
        ...

    def list_orders(self, since: datetime) -> Sequence[BrokerOrder]:
        """List the account's orders submitted since ``since`` (aware)."""
        ...

    def cancel_order(self, broker_order_id: str) -> None:
        """Ask the broker to cancel an order."""
        ...

    def get_clock(self) -> MarketClock:
        """Return whether the market is open and when it next opens."""
        ...
