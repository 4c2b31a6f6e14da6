"""Identity tables and queries (SQLAlchemy Core): users, refresh tokens, signing keys.

The database holds password hashes and refresh-token digests, never a password or a token;
signing keys sealed under a key-encryption key when one is configured (`keys.KeyEncryption`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from souq_chassis.db import Database, Transaction
from sqlalchemy import (
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    bindparam,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError

from souq_identity.domain import (
    MAX_SESSIONS_PER_USER,
    REUSE_DETECTION_DEPTH,
    Credentials,
    EmailTaken,
    RefreshToken,
    StoredKey,
    User,
    roles_of_text,
    roles_text,
)

metadata = MetaData()

users = Table(
    "users",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("email", String(254), nullable=False),
    Column("password_hash", Text, nullable=False),
    Column("roles", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("email", name="uq_users_email"),
    CheckConstraint("roles <> ''", name="ck_users_roles_not_empty"),
)

refresh_tokens = Table(
    "refresh_tokens",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("token_hash", String(64), nullable=False),
    Column("family_id", String(32), nullable=False),
    Column("user_id", String(36), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("issued_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("used_at", DateTime(timezone=True), nullable=True),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Index("ix_refresh_tokens_token_hash", "token_hash", unique=True),
    Index("ix_refresh_tokens_family_id", "family_id"),
    Index("ix_refresh_tokens_user_id", "user_id"),
)

signing_keys = Table(
    "signing_keys",
    metadata,
    Column("kid", String(64), primary_key=True),
    Column("private_key_pem", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("retired_at", DateTime(timezone=True), nullable=True),
)

_USER_COLUMNS = (users.c.id, users.c.email, users.c.roles, users.c.created_at)
_USER_BY_ID = select(*_USER_COLUMNS).where(users.c.id == bindparam("id"))
_CREDENTIALS_BY_EMAIL = select(*_USER_COLUMNS, users.c.password_hash).where(
    users.c.email == bindparam("email")
)
_EMAIL_EXISTS = select(users.c.id).where(users.c.email == bindparam("email"))
_INSERT_USER = insert(users)
_SET_PASSWORD_HASH = (
    update(users)
    .where(users.c.id == bindparam("user_id"), users.c.password_hash == bindparam("old_hash"))
    .values(password_hash=bindparam("new_hash"))
)

_TOKEN_BY_HASH = select(refresh_tokens).where(refresh_tokens.c.token_hash == bindparam("digest"))
_INSERT_TOKEN = insert(refresh_tokens)
# Conditional, so that of two concurrent rotations of one token exactly one succeeds.
_MARK_USED = (
    update(refresh_tokens)
    .where(
        refresh_tokens.c.token_hash == bindparam("digest"),
        refresh_tokens.c.used_at.is_(None),
        refresh_tokens.c.revoked_at.is_(None),
    )
    .values(used_at=bindparam("now"))
)
# A revoked family is deleted: an unknown token is refused just as a revoked one would be.
_REVOKE_FAMILY = delete(refresh_tokens).where(
    refresh_tokens.c.family_id == bindparam("target_family_id")
)
_REVOKE_USER = delete(refresh_tokens).where(refresh_tokens.c.user_id == bindparam("target_user_id"))
# After a rotation: the family's used tokens but the last few (what reuse detection needs).
_RECENTLY_USED = (
    select(refresh_tokens.c.id)
    .where(
        refresh_tokens.c.family_id == bindparam("family"),
        refresh_tokens.c.used_at.is_not(None),
    )
    .order_by(refresh_tokens.c.id.desc())
    .limit(REUSE_DETECTION_DEPTH)
)
_FORGET_OLD_USED = delete(refresh_tokens).where(
    refresh_tokens.c.family_id == bindparam("family"),
    refresh_tokens.c.used_at.is_not(None),
    refresh_tokens.c.id.not_in(_RECENTLY_USED),
)
_DELETE_EXPIRED = delete(refresh_tokens).where(refresh_tokens.c.expires_at < bindparam("now"))
# After a sign-in: the user's sessions but the newest few.
_NEWEST_SESSIONS = (
    select(refresh_tokens.c.family_id)
    .where(refresh_tokens.c.user_id == bindparam("user"))
    .group_by(refresh_tokens.c.family_id)
    .order_by(func.max(refresh_tokens.c.id).desc())
    .limit(MAX_SESSIONS_PER_USER)
)
_FORGET_OLD_SESSIONS = delete(refresh_tokens).where(
    refresh_tokens.c.user_id == bindparam("user"),
    refresh_tokens.c.family_id.not_in(_NEWEST_SESSIONS),
)

_ALL_KEYS = select(signing_keys).order_by(signing_keys.c.created_at)
_INSERT_KEY = insert(signing_keys)
_RETIRE_KEYS = (
    update(signing_keys)
    .where(signing_keys.c.retired_at.is_(None))
    .values(retired_at=bindparam("now"))
)
_SEAL_KEY = (
    update(signing_keys)
    .where(
        signing_keys.c.kid == bindparam("target_kid"),
        signing_keys.c.private_key_pem == bindparam("plain"),
    )
    .values(private_key_pem=bindparam("sealed"))
)
_DELETE_OLD_KEYS = delete(signing_keys).where(signing_keys.c.retired_at < bindparam("before"))


class UserNotStored(Exception):
    """The database refused a user. Raised instead of SQLAlchemy's error, whose message lists
    the statement's parameters (the password hash among them) and would reach the log."""


def _utc(moment: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything stored is UTC."""
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment


def _user(row: Any) -> User:
    created_at = _utc(row.created_at)
    assert created_at is not None
    return User(row.id, row.email, roles_of_text(row.roles), created_at)


def _token(row: Any) -> RefreshToken:
    issued_at, expires_at = _utc(row.issued_at), _utc(row.expires_at)
    assert issued_at is not None and expires_at is not None
    return RefreshToken(
        token_hash=row.token_hash,
        family_id=row.family_id,
        user_id=row.user_id,
        issued_at=issued_at,
        expires_at=expires_at,
        used_at=_utc(row.used_at),
        revoked_at=_utc(row.revoked_at),
    )


def _key(row: Any) -> StoredKey:
    created_at = _utc(row.created_at)
    assert created_at is not None
    return StoredKey(row.kid, bytes(row.private_key_pem), created_at, _utc(row.retired_at))


class UserRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(self, user_id: str) -> User | None:
        row = await self._db.one(_USER_BY_ID, {"id": user_id})
        return _user(row) if row else None

    async def get_in(self, tx: Transaction, user_id: str) -> User | None:
        row = await tx.one(_USER_BY_ID, {"id": user_id})
        return _user(row) if row else None

    async def credentials(self, email: str) -> Credentials | None:
        row = await self._db.one(_CREDENTIALS_BY_EMAIL, {"email": email})
        return Credentials(_user(row), row.password_hash) if row else None

    async def email_exists(self, email: str) -> bool:
        return await self._db.one(_EMAIL_EXISTS, {"email": email}) is not None

    async def id_of_email(self, tx: Transaction, email: str) -> str | None:
        row = await tx.one(_EMAIL_EXISTS, {"email": email})
        return str(row.id) if row else None

    async def add(self, tx: Transaction, user: User, password_hash: str) -> None:
        """Insert a user in the caller's transaction (which also records its event)."""
        try:
            await tx.execute(
                _INSERT_USER,
                {
                    "id": user.id,
                    "email": user.email,
                    "password_hash": password_hash,
                    "roles": roles_text(user.roles),
                    "created_at": user.created_at,
                },
            )
        except IntegrityError as exc:
            if "email" in str(exc.orig):  # the unique constraint, whatever the dialect says
                raise EmailTaken() from None
            raise UserNotStored(str(exc.orig)) from None
        except DBAPIError as exc:
            raise UserNotStored(str(exc.orig)) from None

    async def replace_password_hash(self, user_id: str, old_hash: str, new_hash: str) -> bool:
        """Store a rehash, unless the hash changed meanwhile; whether it was stored."""
        params = {"user_id": user_id, "old_hash": old_hash, "new_hash": new_hash}
        try:
            async with self._db.transaction() as tx:
                result = await tx.execute(_SET_PASSWORD_HASH, params)
                return result.rowcount == 1  # type: ignore[attr-defined,no-any-return]
        except DBAPIError as exc:
            raise UserNotStored(str(exc.orig)) from None


class RefreshTokenRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def find(self, tx: Transaction, digest: str) -> RefreshToken | None:
        row = await tx.one(_TOKEN_BY_HASH, {"digest": digest})
        return _token(row) if row else None

    async def find_now(self, digest: str) -> RefreshToken | None:
        row = await self._db.one(_TOKEN_BY_HASH, {"digest": digest})
        return _token(row) if row else None

    async def add(self, tx: Transaction, token: RefreshToken) -> None:
        await tx.execute(
            _INSERT_TOKEN,
            {
                "token_hash": token.token_hash,
                "family_id": token.family_id,
                "user_id": token.user_id,
                "issued_at": token.issued_at,
                "expires_at": token.expires_at,
                "used_at": token.used_at,
                "revoked_at": token.revoked_at,
            },
        )

    async def mark_used(self, tx: Transaction, digest: str, now: datetime) -> bool:
        """Mark an unused, unrevoked token used; False if it was not (a concurrent rotation)."""
        result = await tx.execute(_MARK_USED, {"digest": digest, "now": now})
        return result.rowcount == 1  # type: ignore[attr-defined,no-any-return]

    async def revoke_family(self, tx: Transaction, family_id: str) -> int:
        """Revoke a family: its tokens are deleted, so every one of them is refused."""
        result = await tx.execute(_REVOKE_FAMILY, {"target_family_id": family_id})
        return result.rowcount  # type: ignore[attr-defined,no-any-return]

    async def revoke_user(self, user_id: str) -> int:
        """Revoke every family of a user (sign out everywhere)."""
        async with self._db.transaction() as tx:
            result = await tx.execute(_REVOKE_USER, {"target_user_id": user_id})
            return result.rowcount  # type: ignore[attr-defined,no-any-return]

    async def revoke_family_now(self, family_id: str) -> int:
        async with self._db.transaction() as tx:
            return await self.revoke_family(tx, family_id)

    async def forget_old_used(self, tx: Transaction, family_id: str) -> None:
        """Delete the family's used tokens but the last REUSE_DETECTION_DEPTH."""
        await tx.execute(_FORGET_OLD_USED, {"family": family_id})

    async def forget_old_sessions(self, tx: Transaction, user_id: str) -> None:
        """End the user's sessions but the newest MAX_SESSIONS_PER_USER."""
        await tx.execute(_FORGET_OLD_SESSIONS, {"user": user_id})

    async def delete_expired(self, now: datetime) -> int:
        """Delete every token that expired before `now` (it could only be refused)."""
        async with self._db.transaction() as tx:
            result = await tx.execute(_DELETE_EXPIRED, {"now": now})
            return result.rowcount  # type: ignore[attr-defined,no-any-return]


class SigningKeyRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def all(self) -> list[StoredKey]:
        return [_key(row) for row in await self._db.all(_ALL_KEYS)]

    async def add_first(self, key: StoredKey) -> bool:
        """Store `key` as the signing key if there is none yet; False if there was one."""
        async with self._db.transaction() as tx:
            if any(k.retired_at is None for k in await self._all_in(tx)):
                return False
            await tx.execute(_INSERT_KEY, _key_row(key))
        return True

    async def rotate(self, key: StoredKey, *, delete_retired_before: datetime) -> None:
        """Retire the signing key(s), store `key` as the new one, and delete keys retired so
        long ago that no token they signed can still be valid."""
        async with self._db.transaction() as tx:
            await tx.execute(_RETIRE_KEYS, {"now": key.created_at})
            await tx.execute(_INSERT_KEY, _key_row(key))
            await tx.execute(_DELETE_OLD_KEYS, {"before": delete_retired_before})

    async def replace_sealed(self, plain: StoredKey, sealed: StoredKey) -> bool:
        """Store a key's sealed form in place of its PEM, unless it changed meanwhile (another
        replica sealed it first); whether this call did."""
        params = {
            "target_kid": plain.kid,
            "plain": plain.private_key_pem,
            "sealed": sealed.private_key_pem,
        }
        async with self._db.transaction() as tx:
            result = await tx.execute(_SEAL_KEY, params)
            return result.rowcount == 1  # type: ignore[attr-defined,no-any-return]

    async def _all_in(self, tx: Transaction) -> Sequence[StoredKey]:
        return [_key(row) for row in await tx.all(_ALL_KEYS)]


def _key_row(key: StoredKey) -> dict[str, Any]:
    return {
        "kid": key.kid,
        "private_key_pem": key.private_key_pem,
        "created_at": key.created_at,
        "retired_at": key.retired_at,
    }
