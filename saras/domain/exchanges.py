"""The exchange table: every exchange an asset may be listed on, in one place.

Each row says the exchange's code (what ``assets.exchange`` stores), its ISO 10383 MIC, the
``exchange_calendars`` calendar that gives its sessions, the currency it trades in, its time
zone, and the broker types that can reach it. Validation, the CLI, the calendars and the
nightly schedules in ``prefect.yaml`` all read this table (a test holds the schedules to it).

``US`` is not an exchange: it names a country, not a venue, so no calendar, schedule or broker
rule can be tied to it. Saras refuses it as an asset's exchange (name the listing venue:
NYSE, NASDAQ, ...). Rows stored before this table existed with exchange ``US`` still resolve
to the NYSE calendar through ``LEGACY_ALIASES`` (so reading them never fails), and the nightly
US price schedule lists ``US`` too so that such rows keep their prices until they are
corrected; nothing new can be written with it.
"""

from __future__ import annotations

from dataclasses import dataclass

from saras.domain.enums import BrokerType


@dataclass(frozen=True)
class Exchange:
    """One exchange: code, MIC, calendar, currency, time zone, and who can reach it."""

    code: str
    mic: str
    calendar: str
    currency: str
    timezone: str
    brokers: frozenset[BrokerType]
    name: str


_US = frozenset({BrokerType.ALPACA, BrokerType.PAPER})
_IN = frozenset({BrokerType.ZERODHA, BrokerType.PAPER})

#: Every exchange Saras knows, by code. Adding one here is the whole change (plus a schedule).
EXCHANGES: dict[str, Exchange] = {
    e.code: e
    for e in (
        Exchange("NYSE", "XNYS", "XNYS", "USD", "America/New_York", _US, "New York Stock Exchange"),
        Exchange("NASDAQ", "XNAS", "XNYS", "USD", "America/New_York", _US, "Nasdaq"),
        Exchange("ARCA", "ARCX", "XNYS", "USD", "America/New_York", _US, "NYSE Arca"),
        Exchange("NYSEARCA", "ARCX", "XNYS", "USD", "America/New_York", _US, "NYSE Arca"),
        Exchange("AMEX", "XASE", "XNYS", "USD", "America/New_York", _US, "NYSE American"),
        Exchange("BATS", "BATS", "XNYS", "USD", "America/New_York", _US, "Cboe BZX"),
        Exchange("NSE", "XNSE", "XBOM", "INR", "Asia/Kolkata", _IN, "National Stock Exchange"),
        Exchange("BSE", "XBOM", "XBOM", "INR", "Asia/Kolkata", _IN, "BSE"),
    )
}

#: Codes found in databases written before the table, read (never written) as another code.
LEGACY_ALIASES: dict[str, str] = {"US": "NYSE"}

#: The currencies Saras trades in: those of its exchanges (ISO 4217 codes).
CURRENCIES: frozenset[str] = frozenset(e.currency for e in EXCHANGES.values())


class UnknownExchange(ValueError):
    """An exchange code the table does not hold; ``reason`` says why, without the code."""

    def __init__(self, code: object):
        known = ", ".join(sorted(EXCHANGES))
        hint = "a country, not a venue: name the listing exchange; " if code == "US" else ""
        self.reason = f"{hint}known exchanges are {known}"
        super().__init__(f"unknown exchange {code!r}: {self.reason}")


def exchange(code: str) -> Exchange:
    """Return the table's row for an exchange code (case-insensitive; legacy codes resolve)."""
    key = code.strip().upper() if isinstance(code, str) else ""
    key = LEGACY_ALIASES.get(key, key)
    try:
        return EXCHANGES[key]
    except KeyError:
        raise UnknownExchange(code) from None


def check_code(code: str) -> str:
    """Return the canonical code of an exchange an asset may be listed on, or raise."""
    key = code.strip().upper() if isinstance(code, str) else ""
    if key not in EXCHANGES:
        raise UnknownExchange(code)
    return key


def exchanges_in(currency: str) -> list[str]:
    """List the exchange codes trading in a currency."""
    return sorted(c for c, e in EXCHANGES.items() if e.currency == currency.upper())


def calendar_names() -> frozenset[str]:
    """Return the calendar names the table uses."""
    return frozenset(e.calendar for e in EXCHANGES.values())
