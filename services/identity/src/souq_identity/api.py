"""Identity HTTP routes: parse, call a use case, respond. Internal paths under /v1; the gateway
exposes them as /api/v1/auth/... and /api/v1/me. No response or error ever carries a password,
a password hash or a refresh token other than the one just issued to its owner."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from fastapi import APIRouter, FastAPI, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StrictStr
from souq_chassis.auth import Admin, CurrentUser
from souq_chassis.forwarding import forwarded_client
from souq_chassis.problems import problem, request_id_of
from souq_chassis.ratelimit import RateLimited, client_key, rate_limited_problem

from souq_identity.domain import (
    MAX_EMAIL_LENGTH,
    MAX_PASSWORD_LENGTH,
    MIN_PASSWORD_LENGTH,
    IdentityError,
    InvalidCredentials,
    InvalidRefreshToken,
    TokenPair,
    User,
    UserNotFound,
)
from souq_identity.passwords import Busy
from souq_identity.service import IdentityService

# Room for surrounding spaces (trimmed by normalization), not for an unbounded string.
MAX_EMAIL_INPUT = MAX_EMAIL_LENGTH + 64
MAX_REFRESH_TOKEN = 512


class Registration(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: StrictStr = Field(min_length=3, max_length=MAX_EMAIL_INPUT)
    password: StrictStr = Field(min_length=MIN_PASSWORD_LENGTH, max_length=MAX_PASSWORD_LENGTH)


class LoginBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: StrictStr = Field(min_length=1, max_length=MAX_EMAIL_INPUT)
    password: StrictStr = Field(min_length=1, max_length=MAX_PASSWORD_LENGTH)


class RefreshBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    refresh_token: StrictStr = Field(min_length=1, max_length=MAX_REFRESH_TOKEN)


class LogoutBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    refresh_token: StrictStr | None = Field(
        default=None, min_length=1, max_length=MAX_REFRESH_TOKEN
    )


class UserBody(BaseModel):
    id: str
    email: str
    roles: list[str]
    created_at: datetime

    @classmethod
    def of(cls, user: User) -> UserBody:
        return cls(
            id=user.id, email=user.email, roles=sorted(user.roles), created_at=user.created_at
        )


class RegistrationBody(BaseModel):
    """The same answer whether or not the email was registered already."""

    status: Literal["accepted"] = "accepted"
    detail: str = (
        "If this email has no account yet, it has one now: sign in with it. If it has one, "
        "its owner is told."
    )


class TokensBody(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["Bearer"] = "Bearer"
    expires_in: int

    @classmethod
    def of(cls, pair: TokenPair) -> TokensBody:
        return cls(
            access_token=pair.access_token,
            refresh_token=pair.refresh_token,
            expires_in=pair.expires_in,
        )


class JwkBody(BaseModel):
    kty: str
    crv: str
    x: str
    kid: str
    use: str
    alg: str


class JwksBody(BaseModel):
    keys: list[JwkBody]


class KeyBody(BaseModel):
    kid: str


def _client(request: Request) -> str:
    """The client's address: what the gateway vouched for (`X-Souq-Client`, believed only with
    the forwarding secret the gateway and identity share), else the socket's peer (or what a
    trusted proxy forwarded: uvicorn believes X-Forwarded-For only from
    IDENTITY_TRUSTED_PROXIES). Without this, everyone behind the gateway would be one client,
    and failed sign-ins as a user from one address would slow that user's from every other."""
    vouched = forwarded_client(request.headers, request.app.state.forwarding_secret)
    if vouched is not None:
        return client_key(vouched)
    return client_key(request.client.host) if request.client else "unknown"


def _no_store(response: Response) -> None:
    # Tokens are credentials: no cache keeps them (RFC 6749 §5.1).
    response.headers["Cache-Control"] = "no-store"


def include(app: FastAPI, identity: IdentityService) -> None:
    """Mount identity's routes and map its errors to problem+json."""
    public = APIRouter(prefix="/v1", tags=["identity"])
    admin = APIRouter(prefix="/v1/admin", tags=["identity admin"])

    @public.post("/register", status_code=202)
    async def register(body: Registration, request: Request) -> RegistrationBody:
        # 202 whether the account is new or the email was taken (its owner is told): sign-up
        # does not say which emails have an account.
        await identity.register(body.email, body.password, _client(request))
        return RegistrationBody()

    @public.post("/login")
    async def login(body: LoginBody, request: Request, response: Response) -> TokensBody:
        _no_store(response)
        return TokensBody.of(await identity.login(body.email, body.password, _client(request)))

    @public.post("/refresh")
    async def refresh(body: RefreshBody, response: Response) -> TokensBody:
        _no_store(response)
        return TokensBody.of(await identity.refresh(body.refresh_token))

    @public.post("/logout", status_code=204)
    async def logout(principal: CurrentUser, body: LogoutBody | None = None) -> Response:
        await identity.logout(principal.user_id, body.refresh_token if body else None)
        return Response(status_code=204)

    @public.get("/me")
    async def me(principal: CurrentUser) -> UserBody:
        return UserBody.of(await identity.me(principal.user_id))

    @public.get("/jwks")
    async def jwks(response: Response) -> JwksBody:
        response.headers["Cache-Control"] = "public, max-age=60"
        return JwksBody.model_validate(identity.jwks())

    @admin.post("/keys/rotate", status_code=201)
    async def rotate_keys(_: Admin) -> KeyBody:
        return KeyBody(kid=await identity.rotate_signing_key())

    app.include_router(public)
    app.include_router(admin)

    status_of: dict[type[IdentityError], int] = {
        InvalidCredentials: 401,
        InvalidRefreshToken: 401,
        UserNotFound: 404,
    }

    async def identity_error(request: Request, exc: Exception) -> Response:
        status = next((s for t, s in status_of.items() if isinstance(exc, t)), 422)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return problem(status, str(exc), request_id=request_id_of(request), headers=headers)

    async def busy(request: Request, exc: Exception) -> Response:
        # 429, not 503: identity is well, only busy hashing; a gateway must not count this
        # against identity's circuit breaker, and the client should simply retry shortly.
        return problem(
            429, str(exc), request_id=request_id_of(request), headers={"Retry-After": "1"}
        )

    app.add_exception_handler(IdentityError, identity_error)
    app.add_exception_handler(Busy, busy)
    app.add_exception_handler(RateLimited, rate_limited_problem)
