"""Identity entities and rules: who a user is, what an acceptable email and password are, and
when a refresh token may be exchanged. No I/O, no framework."""

from __future__ import annotations

import enum
import hashlib
import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime

CUSTOMER = "customer"
ADMIN = "admin"
MAX_EMAIL_LENGTH = 254  # RFC 5321's limit on a forward path, less the angle brackets
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 128
# Used refresh tokens kept per family for reuse detection: one of the last this many, presented
# again, revokes its family; an older one is refused like an unknown token (it redeems nothing
# either way). So a session keeps at most this many rows plus its live token, however often it
# refreshes. A copy must be used within this many rotations of its own to be noticed.
REUSE_DETECTION_DEPTH = 4
# Sessions (refresh-token families) a user keeps; signing in again ends the oldest beyond.
MAX_SESSIONS_PER_USER = 10
# Deliberately simple: one @, no spaces, a dot in the domain. The mailbox is the real check.
# An address as people type them: a dot-atom local part (no quoted strings) and a domain of
# letters, digits and hyphens (IDNs in their ASCII form, xn--...), with at least one dot.
_LABEL = r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?"
EMAIL_PATTERN = re.compile(
    rf"^[a-z0-9!#$%&'*+/=?^_`{{|}}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{{|}}~-]+)*@{_LABEL}(?:\.{_LABEL})+$"
)


class IdentityError(Exception):
    """A rule of identity was broken."""


class InvalidEmail(IdentityError):
    def __init__(self, reason: str | None = None) -> None:
        super().__init__(
            reason or f"The email must look like name@example.com, {MAX_EMAIL_LENGTH} at most."
        )


class InvalidPassword(IdentityError):
    def __init__(self) -> None:
        super().__init__(
            f"The password must be {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters."
        )


class EmailTaken(IdentityError):
    def __init__(self) -> None:
        super().__init__("An account with this email already exists.")


class InvalidCredentials(IdentityError):
    """Unknown email or wrong password: one error for both, so neither is revealed."""

    def __init__(self) -> None:
        super().__init__("Wrong email or password.")


class InvalidRefreshToken(IdentityError):
    """Unknown, expired, revoked or already used: the client must sign in again."""

    def __init__(self) -> None:
        super().__init__("The refresh token is not valid; sign in again.")


class RefreshTokenReused(InvalidRefreshToken):
    """A used refresh token came back: someone holds a copy, so its whole family is revoked."""

    def __init__(self, user_id: str, family_id: str) -> None:
        super().__init__()
        self.user_id = user_id
        self.family_id = family_id


class UserNotFound(IdentityError):
    def __init__(self) -> None:
        super().__init__("This user does not exist.")


def normalize_email(raw: str) -> str:
    """The email as stored and compared, or InvalidEmail: in Unicode's compatibility form
    (NFKC: full-width `admin`, U+FF41..., is `admin`), trimmed and lower-cased. Control, format
    (bidirectional overrides, zero-width characters), private-use, surrogate and unassigned
    code points are refused: no address needs them, and they make lookalikes of others. What
    is left must be ASCII: letters of other scripts (a Cyrillic a, a Greek omicron, a dotless i),
    invisible letters (Hangul fillers, the braille blank) and combining marks make lookalikes
    that no rule short of a confusables table catches, and internationalized addresses are
    rare enough that refusing them is the safer trade."""
    email = unicodedata.normalize("NFKC", raw).strip().lower()
    email = unicodedata.normalize("NFKC", email)  # lower-casing can leave a non-NFKC form
    if any(unicodedata.category(c).startswith("C") for c in email):
        raise InvalidEmail("The email must not contain control, format or invisible characters.")
    if not email.isascii():
        raise InvalidEmail(
            "The email must be in ASCII letters (internationalized addresses are not accepted)."
        )
    if len(email) > MAX_EMAIL_LENGTH or not EMAIL_PATTERN.fullmatch(email):
        raise InvalidEmail()
    return email


def check_password(password: str) -> str:
    """The password if the policy accepts it (its length, in characters), or InvalidPassword."""
    if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        raise InvalidPassword()
    return password


def roles_text(roles: tuple[str, ...]) -> str:
    """Roles as one sorted, comma-separated value; a user has at least one."""
    if not roles or any(not r or "," in r for r in roles):
        raise ValueError(f"invalid roles {roles!r}")
    return ",".join(sorted(set(roles)))


def roles_of_text(text: str) -> tuple[str, ...]:
    return tuple(r for r in text.split(",") if r)


@dataclass(frozen=True, slots=True)
class User:
    id: str
    email: str
    roles: tuple[str, ...]
    created_at: datetime

    @property
    def is_admin(self) -> bool:
        return ADMIN in self.roles


@dataclass(frozen=True, slots=True)
class Credentials:
    """A user with the hash of their password (never the password)."""

    user: User
    password_hash: str


@dataclass(frozen=True, slots=True)
class RefreshToken:
    """A stored refresh token: only the SHA-256 of the token itself is ever kept."""

    token_hash: str
    family_id: str
    user_id: str
    issued_at: datetime
    expires_at: datetime
    used_at: datetime | None = None
    revoked_at: datetime | None = None


class Redemption(enum.Enum):
    """What presenting a refresh token leads to."""

    ROTATE = "rotate"  # valid and unused: mark it used, issue its successor in the family
    REUSED = "reused"  # used before: revoke the whole family
    REFUSED = "refused"  # unknown, expired or revoked


def redeem(token: RefreshToken | None, now: datetime) -> Redemption:
    """The rule of refresh-token rotation. A used token that comes back means two parties hold
    the family (the client and a thief); the server cannot tell which is which, so neither keeps
    it. Reuse is judged before expiry: an old stolen copy still burns the family."""
    if token is None or token.revoked_at is not None:
        return Redemption.REFUSED
    if token.used_at is not None:
        return Redemption.REUSED
    if now >= token.expires_at:
        return Redemption.REFUSED
    return Redemption.ROTATE


def refresh_token_digest(token: str) -> str:
    """What is stored of a refresh token: its SHA-256 in hex. The token is 256 random bits, so
    a fast hash is enough (nothing to brute-force), and a leaked table redeems nothing."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int


@dataclass(frozen=True, slots=True)
class StoredKey:
    """A signing key as stored: an Ed25519 private key (PKCS8 PEM) and when it stopped signing."""

    kid: str
    private_key_pem: bytes
    created_at: datetime
    retired_at: datetime | None = None
