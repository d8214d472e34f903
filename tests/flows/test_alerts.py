"""The snapshot flow announces reconciliation differences as a Prefect event (for the alerts)."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

import flows.kit.alerts
from models import UserBrokerConnection
from saras.brokers.paper import PaperBroker
from saras.services.brokers import open_broker
from tests.flows.test_position_snapshot import DAY, _assets, _investor, _run, _trade_on_paper


@pytest.mark.postgres
def test_differences_emit_one_event_and_a_clean_book_none(
    pg_flow_db: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    emitted: list[dict[str, Any]] = []
    real = flows.kit.alerts.emit_event

    def recording(**kw: Any) -> Any:
        emitted.append(kw)
        return real(**kw)

    monkeypatch.setattr(flows.kit.alerts, "emit_event", recording)
    _assets(pg_flow_db, {"AAA": "100"})
    inv, conn = _investor(pg_flow_db, alias="paper_drifted")
    _trade_on_paper(pg_flow_db, inv, conn, [("AAA", "5")])

    state, _ = _run(snapshot_date=DAY)
    assert state.name == "Completed" and emitted == []

    with Session(pg_flow_db) as db:
        row = db.get(UserBrokerConnection, uuid.UUID(conn))
        assert row is not None
        db.expunge(row)
    broker = open_broker(pg_flow_db, row)
    assert isinstance(broker, PaperBroker)
    broker.set_position("AAA", Decimal(7))  # a trade made outside Saras
    state, _ = _run(snapshot_date=DAY)
    assert [e["event"] for e in emitted] == ["saras.reconciliation.differences"]
    assert emitted[0]["resource"]["prefect.resource.id"] == f"saras.reconciliation.{DAY}"
    assert emitted[0]["payload"] == {
        "snapshot_date": DAY.isoformat(),
        "differences": 1,
        "connections": ["paper_drifted"],
    }
