"""A real registry on loopback for the tests: Debian's `docker-registry`.

A pytest plugin (register with `pytest_plugins = ["tests.registry_fixture"]`).
The session-scoped fixture `registry` starts `docker-registry serve` with a
throw-away filesystem store on a free 127.0.0.1 port, waits until `/v2/`
answers, yields a `LocalRegistry` (whose access log tells which requests it
got), and stops the process at the end. `auth_registry` is one that demands
basic auth against an htpasswd file of bcrypt hashes; `registry_process(dir)`
is one a test may stop and start again on the same store. Without the binary
the tests that use them are skipped, unless GOSMALL_REQUIRE_DOCKER=1 says this
run must prove the real thing, which makes it a failure.

For what a real registry does not do (hang, drip, echo credentials), two
small loopback servers: `http_server(handler)` runs a `BaseHTTPRequestHandler`
(`bearer_registry(...)` makes one that demands a token from its own realm),
`raw_server(handle)` hands each accepted TCP connection to `handle` and keeps
count of the connections open at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from gosmall.digest import Digest
from gosmall.images.source import read_oci_layout
from gosmall.publish.push import push_image
from gosmall.reference import DEFAULT_TAG, Reference, ReferenceError, parse_normalized_named
from gosmall.registry.client import RegistryClient
from tests.net import free_loopback_port

BINARY = "docker-registry"


@dataclass(frozen=True)
class LocalRegistry:
    host: str  # "127.0.0.1:<port>", the domain part of references to it
    root: Path  # its storage directory
    log: Path | None = None  # its access log: one line per request, "METHOD /v2/... HTTP/1.1" STATUS

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def requests(self, method: str, path_prefix: str) -> list[str]:
        """The request lines ("POST /v2/a/b/blobs/uploads/?mount=… 201") it logged for `method` on paths starting so."""
        assert self.log is not None
        found = re.findall(r'"([A-Z]+) (\S+) HTTP/[\d.]+" (\d{3})', self.log.read_text(errors="replace"))
        return [f"{path} {status}" for verb, path, status in found if verb == method and path.startswith(path_prefix)]


@dataclass
class RegistryProcess:
    """`docker-registry serve` on one port and one store, which a test may stop and start again."""

    binary: str
    base: Path
    port: int
    htpasswd: Path | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def registry(self) -> LocalRegistry:
        return LocalRegistry(f"127.0.0.1:{self.port}", self.base / "data", self.base / "registry.log")

    def start(self) -> LocalRegistry:
        config = self.base / "config.yml"
        auth = f"auth:\n  htpasswd:\n    realm: gosmall-test\n    path: {self.htpasswd}\n" if self.htpasswd else ""
        # A fixed secret: an upload begun before a restart is still the registry's after it.
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: warn\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.base / 'data'}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: 127.0.0.1:{self.port}\n  secret: gosmall-test-secret\n" + auth,
            encoding="utf-8",
        )
        log = (self.base / "registry.log").open("ab")
        self.process = subprocess.Popen([self.binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        found = self.registry
        deadline = time.monotonic() + 20
        while True:
            if self.process.poll() is not None:
                pytest.fail(f"{BINARY} exited with {self.process.returncode}: {(self.base / 'registry.log').read_text()}")
            try:
                if requests.get(f"{found.url}/v2/", timeout=1).status_code in (200, 401):
                    return found
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"{BINARY} did not answer on {found.url}/v2/ within 20s: {(self.base / 'registry.log').read_text()}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None


def _binary() -> str:
    binary = shutil.which(BINARY) or (f"/usr/bin/{BINARY}" if Path(f"/usr/bin/{BINARY}").exists() else None)
    if binary is None:
        reason = f"'{BINARY}' is not installed (Debian package docker-registry)"
        if os.environ.get("GOSMALL_REQUIRE_DOCKER") == "1":
            pytest.fail(f"{reason}, and GOSMALL_REQUIRE_DOCKER=1 requires the registry tests to run")
        pytest.skip(reason)
    return binary


@contextmanager
def registry_process(base: Path, *, htpasswd: Path | None = None) -> Iterator[RegistryProcess]:
    """A started registry in `base`, stopped at the end however the test went."""
    base.mkdir(parents=True, exist_ok=True)
    server = RegistryProcess(_binary(), base, free_loopback_port(), htpasswd)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    with registry_process(tmp_path_factory.mktemp("registry")) as server:
        yield server.registry


@dataclass(frozen=True)
class AuthRegistry:
    registry: LocalRegistry
    user: str
    password: str


@pytest.fixture(scope="session")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthRegistry]:
    """A registry that lets only one user in, by basic auth against an htpasswd file of bcrypt hashes (all it accepts)."""
    if shutil.which("htpasswd") is None:
        if os.environ.get("GOSMALL_REQUIRE_DOCKER") == "1":
            pytest.fail("htpasswd is not installed (Debian package apache2-utils), and GOSMALL_REQUIRE_DOCKER=1 requires it")
        pytest.skip("htpasswd is not installed (Debian package apache2-utils)")
    base = tmp_path_factory.mktemp("auth-registry")
    user, password = "pusher", "pw-" + secrets.token_hex(12)
    done = subprocess.run(["htpasswd", "-B", "-b", "-n", user, password], capture_output=True, text=True, check=True)
    (base / "htpasswd").write_text(done.stdout)
    with registry_process(base, htpasswd=base / "htpasswd") as server:
        yield AuthRegistry(server.registry, user, password)


@contextmanager
def http_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """`handler` serving on a free loopback port; yields its "127.0.0.1:<port>"."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class RawServer:
    host: str  # "127.0.0.1:<port>"
    stop: threading.Event = field(default_factory=threading.Event)
    accepted: int = 0
    open_now: int = 0
    most_open: int = 0  # the most connections open at one time
    lock: threading.Lock = field(default_factory=threading.Lock)
    closed_by_client: threading.Event = field(default_factory=threading.Event)


@contextmanager
def raw_server(handle: Callable[[socket.socket, RawServer], None]) -> Iterator[RawServer]:
    """A loopback TCP server calling `handle(connection, server)` per connection, each in its own thread."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    listener.settimeout(0.2)
    server = RawServer(f"127.0.0.1:{listener.getsockname()[1]}")
    connections: list[socket.socket] = []

    def serve(connection: socket.socket) -> None:
        try:
            handle(connection, server)
        finally:
            with server.lock:
                server.open_now -= 1
            connection.close()

    def accept() -> None:
        while not server.stop.is_set():
            try:
                connection, _ = listener.accept()
            except (socket.timeout, OSError):
                continue
            with server.lock:
                server.accepted += 1
                server.open_now += 1
                server.most_open = max(server.most_open, server.open_now)
                connections.append(connection)
            threading.Thread(target=serve, args=(connection,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stop.set()
        thread.join(timeout=5)
        listener.close()
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def drip_headers(every: float) -> Callable[[socket.socket, RawServer], None]:
    """A registry that reads the request, then sends one more header line every `every` seconds, for ever."""

    def handle(connection: socket.socket, server: RawServer) -> None:
        connection.recv(65536)
        try:
            connection.sendall(b"HTTP/1.1 200 OK\r\n")
            n = 0
            while not server.stop.wait(every):
                n += 1
                connection.sendall(f"X-Still-Thinking: {n}\r\n".encode())
        except OSError:
            server.closed_by_client.set()  # the client hung up: it stopped waiting

    return handle


def never_answer(connection: socket.socket, server: RawServer) -> None:
    """A registry that accepts the connection and then says nothing at all; notes when the client hangs up."""
    connection.settimeout(0.2)
    while not server.stop.is_set():
        try:
            if connection.recv(65536) == b"":
                server.closed_by_client.set()
                return
        except socket.timeout:
            continue
        except OSError:
            server.closed_by_client.set()
            return


class StandIn(BaseHTTPRequestHandler):
    """The base of the stand-in registries: no request log, and `_answer` for a whole answer at once."""

    def log_message(self, *args: object) -> None:
        pass

    def _answer(self, code: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


def bearer_registry(token_body: bytes, *, status: int = 200, echo: bool = False) -> type[BaseHTTPRequestHandler]:
    """A registry that asks for a bearer token from its own /token; with `echo`, its 403 echoes the request."""

    class Handler(StandIn):
        def do_GET(self) -> None:
            if self.path.startswith("/token"):
                self._answer(status, token_body)
            elif self.headers.get("Authorization", "").startswith("Bearer ") and self.command == "HEAD":
                self._answer(405)  # as some registries do: the resolver then GETs the manifest
            elif self.headers.get("Authorization", "").startswith("Bearer "):
                # What a confused proxy or registry does: echo the request it refused.
                sent = self.headers.get("Authorization")
                echoed = (
                    f"denied: request was GET {self.path}\nAuthorization: {sent}\nHost: {self.headers.get('Host')}" if echo else "denied"
                )
                echoed = echoed.encode()
                self._answer(403, echoed)
            else:
                realm = f"http://127.0.0.1:{self.server.server_address[1]}/token"
                self._answer(401, b"", {"WWW-Authenticate": f'Bearer realm="{realm}",service="t",scope="repository:team/app:pull"'})

        do_HEAD = do_GET

    return Handler


def push_layout(layout_dir: Path, reference: str | Reference, *, client: RegistryClient | None = None) -> Digest:
    """Push the image in an OCI layout to `reference` (name:tag) through push.py's one push path; return its digest."""
    ref = parse_normalized_named(reference) if isinstance(reference, str) else reference
    if ref.digest is not None:
        raise ReferenceError(str(ref), "", "a push target takes a tag, not a digest")
    image = read_oci_layout(Path(layout_dir))
    return push_image(client or RegistryClient.from_environment(), ref, image, (ref.tag or DEFAULT_TAG,))


def pushed_table(
    repository: str,
    *,
    image: str = "hello",
    tags: tuple[str, ...] = ("v1",),
    platforms: tuple[str, ...] | None = None,
    header: bool = True,
) -> str:
    """[tool.gosmall] for go_app pushed to `repository` (host/path): what the push, resolve and fan-in tests build.

    No `platforms` key when `platforms` is None (the configured default); `header=False` gives one more image only.
    """
    lines = ['[tool.gosmall]\noutput = "dist"\npinning = "off"\n'] if header else [""]
    lines.append(f'[tool.gosmall.images.{image}]\npackage = "./go_app"\nrepository = "{repository}"\ntags = {json.dumps(list(tags))}')
    if platforms is not None:
        lines.append(f"platforms = {json.dumps(list(platforms))}")
    lines.append('ldflags = ["-X main.version={version}"]\n')
    return "\n".join(lines)


def served_manifest(reference: str) -> bytes:
    """The manifest bytes a registry serves for `reference`, as skopeo (an independent client) reads them."""
    done = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{reference}"], capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout


def served_digest(reference: str) -> str:
    return "sha256:" + hashlib.sha256(served_manifest(reference)).hexdigest()
