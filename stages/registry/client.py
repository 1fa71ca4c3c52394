"""Talking to a registry over the distribution HTTP API (OCI distribution spec).

Two jobs, both with `requests` and nothing Docker-specific in between:

- `RegistryResolver.resolve(reference) -> Digest`: which manifest a tag
  points at now (a HEAD on `/v2/<name>/manifests/<tag>` accepting OCI and
  Docker manifests and indexes), for `gosmall pin`.
- pushing, for `gosmall push` and `index`, is `push.py`'s: it speaks the
  same API through the same client.

`RegistryClient` does the part they share: the endpoint for a registry
domain (plain http only for loopback, as Docker treats localhost as an
insecure registry by default, or for a host named `insecure`; `docker.io` is
served by registry-1.docker.io), credentials from the Docker config
(`$DOCKER_CONFIG/config.json` or `~/.docker/config.json`: `credHelpers.<host>`,
else `credsStore`, each run as `docker-credential-<name> get` with the host
on stdin, as Docker does, else `auths.<host>.auth`, base64 `user:password`),
and the challenge: a 401 with `WWW-Authenticate: Basic` is answered with
those credentials (and later requests to that registry send them at once),
one with `Bearer realm=…,service=…,scope=…` by fetching a token from the
realm. Credentials go only to the registry's own host, never to another host
an upload `Location` names; no repr, message or log line holds one.
`retrying` runs an operation again, with backoff and a bound, when the
registry could not be reached, reset the connection, or answered 429 or 5xx.

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
import subprocess
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, ReadTimeoutError

from ..digest import Digest
from ..errors import COULD_NOT_RUN, FOUND, GosmallError
from ..images.model import MEDIA_INDEX, MEDIA_MANIFEST
from ..redact import redact
from ..reference import DEFAULT_DOMAIN, DEFAULT_TAG, Reference

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
RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})
ATTEMPTS = 4
BACKOFF = 0.5
MAX_RETRY_AFTER = 30.0  # seconds: a registry's Retry-After is honoured up to this


def registry_base(domain: str, insecure: Collection[str] = ()) -> str:
    """The API root for a reference's domain: http for loopback or a host named in `insecure`, https otherwise."""
    if domain in (DEFAULT_DOMAIN, "index.docker.io"):
        return f"https://{DOCKER_HUB_API}"
    host = domain.rsplit(":", 1)[0] if not domain.endswith("]") else domain
    if host in ("localhost", "127.0.0.1", "[::1]") or host.startswith("127.") or domain in insecure or host in insecure:
        return f"http://{domain}"
    return f"https://{domain}"


@dataclass(frozen=True)
class DockerConfig:
    """What the Docker config says about credentials; `auths` holds secrets, so it is kept out of repr."""

    path: Path | None
    auths: Mapping[str, tuple[str, str]] = field(default_factory=dict, repr=False)
    creds_store: str = ""  # credsStore: the helper for every registry without its own
    cred_helpers: Mapping[str, str] = field(default_factory=dict)  # credHelpers: registry host -> helper


def docker_config_path() -> Path:
    directory = os.environ.get("DOCKER_CONFIG")
    return Path(directory) / "config.json" if directory else Path.home() / ".docker" / "config.json"


def load_docker_config(config: Path | None = None) -> DockerConfig:
    """The credential parts of the Docker config, if there is one; a config of the wrong shape is named."""
    config = config or docker_config_path()
    if not config.is_file():
        return DockerConfig(None)
    try:
        document = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise GosmallError(f"{config} cannot be read as JSON: {exc}. Fix or remove it and run again.") from None
    fix = f"Fix {config} or move it away; `docker login` writes a new one."
    if not isinstance(document, dict):
        raise GosmallError(f'{config}: its top level must be a JSON object such as {{"auths": {{}}}}, not {_json_type(document)}. {fix}')
    store = document.get("credsStore", "")
    if not isinstance(store, str) or not re.fullmatch(r"[\w.-]*", store):
        raise GosmallError(
            f'{config} credsStore: must be the name of a credential helper, such as "pass" for docker-credential-pass. {fix}'
        )
    helpers = document.get("credHelpers", {})
    if not isinstance(helpers, dict) or not all(isinstance(v, str) and re.fullmatch(r"[\w.-]+", v) for v in helpers.values()):
        raise GosmallError(
            f'{config} credHelpers: must be an object of registry hosts and helper names, such as {{"ghcr.io": "pass"}}. {fix}'
        )
    return DockerConfig(config, _auths(config, document, fix), store, {_host(k): v for k, v in helpers.items()})


def load_docker_auths(config: Path | None = None) -> dict[str, tuple[str, str]]:
    """Registry host → (user, password) from the Docker config's `auths`, if there is one."""
    return dict(load_docker_config(config).auths)


def _auths(config: Path, document: dict[str, Any], fix: str) -> dict[str, tuple[str, str]]:
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
        out[_host(key)] = (user, password)
    return out


def _host(key: str) -> str:
    # Keys are written as "host", "https://host" or "https://host/v1/".
    return re.sub(r"^https?://", "", key).split("/", 1)[0]


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
_T = TypeVar("_T")


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
    """HTTP to registries with Docker-config credentials, answering basic and bearer challenges.

    Mutable on purpose: it caches one token per (registry, scope), and each
    registry's credentials once found, for the run, the way a docker client
    does. `timeout` bounds each request in all; `deadline` (a
    `time.monotonic()` value) bounds every request of a run. Nothing that
    holds a secret is in its repr.
    """

    auths: Mapping[str, tuple[str, str]] = field(default_factory=dict, repr=False)
    session: requests.Session = field(default_factory=requests.Session, repr=False)
    timeout: float = TIMEOUT
    deadline: float | None = None
    creds_store: str = ""  # credsStore, run for every registry without a credHelpers entry
    cred_helpers: Mapping[str, str] = field(default_factory=dict)  # credHelpers: registry host -> helper name
    config_path: Path | None = None  # where the credentials came from, named in messages
    insecure: frozenset[str] = frozenset()  # hosts (or host:port) spoken to in plain HTTP, like loopback
    attempts: int = ATTEMPTS  # `retrying`: tries in all
    backoff: float = BACKOFF  # `retrying`: seconds before the second try, doubled for each further one
    _tokens: dict[tuple[str, str], str] = field(default_factory=dict, repr=False)
    _found: dict[str, tuple[tuple[str, str] | None, str]] = field(default_factory=dict, repr=False)
    _basic: set[str] = field(default_factory=set, repr=False)  # registries that asked for basic auth
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _deadlines: _Deadlines = field(default_factory=_Deadlines, repr=False)

    def __post_init__(self) -> None:
        adapter = _DeadlineAdapter(self._deadlines)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    @classmethod
    def from_environment(cls, *, deadline: float | None = None, insecure: Collection[str] = ()) -> RegistryClient:
        config = load_docker_config()
        return cls(
            config.auths,
            deadline=deadline,
            creds_store=config.creds_store,
            cred_helpers=config.cred_helpers,
            config_path=config.path,
            insecure=frozenset(insecure),
        )

    def credentials(self, domain: str) -> tuple[str, str] | None:
        """(user, secret) for `domain`: its credHelpers entry, else credsStore, else auths; None for anonymous."""
        with self._lock:
            if domain not in self._found:
                self._found[domain] = self._look_up(domain)
            return self._found[domain][0]

    def credential_source(self, domain: str) -> str:
        """Where `domain`'s credentials came from, for messages (never what they are)."""
        self.credentials(domain)
        return self._found[domain][1]

    def _look_up(self, domain: str) -> tuple[tuple[str, str] | None, str]:
        hub = domain in (DEFAULT_DOMAIN, "index.docker.io")
        keys = DOCKER_HUB_AUTH_KEYS if hub else (domain,)
        where = f" in {self.config_path}" if self.config_path else ""
        # Docker's order: a helper named for the registry, else the store, else the config's own auths.
        helper = next(((f"credHelpers.{k}", self.cred_helpers[k]) for k in keys if k in self.cred_helpers), None)
        if helper is None and self.creds_store:
            helper = ("credsStore", self.creds_store)
        if helper is not None:
            found = _run_credential_helper(helper[1], DOCKER_HUB_AUTH_KEYS[0] if hub else domain, helper[0] + where, self.timeout)
            if found is not None:
                return found, f"{helper[0]}{where} (docker-credential-{helper[1]})"
        for key in keys:
            if key in self.auths:
                return self.auths[key], f"auths.{key}{where}"
        return None, "none (anonymous)"

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
        """One API call; answers an auth challenge once, then returns whatever comes.

        Credentials and tokens go only to the registry's own host: an upload
        `Location` on another host (a storage backend) gets none.
        """
        base = registry_base(domain, self.insecure)
        full = url if url.startswith(("http://", "https://")) else base + url
        own_host = urlsplit(full).netloc == urlsplit(base).netloc
        sent = dict(headers or {})
        if own_host:
            token = self._tokens.get((domain, scope))
            if token:
                sent["Authorization"] = f"Bearer {token}"
            elif domain in self._basic:
                self._add_basic(domain, sent)
        response = self._send(method, full, headers=sent, data=data)
        if response.status_code != 401 or not own_host:
            return response
        challenge = response.headers.get("WWW-Authenticate", "")
        scheme, params = _parse_challenge(challenge)
        if scheme == "bearer" and "realm" in params:
            token = self._fetch_token(domain, params, scope, self.credentials(domain))
            self._tokens[(domain, scope)] = token
            sent["Authorization"] = f"Bearer {token}"
        elif scheme == "basic" and "Authorization" not in sent and self._add_basic(domain, sent):
            self._basic.add(domain)
        else:
            return response
        return self._send(method, full, headers=sent, data=data)

    def _add_basic(self, domain: str, headers: dict[str, str]) -> bool:
        credentials = self.credentials(domain)
        if credentials:
            headers["Authorization"] = "Basic " + base64.b64encode(":".join(credentials).encode()).decode()
        return credentials is not None

    def retrying(self, operation: Callable[[], _T], on_retry: Callable[[str], None] | None = None) -> _T:
        """`operation()`, run again after a backoff while it raises RegistryUnavailable, `attempts` times at most.

        The run's deadline bounds the waiting too: no retry starts that could not finish in time.
        """
        attempt = 1
        while True:
            try:
                return operation()
            except RegistryUnavailable as exc:
                delay = min(self.backoff * 2 ** (attempt - 1) if exc.retry_after is None else exc.retry_after, MAX_RETRY_AFTER)
                if attempt >= self.attempts or (self.deadline is not None and time.monotonic() + delay >= self.deadline):
                    raise RegistryUnavailable(f"{exc.message} (gave up after {attempt} attempt{'s' if attempt > 1 else ''})") from None
                attempt += 1
                if on_retry is not None:
                    on_retry(f"{exc.message}; trying again in {delay:g} s (attempt {attempt} of {self.attempts})")
                time.sleep(delay)

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
                # Each read may take as long as the whole deadline, so urllib3's read timeout and the deadline's
                # timer are one condition: whichever fires first, the user reads the same message.
                if expired.is_set() or _read_timed_out(exc):
                    raise self._too_slow(method, url, seconds) from None
                raise _unreachable(method, url, exc) from None
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


def _read_timed_out(exc: BaseException) -> bool:
    """Whether a read waited out its timeout, however requests and urllib3 wrapped it (a connect timeout is not)."""
    seen: set[int] = set()
    todo: list[object] = [exc]
    while todo:
        current = todo.pop()
        if not isinstance(current, BaseException) or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, (requests.exceptions.ConnectTimeout, ConnectTimeoutError)):
            return False
        if isinstance(current, (requests.exceptions.ReadTimeout, ReadTimeoutError, socket.timeout)):
            return True
        todo.extend([current.__cause__, current.__context__, *current.args])
    return False


def _unreachable(method: str, url: str, exc: Exception) -> GosmallError:
    failed = f"{method} {redact(url)} failed: {redact(str(exc))}."
    if isinstance(exc, requests.exceptions.SSLError):
        # Not worth another try; often a plain-HTTP registry spoken to in TLS.
        host = urlsplit(url).netloc
        return GosmallError(f"{failed} If {host} serves plain HTTP, name it with --insecure-registry {host}.")
    if isinstance(exc, (requests.ConnectionError, requests.exceptions.ChunkedEncodingError, OSError)):
        return RegistryUnavailable(f"{failed} Check that the registry is reachable.")
    return GosmallError(f"{failed} Check that the registry is reachable.")


class RegistryUnavailable(GosmallError):
    """The registry could not be reached, dropped the connection, or answered 429 or 5xx: another try may work."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def raise_if_unavailable(answer: Answer, what: str) -> Answer:
    """`answer`, unless it is a 429 or 5xx: then RegistryUnavailable, for `RegistryClient.retrying` to try again."""
    if answer.status_code in RETRIED_STATUSES:
        retry_after = answer.headers.get("Retry-After", "").strip()
        raise RegistryUnavailable(
            f"{what}: HTTP {answer.status_code} ({redact(answer.text) or 'no body'})",
            retry_after=float(retry_after) if retry_after.isdigit() else None,
        )
    return answer


def _run_credential_helper(name: str, server: str, named_in: str, timeout: float) -> tuple[str, str] | None:
    """`docker-credential-<name> get` with `server` on stdin, per Docker's credential-helper protocol.

    None when the helper has no credentials for the server; any other failure is an error, because pushing
    anonymously instead would only fail later with a less useful message. Its output is never shown: it holds
    the secret.
    """
    binary = f"docker-credential-{name}"
    fix = f"Fix the helper, or remove it from {named_in}."
    try:
        done = subprocess.run([binary, "get"], input=server.encode(), capture_output=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise GosmallError(
            f"{named_in} names the credential helper {binary}, but it is not on PATH. Install it, or remove it from there."
        ) from None
    except subprocess.TimeoutExpired:
        raise GosmallError(f"{binary} get did not answer within {timeout:g} s for {server} ({named_in}). {fix}") from None
    except OSError as exc:
        raise GosmallError(f"{binary} could not be run for {server} ({named_in}): {exc.strerror or exc}. {fix}") from None
    said = done.stdout.decode("utf-8", "replace")
    if done.returncode != 0:
        if "credentials not found" in said.lower():
            return None  # the protocol's way of saying "nothing stored for this server"
        why = redact(done.stderr.decode("utf-8", "replace"), limit=200) or f"exit status {done.returncode}"
        raise GosmallError(f"{binary} get failed for {server} ({named_in}): {why}. {fix}")
    try:
        answer = json.loads(said)
        user, secret = answer["Username"], answer["Secret"]
        if not isinstance(user, str) or not isinstance(secret, str):
            raise TypeError
    except (ValueError, KeyError, TypeError, RecursionError):
        raise GosmallError(
            f'{binary} get answered for {server} with something other than {{"Username": "…", "Secret": "…"}} ({named_in}). {fix}'
        ) from None
    if user == "<token>":
        raise GosmallError(
            f"{binary} holds an identity token for {server} ({named_in}), which gosmall cannot use; "
            "log in with a user name and password or access token instead."
        )
    return user, secret


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


# -- referrers (OCI 1.1): the API where a registry has it, the referrers tag schema elsewhere --------


@dataclass(frozen=True)
class Referrers:
    """What a registry lists as referrers of one digest, and where the list came from.

    `api`: the registry answered GET /v2/<name>/referrers/<digest>. Otherwise the list is the image index under
    the referrers tag (`sha256-<hex>`), `index` its parsed document (None when there is no such tag), which a
    client that adds a referrer must extend, keeping every entry another tool put there.
    """

    api: bool
    manifests: tuple[Mapping[str, Any], ...]
    index: Mapping[str, Any] | None = None


# What a registry without the referrers API answers GET /v2/<name>/referrers/<digest> with: the spec says 404;
# some answer 400 (an unknown path segment), 405 or 501. The client then falls back to the referrers tag.
NO_REFERRERS_API = frozenset({400, 404, 405, 501})


def referrers_tag(digest: Digest) -> str:
    """The referrers tag schema's tag for `digest`: `<alg>-<hex>` (distribution-spec, "Referrers Tag Schema")."""
    return f"{digest.algorithm[:32]}-{digest.hex[:64]}"


def referrer_descriptor(manifest: bytes, media_type: str) -> dict[str, Any]:
    """How an index lists a referrer (distribution-spec, pushing a manifest with a subject): its descriptor, its
    `artifactType` (else its config's media type) and every annotation of the manifest."""
    document = json.loads(manifest)
    out: dict[str, Any] = {"mediaType": media_type, "digest": str(Digest.of(manifest)), "size": len(manifest)}
    artifact_type = document.get("artifactType") or (document.get("config") or {}).get("mediaType")
    if artifact_type:
        out["artifactType"] = artifact_type
    if document.get("annotations"):
        out["annotations"] = dict(document["annotations"])
    return out


def list_referrers(client: RegistryClient, ref: Reference, digest: Digest) -> Referrers:
    """The referrers of `ref`'s repository's `digest`: from the referrers API, or, where that answers 404, from the
    index under the referrers tag (none when the tag does not exist)."""
    scope = f"repository:{ref.path}:pull"
    url = f"/v2/{ref.path}/referrers/{digest}"
    manifests: list[Mapping[str, Any]] = []
    pages = 0
    while url:
        answer = raise_if_unavailable(
            client.request("GET", ref.domain, url, scope, headers={"Accept": MEDIA_INDEX}), f"{ref}: GET referrers of {digest}"
        )
        if answer.status_code in NO_REFERRERS_API and pages == 0:
            return _tag_referrers(client, ref, digest)
        if answer.status_code != 200:
            raise _fail(ref, f"listing the referrers of {digest}", answer)
        manifests.extend(_index_manifests(ref, f"the referrers of {digest}", answer.content))
        pages += 1
        url = _next_page(answer.headers.get("Link", "")) if pages < 100 else ""
    return Referrers(True, tuple(manifests))


def _tag_referrers(client: RegistryClient, ref: Reference, digest: Digest) -> Referrers:
    tag = referrers_tag(digest)
    scope = f"repository:{ref.path}:pull"
    answer = raise_if_unavailable(
        client.request("GET", ref.domain, f"/v2/{ref.path}/manifests/{tag}", scope, headers={"Accept": MANIFEST_ACCEPT}),
        f"{ref}: GET manifest {tag}",
    )
    if answer.status_code == 404:
        return Referrers(False, (), None)
    if answer.status_code != 200:
        raise _fail(ref, f"getting the referrers tag {tag}", answer)
    manifests = _index_manifests(ref, f"{ref.name}:{tag}", answer.content)
    return Referrers(False, tuple(manifests), json.loads(answer.content))


def _index_manifests(ref: Reference, what: str, content: bytes) -> list[Mapping[str, Any]]:
    try:
        document = json.loads(content)
        manifests = document["manifests"] if document.get("mediaType", MEDIA_INDEX) == MEDIA_INDEX else None
        if not isinstance(manifests, list) or not all(isinstance(m, dict) and isinstance(m.get("digest"), str) for m in manifests):
            raise TypeError("manifests")
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        raise GosmallError(
            f"{ref}: {what} is not an OCI image index of referrers ({redact(content.decode('utf-8', 'replace'))}). "
            "gosmall does not overwrite it; move that tag away if it is not a referrers list."
        ) from None
    return manifests


def _next_page(link: str) -> str:
    found = re.search(r'<([^>]+)>\s*;\s*rel="?next"?', link)
    if not found:
        return ""
    target = urlsplit(found.group(1))
    return target.path + (f"?{target.query}" if target.query else "")


def merge_referrers(existing: Mapping[str, Any] | None, added: Collection[Mapping[str, Any]]) -> bytes | None:
    """The referrers tag's index with `added` appended to what it lists, or None when each is already there.

    Entries of other tools (and earlier pushes) are kept as they were, in their order; a descriptor whose digest is
    listed already is not added again, so pushing one build twice changes nothing.
    """
    document: dict[str, Any] = dict(existing) if existing is not None else {"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": []}
    listed = list(document.get("manifests") or [])
    known = {str(m.get("digest")) for m in listed}
    new = [dict(d) for d in added if str(d["digest"]) not in known]
    if not new:
        return None
    document["manifests"] = [*listed, *new]
    document.setdefault("schemaVersion", 2)
    document.setdefault("mediaType", MEDIA_INDEX)
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
