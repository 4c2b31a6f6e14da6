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
