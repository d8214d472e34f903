"""Alpaca kit: endpoints, limits and codes, and what a connection row says about them."""

from __future__ import annotations

from decimal import Decimal
from urllib.parse import urlsplit

from alpaca.common.enums import BaseURL

from saras.brokers.base import (
    ConnectionConfig,
)
from saras.brokers.errors import (
    FatalBrokerError,
)
from saras.domain.enums import BrokerType

BROKER = BrokerType.ALPACA.value


PAGE_SIZE = 500  # Alpaca's maximum for GET /v2/orders


MAX_CLIENT_ORDER_ID = 48


MAX_DECIMALS = 9  # Alpaca takes quantities and notionals to 9 decimal places


MIN_BUY_VALUE = Decimal("1")


DEFAULT_TIMEOUT = 10.0


#: Alpaca's paper endpoint; every other alpaca.markets trading host moves real money
PAPER_HOST = "paper-api.alpaca.markets"


ALPACA_DOMAIN = "alpaca.markets"


CODE_DUPLICATE_CLIENT_ORDER_ID = 40010001


CODE_INSUFFICIENT = 40310000  # 403: insufficient buying power / quantity / cost basis


DEFAULT_REQUESTS_PER_MINUTE = 200


MAX_PAGES = 2_000


ACTIVITY_PAGE_SIZE = 100  # Alpaca's maximum for GET /v2/account/activities


def reaches_real_money(config: ConnectionConfig) -> bool:
    """Tell whether orders through this connection can reach a live Alpaca account.

    A live row does. So does a "paper" row whose ``base_url`` names an Alpaca host other than
    the paper endpoint (``api.alpaca.markets`` is the live one): the URL decides where orders
    go, not the flag. An unreadable ``base_url`` counts as live. Other hosts (a local fake, a
    sandbox proxy) follow the row's flag.
    """
    if not config.paper_trading:
        return True
    override = config.metadata.get("base_url")
    if override is None or override == "":
        return False
    if not isinstance(override, str):
        return True
    try:
        host = (urlsplit(override.strip()).hostname or "").rstrip(".").lower()
    except ValueError:
        return True
    if not host:
        return True
    return (host == ALPACA_DOMAIN or host.endswith("." + ALPACA_DOMAIN)) and host != PAPER_HOST


def _base_url(config: ConnectionConfig) -> str:
    """Pick the endpoint: ``metadata["base_url"]`` if given, else paper or live."""
    override = config.metadata.get("base_url")
    if override is None or override == "":
        return str((BaseURL.TRADING_PAPER if config.paper_trading else BaseURL.TRADING_LIVE).value)
    if not isinstance(override, str) or not override.startswith(("http://", "https://")):
        raise FatalBrokerError(
            f"alpaca connection {config.connection_id}: base_url must be an http(s) URL",
            broker=BROKER,
        )
    url = override.rstrip("/")
    return url.removesuffix("/v2")  # alpaca-py appends /v2 itself
