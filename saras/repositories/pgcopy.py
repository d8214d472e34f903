"""Binary COPY of daily bars into PostgreSQL, built with numpy (no per-row Python).

Each row is one fixed 158-byte binary COPY tuple filled from a template: UUIDv7 ids generated
as one block per batch, dates as days since 2000-01-01, and numerics as fixed base-10000 digit
groups (3 integer groups, then 2 fraction groups for prices, 1 for volume). PostgreSQL
normalises numerics on input, so what is stored is identical to the text path. Values the
fixed layout cannot hold exactly (non-finite, prices of 1e9 or more, volumes of 1e11 or more,
missing dates) make ``binary_copy`` return None, and the caller uses the text path.
"""

from __future__ import annotations

import os
import time
import uuid

import numpy as np
import pandas as pd

PRICE_DECIMALS = 6
VOLUME_DECIMALS = 4
#: the COPY option that goes with ``binary_copy``
BINARY = " (FORMAT BINARY)"

_PG_EPOCH = np.datetime64("2000-01-01", "D")
_PGCOPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags 0, no header extension
_PGCOPY_TRAILER = b"\xff\xff"  # field count -1: end of data
# numeric(p, s) as fixed-layout base-10000 groups: 3 integer groups (values < 1e12) + fraction
# groups; numeric_recv strips leading/trailing zero groups, so stored values are identical to
# what the text path stores.
_INT_GROUPS = 3
_PRICE_GROUPS = _INT_GROUPS + 2  # 6 decimals
_VOLUME_GROUPS = _INT_GROUPS + 1  # 4 decimals
# below these, value * 10**decimals is an exact integer in float64: above, use the text path
_PRICE_LIMIT, _VOLUME_LIMIT = 1e9, 1e11
_PRICES = ("open", "high", "low", "close")


def _numeric(name: str, groups: int) -> list[tuple[str, str] | tuple[str, str, tuple[int]]]:
    return [
        (f"{name}_len", ">i4"),
        (f"{name}_ndigits", ">i2"),
        (f"{name}_weight", ">i2"),
        (f"{name}_sign", ">u2"),
        (f"{name}_dscale", ">u2"),
        (f"{name}_digits", ">i2", (groups,)),
    ]


_ROW = np.dtype(
    [
        ("nfields", ">i2"),
        ("id_len", ">i4"),
        ("id", "u1", (16,)),
        ("asset_len", ">i4"),
        ("asset", "u1", (16,)),
        ("date_len", ">i4"),
        ("date", ">i4"),
        *[f for p in _PRICES for f in _numeric(p, _PRICE_GROUPS)],
        *_numeric("volume", _VOLUME_GROUPS),
    ]
)  # 158 bytes, unpadded: exactly one binary COPY tuple


def _template() -> bytes:
    row = np.zeros(1, dtype=_ROW)
    row["nfields"], row["id_len"], row["asset_len"], row["date_len"] = 8, 16, 16, 4
    for name, groups, scale in [
        *[(p, _PRICE_GROUPS, PRICE_DECIMALS) for p in _PRICES],
        ("volume", _VOLUME_GROUPS, VOLUME_DECIMALS),
    ]:
        row[f"{name}_len"] = 8 + 2 * groups
        row[f"{name}_ndigits"] = groups
        row[f"{name}_weight"] = _INT_GROUPS - 1
        row[f"{name}_dscale"] = scale
    return row.tobytes()


_TEMPLATE = _template()


def _uuid7_block(n: int) -> np.ndarray:
    """Return n time-ordered UUIDv7 as (n, 16) bytes: now in ms, random 12 bits, counter."""
    ms = time.time_ns() // 1_000_000
    rand = os.urandom(10)
    rand_a = int.from_bytes(rand[:2], "big") & 0x0FFF
    start = int.from_bytes(rand[2:], "big") >> 4  # 60 random bits; + n never reaches bit 62
    out = np.empty((n, 2), dtype=">u8")
    out[:, 0] = (ms << 16) | 0x7000 | rand_a
    out[:, 1] = (np.uint64(start) + np.arange(n, dtype=np.uint64)) | np.uint64(1 << 63)
    return out.view(np.uint8).reshape(n, 16)


def _digits(values: np.ndarray, decimals: int, groups: int) -> np.ndarray:
    """Split |values| (any shape) into base-10000 digit groups, big-endian int16."""
    scaled = np.rint(np.abs(values) * 10.0**decimals).astype(np.int64)
    integer, fraction = np.divmod(scaled, 10**decimals)
    frac_groups = groups - _INT_GROUPS
    fraction *= 10 ** (4 * frac_groups - decimals)  # left-align the fraction in 4-digit groups
    digits = np.empty((*values.shape, groups), dtype=">i2")
    high, digits[..., 2] = np.divmod(integer, 10_000)
    digits[..., 0], digits[..., 1] = np.divmod(high, 10_000)
    for g in range(frac_groups):
        digits[..., _INT_GROUPS + g] = fraction // 10 ** (4 * (frac_groups - 1 - g)) % 10_000
    return digits


def binary_copy(bars: pd.DataFrame) -> list[bytes | bytearray] | None:
    """Encode quantized bars as binary COPY data, or None when a value needs the text path."""
    prices = bars[list(_PRICES)].to_numpy(dtype=np.float64)
    volume = bars["volume"].to_numpy(dtype=np.float64)
    if not (
        np.isfinite(prices).all()
        and np.isfinite(volume).all()
        and (np.abs(prices) < _PRICE_LIMIT).all()
        and (np.abs(volume) < _VOLUME_LIMIT).all()
    ):
        return None
    day_codes, days = pd.factorize(bars["price_date"])
    if (day_codes < 0).any():
        return None
    n = len(bars)
    buffer = bytearray(_TEMPLATE * n)
    rows = np.frombuffer(buffer, dtype=_ROW)
    rows["id"] = _uuid7_block(n)
    asset_codes, assets = pd.factorize(bars["asset_id"])
    asset_bytes = np.frombuffer(b"".join(uuid.UUID(str(a)).bytes for a in assets), np.uint8)
    rows["asset"] = asset_bytes.reshape(-1, 16)[asset_codes]
    day_numbers = (np.array(list(days), dtype="datetime64[D]") - _PG_EPOCH).astype(np.int32)
    rows["date"] = day_numbers[day_codes]
    price_digits = _digits(prices, PRICE_DECIMALS, _PRICE_GROUPS)
    for i, name in enumerate(_PRICES):
        rows[f"{name}_digits"] = price_digits[:, i]
        if (prices[:, i] < 0).any():
            rows[f"{name}_sign"] = np.where(prices[:, i] < 0, 0x4000, 0)
    rows["volume_digits"] = _digits(volume, VOLUME_DECIMALS, _VOLUME_GROUPS)
    if (volume < 0).any():
        rows["volume_sign"] = np.where(volume < 0, 0x4000, 0)
    return [_PGCOPY_HEADER, buffer, _PGCOPY_TRAILER]
