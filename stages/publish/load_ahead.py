"""--load, --smoke and `run`: the engine gets each image while its build finishes.

A layer's uncompressed tar and the config that names it by diff_id are all `docker load` needs, and the image ID
is the config digest, which compressing the layer cannot change. So the image goes to the engine on a thread as
soon as those exist (pipeline.py passes `start` to assemble), while the build compresses, audits, writes the SBOM
and the output directory. Its own module, apart from engine.py: a build found up to date imports nothing that
speaks to an engine (docker_host.tags_name answers that), and this module costs it nothing either.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..config import ImageConfig
from ..digest import Digest
from ..errors import GosmallError
from ..images.model import Blob
from ..reporter import Reporter

if TYPE_CHECKING:  # pragma: no cover
    import docker


class LoadAhead:
    """--load, --smoke and `run`: each image goes to the engine as soon as its config and uncompressed layer exist,
    on a thread, while the build compresses, audits and writes the output directory (pipeline.py calls `start`).

    Loaded ahead, the image is untagged: its archive names no tag. The tags move only in `load_image`, once the
    whole build succeeded, so a build that fails after the load (its audit, a full disk, a Ctrl-C) leaves every
    tag naming what it named before, and `abandon` removes the image it loaded (never one the engine already had).
    `load_image` then finds the image by its config digest and only tags it.
    """

    def __init__(self, reporter: Reporter, connect: Callable[[], docker.DockerClient]) -> None:
        self._reporter = reporter  # the task's, not the build's: what is said here is not replayed by a no-op build
        self._stopped = threading.Event()  # Ctrl-C or SIGTERM: a load still running says nothing while Python exits
        self._loads: list[_LoadAhead] = []
        self._client: docker.DockerClient | None = None
        self._refused: Exception | None = None  # what connecting ahead met: the first load's error, not a second try
        self._connecting = threading.Lock()
        self._connect = connect  # on the first load's thread: a build found up to date never waits for the engine

    def _connected(self) -> docker.DockerClient:
        with self._connecting:
            if self._refused is not None:
                raise self._refused
            if self._client is None:
                self._client = self._connect()
            return self._client

    def connect_ahead(self) -> None:
        """Connect now, while Go links (speculate.while_go_runs): the first load then sends the image at once."""
        try:
            self._connected()
        except Exception as exc:  # noqa: BLE001 - said by the first load, where the build waits for it
            self._refused = exc

    @property
    def client(self) -> docker.DockerClient:
        """The connection the loads used, for `load_image` and what follows (made now when no load needed one)."""
        return self._connected()

    def start(self, image: ImageConfig, config: Blob, layer_tars: tuple[bytes, ...], epoch: int) -> None:
        load = _LoadAhead(image, config.digest)
        load.thread = _daemon(lambda: self._load(load, config, layer_tars, epoch))
        self._loads.append(load)

    def _load(self, load: _LoadAhead, config: Blob, layer_tars: tuple[bytes, ...], epoch: int) -> None:
        from ..images.docker_archive import write_docker_archive_of

        try:
            client = self._connected()
            if _engine_has_digest(client, load.config_digest) is None:
                archive = io.BytesIO()
                write_docker_archive_of(config, layer_tars, archive, load.image.repository, (), epoch)
                client.images.load(archive.getvalue())
                load.loaded = True
                if not self._stopped.is_set():
                    self._reporter.detail(
                        f"{load.image.name}: {load.config_digest} loaded into the engine, untagged until the build is done"
                    )
        except BaseException as exc:  # said where the build waits for it (wait), not on this thread
            load.error = exc

    def wait(self) -> None:
        """Every load started has finished; the first that failed is raised, as load_image would have."""
        for load in self._loads:
            if load.thread is not None:
                load.thread.join()
        for load in self._loads:
            if load.error is not None:
                raise _load_error(load.error, load.image) from None

    def abandon(self, *, wait: bool = True) -> None:
        """The build failed: remove what was loaded ahead, which no tag names. Without `wait` (Ctrl-C, SIGTERM) a load
        still running is left to end with the process (the image it may leave is untagged, and no container runs it);
        one that has ended is removed all the same, which is one request."""
        from docker.errors import APIError

        if not wait:
            self._stopped.set()
        for load in self._loads:
            if load.thread is not None:
                if not wait and load.thread.is_alive():
                    continue
                load.thread.join()
            if load.loaded and self._client is not None:
                try:
                    self._client.images.remove(str(load.config_digest), noprune=False)
                except (APIError, OSError):
                    pass  # tagged or used meanwhile by someone else (theirs now), or the engine went away
        self._loads.clear()


@dataclass
class _LoadAhead:
    image: ImageConfig
    config_digest: Digest
    thread: threading.Thread | None = None
    loaded: bool = False
    error: BaseException | None = None


def _daemon(target: Callable[[], object]) -> threading.Thread:
    # A daemon: a Ctrl-C or SIGTERM ends the process without waiting for the engine to answer.
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def _load_error(exc: BaseException, image: ImageConfig) -> BaseException:
    from docker.errors import APIError, ImageLoadError

    if isinstance(exc, (APIError, ImageLoadError)):
        why = exc.explanation if isinstance(exc, APIError) and exc.explanation else str(exc)
        return GosmallError(
            f"The Docker engine refused to load the image of '{image.name}': {why}. Run `gosmall build-small --image {image.name} "
            "--load` again; if it fails the same way, the engine's storage may be full or damaged."
        )
    return exc


def _engine_has_digest(client: docker.DockerClient, digest: Digest) -> Any:
    from docker.errors import ImageNotFound

    try:
        found = client.images.get(str(digest))
    except ImageNotFound:
        return None
    return found if str(found.id) == str(digest) else None
