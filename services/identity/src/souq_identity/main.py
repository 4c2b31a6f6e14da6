"""Composition root: settings → adapters → app. Run: `python -m souq_identity`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import orjson
import structlog
from fastapi import FastAPI
from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict
from souq.events.topology import SUBSCRIPTIONS
from souq_chassis.app import create_app, lifespan
from souq_chassis.auth import TokenVerifier, install_auth
from souq_chassis.db import open_database
from souq_chassis.messaging.broker import connected, open_broker
from souq_chassis.messaging.outbox import Outbox
from souq_chassis.messaging.outbox import include_admin as include_outbox_admin
from souq_chassis.metrics import Metrics
from souq_chassis.runner import serve
from souq_chassis.settings import DatabaseSettings, MessagingSettings

from souq_identity import api
from souq_identity.domain import IdentityError, check_password, normalize_email
from souq_identity.keys import KeyRing
from souq_identity.passwords import Argon2Parameters, HashingBound, Passwords
from souq_identity.repository import RefreshTokenRepository, SigningKeyRepository, UserRepository
from souq_identity.service import IdentityService

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
    # OWASP's second configuration (19 MiB, 2 iterations): ~50 ms a hash on a slow core.
    argon2_time_cost: int = Field(default=2, ge=1)
    argon2_memory_cost_kib: int = Field(default=19_456, ge=1)
    argon2_parallelism: int = Field(default=1, ge=1, le=16)

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


def build_app(settings: IdentitySettings, *, tracer_provider: Any = None) -> FastAPI:
    metrics = Metrics()
    db = open_database(settings.resolved_database_url(SERVICE), tracer_provider=tracer_provider)
    broker = open_broker(settings.broker_url, client_name=SERVICE)
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
                lambda: _reloading_keys(identity, settings.key_reload_s),
            ],
            on_stop=[db.dispose, _closing(hashing), verifier.close],
        ),
        readiness={"database": db.ping},
        max_body_bytes=settings.max_body_bytes,
    )
    install_auth(app, verifier)
    api.include(app, identity)
    include_outbox_admin(app, outbox)
    return app


@asynccontextmanager
async def _reloading_keys(identity: IdentityService, every_s: float) -> AsyncIterator[None]:
    """Re-read the signing keys every `every_s` while serving."""

    async def reload() -> None:
        while True:
            await asyncio.sleep(every_s)
            try:
                await identity.reload_signing_keys()
            except Exception as exc:  # the database is away: keep the keys we have
                log.warning("signing_keys_reload_failed", error=f"{type(exc).__name__}: {exc}")

    task = asyncio.create_task(reload())
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
