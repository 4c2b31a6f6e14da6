"""Password hashing with Argon2id, off the event loop and behind a bound.

Argon2id is slow and memory-hard on purpose (tens of milliseconds, tens of MiB per hash), so a
burst of logins must not queue without limit: at most `max_concurrent` hashes run at once, at
most `max_waiting` wait, and the rest are refused at once with `Busy` (429, retry shortly)
instead of holding connections and memory until they time out.

Hashes run in threads of their own at a lower CPU priority (`nice`, Linux): when the machine is
busy, the scheduler serves requests first and sign-ins wait, so a login flood slows sign-in
down rather than every other route; when it is idle, hashing gets the whole core.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TypeVar

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

T = TypeVar("T")


class Busy(Exception):
    """Too many password hashes running and waiting: try again shortly."""

    def __init__(self) -> None:
        super().__init__("Too many sign-ins at once; try again in a moment.")


def _lower_priority(nice: int) -> None:
    """Run this thread at `nice` (Linux gives each thread its own); elsewhere, a no-op."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except (AttributeError, OSError):
        pass


class HashingBound:
    """At most `max_concurrent` jobs at once and `max_waiting` queued; beyond that, `Busy`.
    Jobs run in `max_concurrent` threads of their own at CPU priority `nice`."""

    def __init__(self, max_concurrent: int, max_waiting: int, nice: int = 0) -> None:
        if max_concurrent < 1 or max_waiting < 0:
            raise ValueError("max_concurrent must be at least 1, max_waiting at least 0")
        self._capacity = max_concurrent + max_waiting
        self._semaphore = asyncio.Semaphore(max_concurrent)
        self._admitted = 0  # running plus waiting
        self._threads = ThreadPoolExecutor(
            max_concurrent, "argon2", initializer=_lower_priority, initargs=(nice,)
        )

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)

    @property
    def admitted(self) -> int:
        return self._admitted

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold a running slot for the block, waiting for one if the queue has room."""
        if self._admitted >= self._capacity:
            raise Busy()
        self._admitted += 1
        try:
            async with self._semaphore:
                yield
        finally:
            self._admitted -= 1

    async def run(self, work: Callable[[], T]) -> T:
        """`work()` in a worker thread once a slot is free."""
        async with self.slot():
            return await asyncio.get_running_loop().run_in_executor(self._threads, work)


@dataclass(frozen=True, slots=True)
class Argon2Parameters:
    time_cost: int = 2
    memory_cost_kib: int = 19_456
    parallelism: int = 1


class Passwords:
    """Hash and verify passwords (Argon2id), each in a worker thread within the bound."""

    def __init__(self, parameters: Argon2Parameters, bound: HashingBound) -> None:
        self._hasher = PasswordHasher(
            time_cost=parameters.time_cost,
            memory_cost=parameters.memory_cost_kib,
            parallelism=parameters.parallelism,
            type=Type.ID,
        )
        self._bound = bound
        # Verified against when the email is unknown, so that answer takes as long as a wrong
        # password does. Made in `prepare()` (at start), not here: building the app is quick.
        self._dummy_hash: str | None = None

    async def prepare(self) -> None:
        """Make the hash that unknown emails are checked against."""
        if self._dummy_hash is None:
            self._dummy_hash = await self.hash(secrets.token_urlsafe(16))

    async def hash(self, password: str) -> str:
        return await self._bound.run(lambda: self._hasher.hash(password))

    async def verify(self, password_hash: str, password: str) -> bool:
        """Whether the password matches the hash (False for a malformed hash, never raises)."""
        return await self._bound.run(lambda: self._matches(password_hash, password))

    async def verify_nobody(self, password: str) -> None:
        """Spend the time of one verification on no account (an unknown email)."""
        await self.prepare()
        assert self._dummy_hash is not None
        await self.verify(self._dummy_hash, password)

    def needs_rehash(self, password_hash: str) -> bool:
        """Whether the hash was made with other parameters than today's (rehash at login)."""
        try:
            return self._hasher.check_needs_rehash(password_hash)
        except InvalidHashError:
            return True

    def _matches(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False
