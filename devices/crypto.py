"""Field encryption of sensitive registry data at rest: AES-256-GCM with a keyring.

A sealed value is ``b"A1" | len(key_id) | key_id | nonce (12 bytes) | ciphertext+tag``. The key
id travels with the value, so after a new key is made current (``ANXIN_REGISTRY__CURRENT_KEY_ID``)
old rows stay readable with the old key while new writes use the new one; the repository's
``rotate_keys`` then re-encrypts every row with the current key, after which the old key can be
removed from ``ANXIN_REGISTRY__FIELD_KEYS``. The associated data (``context``) names the table,
column and row, so a ciphertext copied into another row or column does not decrypt.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from core.settings import RegistrySettings
from devices.registry import RegistryError

_MAGIC: Final = b"A1"
_NONCE_BYTES: Final = 12


class CryptoError(RegistryError):
    """A value that cannot be decrypted: unknown key id, wrong context, or tampered bytes."""


@dataclass(frozen=True)
class Keyring:
    """Keys by id; ``current`` is the id new writes use."""

    keys: Mapping[str, bytes]
    current: str
    _aead: dict[str, AESGCM] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.current not in self.keys:
            raise CryptoError(
                f"Current key id {self.current!r} is not in the keyring {sorted(self.keys)}."
            )
        for key_id, key in self.keys.items():
            if len(key) != 32 or not 1 <= len(key_id.encode()) <= 255:
                raise CryptoError(f"Key {key_id!r} is not 32 bytes.")
            self._aead[key_id] = AESGCM(key)

    @classmethod
    def from_settings(cls, settings: RegistrySettings) -> Keyring:
        keys = {k: base64.b64decode(v.get_secret_value()) for k, v in settings.field_keys.items()}
        return cls(keys, settings.current_key_id)

    def seal(self, plaintext: bytes, context: str) -> bytes:
        """Encrypt with the current key; ``context`` is authenticated, not stored."""
        kid = self.current.encode()
        nonce = os.urandom(_NONCE_BYTES)
        body = self._aead[self.current].encrypt(nonce, plaintext, context.encode())
        return _MAGIC + bytes([len(kid)]) + kid + nonce + body

    def key_id_of(self, sealed: bytes) -> str:
        if sealed[:2] != _MAGIC or len(sealed) < 3:
            raise CryptoError("Value is not a sealed field (bad header).")
        n = sealed[2]
        return sealed[3 : 3 + n].decode("ascii", errors="replace")

    def open(self, sealed: bytes, context: str) -> bytes:
        """Decrypt with the key the value names.

        Raises:
            CryptoError: unknown key id, another context, or altered bytes.
        """
        kid = self.key_id_of(sealed)
        aead = self._aead.get(kid)
        if aead is None:
            raise CryptoError(
                f"Value was sealed with key {kid!r}, which is not in the keyring {sorted(self.keys)}."
            )
        start = 3 + sealed[2]
        nonce, body = sealed[start : start + _NONCE_BYTES], sealed[start + _NONCE_BYTES :]
        try:
            return aead.decrypt(nonce, body, context.encode())
        except InvalidTag as exc:
            raise CryptoError(
                f"Value sealed with key {kid!r} does not decrypt for {context!r}."
            ) from exc

    def seal_text(self, text: str | None, context: str) -> bytes | None:
        return None if text is None else self.seal(text.encode(), context)

    def open_text(self, sealed: bytes | None, context: str) -> str | None:
        return None if sealed is None else self.open(bytes(sealed), context).decode()

    def needs_rotation(self, sealed: bytes) -> bool:
        return self.key_id_of(sealed) != self.current


def new_key() -> str:
    """A fresh key for ``ANXIN_REGISTRY__FIELD_KEYS``: base64 of 32 random bytes."""
    return base64.b64encode(os.urandom(32)).decode()
