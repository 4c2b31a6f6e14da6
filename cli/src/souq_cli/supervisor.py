"""Run every service as its own process: stream logs, wait for readiness, restart crashes.

One asyncio task per service. A crash is restarted after a backoff that doubles (0.5 s up to
10 s) and resets once the process has stayed up for a while. A service that cannot start at
all is not retried for ever: after CRASH_LIMIT failed starts in a row (each an exit of its own
before it answered ready, or within FAILED_START_S of it), the whole system is stopped and
`failure` says which service and what it printed last. A process killed from outside (SIGKILL,
SIGTERM: an operator, a chaos tool, the OOM killer) did not fail to start; it is restarted.
SIGINT/SIGTERM stop the gateway first (no new traffic), then the others, each with SIGTERM
and a grace period before SIGKILL.

Signals go only to the children this process started and has not yet reaped: a pid cannot be
reused before its parent waits for it, so these never reach a stranger. The state file records
each child's start time and command line so that `status` and `down` can check the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import aiohttp
from souq_chassis.private_files import private_dir, private_tree, restrict_umask

from souq_cli.services import Ports, ServiceSpec, broker_url, services
from souq_cli.state import RunState, ServiceState, identify

BACKOFF_INITIAL_S = 0.5
BACKOFF_MAX_S = 10.0
STABLE_AFTER_S = 30.0
STOP_GRACE_S = 10.0
CRASH_LIMIT = 5  # failed starts in a row before `souq up` gives up
FAILED_START_S = 10.0  # an exit this soon after answering ready is a failed start too
# Deaths by these signals are someone else's doing, not a service that cannot start.
_KILLED = frozenset(-sig for sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP))
TAIL_LINES = 20  # of each child's output, kept to show why it failed
_COLORS = ("36", "35", "33", "32", "34", "31")


def failed_start(code: int, ready_at: float | None, now: float) -> bool | None:
    """Whether a process that exited with `code` failed to start: it exited of its own accord
    before it was ready or soon after. None when it was killed from outside (SIGKILL, SIGTERM:
    an operator, a chaos tool, the OOM killer), which says nothing either way."""
    if code in _KILLED:
        return None
    return ready_at is None or now - ready_at < FAILED_START_S


def _die_with_parent() -> None:
    """In the child: get SIGTERM if the supervisor dies, so no service outlives `souq up`."""
    if sys.platform == "linux":
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


@dataclass(frozen=True)
class Failure:
    """A service that could not start: `souq up` stopped everything because of it."""

    service: str
    exit_code: int
    attempts: int
    last_lines: list[str]


class Supervisor:
    def __init__(
        self,
        data_dir: Path,
        ports: Ports,
        *,
        out: IO[str] = sys.stdout,
        specs: tuple[ServiceSpec, ...] | None = None,
        secrets: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        """`secrets`: more variables for one service only, by service name."""
        self.data_dir = data_dir
        self.secrets = dict(secrets or {})
        self.ports = dict(ports)
        self.specs = specs or services()
        self.out = out
        self.color = out.isatty()
        self.state = RunState(os.getpid(), self.ports, broker_url=broker_url(self.ports))
        self.state.supervisor_create_time, self.state.supervisor_cmdline = identify(os.getpid())
        self.failure: Failure | None = None
        for spec in self.specs:
            self.state.services[spec.name] = ServiceState(url=spec.http_url(ports))
        self._procs: dict[str, asyncio.subprocess.Process] = {}
        self._stopping = asyncio.Event()
        self._ready: dict[str, asyncio.Event] = {s.name: asyncio.Event() for s in self.specs}
        self._ready_at: dict[str, float | None] = {s.name: None for s in self.specs}
        self._tails: dict[str, deque[str]] = {s.name: deque(maxlen=TAIL_LINES) for s in self.specs}
        self._log_file: IO[str] | None = None

    # -- running ---------------------------------------------------------------------------

    async def run(self, on_ready: Callable[[float], None]) -> None:
        """Run until SIGINT or SIGTERM, or until a service cannot start (then `failure` says
        which); `on_ready(seconds)` once every service is ready."""
        # Private before anything is made: the services and NATS inherit the umask, and what
        # an earlier run (or an older Souq) left readable to others is tightened.
        restrict_umask()
        private_tree(self.data_dir)
        private_dir(self.data_dir / "logs")
        self._log_file = (self.data_dir / "logs" / "souq.log").open("a", buffering=1)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._stopping.set)
        started = time.monotonic()
        self._save()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as http:
            tasks = [asyncio.create_task(self._keep_running(s, http)) for s in self.specs]
            waiter = asyncio.create_task(self._await_all_ready())
            stop = asyncio.create_task(self._stopping.wait())
            done, _ = await asyncio.wait({waiter, stop}, return_when=asyncio.FIRST_COMPLETED)
            if waiter in done:
                on_ready(time.monotonic() - started)
                await stop
            waiter.cancel()
            await self._stop_all()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        self._save()
        self._log_file.close()

    async def _await_all_ready(self) -> None:
        await asyncio.gather(*(e.wait() for e in self._ready.values()))

    async def _keep_running(self, spec: ServiceSpec, http: aiohttp.ClientSession) -> None:
        backoff = BACKOFF_INITIAL_S
        failed_starts = 0
        svc = self.state.services[spec.name]
        env = {
            **os.environ,
            **spec.environment(self.ports, self.data_dir),
            **self.secrets.get(spec.name, {}),
            "PYTHONUNBUFFERED": "1",
        }
        while not self._stopping.is_set():
            began = time.monotonic()
            proc = await asyncio.create_subprocess_exec(
                *spec.argv(self.ports, self.data_dir),
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches only us; we stop children in order
                preexec_fn=_die_with_parent,
            )
            self._procs[spec.name] = proc
            svc.pid, svc.state, svc.exit_code = proc.pid, "starting", None
            svc.create_time, svc.cmdline = identify(proc.pid)
            self._ready_at[spec.name] = None
            self._tails[spec.name].clear()
            self._save()
            pump = asyncio.create_task(self._pump_logs(spec.name, proc))
            probe = asyncio.create_task(self._probe_ready(spec, svc, http, proc))
            code = await proc.wait()
            probe.cancel()
            # A probe in the middle of an answer finishes its cancel before the state moves on,
            # so a dead process is never marked ready after its exit was seen.
            await asyncio.wait({probe}, timeout=STOP_GRACE_S)
            await pump
            svc.exit_code = code
            if self._stopping.is_set():
                break
            if time.monotonic() - began > STABLE_AFTER_S:
                backoff = BACKOFF_INITIAL_S
            verdict = failed_start(code, self._ready_at[spec.name], time.monotonic())
            if verdict is not None:
                failed_starts = failed_starts + 1 if verdict else 0
            if failed_starts >= CRASH_LIMIT:
                self._give_up(spec.name, code, failed_starts)
                break
            svc.state = "restarting"
            self._say(spec.name, f"exited with status {code}; restarting in {backoff:.1f}s")
            self._save()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(backoff):
                    await self._stopping.wait()
            backoff = min(backoff * 2, BACKOFF_MAX_S)
            svc.restarts += 1
        if svc.state != "failed":
            svc.state = "stopped"
        self._save()

    def _give_up(self, name: str, code: int, attempts: int) -> None:
        """Stop the whole system: this service cannot start, and restarting will not help."""
        self.state.services[name].state = "failed"
        self.failure = Failure(name, code, attempts, list(self._tails[name]))
        self._say(
            name,
            f"exited with status {code}: {attempts} failed starts in a row (each before it was "
            f"ready or within {FAILED_START_S:.0f}s of it); giving up and stopping Souq",
        )
        self._stopping.set()

    async def _probe_ready(
        self,
        spec: ServiceSpec,
        svc: ServiceState,
        http: aiohttp.ClientSession,
        proc: asyncio.subprocess.Process,
    ) -> None:
        url = spec.http_url(self.ports) + spec.ready_path
        while True:
            if spec.probe is not None:
                ready = await spec.probe(self.ports, self.data_dir)
            else:
                ready = False
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with http.get(url) as response:
                        ready = response.status == 200
            if ready and proc.returncode is None:  # a dead process's port may answer for another
                # One place for every kind of probe: when it became ready is what tells a
                # failed start from a run that went well (the broker's included).
                svc.state = "ready"
                self._ready_at[spec.name] = time.monotonic()
                self._save()
                self._ready[spec.name].set()
                return
            await asyncio.sleep(0.05)

    async def _pump_logs(self, name: str, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            text = line.decode(errors="replace").rstrip("\n")
            self._tails[name].append(text)
            self._say(name, text)

    def _say(self, name: str, text: str) -> None:
        width = max(len(s.name) for s in self.specs)
        label = f"{name:<{width}} |"
        if self.color:
            code = _COLORS[[s.name for s in self.specs].index(name) % len(_COLORS)]
            label = f"\x1b[{code}m{label}\x1b[0m"
        print(f"{label} {text}", file=self.out, flush=True)
        if self._log_file is not None:
            self._log_file.write(f"{name} | {text}\n")

    # -- stopping --------------------------------------------------------------------------

    async def _stop_all(self) -> None:
        # The edge first, so no new work comes in while the services drain; the broker last,
        # so their relays and consumers can finish.
        for tier in sorted({s.tier for s in self.specs}, reverse=True):
            group = [s.name for s in self.specs if s.tier == tier]
            await asyncio.gather(*(self._stop(name) for name in group))

    async def _stop(self, name: str) -> None:
        proc = self._procs.get(name)
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(STOP_GRACE_S):
                await proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    def _save(self) -> None:
        self.state.save(self.data_dir)
