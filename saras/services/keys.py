"""Key rotation: re-encrypt every stored broker secret under the newest key."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from models import UserBrokerConnection
from saras.secrets import SecretBox


def rotate_all(session: Session, box: SecretBox) -> int:
    """Re-encrypt api keys, secrets and credentials of every connection; return how many."""
    count = 0
    for connection in session.scalars(select(UserBrokerConnection).with_for_update()):
        changed = False
        if connection.api_key:
            connection.api_key = box.rotate(connection.api_key)
            changed = True
        if connection.api_secret:
            connection.api_secret = box.rotate(connection.api_secret)
            changed = True
        if connection.credentials:
            connection.credentials = box.rotate_json(connection.credentials)
            changed = True
        count += changed
    session.flush()
    return count
