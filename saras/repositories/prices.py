"""Bulk writes of daily bars into ``price_history``, and the revaluation that follows.

PostgreSQL: a batch whose (asset, day) keys are all new is COPYed straight into the table (the
initial load and the nightly increment); otherwise it is COPYed into a temporary staging table
and merged with one ``INSERT ... ON CONFLICT DO UPDATE`` that rewrites only rows whose values
changed, so an identical re-run writes nothing. SQLite: the same result through a portable diff.
Either way a batch is written in the caller's transaction: whole or not at all.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, cast

import numpy as np
import pandas as pd
from sqlalchemy import Connection, Table, bindparam, select, text
from uuid_utils.compat import uuid7

from models import PriceHistory
from models.base import utcnow
from saras.repositories import pgcopy

PRICE_DECIMALS = 6
VOLUME_DECIMALS = 4
#: columns of the frame ``write_bars`` takes
WRITE_COLUMNS = ("asset_id", "price_date", "open", "high", "low", "close", "volume")
_VALUE_SQL = ("open_price", "high_price", "low_price", "close_price", "volume")


@dataclass
class WriteCounts:
    """What one write did to one asset's rows."""

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0


def quantize_bars(bars: pd.DataFrame) -> pd.DataFrame:
    """Round values to the stored scales, so comparisons with stored rows are exact."""
    out = bars.copy()
    for col in ("open", "high", "low", "close"):
        out[col] = out[col].round(PRICE_DECIMALS)
    out["volume"] = out["volume"].round(VOLUME_DECIMALS)
    return out


def write_bars(conn: Connection, bars: pd.DataFrame) -> dict[uuid.UUID, WriteCounts]:
    """Upsert bars (``WRITE_COLUMNS``) on (asset_id, price_date); return counts per asset."""
    if bars.empty:
        return {}
    bars = quantize_bars(bars.loc[:, list(WRITE_COLUMNS)])
    if conn.dialect.name == "postgresql":
        return _write_postgres(conn, bars)
    return _write_portable(conn, bars)


# --- PostgreSQL -------------------------------------------------------------------------------


def _copy_text(bars: pd.DataFrame, with_ids: bool) -> bytes:
    frame = bars
    if with_ids:
        ids = np.fromiter((str(uuid7()) for _ in range(len(bars))), dtype=object, count=len(bars))
        frame = bars.assign(id=ids).loc[:, ["id", *WRITE_COLUMNS]]
    buffer = io.StringIO()
    frame.to_csv(
        buffer, sep="\t", header=False, index=False, float_format="%.6f", lineterminator="\n"
    )
    return buffer.getvalue().encode()


def _copy(cursor: Any, statement: str, bars: pd.DataFrame) -> None:
    """COPY bars with their new ids: binary when every value fits, else text."""
    parts = pgcopy.binary_copy(bars)
    if parts is None:
        with cursor.copy(statement) as copy:
            copy.write(_copy_text(bars, with_ids=True))
        return
    with cursor.copy(statement + pgcopy.BINARY) as copy:
        for part in parts:
            copy.write(part)


def _has_overlap(conn: Connection, bars: pd.DataFrame) -> bool:
    asset_ids = [str(a) for a in pd.unique(bars["asset_id"])]
    row = conn.execute(
        text(
            "SELECT 1 FROM price_history WHERE asset_id = ANY(CAST(:ids AS uuid[])) "
            "AND price_date BETWEEN :lo AND :hi LIMIT 1"
        ),
        {"ids": asset_ids, "lo": min(bars["price_date"]), "hi": max(bars["price_date"])},
    ).first()
    return row is not None


def _write_postgres(conn: Connection, bars: pd.DataFrame) -> dict[uuid.UUID, WriteCounts]:
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    columns = "id, asset_id, price_date, open_price, high_price, low_price, close_price, volume"
    if not _has_overlap(conn, bars):
        # Every key is new: straight into the table, no staging and no merge.
        _copy(cursor, f"COPY price_history ({columns}) FROM STDIN", bars)
        sizes = bars.groupby("asset_id", sort=False).size()
        return {uuid.UUID(str(a)): WriteCounts(inserted=int(n)) for a, n in sizes.items()}

    cursor.execute(
        "CREATE TEMP TABLE IF NOT EXISTS stage_price_history "
        "(LIKE price_history INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
    )
    cursor.execute("TRUNCATE stage_price_history")
    _copy(cursor, f"COPY stage_price_history ({columns}) FROM STDIN", bars)
    changed = " OR ".join(f"p.{c} IS DISTINCT FROM EXCLUDED.{c}" for c in _VALUE_SQL)
    assignments = ", ".join(f"{c} = EXCLUDED.{c}" for c in _VALUE_SQL)
    cursor.execute(
        f"""
        WITH merged AS (
            INSERT INTO price_history AS p ({columns}, created_at)
            SELECT {columns}, now() FROM stage_price_history
            ON CONFLICT (asset_id, price_date) DO UPDATE SET {assignments}
            WHERE {changed}
            RETURNING p.asset_id, (p.xmax = 0) AS inserted
        )
        SELECT asset_id, count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted)
        FROM merged GROUP BY asset_id
        """
    )
    written = {row[0]: (int(row[1]), int(row[2])) for row in cursor.fetchall()}
    sizes = bars.groupby("asset_id", sort=False).size()
    out = {}
    for asset, n in sizes.items():
        key = uuid.UUID(str(asset))
        inserted, updated = written.get(key, (0, 0))
        out[key] = WriteCounts(inserted, updated, int(n) - inserted - updated)
    cursor.execute("TRUNCATE stage_price_history")
    return out


# --- SQLite and anything else -----------------------------------------------------------------


def _write_portable(conn: Connection, bars: pd.DataFrame) -> dict[uuid.UUID, WriteCounts]:
    asset_ids = [uuid.UUID(str(a)) for a in pd.unique(bars["asset_id"])]
    table = cast(Table, PriceHistory.__table__)
    existing_rows = conn.execute(
        select(table.c.asset_id, table.c.price_date, *(table.c[c] for c in _VALUE_SQL)).where(
            table.c.asset_id.in_(asset_ids),
            table.c.price_date.between(min(bars["price_date"]), max(bars["price_date"])),
        )
    ).all()
    existing = {
        (str(r[0]), r[1]): tuple(round(float(v), PRICE_DECIMALS) for v in r[2:])
        for r in existing_rows
    }
    out: dict[uuid.UUID, WriteCounts] = {a: WriteCounts() for a in asset_ids}
    inserts: list[dict[str, object]] = []
    updates: list[dict[str, object]] = []
    now = utcnow()
    for row in bars.itertuples(index=False):
        asset = uuid.UUID(str(row.asset_id))
        values = (row.open, row.high, row.low, row.close, row.volume)
        stored = existing.get((str(asset), row.price_date))
        record = {
            "asset_id": asset,
            "price_date": row.price_date,
            **{c: float(v) for c, v in zip(_VALUE_SQL, values, strict=True)},
        }
        if stored is None:
            inserts.append({"id": uuid7(), "created_at": now, **record})
            out[asset].inserted += 1
        elif stored != tuple(round(float(v), PRICE_DECIMALS) for v in values):
            updates.append({"b_asset_id": asset, "b_price_date": row.price_date, **record})
            out[asset].updated += 1
        else:
            out[asset].unchanged += 1
    if inserts:
        conn.execute(table.insert(), inserts)
    if updates:
        conn.execute(
            table.update()
            .where(
                table.c.asset_id == bindparam("b_asset_id"),
                table.c.price_date == bindparam("b_price_date"),
            )
            .values({c: bindparam(c) for c in _VALUE_SQL}),
            [{k: v for k, v in u.items() if k not in ("asset_id", "price_date")} for u in updates],
        )
    return out


# --- reads ------------------------------------------------------------------------------------


def last_stored_dates(conn: Connection, asset_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, date]:
    """Return each asset's latest stored price date (assets with no prices are absent)."""
    if not asset_ids:
        return {}
    table = cast(Table, PriceHistory.__table__)
    rows = conn.execute(
        select(table.c.asset_id, text("max(price_date)"))
        .where(table.c.asset_id.in_(list(asset_ids)))
        .group_by(table.c.asset_id)
    ).all()
    return {
        uuid.UUID(str(a)): d if isinstance(d, date) else date.fromisoformat(str(d)) for a, d in rows
    }


def stored_closes(
    conn: Connection, keys: Iterable[tuple[uuid.UUID, date]]
) -> dict[tuple[uuid.UUID, date], float]:
    """Return stored closes for (asset, day) keys."""
    keys = list(keys)
    if not keys:
        return {}
    table = cast(Table, PriceHistory.__table__)
    asset_ids = sorted({k[0] for k in keys})
    days = sorted({k[1] for k in keys})
    rows = conn.execute(
        select(table.c.asset_id, table.c.price_date, table.c.close_price).where(
            table.c.asset_id.in_(asset_ids), table.c.price_date.in_(days)
        )
    ).all()
    wanted = set(keys)
    out = {}
    for asset, day, close in rows:
        key = (
            uuid.UUID(str(asset)),
            day if isinstance(day, date) else date.fromisoformat(str(day)),
        )
        if key in wanted:
            out[key] = float(close)
    return out


def revalue_holdings(conn: Connection) -> int:
    """Revalue holdings at each asset's latest close, then portfolio totals; set-based."""
    own = "ph.asset_id = portfolio_holdings.asset_id"
    latest = (
        f"(SELECT ph.close_price FROM price_history ph WHERE {own} "
        "ORDER BY ph.price_date DESC LIMIT 1)"
    )
    result = conn.execute(
        text(
            f"""
            UPDATE portfolio_holdings SET
                current_price = {latest},
                total_value = round(quantity * {latest}, 4),
                unrealized_pnl =
                    round(quantity * ({latest} - coalesce(average_price, {latest})), 4),
                updated_at = :now
            WHERE EXISTS (SELECT 1 FROM price_history ph WHERE {own})
            """
        ),
        {"now": utcnow()},
    )
    conn.execute(
        text(
            """
            UPDATE portfolios SET
                total_value = cash_balance + coalesce((
                    SELECT sum(h.total_value) FROM portfolio_holdings h
                    WHERE h.portfolio_id = portfolios.id), 0),
                updated_at = :now
            """
        ),
        {"now": utcnow()},
    )
    return int(result.rowcount or 0)


def first_stored_dates(conn: Connection, asset_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, date]:
    """Return each asset's earliest stored price date (assets with no prices are absent)."""
    if not asset_ids:
        return {}
    table = cast(Table, PriceHistory.__table__)
    rows = conn.execute(
        select(table.c.asset_id, text("min(price_date)"))
        .where(table.c.asset_id.in_(list(asset_ids)))
        .group_by(table.c.asset_id)
    ).all()
    return {
        uuid.UUID(str(a)): d if isinstance(d, date) else date.fromisoformat(str(d)) for a, d in rows
    }
