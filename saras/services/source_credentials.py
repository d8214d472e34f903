"""Market-data credentials: from a stored, encrypted connection or from settings, never a parameter.

Flow parameters are stored in clear in Prefect's database and shown in its UI, so
``source_options`` may not carry a secret. A source that needs one gets it here, in the process
that fetches:

* ``source_options={"connection": "user@example.com/alias"}``: the secrets of that user's broker
  connection (decrypted with the configured keys), and its endpoint overrides (``data_url`` for
  Alpaca, ``root`` for Kite) unless the options name their own;
* otherwise settings: ``SARAS_ALPACA_API_KEY`` / ``SARAS_ALPACA_API_SECRET`` and
  ``SARAS_KITE_API_KEY`` / ``SARAS_KITE_ACCESS_TOKEN`` (``SecretStr``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import SecretStr
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from saras.errors import InvalidInputError
from saras.settings import Settings, get_settings

#: option names that would put a secret into a flow parameter
SECRET_OPTIONS = ("api_key", "api_secret", "access_token", "secret_key", "password", "token")
#: which connection secret and endpoint each source takes
_SOURCE_SECRETS: dict[str, tuple[tuple[str, str], ...]] = {
    "alpaca": (("api_key", "api_key"), ("api_secret", "api_secret")),
    "kite": (("api_key", "api_key"), ("access_token", "access_token")),
}
_SOURCE_BROKER = {"alpaca": "alpaca", "kite": "zerodha"}
_SOURCE_ENDPOINT = {"alpaca": ("data_url", "data_url"), "kite": ("root", "root")}


def check_source_options(options: Mapping[str, Any] | None) -> None:
    """Refuse ``source_options`` that carry a secret (they would be stored in clear)."""
    for key in options or {}:
        if str(key).lower() in SECRET_OPTIONS:
            raise InvalidInputError(
                f"source_options {key!r}: secrets never go in flow parameters (Prefect stores "
                "them in clear); store them in a broker connection and pass "
                "source_options={'connection': 'user@example.com/alias'}, or set "
                "SARAS_ALPACA_API_KEY/SARAS_ALPACA_API_SECRET or "
                "SARAS_KITE_API_KEY/SARAS_KITE_ACCESS_TOKEN"
            )
    connection = (options or {}).get("connection")
    if connection is not None:
        _split(connection)


def _split(reference: object) -> tuple[str, str]:
    if not isinstance(reference, str) or reference.count("/") != 1:
        raise InvalidInputError(
            f"source_options 'connection' {reference!r}: expected 'user@example.com/alias'"
        )
    user, alias = (part.strip() for part in reference.split("/"))
    if not user or not alias:
        raise InvalidInputError(
            f"source_options 'connection' {reference!r}: expected 'user@example.com/alias'"
        )
    return user, alias


def resolve_source_options(
    engine: Engine,
    source: str,
    options: Mapping[str, Any] | None,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Return the options to build ``source`` with, its credentials filled in (masked)."""
    check_source_options(options)
    resolved = {k: v for k, v in (options or {}).items() if k != "connection"}
    wanted = _SOURCE_SECRETS.get(source)
    reference = (options or {}).get("connection")
    if reference is not None:
        if wanted is None:
            raise InvalidInputError(
                f"source_options 'connection': source {source!r} takes no credentials"
            )
        resolved.update(_from_connection(engine, source, reference, resolved))
    elif wanted is not None:
        resolved.update(_from_settings(source, settings or get_settings()))
    return resolved


def _from_connection(
    engine: Engine, source: str, reference: str, given: Mapping[str, Any]
) -> dict[str, Any]:
    from saras.repositories.connections import select_connection
    from saras.services.admin import get_user
    from saras.services.brokers import connection_credentials

    email, alias = _split(reference)
    with Session(engine) as session:
        connection = select_connection(session, get_user(session, email).id, alias=alias)
        if connection.broker_type != _SOURCE_BROKER[source]:
            raise InvalidInputError(
                f"source_options 'connection' {reference!r}: a {connection.broker_type} "
                f"connection cannot feed the {source} source"
            )
        credentials = connection_credentials(connection, None)
        metadata = dict(connection.connection_metadata or {})
    out: dict[str, Any] = {}
    for option, field in _SOURCE_SECRETS[source]:
        value = getattr(credentials, field)
        if value is None:
            raise InvalidInputError(
                f"source_options 'connection' {reference!r}: the connection stores no {field}"
            )
        out[option] = value
    option, key = _SOURCE_ENDPOINT[source]
    if option not in given and metadata.get(key):
        out[option] = metadata[key]
    return out


def _from_settings(source: str, settings: Settings) -> dict[str, SecretStr]:
    values = {
        "alpaca": {"api_key": settings.alpaca_api_key, "api_secret": settings.alpaca_api_secret},
        "kite": {"api_key": settings.kite_api_key, "access_token": settings.kite_access_token},
    }[source]
    return {k: v for k, v in values.items() if v is not None}
