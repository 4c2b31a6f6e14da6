"""Composition root: settings → adapters → app. Run: `python -m souq_identity`."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import orjson
import structlog
from fastapi import FastAPI
from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict
from souq.events.topology import SUBSCRIPTIONS
from souq_chassis.app import create_app, lifespan
from souq_chassis.auth import TokenVerifier, install_auth
from souq_chassis.db import open_database
from souq_chassis.messaging.broker import connected, open_broker
from souq_chassis.messaging.outbox import Outbox
from souq_chassis.messaging.outbox import include_admin as include_outbox_admin
from souq_chassis.metrics import Metrics
from souq_chassis.ratelimit import RateLimiter
from souq_chassis.runner import serve
from souq_chassis.settings import DatabaseSettings, MessagingSettings

from souq_identity import api
from souq_identity.domain import IdentityError, check_password, normalize_email
from souq_identity.keys import KeyEncryption, KeyRing
from souq_identity.passwords import Argon2Parameters, HashingBound, Passwords
from souq_identity.repository import RefreshTokenRepository, SigningKeyRepository, UserRepository
from souq_identity.service import IdentityService, SignInLimits

SERVICE = "identity"
MIGRATIONS = Path(__file__).parent / "migrations"
# OWASP's Argon2id configurations, each as strong as the next: memory (KiB) for iterations.
OWASP_MIN_MEMORY_KIB = {1: 47_104, 2: 19_456, 3: 12_288, 4: 9_216}
OWASP_MIN_MEMORY_KIB_FROM_5 = 7_168
log = structlog.get_logger(SERVICE)


class IdentitySettings(DatabaseSettings, MessagingSettings):
    # hide_input_in_errors: a refused setting must not print the others (the admin password).
    model_config = SettingsConfigDict(
        env_prefix="IDENTITY_", extra="ignore", hide_input_in_errors=True
    )

    http_port: int = Field(default=8083, ge=0, le=65535)
    internal_port: int = Field(default=8093, ge=0, le=65535)
    access_token_ttl_s: int = Field(default=300, ge=1, le=24 * 3600)
    refresh_token_ttl_s: int = Field(default=14 * 24 * 3600, ge=60)
    admin_email: str = "admin@souq.local"
    admin_password: SecretStr = SecretStr("")  # empty: no administrator is seeded
    max_concurrent_hashes: int = Field(default=1, ge=1)
    max_waiting_hashes: int = Field(default=16, ge=0)
    # CPU priority of the hashing threads (0 = as requests, 19 = only when nothing else runs).
    hashing_nice: int = Field(default=10, ge=0, le=19)
    # How often the signing keys are read again, so that a rotation made by another replica
    # (they share the database) is signed with and published here too.
    key_reload_s: float = Field(default=30.0, gt=0)
    # How often refresh tokens past their expiry are deleted.
    refresh_token_prune_s: float = Field(default=3600.0, gt=0)
    # OWASP's second configuration (19 MiB, 2 iterations): ~50 ms a hash on a slow core.
    argon2_time_cost: int = Field(default=2, ge=1)
    argon2_memory_cost_kib: int = Field(default=19_456, ge=1)
    argon2_parallelism: int = Field(default=1, ge=1, le=16)
    # Shared with the gateway, which sends it with the client address it vouches for; empty:
    # the client is the socket's peer. Read from SOUQ_FORWARDING_SECRET, as the gateway does.
    forwarding_secret: SecretStr = Field(
        default=SecretStr(""),
        validation_alias=AliasChoices("SOUQ_FORWARDING_SECRET", "IDENTITY_FORWARDING_SECRET"),
    )
    # The key that seals the signing keys in the database (32 random bytes, base64url), given
    # as it is or in a file outside the data directory; required in production.
    key_encryption_key: SecretStr = SecretStr("")
    key_encryption_key_file: Path | None = None

    @model_validator(mode="after")
    def _check_key_encryption(self) -> IdentitySettings:
        if self.key_encryption_key_file is not None:
            path = self.key_encryption_key_file.resolve()
            if path.is_relative_to(self.data_dir.resolve()):
                raise ValueError(
                    "IDENTITY_KEY_ENCRYPTION_KEY_FILE must be outside the data directory "
                    "(a copy of the data would carry the key that opens it)"
                )
        elif self.key_encryption_key.get_secret_value():
            _decode_kek(self.key_encryption_key.get_secret_value(), "IDENTITY_KEY_ENCRYPTION_KEY")
        elif self.environment == "production":
            raise ValueError(
                "in production identity seals its signing keys: set IDENTITY_KEY_ENCRYPTION_KEY "
                "or IDENTITY_KEY_ENCRYPTION_KEY_FILE (32 random bytes, base64url)"
            )
        return self

    def key_encryption(self) -> KeyEncryption:
        """The sealer of the signing keys: with the configured key, or none (local runs)."""
        if self.key_encryption_key_file is not None:
            try:
                text = self.key_encryption_key_file.read_text()
            except OSError as exc:
                raise ValueError(f"IDENTITY_KEY_ENCRYPTION_KEY_FILE: {exc.strerror}") from None
            return KeyEncryption(_decode_kek(text, "IDENTITY_KEY_ENCRYPTION_KEY_FILE"))
        if key := self.key_encryption_key.get_secret_value():
            return KeyEncryption(_decode_kek(key, "IDENTITY_KEY_ENCRYPTION_KEY"))
        return KeyEncryption()

    # Sign-in and sign-up attempts (token buckets: a rate per second and a burst), whatever
    # the gateway does: per account and client, 5, then one every 10 s; per client, looser.
    account_sign_in_rate_per_s: float = Field(default=0.1, gt=0)
    account_sign_in_burst: int = Field(default=5, ge=1)
    sign_in_rate_per_s: float = Field(default=1.0, gt=0)
    sign_in_burst: int = Field(default=20, ge=1)

    @model_validator(mode="after")
    def _enforce_owasp_minimum(self) -> IdentitySettings:
        floor = OWASP_MIN_MEMORY_KIB.get(self.argon2_time_cost, OWASP_MIN_MEMORY_KIB_FROM_5)
        if self.argon2_memory_cost_kib < floor:
            raise ValueError(
                f"Argon2id with {self.argon2_time_cost} iteration(s) needs at least {floor} KiB "
                "(OWASP's minimum)"
            )
        return self

    @model_validator(mode="after")
    def _check_admin(self) -> IdentitySettings:
        """The seeded administrator follows the rules every user does."""
        try:
            self.admin_email = normalize_email(self.admin_email)
            if password := self.admin_password.get_secret_value():
                check_password(password)
        except IdentityError as exc:
            raise ValueError(f"the administrator's account: {exc}") from None
        return self

    def argon2(self) -> Argon2Parameters:
        return Argon2Parameters(
            self.argon2_time_cost, self.argon2_memory_cost_kib, self.argon2_parallelism
        )


def _decode_kek(text: str, name: str) -> bytes:
    """32 bytes from base64url text, or a refusal that does not show the text."""
    try:
        key = base64.urlsafe_b64decode(text.strip() + "=" * (-len(text.strip()) % 4))
    except ValueError:
        key = b""
    if len(key) != 32:
        raise ValueError(
            f"{name} must be 32 random bytes, base64url-encoded, e.g. the output of python3 -c "
            "'import base64, os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())'"
        )
    return key


def build_app(settings: IdentitySettings, *, tracer_provider: Any = None) -> FastAPI:
    metrics = Metrics()
    db = open_database(settings.resolved_database_url(SERVICE), tracer_provider=tracer_provider)
    broker = open_broker(settings.broker_url, client_name=SERVICE, registry=metrics.registry)
    outbox = Outbox(db, broker, metrics.registry)
    ring = KeyRing(settings.access_token_ttl_s)
    hashing = HashingBound(
        settings.max_concurrent_hashes, settings.max_waiting_hashes, settings.hashing_nice
    )
    passwords = Passwords(settings.argon2(), hashing)
    identity = IdentityService(
        db,
        UserRepository(db),
        RefreshTokenRepository(db),
        SigningKeyRepository(db),
        ring,
        passwords,
        outbox,
        access_token_ttl_s=settings.access_token_ttl_s,
        refresh_token_ttl_s=settings.refresh_token_ttl_s,
        key_encryption=settings.key_encryption(),
        limits=SignInLimits(
            per_client=RateLimiter(settings.sign_in_rate_per_s, settings.sign_in_burst),
            per_account=RateLimiter(
                settings.account_sign_in_rate_per_s, settings.account_sign_in_burst
            ),
        ),
    )

    # Identity checks its own tokens with the verifier every service uses, reading its own
    # JWKS from memory rather than over HTTP; after a rotation the verifier learns the new
    # key at once instead of on its rate-limited refresh.
    async def own_jwks() -> bytes:
        return orjson.dumps(ring.jwks())

    verifier = TokenVerifier(own_jwks)
    ring.on_change(lambda: verifier.load(ring.jwks()))

    async def seed_admin() -> None:
        password = settings.admin_password.get_secret_value()
        if not password:
            log.warning("admin_not_seeded", reason="IDENTITY_ADMIN_PASSWORD is not set")
        elif await identity.seed_admin(settings.admin_email, password):
            log.info("admin_seeded", email=settings.admin_email)

    app = create_app(
        title="Souq identity",
        version=settings.version,
        metrics=metrics,
        lifespan=lifespan(
            on_start=[identity.load_signing_keys, seed_admin, passwords.prepare],
            serving=[
                lambda: connected(broker, SUBSCRIPTIONS),
                outbox.running,
                # Keep the keys we have if the database is away.
                lambda: _periodically(
                    settings.key_reload_s,
                    identity.reload_signing_keys,
                    "signing_keys_reload_failed",
                ),
                lambda: _periodically(
                    settings.refresh_token_prune_s,
                    identity.delete_expired_refresh_tokens,
                    "expired_refresh_tokens_not_deleted",
                ),
            ],
            on_stop=[db.dispose, _closing(hashing), verifier.close],
        ),
        readiness={"database": db.ping, "outbox": outbox.ready},
        max_body_bytes=settings.max_body_bytes,
    )
    app.state.forwarding_secret = settings.forwarding_secret.get_secret_value()
    install_auth(app, verifier)
    api.include(app, identity)
    include_outbox_admin(app, outbox)
    return app


@asynccontextmanager
async def _periodically(
    every_s: float, job: Callable[[], Awaitable[object]], failure: str
) -> AsyncIterator[None]:
    """Run `job` every `every_s` while serving; a failure (the database is away) is logged as
    `failure` and the job runs again next time."""

    async def repeat() -> None:
        while True:
            await asyncio.sleep(every_s)
            try:
                await job()
            except Exception as exc:
                log.warning(failure, error=f"{type(exc).__name__}: {exc}")

    task = asyncio.create_task(repeat())
    try:
        yield
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


def _closing(hashing: HashingBound) -> Callable[[], Awaitable[None]]:
    async def close() -> None:
        hashing.close()

    return close


def main() -> None:
    settings = IdentitySettings()
    serve(
        SERVICE,
        settings,
        build_app,
        database_url=settings.resolved_database_url(SERVICE),
        migrations=MIGRATIONS,
    )


if __name__ == "__main__":
    main()
