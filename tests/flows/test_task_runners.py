"""SARAS_TASK_RUNNER picks the flows' task runner when a run starts: threads or a Dask cluster."""

from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import Engine, delete, select
from sqlalchemy.orm import Session

from flows.kit.runners import SarasTaskRunner, TaskRunnerSettings, build_task_runner
from flows.price_history import ingest_price_history
from models import Asset, PriceHistory
from tests import factories as f

SYMBOLS = ("AAA", "BBB", "CCC", "DDD")
START, END = date(2024, 1, 2), date(2024, 1, 31)


def _rows(engine: Engine) -> list[tuple[object, ...]]:
    with Session(engine) as db:
        return [
            tuple(r)
            for r in db.execute(
                select(
                    Asset.symbol,
                    PriceHistory.price_date,
                    PriceHistory.open_price,
                    PriceHistory.high_price,
                    PriceHistory.low_price,
                    PriceHistory.close_price,
                    PriceHistory.volume,
                )
                .join(Asset, Asset.id == PriceHistory.asset_id)
                .order_by(Asset.symbol, PriceHistory.price_date)
            )
        ]


def _ingest() -> dict[str, int]:
    state = ingest_price_history(
        symbols=list(SYMBOLS),
        start=START,
        end=END,
        source="simulated",
        batch_size=1,
        return_state=True,
    )
    assert state.is_completed() and state.name == "Completed", state.message
    totals: dict[str, int] = state.result()["totals"]  # type: ignore[index]
    return totals


def test_the_setting_picks_the_runner_and_nothing_is_read_at_import(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    assert SarasTaskRunner().name == "saras"  # nothing chosen before a run starts
    monkeypatch.delenv("SARAS_TASK_RUNNER", raising=False)
    assert isinstance(build_task_runner(), ThreadPoolTaskRunner)
    monkeypatch.setenv("SARAS_TASK_RUNNER", "dask")
    monkeypatch.setenv("SARAS_DASK_ADDRESS", "tcp://127.0.0.1:8786")
    runner = build_task_runner()
    assert isinstance(runner, DaskTaskRunner) and runner.address == "tcp://127.0.0.1:8786"
    monkeypatch.setenv("SARAS_TASK_RUNNER", "spark")
    with pytest.raises(ValueError, match="task_runner"):
        TaskRunnerSettings()


@pytest.mark.slow
@pytest.mark.postgres
def test_price_ingestion_on_a_dask_cluster_writes_what_threads_write(
    pg_flow_db: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Session(pg_flow_db) as db, db.begin():
        for symbol in SYMBOLS:
            f.asset(db, symbol, "NYSE")
    monkeypatch.delenv("SARAS_TASK_RUNNER", raising=False)
    totals = _ingest()
    assert totals["inserted"] == len(SYMBOLS) * 21
    on_threads = _rows(pg_flow_db)
    with pg_flow_db.begin() as conn:
        conn.execute(delete(PriceHistory))

    monkeypatch.setenv("SARAS_TASK_RUNNER", "dask")
    monkeypatch.delenv("SARAS_DASK_ADDRESS", raising=False)
    monkeypatch.setenv("SARAS_DASK_WORKERS", "2")
    seen: list[str] = []
    original = SarasTaskRunner.__enter__

    def spy(self: SarasTaskRunner) -> SarasTaskRunner:
        entered = original(self)
        seen.append(self.name)
        return entered

    monkeypatch.setattr(SarasTaskRunner, "__enter__", spy)
    totals = _ingest()
    assert seen == ["dask"]
    assert totals["inserted"] == len(SYMBOLS) * 21
    assert _rows(pg_flow_db) == on_threads
