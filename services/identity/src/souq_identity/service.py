"""Identity use cases: one function per command or query."""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog
from souq.events import RegistrationAttempted, UserRegistered
from souq_chassis.auth import AUDIENCE, ISSUER, roles_of
from souq_chassis.db import Database, Transaction
from souq_chassis.messaging.outbox import Outbox
from souq_chassis.ratelimit import RateLimited, RateLimiter

from souq_identity.domain import (
    ADMIN,
    CUSTOMER,
    EmailTaken,
    InvalidCredentials,
    InvalidRefreshToken,
    Redemption,
    RefreshToken,
    RefreshTokenReused,
    StoredKey,
    TokenPair,
    User,
    UserNotFound,
    check_password,
    normalize_email,
    redeem,
    refresh_token_digest,
)
from souq_identity.keys import KeyEncryption, KeyRing, new_signing_key
from souq_identity.passwords import Passwords
from souq_identity.repository import RefreshTokenRepository, SigningKeyRepository, UserRepository

Clock = Callable[[], datetime]
log = structlog.get_logger("identity")


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class SignInLimits:
    """Identity's own limits on sign-in and sign-up attempts (token buckets), whatever is in
    front of it: a process that reaches identity's port directly is held to them too."""

    per_client: RateLimiter  # by client address
    per_account: RateLimiter  # by account *and* client address: nobody locks a user out
    # by failing to sign in as them from elsewhere

    def admit(self, account: str, client: str, now: float) -> None:
        """Take a token from the client's bucket and the account's, or RateLimited."""
        wait = self.per_client.take(client, now)
        if not wait:
            wait = self.per_account.take(f"{account} {client}", now)
        if wait:
            raise RateLimited(wait)


class IdentityService:
    def __init__(
        self,
        db: Database,
        users: UserRepository,
        tokens: RefreshTokenRepository,
        keys: SigningKeyRepository,
        ring: KeyRing,
        passwords: Passwords,
        outbox: Outbox,
        *,
        access_token_ttl_s: int,
        refresh_token_ttl_s: int,
        limits: SignInLimits,
        clock: Clock = _utc_now,
        key_encryption: KeyEncryption | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self._sealer = key_encryption or KeyEncryption()
        self._users = users
        self._tokens = tokens
        self._keys = keys
        self._ring = ring
        self._passwords = passwords
        self._outbox = outbox
        self._access_ttl_s = access_token_ttl_s
        self._refresh_ttl = timedelta(seconds=refresh_token_ttl_s)
        self._clock = clock
        self._limits = limits
        self._monotonic = monotonic

    async def register(self, email: str, password: str, client: str) -> None:
        """Sign up a new customer (`UserRegistered` commits with it), or, if the email has an
        account, tell its owner (`RegistrationAttempted`). The caller cannot tell which: both
        cost a password hash and one transaction, and answer alike."""
        email, password = normalize_email(email), check_password(password)
        self._limits.admit(email, client, self._monotonic())
        password_hash = await self._passwords.hash(password)  # spent whatever the email
        for _ in range(2):  # again if a sign-up of the same new email commits in between
            try:
                await self._add_or_notify(email, password_hash)
                return
            except EmailTaken:
                continue

    async def _add_or_notify(self, email: str, password_hash: str) -> None:
        """In one transaction either way, so that neither answer takes longer: a new customer,
        or an event for the owner of the email."""
        async with self._db.transaction() as tx:
            owner = await self._users.id_of_email(tx, email)
            if owner is None:
                user = User(str(uuid.uuid4()), email, (CUSTOMER,), self._clock())
                await self._users.add(tx, user, password_hash)
                await self._outbox.add(tx, UserRegistered(user_id=user.id, email=user.email))
            else:
                await self._outbox.add(tx, RegistrationAttempted(user_id=owner, email=email))
        if owner is None:
            log.info("user_registered", user_id=user.id, roles=[CUSTOMER])
        else:
            log.info("registration_attempted_on_existing_account", user_id=owner)

    async def seed_admin(self, email: str, password: str) -> bool:
        """Create the configured administrator unless a user has that email; whether created."""
        email = normalize_email(email)
        if await self._users.email_exists(email):
            return False
        try:
            await self._create(email, check_password(password), (ADMIN, CUSTOMER))
        except EmailTaken:  # registered meanwhile
            return False
        return True

    async def _create(self, email: str, password: str, roles: tuple[str, ...]) -> User:
        password_hash = await self._passwords.hash(password)
        user = User(str(uuid.uuid4()), email, roles, self._clock())
        async with self._db.transaction() as tx:
            await self._users.add(tx, user, password_hash)
            await self._outbox.add(tx, UserRegistered(user_id=user.id, email=user.email))
        log.info("user_registered", user_id=user.id, roles=list(roles))
        return user

    async def login(self, email: str, password: str, client: str) -> TokenPair:
        """Tokens for the right email and password; InvalidCredentials, alike, for anything
        else. An unknown email costs a verification too, so timing does not tell it apart.
        Attempts are limited per client and per account before any hash is spent."""
        email = normalize_email(email)
        self._limits.admit(email, client, self._monotonic())
        credentials = await self._users.credentials(email)
        if credentials is None:
            await self._passwords.verify_nobody(password)
            raise InvalidCredentials()
        if not await self._passwords.verify(credentials.password_hash, password):
            raise InvalidCredentials()
        user = credentials.user
        if self._passwords.needs_rehash(credentials.password_hash):
            new_hash = await self._passwords.hash(password)
            if await self._users.replace_password_hash(
                user.id, credentials.password_hash, new_hash
            ):
                log.info("password_rehashed", user_id=user.id)
        async with self._db.transaction() as tx:
            pair = await self._issue(tx, user, secrets.token_hex(16), self._clock())
            await self._tokens.forget_old_sessions(tx, user.id)
            return pair

    async def refresh(self, presented: str) -> TokenPair:
        """Exchange a refresh token for a new pair in the same family (rotation). A token used
        before revokes its family (RefreshTokenReused); any other bad token, InvalidRefreshToken."""
        digest = refresh_token_digest(presented)
        now = self._clock()
        reused: RefreshToken | None = None
        async with self._db.transaction() as tx:
            token = await self._tokens.find(tx, digest)
            verdict = redeem(token, now)
            if token is not None and verdict is Redemption.ROTATE:
                user = await self._users.get_in(tx, token.user_id)
                if user is not None and await self._tokens.mark_used(tx, digest, now):
                    await self._tokens.forget_old_used(tx, token.family_id)
                    return await self._issue(tx, user, token.family_id, now)
                verdict = Redemption.REUSED if user is not None else Redemption.REFUSED
            if token is not None and verdict is Redemption.REUSED:
                await self._tokens.revoke_family(tx, token.family_id)
                reused = token
        if reused is not None:
            log.warning("refresh_token_reuse", user_id=reused.user_id, family_id=reused.family_id)
            raise RefreshTokenReused(reused.user_id, reused.family_id)
        raise InvalidRefreshToken()

    async def logout(self, user_id: str, refresh_token: str | None) -> None:
        """Revoke the family of `refresh_token` if it is the caller's, or without one every
        family of the caller (sign out everywhere). Access tokens live out their short TTL."""
        if refresh_token is None:
            revoked = await self._tokens.revoke_user(user_id)
            log.info("signed_out_everywhere", user_id=user_id, tokens_revoked=revoked)
            return
        token = await self._tokens.find_now(refresh_token_digest(refresh_token))
        if token is not None and token.user_id == user_id:
            await self._tokens.revoke_family_now(token.family_id)
            log.info("signed_out", user_id=user_id, family_id=token.family_id)

    async def delete_expired_refresh_tokens(self) -> int:
        """Forget refresh tokens past their expiry; how many."""
        deleted = await self._tokens.delete_expired(self._clock())
        if deleted:
            log.info("expired_refresh_tokens_deleted", count=deleted)
        return deleted

    async def me(self, user_id: str) -> User:
        user = await self._users.get(user_id)
        if user is None:
            raise UserNotFound()
        return user

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        return self._ring.jwks()

    async def load_signing_keys(self) -> None:
        """Load the keys into the ring, making the first one if there is none (first start);
        with a key-encryption key, seal the keys an earlier run stored in the clear. Raises
        KeyEncryptionError if a key does not open: identity must not start then."""
        if await self._keys.add_first(self._sealer.seal(new_signing_key(self._clock()))):
            log.info("signing_key_created")
        keys = await self._keys.all()
        opened = [self._sealer.open(key) for key in keys]  # refuses a wrong KEK first
        if self._sealer.enabled:
            for key in keys:
                sealed = self._sealer.seal(key)
                if sealed is not key and await self._keys.replace_sealed(key, sealed):
                    log.info("signing_key_sealed", kid=key.kid)
        self._ring.load(opened)

    async def rotate_signing_key(self) -> str:
        """Sign with a new key from now on; the old one stays published until its tokens have
        expired. Returns the new key's id."""
        key = new_signing_key(self._clock())
        await self._keys.rotate(
            self._sealer.seal(key), delete_retired_before=self._ring.expired_before()
        )
        await self._reload_keys()
        log.info("signing_key_rotated", kid=key.kid)
        return key.kid

    async def reload_signing_keys(self) -> None:
        """Read the keys again: another replica may have rotated them."""
        await self._reload_keys()

    async def _reload_keys(self) -> None:
        keys: list[StoredKey] = await self._keys.all()
        self._ring.load([self._sealer.open(key) for key in keys])

    async def _issue(self, tx: Transaction, user: User, family_id: str, now: datetime) -> TokenPair:
        refresh_token = secrets.token_urlsafe(32)
        await self._tokens.add(
            tx,
            RefreshToken(
                token_hash=refresh_token_digest(refresh_token),
                family_id=family_id,
                user_id=user.id,
                issued_at=now,
                expires_at=now + self._refresh_ttl,
            ),
        )
        issued_at = int(now.timestamp())
        access_token = self._ring.sign(
            {
                "iss": ISSUER,
                "aud": AUDIENCE,
                "sub": user.id,
                "roles": roles_of(user.roles),
                "iat": issued_at,
                "exp": issued_at + self._access_ttl_s,
                "jti": uuid.uuid4().hex,
            }
        )
        return TokenPair(access_token, refresh_token, self._access_ttl_s)
