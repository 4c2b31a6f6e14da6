"""The key ring: EdDSA tokens, the JWKS that verifies them, and when a retired key leaves it."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from souq_identity.keys import (
    GRACE,
    KeyEncryption,
    KeyEncryptionError,
    KeyRing,
    NoSigningKey,
    new_signing_key,
    thumbprint,
)

TTL_S = 300
START = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


def verify(token: str, ring: KeyRing) -> dict[str, object]:
    kid = jwt.get_unverified_header(token)["kid"]
    jwk = next(k for k in ring.jwks()["keys"] if k["kid"] == kid)
    key = jwt.PyJWK(jwk, algorithm="EdDSA").key
    claims: dict[str, object] = jwt.decode(token, key, algorithms=["EdDSA"], audience="souq")
    return claims


def test_tokens_are_eddsa_jwts_naming_the_key_that_signed_them() -> None:
    ring = KeyRing(TTL_S)
    key = new_signing_key(START)
    ring.load([key])
    token = ring.sign({"sub": "u-1", "aud": "souq"})
    assert jwt.get_unverified_header(token) == {"alg": "EdDSA", "kid": key.kid, "typ": "JWT"}
    assert verify(token, ring)["sub"] == "u-1"


def test_the_jwks_publishes_public_keys_only() -> None:
    ring = KeyRing(TTL_S)
    key = new_signing_key(START)
    ring.load([key])
    [jwk] = ring.jwks()["keys"]
    assert jwk["kty"] == "OKP" and jwk["crv"] == "Ed25519"
    assert jwk["kid"] == key.kid and jwk["use"] == "sig" and jwk["alg"] == "EdDSA"
    assert set(jwk) == {"kty", "crv", "x", "kid", "use", "alg"}  # no "d": nothing private


def test_a_ring_without_keys_cannot_sign() -> None:
    with pytest.raises(NoSigningKey):
        KeyRing(TTL_S).sign({"sub": "u-1"})


def test_after_rotation_the_new_key_signs_and_old_tokens_still_verify() -> None:
    clock = Clock()
    ring = KeyRing(TTL_S, clock=clock)
    old = new_signing_key(START)
    ring.load([old])
    old_token = ring.sign({"sub": "u-1", "aud": "souq"})
    clock.now += timedelta(seconds=10)
    new = new_signing_key(clock.now)
    ring.load([replace(old, retired_at=clock.now), new])
    assert ring.active_kid == new.kid
    assert jwt.get_unverified_header(ring.sign({"sub": "u-1"}))["kid"] == new.kid
    assert {k["kid"] for k in ring.jwks()["keys"]} == {old.kid, new.kid}
    assert verify(old_token, ring)["sub"] == "u-1"


def test_a_retired_key_leaves_the_jwks_once_its_tokens_have_expired() -> None:
    clock = Clock()
    ring = KeyRing(TTL_S, clock=clock)
    old, new = new_signing_key(START), new_signing_key(START + timedelta(seconds=1))
    retired_at = START + timedelta(seconds=1)
    ring.load([replace(old, retired_at=retired_at), new])
    clock.now = retired_at + timedelta(seconds=TTL_S) + GRACE - timedelta(seconds=1)
    assert {k["kid"] for k in ring.jwks()["keys"]} == {old.kid, new.kid}
    clock.now += timedelta(seconds=1)
    assert [k["kid"] for k in ring.jwks()["keys"]] == [new.kid]
    assert ring.expired_before() == retired_at


def test_key_ids_are_jwk_thumbprints() -> None:
    a, b = new_signing_key(START), new_signing_key(START)
    assert a.kid != b.kid
    assert len(a.kid) == 43  # base64url of a SHA-256, unpadded
    assert a.private_key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS8


def test_listeners_hear_every_load() -> None:
    ring = KeyRing(TTL_S)
    heard: list[str | None] = []
    ring.on_change(lambda: heard.append(ring.active_kid))
    key = new_signing_key(START)
    ring.load([key])
    assert heard == [key.kid]


def test_the_thumbprint_matches_rfc_8037s_example() -> None:
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
    assert thumbprint(jwk) == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


def test_a_sealed_key_opens_only_with_its_key_encryption_key_and_under_its_own_id() -> None:
    plain = new_signing_key(datetime(2026, 1, 1, tzinfo=UTC))
    sealer = KeyEncryption(b"k" * 32)
    sealed = sealer.seal(plain)
    assert KeyEncryption.is_sealed(sealed) and b"PRIVATE KEY" not in sealed.private_key_pem
    assert sealer.seal(sealed) is sealed  # sealed once
    assert sealer.open(sealed) == plain
    with pytest.raises(KeyEncryptionError, match="does not open"):
        KeyEncryption(b"x" * 32).open(sealed)
    with pytest.raises(KeyEncryptionError, match="does not open"):
        sealer.open(replace(sealed, kid="another-key"))  # the key id is associated data
    with pytest.raises(KeyEncryptionError, match="no key-encryption key"):
        KeyEncryption().open(sealed)
    assert KeyEncryption().seal(plain) is plain  # locally, without a KEK, stored as PEM
