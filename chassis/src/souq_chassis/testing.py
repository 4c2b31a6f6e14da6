"""Test support shared by every service's tests: free ports and real service processes."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from souq_chassis.settings import ServiceSettings


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServiceProcess:
    """`python -m <module>` as a real process, up when `ready_path` (/readyz) answers 200;
    `url` is its public listener, `internal_url` its internal one (metrics, details).

    Its output goes to a file, shown in the error if it does not come up. A process that is
    meant to stay unready (its dependency is down on purpose) waits on /healthz instead.
    """

    def __init__(
        self, module: str, http_port: int, env: Mapping[str, str], ready_path: str = "/readyz"
    ) -> None:
        self.module = module
        self.ready_path = ready_path
        self.http_port = http_port
        self.url = f"http://127.0.0.1:{http_port}"
        # Metrics and detailed readiness: the internal listener, on a free port of its own
        # unless `env` names one (souq_catalog reads CATALOG_INTERNAL_PORT).
        internal_variable = f"{module.removeprefix('souq_').upper()}_INTERNAL_PORT"
        env = {internal_variable: str(free_port()), **env}
        self.internal_url = f"http://127.0.0.1:{env[internal_variable]}"
        self.grpc_target = ""
        self.data_dir: Path | None = None
        self._env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        self._log = tempfile.NamedTemporaryFile(prefix=f"{module}-", suffix=".log", delete=False)
        self.proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def on_free_ports(
        cls,
        module: str,
        env_prefix: str,
        data_dir: Path,
        *,
        env: Mapping[str, str] | None = None,
        **settings: object,
    ) -> ServiceProcess:
        """A service with HTTP and gRPC on free ports and its data under data_dir; `settings`
        are more of its variables by lower-case suffix (seed_demo_data=False), `env` more
        variables as they are (SOUQ_JWKS_URL)."""
        http_port, grpc_port = free_port(), free_port()
        variables = {
            **(env or {}),
            f"{env_prefix}_HTTP_PORT": str(http_port),
            f"{env_prefix}_GRPC_PORT": str(grpc_port),
            f"{env_prefix}_DATA_DIR": str(data_dir),
            **{f"{env_prefix}_{name.upper()}": str(value) for name, value in settings.items()},
        }
        process = cls(module, http_port, variables)
        process.grpc_target = f"127.0.0.1:{grpc_port}"
        process.data_dir = data_dir
        return process

    @property
    def log_path(self) -> Path:
        return Path(self._log.name)

    def start(self, timeout_s: float = 20.0) -> ServiceProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.module],
            env=self._env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.wait_ready(timeout_s)
        return self

    def wait_ready(self, timeout_s: float = 20.0) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.module} exited ({self.proc.returncode}):\n{self.output()}"
                )
            try:
                with urllib.request.urlopen(self.url + self.ready_path, timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"{self.module} not ready in {timeout_s}s:\n{self.output()}")

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after timeout_s; returns the exit status."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    @contextmanager
    def serving(self) -> Iterator[ServiceProcess]:
        """Started for the block, then stopped; it must exit cleanly (0) on SIGTERM."""
        with self:
            yield self
            assert self.stop() == 0, f"did not stop cleanly on SIGTERM:\n{self.output()}"

    def __enter__(self) -> ServiceProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        self._log.close()
        self.log_path.unlink(missing_ok=True)


@asynccontextmanager
async def serving(app: Any, settings: ServiceSettings | None = None) -> AsyncIterator[str]:
    """Serve an ASGI app as a service does (the chassis server and its limits) on free ports
    for the block; yields its public URL."""
    async with serving_listeners(app, settings) as (url, _):
        yield url


@asynccontextmanager
async def serving_listeners(
    app: Any, settings: ServiceSettings | None = None
) -> AsyncIterator[tuple[str, str]]:
    """As `serving`, yielding the public and the internal URL."""
    import uvicorn

    from souq_chassis.runner import listeners, server_config

    settings = (settings or ServiceSettings()).model_copy(
        update={"http_port": 0, "internal_port": 0}
    )
    served, sockets = listeners(app, settings)
    url, *internal = (f"http://127.0.0.1:{s.getsockname()[1]}" for s in sockets)
    server = uvicorn.Server(server_config(served, settings))
    task = asyncio.create_task(server.serve(sockets=sockets))
    for _ in range(500):
        if server.started or task.done():
            break
        await asyncio.sleep(0.01)
    if not server.started:
        await task
        raise RuntimeError("the app did not start")
    try:
        yield url, internal[0] if internal else ""
    finally:
        server.should_exit = True
        await task


def reachable(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """Something accepts TCP connections there."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


class EmbeddedNats:
    """A real nats-server with JetStream on a free port and its own store, as `souq up` runs
    it: clients must sign in (`url` carries an administrator's credentials, `address` none);
    `users` adds users with permissions. Can stop and start again (same store, same users)."""

    def __init__(
        self, store_dir: Path, users: Mapping[str, Mapping[str, Any]] | None = None
    ) -> None:
        from souq_chassis.messaging.embedded import with_user

        self.port = free_port()
        self.store_dir = store_dir
        self.permissions = dict(users or {})
        self.passwords = {name: os.urandom(16).hex() for name in ["admin", *self.permissions]}
        self.address = f"nats://127.0.0.1:{self.port}"
        self.url = with_user(self.address, "admin", self.passwords["admin"])
        self.proc: subprocess.Popen[bytes] | None = None

    def url_of(self, user: str) -> str:
        from souq_chassis.messaging.embedded import with_user

        return with_user(self.address, user, self.passwords[user])

    def start(self, timeout_s: float = 10.0) -> EmbeddedNats:
        from souq_chassis.messaging.embedded import (
            nats_ready,
            nats_server_command,
            write_nats_config,
        )

        self.store_dir.mkdir(parents=True, exist_ok=True)
        config = self.store_dir / "nats.conf"
        write_nats_config(config, self.port, self.store_dir, self.passwords, self.permissions)
        self.proc = subprocess.Popen(
            nats_server_command(config), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            # In a thread of its own: start() may be called from inside an event loop.
            with ThreadPoolExecutor(1) as pool:
                if pool.submit(asyncio.run, nats_ready(self.url)).result():
                    return self
            time.sleep(0.05)
        raise TimeoutError("nats-server did not become ready")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def __enter__(self) -> EmbeddedNats:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


class TcpProxy:
    """A TCP forwarder on a free port that a test can cut (as if the peer went away) and
    restore; it counts the connections it accepted and those open at once."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.accepted = self.open_now = self.most_open = 0
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        async def pair() -> None:
            # Either side hanging up ends the pair (a frozen peer never will).
            ends = [
                asyncio.ensure_future(pipe(reader, up_writer)),
                asyncio.ensure_future(pipe(up_reader, writer)),
            ]
            try:
                await asyncio.wait(ends, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for end in ends:
                    end.cancel()
                await asyncio.gather(*ends, return_exceptions=True)
                writer.close()
                up_writer.close()
                self.open_now -= 1

        task = asyncio.create_task(pair())
        self._pipes.add(task)
        task.add_done_callback(self._pipes.discard)

    async def __aenter__(self) -> TcpProxy:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.cut()

    async def cut(self) -> None:
        """Refuse new connections and drop the open ones."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    async def restore(self) -> None:
        await self.start()


PROBLEM_JSON = "application/problem+json"


@dataclass(frozen=True)
class Reply:
    status: int
    content_type: str
    headers: Mapping[str, str]
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


async def call(
    http: aiohttp.ClientSession,
    method: str,
    path: str,
    *,
    params: Mapping[str, str] | None = None,
    body: Any = None,
    raw: bytes | None = None,
    headers: Mapping[str, str] | None = None,
) -> Reply:
    """One request; `body` is sent as JSON, `raw` as it is. No reply may leak a stack trace."""
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    sent_headers = {"content-type": "application/json", **(headers or {})}
    async with http.request(method, path, params=params, data=data, headers=sent_headers) as r:
        reply = Reply(r.status, r.content_type, r.headers.copy(), await r.text())
    assert "Traceback" not in reply.text, reply.text
    return reply


def assert_problem(reply: Reply, status: int) -> dict[str, Any]:
    """The reply is a problem+json of that status, with a title and the request id."""
    assert reply.status == status, reply.text
    assert reply.content_type == PROBLEM_JSON, reply.content_type
    problem: dict[str, Any] = reply.json()
    assert problem["status"] == status
    assert isinstance(problem["title"], str) and problem["title"]
    assert isinstance(problem["request_id"], str) and problem["request_id"]
    assert problem["request_id"] == reply.headers["X-Request-ID"]
    return problem


class TokenIssuer:
    """A stand-in for identity's signing side in service tests: Ed25519 keys, their JWKS served
    over real HTTP (`jwks_url`), and tokens as identity mints them, or broken on purpose."""

    def __init__(self) -> None:
        self._keys: dict[str, Ed25519PrivateKey] = {}
        self.kid = ""
        self.rotate()
        self._server: ThreadingHTTPServer | None = None
        self.jwks_url = ""

    def rotate(self) -> str:
        """Sign with a new key from now on; the old ones stay in the JWKS. Returns its kid."""
        self.kid = os.urandom(8).hex()
        self._keys[self.kid] = Ed25519PrivateKey.generate()
        return self.kid

    def withdraw(self, kid: str) -> None:
        """Stop publishing a key (as identity does once its tokens have expired, or at once
        if it leaked)."""
        del self._keys[kid]

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid, key in self._keys.items():
            jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(key.public_key()))
            keys.append({**jwk, "kid": kid, "use": "sig", "alg": "EdDSA"})
        return {"keys": keys}

    def token(
        self,
        user_id: str = "user-1",
        roles: tuple[str, ...] = ("customer",),
        *,
        ttl_s: float = 300,
        key: Ed25519PrivateKey | None = None,
        headers: Mapping[str, Any] | None = None,
        **claims: Any,
    ) -> str:
        now = int(time.time())
        payload = {
            "iss": "souq-identity",
            "aud": "souq",
            "sub": user_id,
            "roles": list(roles),
            "iat": now,
            "exp": now + int(ttl_s),
            "jti": os.urandom(8).hex(),
            **claims,
        }
        return jwt.encode(
            payload,
            key or self._keys[self.kid],
            algorithm="EdDSA",
            headers={"kid": self.kid, **(headers or {})},
        )

    def forged(self) -> dict[str, str]:
        """Tokens every verifier must refuse, by what is wrong with them."""
        good = self.token()
        head, payload, signature = good.split(".")
        flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
        claims = json.loads(_b64decode(payload))
        public_pem = (
            self._keys[self.kid]
            .public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

        def unsigned(alg: str, body: dict[str, Any], secret: bytes | None) -> str:
            header = _b64encode(json.dumps({"alg": alg, "kid": self.kid, "typ": "JWT"}).encode())
            signing_input = f"{header}.{_b64encode(json.dumps(body).encode())}"
            if secret is None:
                return f"{signing_input}."
            mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
            return f"{signing_input}.{_b64encode(mac)}"

        impostor = _b64encode(json.dumps({**claims, "sub": "someone-else"}).encode())
        return {
            "expired": self.token(ttl_s=-120),
            "tampered": f"{head}.{payload}.{flipped}",
            "other-user": f"{head}.{impostor}.{signature}",
            "alg-none": unsigned("none", claims, None),
            "hs256-with-public-key": unsigned("HS256", claims, public_pem),
            "wrong-audience": self.token(aud="another-api"),
            "wrong-issuer": self.token(iss="someone-else"),
            "unknown-key": self.token(
                key=Ed25519PrivateKey.generate(), headers={"kid": os.urandom(8).hex()}
            ),
            "known-kid-other-key": self.token(key=Ed25519PrivateKey.generate()),
            "garbage": "not-a-jwt",
        }

    def bearer(
        self, user_id: str = "user-1", roles: tuple[str, ...] = ("customer",)
    ) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(user_id, roles)}"}

    def __enter__(self) -> TokenIssuer:
        issuer = self

        class Jwks(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = json.dumps(issuer.jwks()).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Jwks)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.jwks_url = f"http://127.0.0.1:{self._server.server_address[1]}/v1/jwks"
        return self

    def __exit__(self, *_: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
