"""The signing key ring: Ed25519 keys that sign access tokens (EdDSA JWTs) and the JWKS that
publishes their public halves.

One key signs at a time. A rotated-out key stops signing at once but stays in the JWKS until
every token it signed has expired (retired_at + access-token TTL + a grace minute), so
verifiers that cached the JWKS, or fetch it later, accept those tokens until then.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from souq_identity.domain import StoredKey

ALGORITHM = "EdDSA"
GRACE = timedelta(seconds=60)
Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


class NoSigningKey(Exception):
    """The ring holds no key that may sign (none was loaded)."""


def _public_jwk(key: Ed25519PrivateKey) -> dict[str, str]:
    jwk: dict[str, str] = jwt.algorithms.OKPAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {"kty": jwk["kty"], "crv": jwk["crv"], "x": jwk["x"]}


def thumbprint(jwk: Mapping[str, str]) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url): the key id is derived from the key."""
    canonical = json.dumps(
        {"crv": jwk["crv"], "kty": jwk["kty"], "x": jwk["x"]}, separators=(",", ":")
    )
    digest = hashlib.sha256(canonical.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def new_signing_key(now: datetime) -> StoredKey:
    """A fresh Ed25519 key as PKCS8 PEM (`KeyEncryption.seal` it before storing)."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    return StoredKey(thumbprint(_public_jwk(key)), pem, now)


class KeyEncryptionError(Exception):
    """A stored signing key cannot be opened: a wrong key-encryption key, or none."""


class KeyEncryption:
    """Signing keys sealed at rest: AES-256-GCM under a key-encryption key (KEK) kept outside
    the database, with the key id as associated data (a sealed key moved to another row does
    not open). Without a KEK (local runs) keys are stored as PEM, as the database is private
    to its user; a sealed key then refuses to open rather than pass unnoticed."""

    MARK = b"souq-aes256gcm-v1:"  # never the start of a PEM

    def __init__(self, key: bytes | None = None) -> None:
        if key is not None and len(key) != 32:
            raise ValueError("the key-encryption key must be 32 bytes")
        self._aead = AESGCM(key) if key is not None else None

    @property
    def enabled(self) -> bool:
        return self._aead is not None

    @classmethod
    def is_sealed(cls, stored: StoredKey) -> bool:
        return stored.private_key_pem.startswith(cls.MARK)

    def seal(self, stored: StoredKey) -> StoredKey:
        """The key as it is to be stored: sealed if there is a KEK (and it is not already)."""
        if self._aead is None or self.is_sealed(stored):
            return stored
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, stored.private_key_pem, stored.kid.encode())
        return replace(stored, private_key_pem=self.MARK + nonce + sealed)

    def open(self, stored: StoredKey) -> StoredKey:
        """The key with its PEM, opened if it was sealed."""
        if not self.is_sealed(stored):
            return stored
        if self._aead is None:
            raise KeyEncryptionError(
                f"signing key {stored.kid} is encrypted and no key-encryption key is set "
                "(IDENTITY_KEY_ENCRYPTION_KEY or IDENTITY_KEY_ENCRYPTION_KEY_FILE)"
            )
        blob = stored.private_key_pem[len(self.MARK) :]
        try:
            pem = self._aead.decrypt(blob[:12], blob[12:], stored.kid.encode())
        except InvalidTag:
            raise KeyEncryptionError(
                f"signing key {stored.kid} does not open with this key-encryption key "
                "(IDENTITY_KEY_ENCRYPTION_KEY or _FILE): is it the one it was sealed with?"
            ) from None
        return replace(stored, private_key_pem=pem)


class _Loaded:
    def __init__(self, stored: StoredKey) -> None:
        key = load_pem_private_key(stored.private_key_pem, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"signing key {stored.kid} is not an Ed25519 key")
        self.kid = stored.kid
        self.private_key = key
        self.created_at = stored.created_at
        self.retired_at = stored.retired_at
        self.jwk = {**_public_jwk(key), "kid": stored.kid, "use": "sig", "alg": ALGORITHM}


class KeyRing:
    """The keys in memory: the one that signs and those still published."""

    def __init__(self, access_token_ttl_s: float, *, clock: Clock = _utc_now) -> None:
        self._published_for = timedelta(seconds=access_token_ttl_s) + GRACE
        self._clock = clock
        self._keys: list[_Loaded] = []
        self._active: _Loaded | None = None
        self._listeners: list[Callable[[], object]] = []

    def load(self, keys: Iterable[StoredKey]) -> None:
        """Replace the ring with these keys; the newest unretired one signs."""
        loaded = sorted((_Loaded(k) for k in keys), key=lambda k: k.created_at)
        signing = [k for k in loaded if k.retired_at is None]
        self._keys = loaded
        self._active = signing[-1] if signing else None
        for listener in self._listeners:
            listener()

    def on_change(self, listener: Callable[[], object]) -> None:
        """Call `listener` after every load (a rotation): e.g. refresh a verifier's keys."""
        self._listeners.append(listener)

    @property
    def active_kid(self) -> str | None:
        return self._active.kid if self._active else None

    def sign(self, claims: Mapping[str, Any]) -> str:
        """An EdDSA JWT of the claims, signed by the active key and naming it (`kid`)."""
        if self._active is None:
            raise NoSigningKey("no signing key is loaded")
        return jwt.encode(
            dict(claims),
            self._active.private_key,
            algorithm=ALGORITHM,
            headers={"kid": self._active.kid, "typ": "JWT"},
        )

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """The JWKS: the active key and retired keys whose tokens may not have expired yet."""
        now = self._clock()
        return {
            "keys": [
                dict(k.jwk)
                for k in reversed(self._keys)
                if k.retired_at is None or now < k.retired_at + self._published_for
            ]
        }

    def expired_before(self) -> datetime:
        """Keys retired before this moment verify no live token: they may be deleted."""
        return self._clock() - self._published_for
