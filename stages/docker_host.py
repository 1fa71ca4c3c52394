"""Which Docker engine, and a connection to it: the one place every engine task asks.

`choose_engine` picks the engine the way the docker CLI does (cli/command/cli.go's
resolveContextName): DOCKER_HOST when set; else the context DOCKER_CONTEXT names; else the
`currentContext` of $DOCKER_CONFIG/config.json (~/.docker by default); else `default`, the
default socket. A named context is read from the CLI's own store, never from `docker context
inspect`: its endpoint from contexts/meta/<sha256 of the name>/meta.json and its TLS material from
contexts/tls/<sha256 of the name>/docker/{ca,cert,key}.pem (cli/context/store). The docker SDK's
`from_env` reads DOCKER_HOST only, which is why colima, OrbStack, Rancher Desktop and rootless
Docker users were told to copy an endpoint by hand.

`connect` gives a docker SDK client for that engine, known to answer.

One question is asked without the docker SDK: does the engine already hold this image, under these tags?

`build-small --load` after a rebuild where nothing changed has nothing to load: the engine names
an image by its config digest (or, with the containerd image store, its manifest digest), so when
every tag already names one of the build's digests the engine holds exactly these bytes. Asking
that through the SDK costs more than Go's whole up-to-date check (importing docker and requests,
a ping, a version call); one `GET /images/{name}/json` per tag on the engine's unix socket costs
a millisecond. The socket is the one `choose_engine` picks, so a context is asked too. Any doubt
(not a unix socket, TLS settings, a context that cannot be read, an error, an answer that does
not parse) is "no", and engine.py's SDK path decides.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import json
import os
import socket
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

from .errors import GosmallError
from .reporter import Reporter

if TYPE_CHECKING:
    import docker

DEFAULT_SOCKET = "/var/run/docker.sock"
DEFAULT_CONTEXT = "default"
TIMEOUT_SECONDS = 5
# Connecting asks the engine for its API version; a dead TCP DOCKER_HOST must
# not hang for the SDK's default minute. Loading a large archive may take
# longer, so the client gets its longer timeout back once connected.
CONNECT_TIMEOUT = 10
API_TIMEOUT = 300
# The docker CLI's store: the endpoint it keeps for the engine, and its TLS files' names.
DOCKER_ENDPOINT = "docker"
TLS_FILES = ("ca.pem", "cert.pem", "key.pem")

ChosenBy = Literal["DOCKER_HOST", "DOCKER_CONTEXT", "currentContext", "default"]


@dataclass(frozen=True)
class ContextTLS:
    """A context's TLS material as the CLI stores it; a file the context does not have is None."""

    ca: Path | None
    cert: Path | None
    key: Path | None
    skip_verify: bool


@dataclass(frozen=True)
class Engine:
    """The engine the docker CLI would talk to, and why."""

    host: str  # "unix:///var/run/docker.sock", "tcp://…", "ssh://…"
    context: str  # the context's name; "default" when DOCKER_HOST or nothing chose one
    chosen_by: ChosenBy
    config_file: Path  # config.json, which a currentContext came from
    tls: ContextTLS | None = None  # a named context's TLS material, when it has some

    @property
    def socket(self) -> str | None:
        """The unix socket's path, or None when the engine is reached another way (tcp, ssh)."""
        return self.host.removeprefix("unix://") if self.host.startswith("unix://") else None

    def describe(self) -> str:
        if self.chosen_by == "DOCKER_HOST":
            return f"DOCKER_HOST={self.host}"
        if self.chosen_by == "default":
            return f"{self.host} (the default; DOCKER_HOST is not set)"
        why = "DOCKER_CONTEXT" if self.chosen_by == "DOCKER_CONTEXT" else f"the currentContext of {self.config_file}"
        return f"{self.host} (Docker context '{self.context}', chosen by {why})"


def docker_config_dir(environ: Mapping[str, str]) -> Path:
    """$DOCKER_CONFIG, else ~/.docker: where the CLI keeps config.json and its contexts."""
    if environ.get("DOCKER_CONFIG"):
        return Path(environ["DOCKER_CONFIG"])
    home = environ.get("HOME")
    return (Path(home) if home else Path.home()) / ".docker"


def context_dir_name(name: str) -> str:
    # The CLI names a context's directories by the SHA-256 of its name, so any name is a safe path.
    return hashlib.sha256(name.encode("utf-8")).hexdigest()


def choose_engine(environ: Mapping[str, str] | None = None) -> Engine:
    """The engine, chosen as the docker CLI chooses it; a context that cannot be read is a GosmallError."""
    environ = os.environ if environ is None else environ
    config_dir = docker_config_dir(environ)
    config_file = config_dir / "config.json"
    if environ.get("DOCKER_HOST"):
        return Engine(environ["DOCKER_HOST"], DEFAULT_CONTEXT, "DOCKER_HOST", config_file)
    chosen_by: ChosenBy
    if environ.get("DOCKER_CONTEXT"):
        name, chosen_by = environ["DOCKER_CONTEXT"], "DOCKER_CONTEXT"
    else:
        name, chosen_by = _current_context(config_file), "currentContext"
        if not name:
            return Engine(f"unix://{DEFAULT_SOCKET}", DEFAULT_CONTEXT, "default", config_file)
    if name == DEFAULT_CONTEXT:
        # The CLI's `default` context is the default socket (DOCKER_HOST being unset here).
        return Engine(f"unix://{DEFAULT_SOCKET}", DEFAULT_CONTEXT, chosen_by, config_file)
    return _read_context(config_dir, name, chosen_by, config_file)


def _current_context(config_file: Path) -> str:
    try:
        text = config_file.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""
    except OSError as exc:
        raise GosmallError(
            f"{config_file} cannot be read ({exc.strerror}); gosmall reads its currentContext to choose the Docker engine, as the docker CLI does."
        ) from None
    try:
        value = _field(json.loads(text), "currentContext") if text.strip() else None
    except ValueError as exc:
        raise GosmallError(
            f"{config_file} is not valid JSON ({exc}); gosmall reads its currentContext to choose the Docker engine, "
            "as the docker CLI does. Fix the file, or set DOCKER_HOST or DOCKER_CONTEXT."
        ) from None
    if value is not None and not isinstance(value, str):
        raise GosmallError(f"{config_file}: currentContext must be a context's name (a string), not {json.dumps(value)}.")
    return value or ""


def _read_context(config_dir: Path, name: str, chosen_by: ChosenBy, config_file: Path) -> Engine:
    why = "DOCKER_CONTEXT" if chosen_by == "DOCKER_CONTEXT" else f"the currentContext of {config_file}"
    meta = config_dir / "contexts" / "meta" / context_dir_name(name) / "meta.json"
    try:
        document = json.loads(meta.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GosmallError(
            f"Docker context '{name}' (chosen by {why}) does not exist: there is no {meta}. `docker context ls` "
            f"lists the contexts there are; choose one with `docker context use NAME` or DOCKER_CONTEXT=NAME, or "
            f"`docker context use default` for the default socket."
        ) from None
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else f"not valid JSON: {exc}"
        raise GosmallError(f"Docker context '{name}' (chosen by {why}): {meta} cannot be read ({reason}).") from None
    endpoint = _field(_field(document, "Endpoints"), DOCKER_ENDPOINT)
    host = _field(endpoint, "Host")
    if not isinstance(host, str) or not host:
        raise GosmallError(
            f"Docker context '{name}' (chosen by {why}) has no Docker endpoint: {meta} holds no Endpoints.docker.Host. "
            f"Give it one with `docker context update {name} --docker host=unix:///path/to/docker.sock`."
        )
    tls_dir = config_dir / "contexts" / "tls" / context_dir_name(name) / DOCKER_ENDPOINT
    ca, cert, key = (tls_dir / f if (tls_dir / f).is_file() else None for f in TLS_FILES)
    skip_verify = _field(endpoint, "SkipTLSVerify") is True
    tls = ContextTLS(ca, cert, key, skip_verify) if (ca or cert or key or skip_verify) else None
    return Engine(host, name, chosen_by, config_file, tls)


def _field(document: object, key: str) -> object:
    """`document[key]` as Go's encoding/json finds it (the CLI's reader): the exact key, else any case of it."""
    if not isinstance(document, dict):
        return None
    if key in document:
        return document[key]
    return next((v for k, v in document.items() if isinstance(k, str) and k.lower() == key.lower()), None)


# -- is it already loaded? --------------------------------------------------------


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=TIMEOUT_SECONDS)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(TIMEOUT_SECONDS)
        self.sock.connect(self._path)


def engine_socket(environ: Mapping[str, str] | None = None) -> str | None:
    """The chosen engine's unix socket, or None when it is reached another way (tcp, ssh, TLS) or cannot be chosen."""
    environ = os.environ if environ is None else environ
    try:
        engine = choose_engine(environ)
    except GosmallError:
        return None  # connect() says why
    if engine.chosen_by in ("DOCKER_HOST", "default") and (environ.get("DOCKER_TLS_VERIFY") or environ.get("DOCKER_CERT_PATH")):
        return None
    return engine.socket


def tags_name(tags: Iterable[str], image_ids: Iterable[str], environ: Mapping[str, str] | None = None) -> bool:
    """Whether the engine answers that every tag names one of `image_ids`; False on any doubt."""
    path = engine_socket(environ)
    wanted, tags = set(image_ids), tuple(tags)
    if path is None or not tags:
        return False
    connection = _UnixConnection(path)
    try:
        for tag in tags:
            # The docker SDK quotes an image name the same way: `/` and `:` stay.
            connection.request("GET", f"/images/{quote(tag, safe='/:')}/json", headers={"Host": "docker"})
            response = connection.getresponse()
            body = response.read()
            if response.status != 200 or json.loads(body).get("Id") not in wanted:
                return False
        return True
    except (OSError, http.client.HTTPException, ValueError, AttributeError):
        return False
    finally:
        connection.close()


# -- connecting -----------------------------------------------------------------


def connect(reporter: Reporter | None = None, environ: Mapping[str, str] | None = None) -> docker.DockerClient:
    """A client for the engine `choose_engine` picks, known to answer."""
    import requests
    from docker.errors import DockerException

    engine = choose_engine(environ)
    where = engine.describe()
    if reporter:
        reporter.step(f"Connecting to the Docker engine at {where}")
    try:
        client = _client(engine, environ)
        client.ping()
    except DockerException as exc:
        raise _connect_error(exc, engine) from None
    except requests.exceptions.RequestException as exc:
        raise _connect_error(exc, engine) from None
    client.api.timeout = API_TIMEOUT
    if reporter:
        version = client.version()
        reporter.detail(f"engine {version.get('Version', '?')} ({version.get('Os', '?')}/{version.get('Arch', '?')})")
    return client


def _client(engine: Engine, environ: Mapping[str, str] | None) -> docker.DockerClient:
    import docker
    from docker.constants import MINIMUM_DOCKER_API_VERSION
    from docker.tls import TLSConfig
    from docker.utils import kwargs_from_env

    tls: TLSConfig | bool = False
    if engine.chosen_by in ("DOCKER_HOST", "default"):
        # DOCKER_TLS_VERIFY and DOCKER_CERT_PATH belong to this path; the SDK reads them as the CLI does.
        tls = kwargs_from_env(environment=dict(os.environ if environ is None else environ)).get("tls") or False
    elif engine.tls is not None and engine.socket is None:
        # As the CLI's context loader does: the CA pins the server unless SkipTLSVerify; cert and key go as a pair.
        pair = (str(engine.tls.cert), str(engine.tls.key)) if engine.tls.cert and engine.tls.key else None
        ca = str(engine.tls.ca) if engine.tls.ca else None
        tls = TLSConfig(client_cert=pair, ca_cert=ca, verify=not engine.tls.skip_verify)
    # ssh:// endpoints go through the ssh binary, as the CLI's connection helper does (the SDK's other way needs paramiko).
    options: dict[str, Any] = dict(base_url=engine.host, tls=tls, timeout=CONNECT_TIMEOUT, use_ssh_client=engine.host.startswith("ssh://"))
    if not tls:
        return docker.DockerClient(**options)
    # requests lets REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE replace a session's own CA (psf/requests#3829), so the
    # engine would be checked against the system's CAs, not its own, and refused. With TLS the client does not
    # consult the environment, like the CLI's client for a context (no proxy either). The SDK's automatic
    # version would ask before that could be said: ask at the oldest API version first.
    probe = docker.DockerClient(version=MINIMUM_DOCKER_API_VERSION, **options)
    probe.api.trust_env = False
    try:
        version = str(probe.api.version(api_version=False)["ApiVersion"])
    finally:
        probe.close()
    client = docker.DockerClient(version=version, **options)
    client.api.trust_env = False
    return client


def _connect_error(exc: BaseException, engine: Engine) -> GosmallError:
    where = engine.describe()
    cause = _os_error(exc)
    if cause is not None and cause.errno in (errno.EACCES, errno.EPERM):
        return GosmallError(
            f"Permission denied talking to the Docker engine at {where}. Your user may not use that socket: "
            "add it to the docker group (sudo usermod -aG docker $USER, then log in again), run rootless Docker "
            "and set DOCKER_HOST to its socket (e.g. unix://$XDG_RUNTIME_DIR/docker.sock), or run gosmall with sudo.",
        )
    reason = str(cause) if cause is not None else str(exc)
    if engine.chosen_by in ("DOCKER_HOST", "default"):
        fix = (
            "Start one (sudo systemctl start docker, start Docker Desktop, or run dockerd), or choose a running "
            "engine: DOCKER_HOST=unix:///path/to/docker.sock, or a Docker context with `docker context use NAME` "
            "(DOCKER_HOST, when set, wins over any context, as it does for the docker CLI)."
        )
    else:
        fix = (
            f"Start the engine context '{engine.context}' points at (colima start, OrbStack, Rancher Desktop, "
            "podman system service, …), or choose another: `docker context use NAME`, DOCKER_CONTEXT=NAME, or "
            "DOCKER_HOST, which wins over any context."
        )
    return GosmallError(
        f"No Docker engine answers at {where} ({reason}). {fix} Only --load, --smoke, load, smoke, run and audit of an "
        "image by name need an engine; build-small alone does not.",
    )


def _os_error(exc: BaseException) -> OSError | None:
    """The OSError at the bottom of requests' and urllib3's wrapping, if there is one."""
    seen: set[int] = set()
    todo: list[object] = [exc]
    while todo:
        current = todo.pop(0)
        if not isinstance(current, BaseException) or id(current) in seen:
            continue
        seen.add(id(current))
        # An SSLError is an OSError whose errno is OpenSSL's error code (1 for most), not the system's EPERM.
        if isinstance(current, OSError) and current.errno is not None and not isinstance(current, ssl.SSLError):
            return current
        todo.extend([current.__cause__, current.__context__, *current.args])
    return None
