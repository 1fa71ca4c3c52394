"""Which Docker engine, and a connection to it: the one place every engine task asks.

`connect` gives a docker SDK client for the engine DOCKER_HOST names, known to answer.

One question is asked without the docker SDK: does the engine already hold this image, under these tags?

`build-small --load` after a rebuild where nothing changed has nothing to load: the engine names
an image by its config digest (or, with the containerd image store, its manifest digest), so when
every tag already names one of the build's digests the engine holds exactly these bytes. Asking
that through the SDK costs more than Go's whole up-to-date check (importing docker and requests,
a ping, a version call); one `GET /images/{name}/json` per tag on the engine's unix socket costs
a millisecond. Any doubt (DOCKER_HOST not a unix socket, TLS settings, an error, an answer that
does not parse) is "no", and engine.py's SDK path decides.
"""

from __future__ import annotations

import errno
import http.client
import json
import os
import socket
from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import quote

from .errors import GosmallError
from .reporter import Reporter

if TYPE_CHECKING:
    import docker

DEFAULT_SOCKET = "/var/run/docker.sock"
TIMEOUT_SECONDS = 5
# Connecting asks the engine for its API version; a dead TCP DOCKER_HOST must
# not hang for the SDK's default minute. Loading a large archive may take
# longer, so the client gets its longer timeout back once connected.
CONNECT_TIMEOUT = 10
API_TIMEOUT = 300


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=TIMEOUT_SECONDS)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(TIMEOUT_SECONDS)
        self.sock.connect(self._path)


def engine_socket(environ: dict[str, str] | None = None) -> str | None:
    """The engine's unix socket, or None when the engine is reached another way (tcp, ssh, TLS, a context)."""
    environ = dict(os.environ) if environ is None else environ
    if environ.get("DOCKER_TLS_VERIFY") or environ.get("DOCKER_CERT_PATH") or environ.get("DOCKER_CONTEXT"):
        return None
    host = environ.get("DOCKER_HOST", "")
    if not host:
        return DEFAULT_SOCKET
    return host.removeprefix("unix://") if host.startswith("unix://") else None


def tags_name(tags: Iterable[str], image_ids: Iterable[str], environ: dict[str, str] | None = None) -> bool:
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


def connect(reporter: Reporter | None = None) -> docker.DockerClient:
    """A client for the engine DOCKER_HOST names (or the default socket), known to answer."""
    import docker
    import requests
    from docker.errors import DockerException

    where = _engine_address()
    if reporter:
        reporter.step(f"Connecting to the Docker engine at {where}")
    try:
        client = docker.from_env(timeout=CONNECT_TIMEOUT)
        client.ping()
    except DockerException as exc:
        raise _connect_error(exc, where) from None
    except requests.exceptions.RequestException as exc:
        raise _connect_error(exc, where) from None
    client.api.timeout = API_TIMEOUT
    if reporter:
        version = client.version()
        reporter.detail(f"engine {version.get('Version', '?')} ({version.get('Os', '?')}/{version.get('Arch', '?')})")
    return client


def _engine_address() -> str:
    host = os.environ.get("DOCKER_HOST")
    if host:
        return f"DOCKER_HOST={host}"
    return f"unix://{DEFAULT_SOCKET} (the default; DOCKER_HOST is not set)"


def _connect_error(exc: BaseException, where: str) -> GosmallError:
    cause = _os_error(exc)
    if cause is not None and cause.errno in (errno.EACCES, errno.EPERM):
        return GosmallError(
            f"Permission denied talking to the Docker engine at {where}. Your user may not use that socket: "
            "add it to the docker group (sudo usermod -aG docker $USER, then log in again), run rootless Docker "
            "and set DOCKER_HOST to its socket (e.g. unix://$XDG_RUNTIME_DIR/docker.sock), or run gosmall with sudo.",
        )
    reason = str(cause) if cause is not None else str(exc)
    return GosmallError(
        f"No Docker engine answers at {where} ({reason}). Start one (sudo systemctl start docker, start Docker "
        "Desktop, or run dockerd), or point DOCKER_HOST at a running engine; the docker SDK does not read "
        "`docker context`, so for a context use DOCKER_HOST=$(docker context inspect --format "
        "'{{.Endpoints.docker.Host}}'). Only --load, --smoke, load and smoke need an engine; build-small alone "
        "does not.",
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
        if isinstance(current, OSError) and current.errno is not None:
            return current
        todo.extend([current.__cause__, current.__context__, *current.args])
    return None
