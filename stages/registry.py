"""Talking to a registry over the distribution HTTP API (OCI distribution spec).

Two jobs, both with `requests` and nothing Docker-specific in between:

- `RegistryResolver.resolve(reference) -> Digest`: which manifest a tag
  points at now (a HEAD on `/v2/<name>/manifests/<tag>` accepting OCI and
  Docker manifests and indexes), for `gosmall pin`.
- `push_layout(layout_dir, reference, *, client=None) -> Digest`: push an OCI
  image layout (`oci-layout`, `index.json`, `blobs/sha256/…`) and tag it.

`RegistryClient` does the part both share: the endpoint for a registry
domain (plain http only for loopback, as Docker treats localhost as an
insecure registry by default; `docker.io` is served by registry-1.docker.io),
credentials from the Docker config (`$DOCKER_CONFIG/config.json` or
`~/.docker/config.json`, `auths.<host>.auth`, base64 `user:password`), and
the token flow: a 401 with `WWW-Authenticate: Bearer realm=…,service=…,scope=…`
is answered by fetching a token from the realm and retrying once.
Credential helpers (`credsStore`, `credHelpers`) are not run.

Nothing a registry does can hold gosmall for long or flood it: every request
has a total deadline (`timeout`, and the run's `deadline` when one is set),
not only requests' per-read timeout, which a server sending a byte every few
seconds never trips; an answer's body is read up to `MAX_BODY`; whatever a
server wrote is shown only through `redact`. One client may be used from
several threads at once (pin resolves references concurrently).
"""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from .digest import Digest
from .errors import COULD_NOT_RUN, FOUND, GosmallError
from .image import MEDIA_INDEX, MEDIA_MANIFEST
from .redact import redact
from .reference import DEFAULT_DOMAIN, DEFAULT_TAG, Reference, ReferenceError, parse_normalized_named

MEDIA_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_ACCEPT = ", ".join((MEDIA_INDEX, MEDIA_MANIFEST, MEDIA_DOCKER_MANIFEST_LIST, MEDIA_DOCKER_MANIFEST))
INDEX_MEDIA_TYPES = (MEDIA_INDEX, MEDIA_DOCKER_MANIFEST_LIST)

# Docker Hub's API is not served at the name's domain: a fact of the protocol.
DOCKER_HUB_API = "registry-1.docker.io"
DOCKER_HUB_AUTH_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "docker.io", DOCKER_HUB_API)
TIMEOUT = 30.0  # seconds one request may take in all: connecting, sending, headers and body
CONNECT_TIMEOUT = 10.0
# The distribution spec lets registries refuse manifests over 4 MiB; no answer gosmall reads needs more.
MAX_BODY = 4 * 2**20


def registry_base(domain: str) -> str:
    """The API root for a reference's domain: http for loopback, https otherwise."""
    if domain in (DEFAULT_DOMAIN, "index.docker.io"):
        return f"https://{DOCKER_HUB_API}"
    host = domain.rsplit(":", 1)[0] if not domain.endswith("]") else domain
    if host in ("localhost", "127.0.0.1", "[::1]") or host.startswith("127."):
        return f"http://{domain}"
    return f"https://{domain}"


def load_docker_auths(config: Path | None = None) -> dict[str, tuple[str, str]]:
    """Registry host → (user, password) from the Docker config, if there is one."""
    if config is None:
        directory = os.environ.get("DOCKER_CONFIG")
        config = Path(directory) / "config.json" if directory else Path.home() / ".docker" / "config.json"
    if not config.is_file():
        return {}
    try:
        document = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise GosmallError(f"{config} cannot be read as JSON: {exc}. Fix or remove it and run again.") from None
    fix = f"Fix {config} or move it away; `docker login` writes a new one."
    if not isinstance(document, dict):
        raise GosmallError(f'{config}: its top level must be a JSON object such as {{"auths": {{}}}}, not {_json_type(document)}. {fix}')
    auths = document.get("auths", {})
    if not isinstance(auths, dict):
        raise GosmallError(
            f'{config} auths: must be an object of registry hosts, such as {{"ghcr.io": {{"auth": "…"}}}}, not {_json_type(auths)}. {fix}'
        )
    out: dict[str, tuple[str, str]] = {}
    for key, entry in auths.items():
        encoded = entry.get("auth") if isinstance(entry, dict) else None
        if not encoded:
            continue
        try:
            if not isinstance(encoded, str):
                raise ValueError("not a string")
            user, _, password = base64.b64decode(encoded).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            raise GosmallError(f"{config} auths.{key}.auth is not base64 of 'user:password'; run `docker login {key}` again.") from None
        # Keys are written as "host", "https://host" or "https://host/v1/".
        host = re.sub(r"^https?://", "", key).split("/", 1)[0]
        out[host] = (user, password)
    return out


def _json_type(value: object) -> str:
    return {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean"}.get(type(value), "null")


@dataclass(frozen=True)
class Answer:
    """What a registry answered: status, headers (case-insensitive) and the body, read in full under the deadline."""

    status_code: int
    headers: Mapping[str, str]
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")


class _Deadlines:
    """Per thread, the sockets of the request in flight, shut down when its deadline passes.

    requests' timeouts bound each read, not a request: a server that sends a
    header line every few seconds keeps one going forever. Shutting the socket
    down wakes the blocked read with an error, in whichever thread it is.
    """

    def __init__(self) -> None:
        self._local = threading.local()
        self._lock = threading.Lock()

    @contextmanager
    def bound(self, seconds: float) -> Iterator[threading.Event]:
        expired = threading.Event()
        sockets: list[socket.socket] = []

        def expire() -> None:
            with self._lock:
                expired.set()
                for sock in sockets:
                    _shut_down(sock)

        timer = threading.Timer(seconds, expire)
        timer.daemon = True
        self._local.current = (sockets, expired)
        timer.start()
        try:
            yield expired
        finally:
            timer.cancel()
            self._local.current = None

    def watch(self, sock: socket.socket | None) -> None:
        current = getattr(self._local, "current", None)
        if sock is None or current is None:
            return
        sockets, expired = current
        with self._lock:
            sockets.append(sock)
            if expired.is_set():
                _shut_down(sock)


def _shut_down(sock: socket.socket) -> None:
    try:
        # socket.socket's own shutdown: ssl.SSLSocket.shutdown would also drop
        # the TLS state the blocked thread is still using.
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass  # already closed: nothing left to wake


_Connection = TypeVar("_Connection", bound=HTTPConnection)


def _watched_pools(deadlines: _Deadlines) -> dict[str, type[HTTPConnectionPool]]:
    """Connection pools whose connections report each socket they use to `deadlines`."""

    def connection(base: type[_Connection]) -> type[_Connection]:
        class Watched(base):  # type: ignore[valid-type,misc]
            def connect(self) -> None:
                super().connect()
                deadlines.watch(self.sock)

            def request(self, *args: Any, **kwargs: Any) -> None:
                deadlines.watch(self.sock)  # a kept-alive connection, reused by this request
                super().request(*args, **kwargs)

        return Watched

    class Pool(HTTPConnectionPool):
        ConnectionCls = connection(HTTPConnection)

    class SecurePool(HTTPSConnectionPool):
        ConnectionCls = connection(HTTPSConnection)

    return {"http": Pool, "https": SecurePool}


class _DeadlineAdapter(HTTPAdapter):
    """requests' adapter, with every pool (proxied ones too) built from `_watched_pools`."""

    def __init__(self, deadlines: _Deadlines) -> None:
        self._pools = _watched_pools(deadlines)
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = self._pools

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):
            manager.pool_classes_by_scheme = self._pools
        return manager


@dataclass
class RegistryClient:
    """HTTP to registries with Docker-config credentials and bearer tokens.

    Mutable on purpose: it caches one token per (registry, scope) for the
    run, the way a docker client does. `timeout` bounds each request in all;
    `deadline` (a `time.monotonic()` value) bounds every request of a run.
    """

    auths: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    session: requests.Session = field(default_factory=requests.Session)
    timeout: float = TIMEOUT
    deadline: float | None = None
    _tokens: dict[tuple[str, str], str] = field(default_factory=dict)
    _deadlines: _Deadlines = field(default_factory=_Deadlines)

    def __post_init__(self) -> None:
        adapter = _DeadlineAdapter(self._deadlines)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    @classmethod
    def from_environment(cls, *, deadline: float | None = None) -> RegistryClient:
        return cls(load_docker_auths(), deadline=deadline)

    def credentials(self, domain: str) -> tuple[str, str] | None:
        keys = DOCKER_HUB_AUTH_KEYS if domain in (DEFAULT_DOMAIN, "index.docker.io") else (domain,)
        for key in keys:
            if key in self.auths:
                return self.auths[key]
        return None

    def request(
        self,
        method: str,
        domain: str,
        url: str,
        scope: str,
        *,
        headers: Mapping[str, str] | None = None,
        data: bytes | None = None,
    ) -> Answer:
        """One API call; answers an auth challenge once, then returns whatever comes."""
        full = url if url.startswith(("http://", "https://")) else registry_base(domain) + url
        sent = dict(headers or {})
        token = self._tokens.get((domain, scope))
        if token:
            sent["Authorization"] = f"Bearer {token}"
        response = self._send(method, full, headers=sent, data=data)
        if response.status_code != 401:
            return response
        challenge = response.headers.get("WWW-Authenticate", "")
        scheme, params = _parse_challenge(challenge)
        credentials = self.credentials(domain)
        if scheme == "bearer" and "realm" in params:
            token = self._fetch_token(domain, params, scope, credentials)
            self._tokens[(domain, scope)] = token
            sent["Authorization"] = f"Bearer {token}"
        elif scheme == "basic" and credentials:
            sent["Authorization"] = "Basic " + base64.b64encode(":".join(credentials).encode()).decode()
        else:
            return response
        return self._send(method, full, headers=sent, data=data)

    def _send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        data: bytes | None = None,
        params: Mapping[str, str] | None = None,
        auth: tuple[str, str] | None = None,
    ) -> Answer:
        seconds = self._seconds_left(method, url)
        with self._deadlines.bound(seconds) as expired:
            try:
                with self.session.request(
                    method,
                    url,
                    headers=dict(headers or {}),
                    data=data,
                    params=params,
                    auth=auth,
                    timeout=(min(CONNECT_TIMEOUT, seconds), seconds),
                    allow_redirects=True,
                    stream=True,
                ) as response:
                    answer = Answer(response.status_code, response.headers, _read_body(response, method, url))
            except (requests.RequestException, OSError) as exc:
                if expired.is_set():
                    raise self._too_slow(method, url, seconds) from None
                raise GosmallError(f"{method} {redact(url)} failed: {redact(str(exc))}. Check that the registry is reachable.") from None
            if expired.is_set():
                # A body without a length ends where the socket was shut: it may be cut short.
                raise self._too_slow(method, url, seconds)
        return answer

    def _seconds_left(self, method: str, url: str) -> float:
        if self.deadline is None:
            return self.timeout
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise self._too_slow(method, url, 0.0)
        return min(self.timeout, left)

    def _too_slow(self, method: str, url: str, seconds: float) -> GosmallError:
        host = urlsplit(url).netloc
        if seconds <= 0 or (self.deadline is not None and seconds < self.timeout):
            why = "the time this run may take ran out"
        else:
            why = f"it did not finish answering within {seconds:g} s"
        return GosmallError(
            f"{method} {redact(url)}: gosmall stopped waiting for the registry {host}, because {why}. "
            "Check that the registry is up and reachable from here, then run again."
        )

    def _fetch_token(self, domain: str, params: Mapping[str, str], scope: str, credentials: tuple[str, str] | None) -> str:
        realm = params["realm"]
        query = {"service": params.get("service", ""), "scope": params.get("scope", scope)}
        try:
            response = self._send("GET", realm, params={k: v for k, v in query.items() if v}, auth=credentials)
        except GosmallError as exc:
            raise GosmallError(f"Getting a token for {domain} failed: {exc.message}") from None
        if response.status_code != 200:
            raise GosmallError(
                f"{domain} refused a token for '{scope}' (HTTP {response.status_code} from {redact(realm)}: {redact(response.text)}). "
                f"Run `docker login {domain}` with an account that may access it."
            )
        try:
            body = json.loads(response.content)
        except (ValueError, RecursionError):
            body = None
        token = (body.get("token") or body.get("access_token")) if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            what = "JSON without a token" if isinstance(body, dict) else "something that is not a JSON object"
            raise GosmallError(
                f"The token service {redact(realm)} for {domain} answered HTTP 200 with {what} ({redact(response.text)}); "
                'a token service answers {"token": "…"}. Check that the registry\'s WWW-Authenticate realm names its token service.'
            )
        return token


def _read_body(response: requests.Response, method: str, url: str) -> bytes:
    body = bytearray()
    for chunk in response.iter_content(chunk_size=65536):
        body += chunk
        if len(body) > MAX_BODY:
            raise GosmallError(
                f"{method} {redact(url)}: the registry answered with more than {MAX_BODY // 2**20} MiB, "
                "which no manifest or API answer needs; gosmall stopped reading. Check that the URL names a registry."
            )
    return bytes(body)


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = header.strip().partition(" ")
    return scheme.lower(), {k: v for k, v in re.findall(r'(\w+)="([^"]*)"', rest)}


def _repository(ref: Reference) -> str:
    return ref.path


def _fail(ref: Reference, what: str, response: Answer) -> GosmallError:
    hint, code = {
        401: ("Run `docker login` for that registry.", COULD_NOT_RUN),
        403: ("The account in your Docker config may not access it.", COULD_NOT_RUN),
        404: ("Check the name and tag; the registry does not have it.", FOUND),
    }.get(response.status_code, ("", COULD_NOT_RUN))
    detail = redact(response.text) or "no body"
    return GosmallError(f"{ref}: {what} failed with HTTP {response.status_code} ({detail}). {hint}".rstrip(), code=code)


# -- resolving tags -------------------------------------------------------------


@dataclass
class RegistryResolver:
    """`pinning.Resolver` backed by the registries themselves."""

    client: RegistryClient

    @classmethod
    def from_environment(cls, *, deadline: float | None = None) -> RegistryResolver:
        return cls(RegistryClient.from_environment(deadline=deadline))

    def resolve(self, reference: Reference) -> Digest:
        if reference.digest is not None:
            return Digest.parse(reference.digest)
        tag = reference.tag or DEFAULT_TAG
        scope = f"repository:{_repository(reference)}:pull"
        url = f"/v2/{_repository(reference)}/manifests/{tag}"
        response = self.client.request("HEAD", reference.domain, url, scope, headers={"Accept": MANIFEST_ACCEPT})
        if response.status_code == 200 and response.headers.get("Docker-Content-Digest"):
            return _parse_digest(reference, response.headers["Docker-Content-Digest"])
        if response.status_code in (200, 405):
            # Some registries answer HEAD without the digest header (or not at
            # all): the digest is then the hash of the manifest bytes.
            response = self.client.request("GET", reference.domain, url, scope, headers={"Accept": MANIFEST_ACCEPT})
            if response.status_code == 200:
                return Digest.of(response.content)
        raise _fail(reference, f"looking up tag '{tag}'", response)


def _parse_digest(ref: Reference, text: str) -> Digest:
    try:
        return Digest.parse(text.strip())
    except ValueError:
        raise GosmallError(f"{ref}: the registry answered with digest '{redact(text, limit=100)}', which is not a sha256 digest.") from None


# -- pushing an OCI layout ------------------------------------------------------


@dataclass(frozen=True)
class _Layout:
    root: Path

    def blob(self, digest: Digest) -> bytes:
        path = self.root / "blobs" / digest.algorithm / digest.hex
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise GosmallError(f"{path}: cannot read blob {digest} of the OCI layout: {exc.strerror}.") from None
        if Digest.of(data) != digest:
            raise GosmallError(f"{path}: its content does not hash to {digest}; the OCI layout is corrupt. Build it again.")
        return data


def push_layout(
    layout_dir: Path,
    reference: str | Reference,
    *,
    client: RegistryClient | None = None,
) -> Digest:
    """Push the image in an OCI layout to `reference` (name:tag) and return its digest.

    The layout's index.json names the image: with one entry that entry is
    pushed (a manifest or an index); with several, index.json itself is
    pushed as the index over them.
    """
    ref = parse_normalized_named(reference) if isinstance(reference, str) else reference
    if ref.digest is not None:
        raise ReferenceError(str(ref), "", "a push target takes a tag, not a digest")
    client = client or RegistryClient.from_environment()
    layout = _Layout(Path(layout_dir))
    index_path = layout.root / "index.json"
    try:
        index_bytes = index_path.read_bytes()
        index = json.loads(index_bytes)
    except (OSError, ValueError) as exc:
        raise GosmallError(f"{index_path}: not a readable OCI image layout index ({exc}). Build the image first.") from None
    if not (layout.root / "oci-layout").is_file():
        raise GosmallError(f"{layout.root} has no oci-layout file, so it is not an OCI image layout.")
    manifests = index.get("manifests") or []
    if not manifests:
        raise GosmallError(f"{index_path} lists no manifests; there is nothing to push.")
    pusher = _Pusher(client, ref, layout)
    tag = ref.tag or DEFAULT_TAG
    if len(manifests) == 1:
        top = manifests[0]
        digest = Digest.parse(top["digest"])
        return pusher.manifest(layout.blob(digest), top["mediaType"], tag)
    return pusher.manifest(index_bytes, index.get("mediaType", MEDIA_INDEX), tag)


@dataclass(frozen=True)
class _Pusher:
    client: RegistryClient
    ref: Reference
    layout: _Layout

    @property
    def scope(self) -> str:
        return f"repository:{self.ref.path}:pull,push"

    def manifest(self, data: bytes, media_type: str, where: str) -> Digest:
        """Push what a manifest needs, then the manifest itself under `where` (tag or digest)."""
        document: dict[str, Any] = json.loads(data)
        if media_type in INDEX_MEDIA_TYPES or "manifests" in document:
            # Children go first, by digest, so the index never names what is not there.
            for child in document.get("manifests", []):
                child_digest = Digest.parse(child["digest"])
                self.manifest(self.layout.blob(child_digest), child["mediaType"], str(child_digest))
        else:
            for descriptor in (document["config"], *document.get("layers", [])):
                self.blob(Digest.parse(descriptor["digest"]))
        url = f"/v2/{self.ref.path}/manifests/{where}"
        response = self.client.request("PUT", self.ref.domain, url, self.scope, headers={"Content-Type": media_type}, data=data)
        if response.status_code not in (200, 201):
            raise _fail(self.ref, f"pushing manifest {where}", response)
        digest = Digest.of(data)
        answered = response.headers.get("Docker-Content-Digest")
        if answered and _parse_digest(self.ref, answered) != digest:
            raise GosmallError(f"{self.ref}: the registry stored manifest {where} as {answered}, not {digest}.")
        return digest

    def blob(self, digest: Digest) -> None:
        base = f"/v2/{self.ref.path}/blobs"
        head = self.client.request("HEAD", self.ref.domain, f"{base}/{digest}", self.scope)
        if head.status_code == 200:
            return  # already there: nothing to upload
        data = self.layout.blob(digest)
        start = self.client.request("POST", self.ref.domain, f"{base}/uploads/", self.scope)
        if start.status_code != 202 or "Location" not in start.headers:
            raise _fail(self.ref, f"starting the upload of blob {digest}", start)
        location = urljoin(registry_base(self.ref.domain) + f"{base}/uploads/", start.headers["Location"])
        url = location + ("&" if "?" in location else "?") + f"digest={digest}"
        done = self.client.request(
            "PUT",
            self.ref.domain,
            url,
            self.scope,
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(len(data))},
            data=data,
        )
        if done.status_code != 201:
            raise _fail(self.ref, f"uploading blob {digest}", done)


# -- pulling an image (audit) ---------------------------------------------------


def pull_manifest(client: RegistryClient, ref: Reference, where: str) -> tuple[bytes, str]:
    """The manifest or index that `where` (a digest or a tag) names in `ref`'s repository, and its media type.

    By digest, the bytes are checked against it: a registry cannot hand over another document.
    """
    scope = f"repository:{_repository(ref)}:pull"
    url = f"/v2/{_repository(ref)}/manifests/{where}"
    response = client.request("GET", ref.domain, url, scope, headers={"Accept": MANIFEST_ACCEPT})
    if response.status_code != 200:
        # Not found means the image could not be read, not that a check found something.
        raise GosmallError(_fail(ref, f"getting manifest {where}", response).message, code=COULD_NOT_RUN)
    if where.startswith("sha256:") and Digest.of(response.content) != Digest.parse(where):
        raise GosmallError(f"{ref}: the registry answered manifest {where} with bytes of digest {Digest.of(response.content)}.")
    media_type = response.headers.get("Content-Type", "").split(";", 1)[0].strip()
    return response.content, media_type


def pull_blob(client: RegistryClient, ref: Reference, digest: Digest, size: int) -> bytes:
    """The blob `digest` of `size` bytes, checked against its digest.

    A blob larger than MAX_BODY, the most one answer may carry, comes in Range
    requests of MAX_BODY each, so every answer stays bounded.
    """
    scope = f"repository:{_repository(ref)}:pull"
    url = f"/v2/{_repository(ref)}/blobs/{digest}"
    data = bytearray()
    while True:
        headers = {"Range": f"bytes={len(data)}-{min(size, len(data) + MAX_BODY) - 1}"} if size > MAX_BODY else {}
        response = client.request("GET", ref.domain, url, scope, headers=headers)
        if response.status_code not in (200, 206):
            raise GosmallError(_fail(ref, f"getting blob {digest}", response).message, code=COULD_NOT_RUN)
        data += response.content
        if response.status_code == 200 or not response.content or len(data) >= size:
            break
    if len(data) != size or Digest.of(bytes(data)) != digest:
        raise GosmallError(
            f"{ref}: blob {digest} came as {len(data)} bytes that hash to {Digest.of(bytes(data))}, not the {size} bytes "
            "its manifest names. The registry's copy is damaged or the manifest is wrong; push the image again."
        )
    return bytes(data)
