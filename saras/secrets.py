"""Secrets at rest: Fernet encryption with rotatable keys from settings.

``SARAS_SECRET_KEYS`` holds comma-separated Fernet keys, newest first: the first encrypts, all
decrypt, and ``rotate`` re-encrypts under the first. Without it, Saras uses a key file in its
data directory, which ``saras demo`` generates on first use (and says so).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from pydantic import SecretStr

from saras.settings import Settings, get_settings, private_dir

log = logging.getLogger(__name__)

KEY_FILE_NAME = "secret.key"
ENCRYPTED_JSON_FIELD = "fernet"


class SecretKeyError(RuntimeError):
    """No usable encryption key, or a value that none of the keys can decrypt."""


def generate_key() -> str:
    """Return a new Fernet key (urlsafe base64 text)."""
    return Fernet.generate_key().decode()


@dataclass(frozen=True)
class SecretBox:
    """Encrypts and decrypts secrets with the configured keys."""

    _keys: tuple[SecretStr, ...]

    def __repr__(self) -> str:
        return f"SecretBox(keys={len(self._keys)})"

    @property
    def _fernet(self) -> MultiFernet:
        return MultiFernet([Fernet(k.get_secret_value().encode()) for k in self._keys])

    def encrypt(self, plain: str | SecretStr) -> str:
        """Encrypt a secret under the newest key."""
        value = plain.get_secret_value() if isinstance(plain, SecretStr) else plain
        return self._fernet.encrypt(value.encode()).decode()

    def decrypt(self, token: str) -> SecretStr:
        """Decrypt a token with any configured key; the result stays masked."""
        try:
            return SecretStr(self._fernet.decrypt(token.encode()).decode())
        except InvalidToken as exc:
            raise SecretKeyError(
                "a stored secret cannot be decrypted with the configured SARAS_SECRET_KEYS "
                "(was a key removed before `saras keys rotate` ran?)"
            ) from exc

    def rotate(self, token: str) -> str:
        """Re-encrypt a token under the newest key."""
        try:
            return self._fernet.rotate(token.encode()).decode()
        except InvalidToken as exc:
            raise SecretKeyError("a stored secret cannot be decrypted for rotation") from exc

    def encrypt_json(self, document: dict[str, Any]) -> dict[str, str]:
        """Encrypt a JSON document into the jsonb shape stored in ``credentials``."""
        return {ENCRYPTED_JSON_FIELD: self.encrypt(json.dumps(document, sort_keys=True))}

    def decrypt_json(self, stored: dict[str, Any] | None) -> dict[str, SecretStr]:
        """Decrypt a stored ``credentials`` document; every value comes back masked."""
        if not stored:
            return {}
        token = stored.get(ENCRYPTED_JSON_FIELD)
        if not isinstance(token, str):
            raise SecretKeyError("stored credentials are not encrypted by Saras")
        plain = json.loads(self.decrypt(token).get_secret_value())
        return {str(k): SecretStr(str(v)) for k, v in plain.items()}

    def rotate_json(self, stored: dict[str, Any] | None) -> dict[str, Any] | None:
        """Re-encrypt a stored ``credentials`` document under the newest key."""
        if not stored or ENCRYPTED_JSON_FIELD not in stored:
            return stored
        return {ENCRYPTED_JSON_FIELD: self.rotate(stored[ENCRYPTED_JSON_FIELD])}


def key_file(settings: Settings | None = None) -> Path:
    """Return where the local key file lives."""
    return (settings or get_settings()).data_dir / KEY_FILE_NAME


def get_secret_box(settings: Settings | None = None, *, generate: bool = False) -> SecretBox:
    """Return a SecretBox for the configured keys (optionally generating a local key file)."""
    settings = settings or get_settings()
    if settings.secret_keys is not None:
        keys = [k.strip() for k in settings.secret_keys.get_secret_value().split(",") if k.strip()]
        if not keys:
            raise SecretKeyError("SARAS_SECRET_KEYS is set but holds no key")
        return _box(keys, "SARAS_SECRET_KEYS")
    path = key_file(settings)
    if not path.exists():
        if not generate:
            raise SecretKeyError(
                f"no encryption key: set SARAS_SECRET_KEYS or create {path} "
                "(`saras keys generate` prints a new key)"
            )
        private_dir(path.parent)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(generate_key() + "\n")
        log.info(
            "generated a local encryption key at %s (set SARAS_SECRET_KEYS in production)", path
        )
    keys = [k.strip() for k in path.read_text().splitlines() if k.strip()]
    return _box(keys, str(path))


def _box(keys: list[str], origin: str) -> SecretBox:
    for i, key in enumerate(keys):
        try:
            Fernet(key.encode())
        except ValueError as exc:
            raise SecretKeyError(f"key #{i + 1} in {origin} is not a valid Fernet key") from exc
    return SecretBox(tuple(SecretStr(k) for k in keys))
