"""Broker order ids derived deterministically from our own order rows."""

from __future__ import annotations

import hashlib
import uuid

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def client_order_id(order_id: uuid.UUID | str) -> str:
    """Return the client order id we send for an order row (36 chars, Alpaca allows 48)."""
    return f"saras-{uuid.UUID(str(order_id)).hex}"[:48]


def kite_tag(order_id_or_client_id: uuid.UUID | str) -> str:
    """Return a Kite ``tag`` for an order: alphanumeric, 20 characters, stable.

    Kite tags are at most 20 alphanumeric characters, so the 128-bit id is hashed and written in
    base 36: 20 base-36 digits carry 103 bits, far beyond any collision risk in one order book.
    """
    text = str(order_id_or_client_id)
    digest = int.from_bytes(hashlib.sha256(text.encode()).digest()[:16], "big")
    chars = []
    for _ in range(19):
        digest, rem = divmod(digest, 36)
        chars.append(_ALPHABET[rem])
    return "S" + "".join(reversed(chars))
