"""One question for the Docker engine without the docker SDK: does it already hold this image, under these tags?

`build-small --load` after a rebuild where nothing changed has nothing to load: the engine names
an image by its config digest (or, with the containerd image store, its manifest digest), so when
every tag already names one of the build's digests the engine holds exactly these bytes. Asking
that through the SDK costs more than Go's whole up-to-date check (importing docker and requests,
a ping, a version call); one `GET /images/{name}/json` per tag on the engine's unix socket costs
a millisecond. Any doubt (DOCKER_HOST not a unix socket, TLS settings, an error, an answer that
does not parse) is "no", and engine.py's SDK path decides.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
from collections.abc import Iterable
from urllib.parse import quote

DEFAULT_SOCKET = "/var/run/docker.sock"
TIMEOUT_SECONDS = 5


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
