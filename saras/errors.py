"""Errors Saras raises for bad input and unusable state; each message names the culprit."""

from __future__ import annotations


class SarasError(Exception):
    """Base class of Saras' own errors."""


class InvalidInputError(SarasError, ValueError):
    """Input that Saras refuses; nothing was changed."""


class NotFoundError(SarasError, LookupError):
    """A named thing (user, asset, smallcase, connection, run) does not exist."""


class ConnectionSelectionError(SarasError):
    """No connection, or more than one, matches a broker selection."""
