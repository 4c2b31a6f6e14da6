"""Who is calling: access tokens (JWT, EdDSA) verified locally against identity's JWKS.

The gateway and every service that serves user data verify the bearer token themselves; a
service never trusts a user id it is merely told (see the README, "Security"). Keys come from
identity's JWKS document, fetched on first use, again when a token names a key id not yet
known (key rotation) but at most once a second (`min_refresh_interval_s`), so forged key ids
cannot turn the verifier into a flood of JWKS requests, and again once the copy is older than
`max_age_s`, so a key identity withdraws stops verifying within a minute. Verified tokens are
remembered until they expire (or their key is withdrawn), so a client's next request costs a
dictionary lookup, not a signature check.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlsplit

import jwt
import orjson
import structlog
from fastapi import Depends, FastAPI, Request
from pydantic import AliasChoices, Field
from starlette.responses import Response

from souq_chassis.http_client import HttpUpstream
from souq_chassis.metrics import Metrics
from souq_chassis.problems import problem, request_id_of
from souq_chassis.resilience import Policy
from souq_chassis.settings import ServiceSettings

ALGORITHM = "EdDSA"  # the only one accepted: `none`, HS256 and the rest are refused outright
ISSUER = "souq-identity"
AUDIENCE = "souq"
ROLES = frozenset({"customer", "admin"})
log = structlog.get_logger("souq.auth")


class AuthSettings(ServiceSettings):
    """Where the verifier finds identity's keys; one variable for every service."""

    jwks_url: str = Field(
        default="http://127.0.0.1:8083/v1/jwks",
        validation_alias=AliasChoices("SOUQ_JWKS_URL", "jwks_url"),
    )


@dataclass(frozen=True, slots=True)
class Principal:
    """A verified caller: the token's subject and roles."""

    user_id: str
    roles: frozenset[str]
    expires_at: float

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles


class InvalidToken(Exception):
    """The request carries no acceptable access token (401)."""


class Forbidden(Exception):
    """The caller is known but lacks the role (403)."""


class KeysUnavailable(Exception):
    """The JWKS could not be fetched, so a token signed by an unknown key cannot be checked."""


Fetch = Callable[[], Awaitable[bytes]]


class TokenVerifier:
    def __init__(
        self,
        fetch_jwks: Fetch,
        *,
        audience: str = AUDIENCE,
        issuer: str = ISSUER,
        leeway_s: float = 5.0,
        min_refresh_interval_s: float = 1.0,
        max_age_s: float = 60.0,
        cache_size: int = 50_000,
    ) -> None:
        self._fetch = fetch_jwks
        self._audience = audience
        self._issuer = issuer
        self._leeway_s = leeway_s
        self._min_refresh_s = min_refresh_interval_s
        self._max_age_s = max_age_s
        self._cache_size = cache_size
        self._keys: dict[str, Any] = {}
        self._verified: dict[str, Principal] = {}
        self._last_fetch = -float("inf")  # monotonic time of the last attempt
        self._loaded_at = -float("inf")  # ... and of the last successful one
        self._last_fetch_failed = False
        self._lock = asyncio.Lock()
        self._renewal: asyncio.Task[None] | None = None
        self.fetches = 0

    async def verify(self, token: str) -> Principal:
        """The token's principal, or InvalidToken saying why not."""
        now = time.monotonic()
        if (
            now - self._loaded_at > self._max_age_s
            and now - self._last_fetch >= self._min_refresh_s
            and (self._renewal is None or self._renewal.done())
        ):
            # Renewed in the background: no request waits on identity for keys it has.
            self._renewal = asyncio.create_task(self._refresh_aged())
        known = self._verified.get(token)
        if known is not None:
            if time.time() < known.expires_at + self._leeway_s:
                return known
            del self._verified[token]
            raise InvalidToken("The access token has expired.")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise InvalidToken("The access token is malformed.") from exc
        if header.get("alg") != ALGORITHM:
            raise InvalidToken(f"Tokens signed with {header.get('alg')!r} are not accepted.")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise InvalidToken("The access token names no signing key.")
        key = self._keys.get(kid) or await self._refreshed_key(kid)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway_s,
                options={"require": ["exp", "iat", "sub", "aud", "iss"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise InvalidToken("The access token has expired.") from exc
        except jwt.InvalidAudienceError as exc:
            raise InvalidToken("The access token is not meant for this API.") from exc
        except jwt.InvalidTokenError as exc:
            raise InvalidToken("The access token is not valid.") from exc
        roles = claims.get("roles")
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise InvalidToken("The access token carries no roles.")
        principal = Principal(str(claims["sub"]), frozenset(roles) & ROLES, float(claims["exp"]))
        if len(self._verified) >= self._cache_size:
            self._verified.pop(next(iter(self._verified)))  # the oldest entry
        self._verified[token] = principal
        return principal

    async def _refresh_aged(self) -> None:
        """Fetch the keys again because our copy is old; on failure keep it (identity being
        away must not sign everyone out) and try again after the back-off."""
        async with self._lock:
            stale = time.monotonic() - self._loaded_at > self._max_age_s
            if stale and time.monotonic() - self._last_fetch >= self._min_refresh_s:
                await self._fetch_keys(raise_on_failure=False)

    async def close(self) -> None:
        """Stop a renewal under way (at shutdown)."""
        if self._renewal is not None and not self._renewal.done():
            self._renewal.cancel()
            with suppress(asyncio.CancelledError):
                await self._renewal

    async def _refreshed_key(self, kid: str) -> Any:
        async with self._lock:
            if kid in self._keys:  # another request fetched it meanwhile
                return self._keys[kid]
            if time.monotonic() - self._last_fetch >= self._min_refresh_s:
                await self._fetch_keys(raise_on_failure=True)
            elif self._last_fetch_failed or not self._loaded_at > 0:
                # Backing off from a failed fetch: an outage, not a bad token.
                raise KeysUnavailable("The signing keys are unavailable.")
        if kid not in self._keys:
            raise InvalidToken("The access token is signed by an unknown key.")
        return self._keys[kid]

    async def _fetch_keys(self, *, raise_on_failure: bool) -> None:
        """Fetch and load the JWKS (the caller holds the lock)."""
        self._last_fetch = time.monotonic()
        self.fetches += 1
        try:
            self.load(orjson.loads(await self._fetch()))
        except Exception as exc:  # unreachable, an error status, or not a JWKS at all
            self._last_fetch_failed = True
            log.warning("jwks_fetch_failed", error=f"{type(exc).__name__}: {exc}")
            if raise_on_failure:
                raise KeysUnavailable("The signing keys are unavailable.") from exc
            return
        self._last_fetch_failed = False
        self._loaded_at = time.monotonic()

    def load(self, jwks: dict[str, Any]) -> None:
        """Replace the known keys with a JWKS document's Ed25519 keys; forget verified tokens
        whose key is gone (a withdrawn key stops working at once)."""
        keys: dict[str, Any] = {}
        if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
            raise ValueError("not a JWKS document")
        for jwk in jwks["keys"]:
            if jwk.get("kty") == "OKP" and jwk.get("crv") == "Ed25519" and jwk.get("kid"):
                keys[jwk["kid"]] = jwt.PyJWK(jwk, algorithm=ALGORITHM).key
        if set(self._keys) - set(keys):
            self._verified.clear()
        self._keys = keys
        log.info("jwks_loaded", kids=sorted(keys))


def jwks_verifier(settings: AuthSettings, metrics: Metrics) -> tuple[TokenVerifier, HttpUpstream]:
    """A verifier that fetches identity's JWKS over HTTP; start and close the returned upstream
    with the app (its calls have a deadline, a breaker and metrics like any other)."""
    url = urlsplit(settings.jwks_url)
    identity = HttpUpstream(
        "identity-jwks",
        f"{url.scheme}://{url.netloc}",
        metrics,
        Policy(timeout_s=2.0, max_concurrency=4),
    )
    path = url.path + (f"?{url.query}" if url.query else "")

    async def fetch() -> bytes:
        reply = await identity.request("GET", path, operation="GetJwks")
        if reply.status != 200:
            raise RuntimeError(f"JWKS answered HTTP {reply.status}")
        return reply.body

    return TokenVerifier(fetch), identity


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise InvalidToken("The Authorization header must be `Bearer <access token>`.")
    return token.strip()


async def current_user(request: Request) -> Principal:
    """FastAPI dependency: the verified caller, or 401."""
    token = bearer_token(request)
    if token is None:
        raise InvalidToken("Sign in: this endpoint needs an access token.")
    verifier: TokenVerifier = request.app.state.token_verifier
    principal = await verifier.verify(token)
    request.state.principal = principal
    return principal


async def current_admin(principal: Annotated[Principal, Depends(current_user)]) -> Principal:
    """FastAPI dependency: the verified caller, who must have the admin role, or 403."""
    if not principal.is_admin:
        raise Forbidden("This endpoint is for administrators.")
    return principal


CurrentUser = Annotated[Principal, Depends(current_user)]
Admin = Annotated[Principal, Depends(current_admin)]


def install_auth(app: FastAPI, verifier: TokenVerifier) -> None:
    """Make `CurrentUser` and `Admin` work in the app's routes and map auth errors to
    problem+json: 401 with `WWW-Authenticate: Bearer`, 403, or 503 without keys."""
    app.state.token_verifier = verifier

    async def unauthorized(request: Request, exc: Exception) -> Response:
        return problem(
            401,
            str(exc),
            request_id=request_id_of(request),
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )

    async def forbidden(request: Request, exc: Exception) -> Response:
        return problem(403, str(exc), request_id=request_id_of(request))

    async def no_keys(request: Request, exc: Exception) -> Response:
        return problem(
            503, str(exc), request_id=request_id_of(request), headers={"Retry-After": "1"}
        )

    app.add_exception_handler(InvalidToken, unauthorized)
    app.add_exception_handler(Forbidden, forbidden)
    app.add_exception_handler(KeysUnavailable, no_keys)


def roles_of(values: Iterable[str]) -> list[str]:
    """Roles as a token carries them: known ones, sorted."""
    return sorted(set(values) & ROLES)
