"""Argon2id hashing off the event loop, and the bound that refuses a flood of hashes."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time

import pytest
from souq_identity.passwords import Argon2Parameters, Busy, HashingBound, Passwords

PASSWORD = "correct horse battery staple"


@pytest.fixture
def passwords() -> Passwords:
    return Passwords(Argon2Parameters(), HashingBound(max_concurrent=2, max_waiting=4))


async def test_hashes_are_argon2id_with_the_configured_parameters(passwords: Passwords) -> None:
    hashed = await passwords.hash(PASSWORD)
    assert hashed.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert PASSWORD not in hashed
    assert await passwords.hash(PASSWORD) != hashed  # salted


async def test_the_right_password_verifies_and_a_wrong_one_does_not(passwords: Passwords) -> None:
    hashed = await passwords.hash(PASSWORD)
    assert await passwords.verify(hashed, PASSWORD)
    assert not await passwords.verify(hashed, PASSWORD + "!")
    assert not await passwords.verify(hashed, "")


async def test_a_malformed_hash_verifies_nothing(passwords: Passwords) -> None:
    assert not await passwords.verify("not-a-hash", PASSWORD)
    assert passwords.needs_rehash("not-a-hash")


async def test_a_hash_made_with_weaker_parameters_needs_a_rehash(passwords: Passwords) -> None:
    older = Passwords(Argon2Parameters(time_cost=1, memory_cost_kib=47_104), HashingBound(1, 0))
    old_hash = await older.hash(PASSWORD)
    assert passwords.needs_rehash(old_hash)
    assert await passwords.verify(old_hash, PASSWORD)  # still verifies until rehashed
    assert not passwords.needs_rehash(await passwords.hash(PASSWORD))


async def test_hashing_runs_off_the_event_loop(passwords: Passwords) -> None:
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.002)
            ticks += 1

    ticker = asyncio.create_task(tick())
    started = time.perf_counter()
    await passwords.hash(PASSWORD)
    elapsed = time.perf_counter() - started
    ticker.cancel()
    # A hash takes tens of milliseconds; run inline it would starve the ticker completely.
    assert elapsed > 0.01
    assert ticks >= 3, (ticks, elapsed)


async def test_the_bound_admits_running_plus_waiting_and_refuses_the_rest() -> None:
    bound = HashingBound(max_concurrent=1, max_waiting=2)
    release = asyncio.Event()
    running = 0
    most_running = 0

    async def job() -> None:
        nonlocal running, most_running
        async with bound.slot():
            running += 1
            most_running = max(most_running, running)
            await release.wait()
            running -= 1

    jobs = [asyncio.create_task(job()) for _ in range(3)]
    await asyncio.sleep(0.01)
    assert bound.admitted == 3 and running == 1  # one runs, two wait
    with pytest.raises(Busy):
        async with bound.slot():
            pass
    release.set()
    await asyncio.gather(*jobs)
    assert most_running == 1
    assert bound.admitted == 0
    async with bound.slot():  # room again once they are done
        pass


async def test_passwords_refuse_to_hash_when_the_bound_is_full() -> None:
    bound = HashingBound(max_concurrent=1, max_waiting=0)
    passwords = Passwords(Argon2Parameters(), bound)
    first = asyncio.create_task(passwords.hash(PASSWORD))
    await asyncio.sleep(0)  # the first takes the only slot
    with pytest.raises(Busy):
        await passwords.verify("$argon2id$whatever", PASSWORD)
    assert (await first).startswith("$argon2id$")


async def test_a_failed_job_frees_its_slot() -> None:
    bound = HashingBound(max_concurrent=1, max_waiting=0)

    def fail() -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await bound.run(fail)
    assert bound.admitted == 0
    assert await bound.run(lambda: 42) == 42


def test_a_bound_needs_room_for_one_job() -> None:
    with pytest.raises(ValueError):
        HashingBound(max_concurrent=0, max_waiting=4)


async def test_an_unknown_email_costs_as_much_as_a_wrong_password(passwords: Passwords) -> None:
    hashed = await passwords.hash(PASSWORD)
    await passwords.prepare()

    async def timed(check: object) -> float:
        started = time.perf_counter()
        await check  # type: ignore[misc]
        return time.perf_counter() - started

    wrong = min([await timed(passwords.verify(hashed, "wrong password")) for _ in range(3)])
    nobody = min([await timed(passwords.verify_nobody("wrong password")) for _ in range(3)])
    assert 0.5 < nobody / wrong < 2.0, (nobody, wrong)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux's")
async def test_hashing_runs_in_its_own_threads_at_a_lower_cpu_priority() -> None:
    bound = HashingBound(max_concurrent=1, max_waiting=0, nice=7)
    try:
        thread_id = await bound.run(threading.get_native_id)
        nice = await bound.run(lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
    finally:
        bound.close()

    assert thread_id != threading.get_native_id()
    assert nice == 7  # Linux: each thread has its own
