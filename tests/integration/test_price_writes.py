"""The price write path stores exactly the quantized values, binary COPY or text alike."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from models import PriceHistory
from saras.repositories import pgcopy
from saras.repositories.prices import write_bars
from tests import factories as f

TRICKY = [0.000001, 0.0000004, 1.0000005, 123.4567895, 99.99, 5000.5, 587654321.123456, 0.5]


def _bars(asset_id: str, values: list[float], start: date) -> pd.DataFrame:
    n = len(values)
    v = np.array(values)
    return pd.DataFrame(
        {
            "asset_id": [asset_id] * n,
            "price_date": [start + timedelta(days=i) for i in range(n)],
            "open": v,
            "high": v * 1.5,
            "low": v * 0.5,
            "close": v,
            "volume": np.array([12345.67891, 0.0, 99999999999.99, 1.0, 7.5, 3.0, 1e10, 2.0][:n]),
        }
    )


def _stored(db: Session, asset_id: str) -> list[tuple[Decimal, Decimal, Decimal]]:
    rows = db.execute(
        select(PriceHistory.open_price, PriceHistory.high_price, PriceHistory.volume)
        .where(PriceHistory.asset_id == asset_id)
        .order_by(PriceHistory.price_date)
    ).all()
    return [tuple(Decimal(str(x)) for x in r) for r in rows]


def _expected(bars: pd.DataFrame) -> list[tuple[Decimal, Decimal, Decimal]]:
    return [
        (Decimal(f"{o:.6f}"), Decimal(f"{h:.6f}"), Decimal(f"{v:.4f}"))
        for o, h, v in bars[["open", "high", "volume"]]
        .round({"open": 6, "high": 6, "volume": 4})
        .itertuples(index=False)
    ]


def test_binary_copy_stores_the_quantized_values(pg_db: Session) -> None:
    asset = f.asset(pg_db)
    bars = _bars(asset.id, TRICKY, date(2024, 1, 1))
    assert pgcopy.binary_copy(bars) is not None  # these all fit the binary layout
    counts = write_bars(pg_db.connection(), bars)
    assert counts[asset.id].inserted == len(TRICKY)
    assert _stored(pg_db, asset.id) == _expected(bars)
    ids = pg_db.scalars(select(PriceHistory.id).where(PriceHistory.asset_id == asset.id)).all()
    assert all(i.version == 7 for i in ids) and len(set(ids)) == len(ids)
    # an identical re-run through the staged merge rewrites nothing
    again = write_bars(pg_db.connection(), bars)
    assert (again[asset.id].inserted, again[asset.id].updated) == (0, 0)


def test_values_beyond_the_binary_layout_take_the_text_path(pg_db: Session) -> None:
    asset = f.asset(pg_db)
    bars = _bars(asset.id, [1e9 + 0.25, 2.0], date(2024, 2, 1))
    assert pgcopy.binary_copy(bars) is None
    write_bars(pg_db.connection(), bars)
    assert _stored(pg_db, asset.id) == _expected(bars)


@pytest.mark.parametrize("backend", ["sqlite"])
def test_portable_path_counts_inserts_updates_and_unchanged(sqlite_engine, backend: str) -> None:  # type: ignore[no-untyped-def]
    with Session(sqlite_engine) as db, db.begin():
        asset = f.asset(db)
        bars = _bars(asset.id, [10.0, 11.0, 12.0], date(2024, 3, 1))
        assert write_bars(db.connection(), bars)[asset.id].inserted == 3
        bars.loc[1, "close"] = 11.5
        counts = write_bars(db.connection(), bars)[asset.id]
        assert (counts.inserted, counts.updated, counts.unchanged) == (0, 1, 2)
        db.rollback()
