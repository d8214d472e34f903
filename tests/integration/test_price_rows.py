"""A bad price row rejects that row with its reason, never its batch, on both databases."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from models import Asset, PriceHistory
from saras.db import make_engine
from saras.services import admin
from saras.services.prices import ingest_batch, plan_ingestion

NOW = datetime(2024, 3, 9, 12, tzinfo=UTC)
GOOD = "Date,Open,High,Low,Close,Volume\n2024-03-04,10,11,9,10.5,100\n2024-03-05,10,11,9,10.5,100\n"


@pytest.fixture(params=["postgresql", "sqlite"])
def committed(request: pytest.FixtureRequest, migrated_url: Any) -> Iterator[Engine]:
    """A fresh migrated database whose commits are real (ingestion commits per batch)."""
    engine = make_engine(migrated_url(request.param, "saras_price_rows"))
    yield engine
    engine.dispose()


def test_one_price_of_1e30_rejects_its_row_and_the_batch_is_written(
    committed: Engine, tmp_path: Path
) -> None:
    symbols = [f"S{i:03d}" for i in range(20)]
    with Session(committed) as session, session.begin():
        for symbol in symbols:
            admin.add_asset(session, symbol, "NYSE", "USD")
    for symbol in symbols:
        (tmp_path / f"{symbol}.csv").write_text(GOOD)
    (tmp_path / "S007.csv").write_text(GOOD + "2024-03-06,10,1e30,9,10.5,100\n")
    with Session(committed) as session:
        items, _ = plan_ingestion(
            session, now=NOW, symbols=symbols, start=date(2024, 3, 4), end=date(2024, 3, 6)
        )
    items = [i.__class__(**{**i.__dict__, "source": "csv"}) for i in items]

    reports = {
        r.symbol: r
        for r in ingest_batch(committed, items, now=NOW, source_options={"path": str(tmp_path)})
    }

    assert reports["S007"].rejected == 1
    assert reports["S007"].rejected_reasons == {"out_of_range": 1}
    assert reports["S007"].inserted == 2 and reports["S007"].error is None
    assert all(reports[s].inserted == 2 for s in symbols)
    with Session(committed) as session:
        assert session.scalar(select(func.count()).select_from(PriceHistory)) == 40
        top = session.scalar(select(func.max(PriceHistory.high_price)))
        assert top is not None and top < 100


def test_day_month_dates_are_not_stored_on_the_wrong_days(
    committed: Engine, tmp_path: Path
) -> None:
    with Session(committed) as session, session.begin():
        admin.add_asset(session, "INFY", "NSE", "INR")
    (tmp_path / "INFY.csv").write_text(
        "Date,Open,High,Low,Close,Volume\n02-01-2024,10,11,9,10.5,100\n03-01-2024,10,11,9,10.5,100\n"
    )
    with Session(committed) as session:
        items, _ = plan_ingestion(
            session,
            now=NOW,
            symbols=["INFY"],
            start=date(2024, 1, 1),
            end=date(2024, 3, 1),
            source="csv",
        )
    (report,) = ingest_batch(committed, items, now=NOW, source_options={"path": str(tmp_path)})
    assert report.error is not None and "'02-01-2024' is not ISO" in report.error
    with Session(committed) as session:
        assert session.scalar(select(func.count()).select_from(PriceHistory)) == 0

    declared = {"path": str(tmp_path), "date_format": "%d-%m-%Y"}
    (report,) = ingest_batch(committed, items, now=NOW, source_options=declared)
    assert report.inserted == 2
    with Session(committed) as session:
        days = session.scalars(select(PriceHistory.price_date).order_by(PriceHistory.price_date))
        assert list(days) == [date(2024, 1, 2), date(2024, 1, 3)]
        assert session.scalar(select(func.count()).select_from(Asset)) == 1
