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
    # A JWKS fetch is abandoned after this; a request waits for one at most jwks_wait_s (then
    # 503), and after a fetch ends the next waits jwks_min_refresh_s.
    jwks_fetch_timeout_s: float = Field(default=0.5, gt=0)
    jwks_wait_s: float = Field(default=0.1, gt=0)
    jwks_min_refresh_s: float = Field(default=1.0, ge=0)


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
    """Verifies access tokens against identity's keys, fetched as needed.

    At most one JWKS fetch is in flight, bounded by `fetch_timeout_s`; requests that need it
    share it. With no keys known they wait at most `wait_s` for it, so a hung identity costs a
    request a fraction of a second, not a queue of fetches; with keys known, a token naming an
    unknown key waits the fetch out (at most `fetch_timeout_s`): it is likely a new key. After
    a fetch ends the next waits `min_refresh_interval_s` (stamped when it ends, so a failed
    fetch is a real back-off); while backing off from a failure without the key a token names,
    the answer is KeysUnavailable (503) at once.
    """

    def __init__(
        self,
        fetch_jwks: Fetch,
        *,
        audience: str = AUDIENCE,
        issuer: str = ISSUER,
        leeway_s: float = 5.0,
        min_refresh_interval_s: float = 1.0,
        max_age_s: float = 60.0,
        fetch_timeout_s: float = 0.5,
        wait_s: float = 0.1,
        cache_size: int = 50_000,
    ) -> None:
        self._fetch = fetch_jwks
        self._audience = audience
        self._issuer = issuer
        self._leeway_s = leeway_s
        self._min_refresh_s = min_refresh_interval_s
        self._max_age_s = max_age_s
        self._fetch_timeout_s = fetch_timeout_s
        self._wait_s = wait_s
        self._cache_size = cache_size
        self._keys: dict[str, Any] = {}
        self._verified: dict[str, Principal] = {}
        self._next_fetch_at = -float("inf")  # monotonic: no fetch before (the back-off)
        self._loaded_at = -float("inf")  # ... of the last successful fetch
        self._last_fetch_failed = False
        self._fetching: asyncio.Task[None] | None = None  # the one fetch in flight
        self.fetches = 0

    async def verify(self, token: str) -> Principal:
        """The token's principal, or InvalidToken saying why not."""
        if time.monotonic() - self._loaded_at > self._max_age_s:
            # Renewed in the background: no request waits on identity for keys it has.
            self._start_fetch()
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

    async def close(self) -> None:
        """Stop a fetch under way (at shutdown)."""
        fetching = self._fetching
        if fetching is not None and not fetching.done():
            fetching.cancel()
            with suppress(asyncio.CancelledError):
                await fetching

    @property
    def fetching(self) -> bool:
        """A JWKS fetch is in flight."""
        return self._fetching is not None and not self._fetching.done()

    def _start_fetch(self) -> asyncio.Task[None] | None:
        """The fetch in flight, or a new one unless backing off (then None)."""
        if self._fetching is not None and not self._fetching.done():
            return self._fetching
        if time.monotonic() < self._next_fetch_at:
            return None
        self._fetching = asyncio.create_task(self._fetch_keys(), name="jwks-fetch")
        return self._fetching

    async def _refreshed_key(self, kid: str) -> Any:
        fetching = self._start_fetch()
        if fetching is not None:
            # Shared. With no keys at all identity is away or hung, and a request waits only
            # briefly for it (a fast 503). With keys known, a token naming another is most likely
            # signed by a key identity has just rotated in: worth the whole (bounded) fetch.
            wait_s = self._wait_s if not self._keys else self._fetch_timeout_s
            await asyncio.wait({fetching}, timeout=wait_s)
            if kid in self._keys:  # the fetch brought it (or another did meanwhile)
                return self._keys[kid]
            if not fetching.done():
                raise KeysUnavailable("The signing keys are unavailable: identity is slow.")
        elif kid in self._keys:
            return self._keys[kid]
        if self._last_fetch_failed or self._loaded_at == -float("inf"):
            # Never loaded, failed, or backing off from a failure: an outage, not a bad token.
            raise KeysUnavailable("The signing keys are unavailable.")
        raise InvalidToken("The access token is signed by an unknown key.")

    async def _fetch_keys(self) -> None:
        """Fetch and load the JWKS within its deadline; on failure keep the keys we have
        (identity being away must not sign everyone out). The back-off starts when it ends."""
        self.fetches += 1
        try:
            async with asyncio.timeout(self._fetch_timeout_s):
                document = await self._fetch()
            self.load(orjson.loads(document))
        except Exception as exc:  # unreachable, too slow, an error status, or not a JWKS at all
            self._last_fetch_failed = True
            log.warning("jwks_fetch_failed", error=f"{type(exc).__name__}: {exc}")
        else:
            self._last_fetch_failed = False
            self._loaded_at = time.monotonic()
        finally:
            self._next_fetch_at = time.monotonic() + self._min_refresh_s

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
        Policy(timeout_s=settings.jwks_fetch_timeout_s, max_concurrency=4),
    )
    path = url.path + (f"?{url.query}" if url.query else "")

    async def fetch() -> bytes:
        reply = await identity.request("GET", path, operation="GetJwks")
        if reply.status != 200:
            raise RuntimeError(f"JWKS answered HTTP {reply.status}")
        return reply.body

    verifier = TokenVerifier(
        fetch,
        min_refresh_interval_s=settings.jwks_min_refresh_s,
        fetch_timeout_s=settings.jwks_fetch_timeout_s,
        wait_s=settings.jwks_wait_s,
    )
    return verifier, identity


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
