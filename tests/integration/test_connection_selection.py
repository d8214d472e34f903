"""The broker selection query: by alias, or the single active connection of a broker type."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from saras.errors import ConnectionSelectionError
from saras.repositories.connections import create_connection, next_alias, select_connection
from tests import factories as f


def test_aliases_are_generated_per_user_and_broker(db: Session) -> None:
    u, other = f.user(db), f.user(db)
    first = create_connection(db, user_id=u.id, broker_type="alpaca")
    second = create_connection(db, user_id=u.id, broker_type="alpaca", paper_trading=False)
    kite = create_connection(db, user_id=u.id, broker_type="zerodha")
    theirs = create_connection(db, user_id=other.id, broker_type="alpaca")
    assert (first.alias, second.alias, kite.alias, theirs.alias) == (
        "alpaca_primary",
        "alpaca_2",
        "zerodha_primary",
        "alpaca_primary",
    )
    assert next_alias(db, u.id, "alpaca") == "alpaca_3"


def test_by_alias(db: Session) -> None:
    u = f.user(db)
    c = create_connection(db, user_id=u.id, broker_type="alpaca", alias="us-main")
    assert select_connection(db, u.id, alias="us-main").id == c.id


def test_alias_of_another_user_never_matches(db: Session) -> None:
    u, other = f.user(db), f.user(db)
    create_connection(db, user_id=other.id, broker_type="alpaca", alias="shared-name")
    with pytest.raises(ConnectionSelectionError, match="has no broker connection 'shared-name'"):
        select_connection(db, u.id, alias="shared-name")


def test_inactive_alias_is_refused_with_its_status(db: Session) -> None:
    u = f.user(db)
    c = create_connection(db, user_id=u.id, broker_type="zerodha")
    c.status = "expired"
    db.flush()
    with pytest.raises(ConnectionSelectionError, match="is expired, not active"):
        select_connection(db, u.id, alias=c.alias)


def test_single_active_connection_of_a_type_paper_or_live(db: Session) -> None:
    u = f.user(db)
    paper = create_connection(db, user_id=u.id, broker_type="alpaca", paper_trading=True)
    live = create_connection(db, user_id=u.id, broker_type="alpaca", paper_trading=False)
    inactive = create_connection(db, user_id=u.id, broker_type="alpaca", paper_trading=True)
    inactive.status = "inactive"
    db.flush()
    assert select_connection(db, u.id, broker_type="alpaca", paper_trading=True).id == paper.id
    assert select_connection(db, u.id, broker_type="alpaca", paper_trading=False).id == live.id
    with pytest.raises(
        ConnectionSelectionError,
        match=r"2 active paper or live alpaca connections \(alpaca_2, alpaca_primary\)",
    ):
        select_connection(db, u.id, broker_type="alpaca")


def test_none_of_the_type(db: Session) -> None:
    u = f.user(db)
    create_connection(db, user_id=u.id, broker_type="alpaca", paper_trading=True)
    with pytest.raises(ConnectionSelectionError, match="no active live alpaca connection"):
        select_connection(db, u.id, broker_type="alpaca", paper_trading=False)
    with pytest.raises(ConnectionSelectionError, match="no active paper or live zerodha"):
        select_connection(db, u.id, broker_type="zerodha")


def test_needs_alias_or_type(db: Session) -> None:
    with pytest.raises(ConnectionSelectionError, match="by alias or by broker type"):
        select_connection(db, f.user(db).id)


def test_paper_or_live_is_what_the_connection_reaches_not_its_flag(db: Session) -> None:
    u = f.user(db)
    lying = create_connection(
        db,
        user_id=u.id,
        broker_type="alpaca",
        alias="says-paper",
        paper_trading=True,
        connection_metadata={"base_url": "https://api.alpaca.markets"},
    )
    paper = create_connection(db, user_id=u.id, broker_type="alpaca", alias="real-paper")
    assert select_connection(db, u.id, broker_type="alpaca", paper_trading=True).id == paper.id
    assert select_connection(db, u.id, broker_type="alpaca", paper_trading=False).id == lying.id
    with pytest.raises(ConnectionSelectionError, match="reaches a live account, not paper"):
        select_connection(db, u.id, alias="says-paper", paper_trading=True)
    with pytest.raises(ConnectionSelectionError, match="'real-paper' reaches paper, not live"):
        select_connection(db, u.id, alias="real-paper", paper_trading=False)
    assert select_connection(db, u.id, alias="says-paper").id == lying.id
