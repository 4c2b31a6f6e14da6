"""Events published by identity."""

from __future__ import annotations

from typing import ClassVar

from souq.events.base import Message


class UserRegistered(Message):
    """Someone signed up. Carries no credential of any kind."""

    TYPE: ClassVar[str] = "identity.UserRegistered"
    VERSION: ClassVar[int] = 1

    user_id: str
    email: str


class RegistrationAttempted(Message):
    """Someone tried to sign up with the email of an existing account. Sign-up answers alike
    whether or not an email is registered, so the account's owner is told instead (a
    notifications service sends it). Carries no credential of any kind."""

    TYPE: ClassVar[str] = "identity.RegistrationAttempted"
    VERSION: ClassVar[int] = 1

    user_id: str
    email: str
