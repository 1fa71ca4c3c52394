"""Stage: put a built image on a Docker engine and prove that it runs.

`load_image` sends `image.tar` to the engine through the docker SDK, tags it,
and checks that the engine's image ID is the config digest in report.json:
what runs is exactly what was built. `smoke_test` runs that image the way a
security-minded operator would (its own user, read-only root, no
capabilities, no new privileges, pids and memory limits, no network unless it
serves one) and waits for the Docker healthcheck and for its ports to answer.

Only these functions talk to an engine; `build-small` without `--load` or
`--smoke` never imports the SDK's connection or needs a daemon.
"""

from __future__ import annotations

import errno
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Literal

import requests

from ..build.built import Build, read_build
from ..config import ImageConfig
from ..digest import Digest
from ..errors import FOUND, GosmallError
from ..interrupts import STOP_SIGNALS, Interrupted, held
from ..leftovers import Owner
from ..reporter import Reporter

if TYPE_CHECKING:  # pragma: no cover
    import docker
    from docker.models.containers import Container

NetworkMode = Literal["host", "none"]

# Limits an operator would set for a small Go server. A Go program runs a
# handful of OS threads, each counted as a pid; the healthcheck's exec adds one.
PIDS_LIMIT = 128
MEMORY_LIMIT = "256m"
# Every smoke container carries these labels: the image it smoke-tests; this
# run's ID, so a container whose ID was lost to a Ctrl-C between "created" and
# "assigned" can still be found and removed; and the gosmall process that runs
# it (leftovers.Owner), so a later smoke test can remove what a killed one left
# running, and nothing else.
SMOKE_LABEL = "dev.gosmall.smoke"
RUN_LABEL = "dev.gosmall.smoke.run"
OWNER_LABEL = "dev.gosmall.smoke.owner"
LOG_TAIL = 200
ERROR_LOG_LINES = 15
POLL_SECONDS = 0.25
# A program with neither ports nor a healthcheck has nothing to ask; it passes
# when it is still running after this long, or has exited 0.
GRACE_SECONDS = 3.0
# Docker's own interval for a healthcheck that does not set one (30 s).
DOCKER_DEFAULT_HEALTH_INTERVAL_NS = 30_000_000_000


@dataclass(frozen=True)
class LoadResult:
    image_id: str  # the engine's ID, "sha256:..."
    tags: tuple[str, ...]  # "repository:tag", each pointing at image_id
    platform: str  # the platform image.tar was made for, e.g. "linux/amd64"


@dataclass(frozen=True)
class HttpCheck:
    port: int
    path: str
    status: int


@dataclass(frozen=True)
class SmokeResult:
    image_id: str
    reference: str  # the tag the person knows the image by
    container_id: str
    user: str  # "uid:gid" the container ran as
    network_mode: NetworkMode
    health: str | None  # "healthy", or None when the image has no healthcheck
    checks: tuple[HttpCheck, ...]
    seconds: float


@dataclass(frozen=True)
class BuiltImage:
    """What report.json says about the image.tar beside it."""

    reference: str  # repository:first tag
    tags: tuple[str, ...]
    platform: str
    config_digest: Digest
    manifest_digest: Digest
    archive: Path


@dataclass(frozen=True)
class RunningContainer:
    """A smoke container that passed its checks, for callers that ask more of it."""

    container: Container
    result: SmokeResult

    def url(self, path: str = "/", port: int | None = None) -> str:
        if self.result.network_mode != "host" or not self.result.checks:
            raise GosmallError(
                "This smoke container has no port reachable from this machine (it runs without a network); "
                "give the image ports, or run it on the host network, to talk to it."
            )
        return f"http://127.0.0.1:{port or self.result.checks[0].port}{path}"


# -- what was built -------------------------------------------------------------


def built_image(image: ImageConfig, source: Build | Path) -> tuple[Build, BuiltImage]:
    """The Build to load or run (read back from the output directory when given a path), and its engine facts."""
    build = source if isinstance(source, Build) else read_build(image, source)
    try:
        # report.json's digests, which read_build checked against the layout, the build made from the image, or the
        # up-to-date check vouches for: a build found up to date then runs without reading its OCI layout back.
        entry = build.report["platforms"][str(build.docker_platform)]
        platform, config_digest, manifest_digest = (
            str(build.docker_platform), Digest.parse(str(entry["config_digest"])), Digest.parse(str(entry["manifest_digest"]))
        )  # fmt: skip
    except (KeyError, TypeError, ValueError):
        docker_image = build.docker_image()  # an older report: from the image, as before
        platform, config_digest, manifest_digest = str(docker_image.platform), docker_image.config.digest, docker_image.manifest.digest
    return build, BuiltImage(
        reference=build.tags[0],
        tags=build.tags,
        platform=platform,
        config_digest=config_digest,
        manifest_digest=manifest_digest,
        archive=build.output_dir / "image.tar",
    )


def _engine_platform(client: docker.DockerClient) -> str:
    version = client.version()
    return f"{version.get('Os', 'linux')}/{version.get('Arch', '?')}"


def _same_platform(engine: str, built: str) -> bool:
    # The engine reports os/arch only; a variant (arm/v7) cannot be compared.
    return engine.split("/")[:2] == built.split("/")[:2]


# -- loading --------------------------------------------------------------------


def load_image(client: docker.DockerClient, image: ImageConfig, source: Build | Path, reporter: Reporter) -> LoadResult:
    """Load the build (image.tar's bytes, made from the value), tag it, and prove the engine holds exactly what was built."""
    from docker.errors import APIError, ImageLoadError

    build, built = built_image(image, source)
    reporter.step(f"Loading {built.reference} ({built.platform}) into the Docker engine")
    engine_platform = _engine_platform(client)
    if not _same_platform(engine_platform, built.platform):
        reporter.warn(f"image.tar was made for {built.platform} but the engine runs {engine_platform}; it loads, but it will not run here.")
    try:
        # Content-addressed: an engine whose image ID is the config digest holds exactly these bytes,
        # so an unchanged rebuild loads nothing and only (re)tags.
        loaded_image = _engine_has(client, built)
        if loaded_image is not None:
            reporter.detail(f"the engine already holds {built.config_digest}: nothing to load")
        else:
            loaded = client.images.load(build.docker_archive())
            if not loaded:
                raise GosmallError(
                    f"The Docker engine loaded nothing from {built.archive}; the archive holds no image it understands. "
                    f"Rebuild it with `gosmall build-small --image {image.name}`."
                )
            ids = {str(i.id) for i in loaded}
            if len(ids) != 1:
                raise GosmallError(
                    f"{built.archive} loaded {len(ids)} different images ({', '.join(sorted(ids))}); a gosmall archive "
                    f"holds one. Rebuild it with `gosmall build-small --image {image.name}`."
                )
            loaded_image = loaded[0]
        loaded_id = str(loaded_image.id)
        _check_image_id(loaded_id, built, image)
        for reference in built.tags:
            repository, _, tag = reference.rpartition(":")
            loaded_image.tag(repository, tag)
        for reference in built.tags:
            tagged = client.images.get(reference).id
            if tagged != loaded_id:
                raise GosmallError(
                    f"After loading, the engine's {reference} is {tagged}, not the loaded {loaded_id}; "
                    "something else retagged it meanwhile. Run `gosmall load` again."
                )
    except (APIError, ImageLoadError) as exc:
        # ImageLoadError: the engine accepted the upload but failed reading the archive.
        why = exc.explanation if isinstance(exc, APIError) and exc.explanation else str(exc)
        raise GosmallError(
            f"The Docker engine refused to load {built.archive}: {why}. If the archive is damaged, "
            f"rebuild it with `gosmall build-small --image {image.name}`."
        ) from None
    reporter.detail(f"{loaded_id} tagged {', '.join(built.tags)}")
    return LoadResult(loaded_id, built.tags, built.platform)


def _engine_has(client: docker.DockerClient, built: BuiltImage) -> Any:
    """The engine's image when its ID is the build's config or manifest digest, else None."""
    from docker.errors import ImageNotFound

    for digest in (built.config_digest, built.manifest_digest):
        try:
            found = client.images.get(str(digest))
        except ImageNotFound:
            continue
        if str(found.id) in (str(built.config_digest), str(built.manifest_digest)):
            return found
    return None


def _check_image_id(image_id: str, built: BuiltImage, image: ImageConfig) -> None:
    # A classic engine names an image by its config digest. An engine with the
    # containerd image store names it by its manifest digest instead; either
    # proves the bytes are ours, since both digests are in the report.
    if image_id in (str(built.config_digest), str(built.manifest_digest)):
        return
    raise GosmallError(
        f"The Docker engine gave {built.archive} the image ID {image_id}, but report.json says the build's config "
        f"digest is {built.config_digest}: what would run is not what was built. image.tar and report.json are "
        f"from different builds or were changed; run `gosmall build-small --image {image.name}` and load again."
    )


# -- smoke testing --------------------------------------------------------------


def smoke_test(
    client: docker.DockerClient,
    image: ImageConfig,
    source: Build | Path,
    reporter: Reporter,
    *,
    args: Sequence[str] | None = None,
    timeout: float | None = None,
    ports: Sequence[int] | None = None,
    healthcheck: Sequence[str] | None = None,
    network_mode: NetworkMode | None = None,
) -> SmokeResult:
    """Run the loaded image hardened, wait until it is healthy and serves, remove it.

    `args` replaces the image's Cmd and `ports` the ports to ask (e.g. a free
    port passed as `-addr`); `healthcheck` replaces the image's healthcheck
    command for such a run. `network_mode` defaults to "host" when the image
    exposes ports and "none" otherwise.
    """
    with hardened_container(
        client, image, source, reporter,
        args=args, timeout=timeout, ports=ports, healthcheck=healthcheck, network_mode=network_mode,
    ) as running:  # fmt: skip
        return running.result


@contextmanager
def hardened_container(
    client: docker.DockerClient,
    image: ImageConfig,
    source: Build | Path,
    reporter: Reporter,
    *,
    args: Sequence[str] | None = None,
    timeout: float | None = None,
    ports: Sequence[int] | None = None,
    healthcheck: Sequence[str] | None = None,
    network_mode: NetworkMode | None = None,
) -> Iterator[RunningContainer]:
    """`smoke_test`, keeping the container running while the caller's block runs.

    The container is removed when the block ends, however it ends: a failed
    check, an error, Ctrl-C or SIGTERM. One a killed gosmall left running is
    removed first (see `_remove_stale_containers`). A failed check is a finding
    (exit status 1); what stops the check from running is status 2.
    """

    built, image_id = _runnable_image(client, image, source)
    _remove_stale_containers(client, reporter)  # a killed run's container may hold the port
    mode: NetworkMode = network_mode or ("host" if image.ports else "none")
    probe_ports = tuple(ports) if ports is not None else _tcp_ports(image)
    if mode == "host":
        for port in probe_ports:
            _check_port_free(port, image)
    else:
        # Without a network nothing on this machine can reach the ports.
        probe_ports = ()
    seconds = timeout if timeout is not None else image.smoke.timeout
    label = uuid.uuid4().hex
    options = hardened_options(image, mode, label)
    user = options["user"]
    options["environment"] = [f"{k}={v}" for k, v in image.smoke.env]
    if args is not None:
        options["command"] = list(args)
    if healthcheck is not None:
        # Docker wants nanoseconds; a short interval keeps an overridden check quick.
        options["healthcheck"] = {
            "test": ["CMD", *healthcheck],
            "interval": 1_000_000_000,
            "timeout": 3_000_000_000,
            "retries": 3,
        }

    reporter.step(f"Smoke-testing {built.reference} as user {user}, read-only, no capabilities, network {mode}")
    container: Container | None = None
    started = time.monotonic()
    ctrl_c = _CtrlC.install()
    try:
        with _starting(built, image, image_id):
            container = client.containers.create(image_id, **options)
            container.start()
        result = _wait_until_ready(
            container, image, built, image_id, user, mode, probe_ports, seconds, started, reporter,
            has_healthcheck=healthcheck is not None or bool(image.healthcheck),
            health_runner=_podman_health_runner(client, container),
        )  # fmt: skip
        yield RunningContainer(container, result)
    finally:
        _remove(client, container, label, reporter)
        ctrl_c.restore()
        if ctrl_c.seen is not None:
            # Python drops an exception raised inside a garbage-collection finaliser;
            # a Ctrl-C or SIGTERM that landed there must still stop the command.
            raise Interrupted(ctrl_c.seen)


def hardened_options(image: ImageConfig, mode: NetworkMode, label: str, *, purpose: str = "smoke") -> dict[str, Any]:
    """The container options smoke and run share: the image's own user, read-only root, all capabilities dropped,
    no new privileges, pids and memory limits, and the labels by which a later run removes what a killed one left."""
    return dict(
        user=f"{image.uid}:{image.gid}",
        read_only=True,
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        pids_limit=PIDS_LIMIT,
        mem_limit=MEMORY_LIMIT,
        network_mode=mode,
        labels={SMOKE_LABEL: image.name, RUN_LABEL: label, OWNER_LABEL: Owner.current().token},
        name=f"gosmall-{purpose}-{image.name}-{label[:12]}",
        detach=True,
    )


@contextmanager
def _starting(built: BuiltImage, image: ImageConfig, image_id: str) -> Iterator[None]:
    """The engine refusing to create or start the container, said once for smoke and run."""
    from docker.errors import APIError, ImageNotFound

    try:
        yield
    except ImageNotFound:
        raise GosmallError(
            f"The Docker engine has no image {image_id} ({built.reference}); run `gosmall load --image {image.name}`."
        ) from None
    except APIError as exc:
        why = str(exc.explanation or exc)
        if "rlimit" in why:
            # The runtime's words for a ulimit the engine may not raise; the image is not at fault.
            raise GosmallError(
                f"The Docker engine could not start {built.reference}: {why}. The engine could not apply the "
                "container's default ulimits: rootful podman asks for nofile=1048576, which needs CAP_SYS_RESOURCE, "
                "and root inside a container or a CI sandbox often lacks it. Give podman smaller defaults in "
                'containers.conf ([containers] default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]; '
                "CONTAINERS_CONF names another file) and restart `podman system service`."
            ) from None
        raise GosmallError(
            f"The Docker engine could not start {built.reference}: {why}. The image's "
            f"entrypoint must be a file in it (a scratch image has no shell); check entrypoint and args of "
            f"[tool.gosmall.images.{image.name}]."
        ) from None


def _runnable_image(client: docker.DockerClient, image: ImageConfig, source: Build | Path) -> tuple[BuiltImage, str]:
    """The built image and the engine's ID of it, once it is known to be loaded and of the engine's platform."""
    _, built = built_image(image, source)
    engine_platform = _engine_platform(client)
    if not _same_platform(engine_platform, built.platform):
        raise GosmallError(
            f"The Docker engine runs {engine_platform}, but {built.archive} was made for {built.platform}, so it "
            "cannot run here. Run it on a machine of that platform, or build on this one."
        )
    return built, _loaded_image_id(client, built, image)


def run_container(
    client: docker.DockerClient,
    image: ImageConfig,
    source: Build | Path,
    reporter: Reporter,
    *,
    args: Sequence[str] = (),
    network_mode: NetworkMode = "host",
    stdout: BinaryIO,
    stderr: BinaryIO,
) -> int:
    """Run the loaded image in the foreground, hardened like smoke, and return its exit status.

    `args` (when given) replace the image's Cmd, after its entrypoint. The container's stdout and
    stderr are copied to `stdout` and `stderr` as they come; stdin is not connected. The container
    is removed when it exits, on an error, on Ctrl-C and on SIGTERM.
    """
    built, image_id = _runnable_image(client, image, source)
    _remove_stale_containers(client, reporter)
    label = uuid.uuid4().hex
    options = hardened_options(image, network_mode, label, purpose="run")
    if args:
        options["command"] = list(args)
    reporter.step(f"Running {built.reference} as user {options['user']}, read-only, no capabilities, network {network_mode}")
    container: Container | None = None
    ctrl_c = _CtrlC.install()
    try:
        with _starting(built, image, image_id):
            container = created = client.containers.create(image_id, **options)
            # No read timeout on the output: a server may be quiet for hours. Attached before it starts: no line is missed.
            timeout, client.api.timeout = client.api.timeout, None  # type: ignore[assignment]
            try:
                output = client.api.attach(str(created.id), stdout=True, stderr=True, stream=True, logs=True, demux=True)
            finally:
                client.api.timeout = timeout
            created.start()
        for out, err in output:
            for data, stream in ((out, stdout), (err, stderr)):
                if data:
                    stream.write(data)
                    stream.flush()
        return int(created.wait(timeout=None)["StatusCode"])
    finally:
        _remove(client, container, label, reporter)
        ctrl_c.restore()
        if ctrl_c.seen is not None:
            raise Interrupted(ctrl_c.seen)


class _CtrlC:
    """Remembers a Ctrl-C or SIGTERM, so neither can be lost, and still raises at once (SIGTERM as Interrupted)."""

    def __init__(self, previous: dict[int, Any]) -> None:
        self.previous = previous
        self.seen: int | None = None  # the signal number

    @classmethod
    def install(cls) -> _CtrlC:
        if threading.current_thread() is not threading.main_thread():
            return cls({})
        recorder = cls({signum: signal.getsignal(signum) for signum in STOP_SIGNALS})

        def on_signal(signum: int, frame: object) -> None:
            recorder.seen = signum
            raise KeyboardInterrupt if signum == signal.SIGINT else Interrupted(signum)

        for signum in STOP_SIGNALS:
            signal.signal(signum, on_signal)
        return recorder

    def restore(self) -> None:
        for signum, previous in self.previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)


def _loaded_image_id(client: docker.DockerClient, built: BuiltImage, image: ImageConfig) -> str:
    """The engine's ID of the built image, by digest, so a stale tag cannot stand in for it."""
    from docker.errors import ImageNotFound

    for digest in (built.config_digest, built.manifest_digest):
        try:
            return str(client.images.get(str(digest)).id)
        except ImageNotFound:
            continue
    try:
        tagged = client.images.get(built.reference).id
    except ImageNotFound:
        raise GosmallError(
            f"The Docker engine has no image {built.reference}: it has not been loaded. Run "
            f"`gosmall load --image {image.name}` (or `gosmall build-small --smoke`, which loads first)."
        ) from None
    raise GosmallError(
        f"The Docker engine's {built.reference} is {tagged}, not the image built in {built.archive} "
        f"({built.config_digest}): it is an older or another build. Run `gosmall load --image {image.name}` first."
    )


def _tcp_ports(image: ImageConfig) -> tuple[int, ...]:
    return tuple(int(p.split("/")[0]) for p in image.ports if p.endswith("/tcp"))


def _check_port_free(port: int, image: ImageConfig) -> None:
    # On the host network the app binds the machine's own port; if another
    # program holds it, the app fails to start, or worse, the checks below
    # would ask that other program and pass.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("", port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise GosmallError(
                f"Port {port} is already in use on this machine. The smoke test runs image '{image.name}' on the host "
                f"network, where it listens on port {port} itself; stop whatever listens there (see `ss -ltnp "
                f"'sport = :{port}'`) and run the smoke test again."
            ) from None


def _wait_until_ready(
    container: Container,
    image: ImageConfig,
    built: BuiltImage,
    image_id: str,
    user: str,
    mode: NetworkMode,
    ports: tuple[int, ...],
    timeout: float,
    started: float,
    reporter: Reporter,
    *,
    has_healthcheck: bool,
    health_runner: _HealthRunner | None = None,
) -> SmokeResult:
    """Poll until the healthcheck says healthy and every port answers as configured."""
    deadline = started + timeout
    health: str | None = None
    answered: dict[int, HttpCheck] = {}
    last_answer: dict[int, str] = {}
    path, expect = image.smoke.path, image.smoke.expect_status
    while True:
        container.reload()
        state = container.attrs["State"]
        if state.get("Status") in ("exited", "dead"):
            code = state.get("ExitCode")
            if not has_healthcheck and not ports and code == 0:
                break  # a program with nothing to serve may finish; exiting 0 is success
            _report_logs(container, reporter)
            oom = " It was killed for using more than the memory limit." if state.get("OOMKilled") else ""
            raise GosmallError(
                f"The container of {built.reference} exited early with code {code} "
                f"after {time.monotonic() - started:.1f}s.{oom} Its last log lines:\n{_log_tail(container)}",
                code=FOUND,
            )
        if has_healthcheck and health != "healthy":
            if health_runner is not None:
                health_runner.run_when_due()
                container.reload()
                state = container.attrs["State"]
            health = (state.get("Health") or {}).get("Status")
            if health == "unhealthy":
                _report_logs(container, reporter)
                raise GosmallError(
                    f"The Docker healthcheck of {built.reference} reports unhealthy: {_health_output(state)}. "
                    f"The container's last log lines:\n{_log_tail(container)}",
                    code=FOUND,
                )
        for port in ports:
            if port not in answered:
                status = _ask(port, path, last_answer)
                if status == expect:
                    answered[port] = HttpCheck(port, path, status)
                    reporter.detail(f"GET http://127.0.0.1:{port}{path} -> {status}")
        ready = (not has_healthcheck or health == "healthy") and len(answered) == len(ports)
        if ready and (has_healthcheck or ports or time.monotonic() - started >= min(GRACE_SECONDS, timeout)):
            break
        if time.monotonic() >= deadline:
            _report_logs(container, reporter)
            waiting = []
            if has_healthcheck and health != "healthy":
                waiting.append(f"the Docker healthcheck is still '{health or 'starting'}' ({_health_output(state)})")
            for port in ports:
                if port not in answered:
                    got = last_answer.get(port, "no answer")
                    waiting.append(f"GET http://127.0.0.1:{port}{path} wanted {expect}, got {got}")
            raise GosmallError(
                f"The container of {built.reference} was not ready within {timeout:g}s: {'; '.join(waiting)}. "
                f"Raise [tool.gosmall.images.{image.name}.smoke] timeout or fix smoke.path/expect_status if they are "
                f"wrong. The container's last log lines:\n{_log_tail(container)}",
                code=FOUND,
            )
        time.sleep(POLL_SECONDS)
    seconds = time.monotonic() - started
    if health:
        reporter.detail(f"Docker healthcheck: {health}")
    reporter.detail(f"ready in {seconds:.1f}s")
    return SmokeResult(
        image_id=image_id,
        reference=built.reference,
        container_id=container.id or "",
        user=user,
        network_mode=mode,
        health=health if has_healthcheck else None,
        checks=tuple(answered[p] for p in ports),
        seconds=seconds,
    )


class _HealthRunner:
    """Runs a podman container's healthcheck at its interval, as Docker's engine does by itself.

    podman runs healthchecks from systemd timers; where there is no systemd (a CI container, a
    minimal VM) no check ever runs and the health stays "starting". podman's own API runs one
    check on request (`podman healthcheck run`), which counts retries and records the result in
    the container's State.Health like a timed one, so asking it at the container's interval gives
    Docker's timing: the first check one interval after the start.
    """

    def __init__(self, client: docker.DockerClient, container: Container, api_version: str) -> None:
        self._client = client
        # podman's own API, not the Docker-compatible one: its path carries podman's API version.
        self._url = f"{client.api.base_url}/v{api_version}/libpod/containers/{container.id}/healthcheck"
        check = (container.attrs.get("Config") or {}).get("Healthcheck") or {}
        interval = check.get("Interval") or DOCKER_DEFAULT_HEALTH_INTERVAL_NS
        self._interval = interval / 1e9
        self._due = time.monotonic() + self._interval

    def run_when_due(self) -> None:
        from docker.errors import APIError

        if time.monotonic() < self._due:
            return
        self._due = time.monotonic() + self._interval
        try:
            self._client.api.get(self._url).close()
        except (APIError, requests.RequestException):
            pass  # the container's state, read next, says what there is to say


def _podman_health_runner(client: docker.DockerClient, container: Container | None) -> _HealthRunner | None:
    api_version = podman_api_version(client)
    if container is None or api_version is None:
        return None
    container.reload()
    return _HealthRunner(client, container, api_version)


def podman_api_version(client: docker.DockerClient) -> str | None:
    """podman's own API version when the engine behind the Docker-compatible API is podman, else None."""
    for component in client.version().get("Components") or []:
        if isinstance(component, dict) and component.get("Name") == "Podman Engine":
            return str((component.get("Details") or {}).get("APIVersion") or component.get("Version") or "4.0.0")
    return None


def _ask(port: int, path: str, last_answer: dict[int, str]) -> int | None:
    try:
        response = requests.get(f"http://127.0.0.1:{port}{path}", timeout=2, allow_redirects=False)
    except requests.RequestException as exc:
        last_answer[port] = f"no answer ({type(exc).__name__})"
        return None
    last_answer[port] = f"{response.status_code} {response.text[:200].strip()!r}"
    return response.status_code


def _health_output(state: dict[str, object]) -> str:
    health = state.get("Health") or {}
    log = health.get("Log") if isinstance(health, dict) else None
    if not log:
        return "no check has finished yet"
    last = log[-1]
    output = (last.get("Output") or "").strip() or "no output"
    return f"last check exited {last.get('ExitCode')}: {output}"


def _log_tail(container: Container, lines: int = ERROR_LOG_LINES) -> str:
    text = _logs(container, lines)
    return "\n".join(f"  {line}" for line in text.splitlines()) or "  (the container wrote no logs)"


def _logs(container: Container, lines: int) -> str:
    from docker.errors import APIError

    try:
        return container.logs(tail=lines).decode("utf-8", "replace")
    except APIError:
        return ""


def _report_logs(container: Container, reporter: Reporter) -> None:
    text = _logs(container, LOG_TAIL)
    reporter.step(f"Logs of container {container.name}")
    for line in text.splitlines() or ["(none)"]:
        reporter.detail(line)


def _remove(client: docker.DockerClient, container: Container | None, label: str, reporter: Reporter) -> None:
    """Remove the smoke container, even when Ctrl-C or SIGTERM interrupted anything before."""
    from docker.errors import APIError, NotFound

    # A second Ctrl-C or SIGTERM during removal must not leave the container
    # behind: both are held until it is gone (and delivered right after).
    with held():
        try:
            # Interrupted between create and assignment: find it by its label.
            targets = [container] if container is not None else client.containers.list(all=True, filters={"label": f"{RUN_LABEL}={label}"})
            for target in targets:
                try:
                    target.remove(force=True)
                except NotFound:
                    pass  # already gone
        except APIError as exc:
            # Raising here would hide why the smoke test stopped; say what is left instead.
            reporter.warn(
                f"The smoke container labelled {RUN_LABEL}={label} could not be removed ({exc.explanation or exc}); "
                f"remove it with: docker rm -f $(docker ps -aq --filter label={RUN_LABEL}={label})"
            )


def _remove_stale_containers(client: docker.DockerClient, reporter: Reporter) -> None:
    """Remove smoke containers whose gosmall process no longer runs on this machine; a live run's are left alone."""
    from docker.errors import APIError, NotFound

    try:
        containers = client.containers.list(all=True, filters={"label": OWNER_LABEL})
    except APIError:
        return  # not being able to tidy up must not stop the smoke test; a port still taken says so
    for container in containers:
        owner = Owner.parse(str((container.labels or {}).get(OWNER_LABEL, "")))
        if owner is None or not owner.is_gone():
            continue
        try:
            with held():
                container.remove(force=True)
        except NotFound:
            continue  # another run removed it first
        except APIError as exc:
            reporter.warn(
                f"Could not remove smoke container {container.name}, left by gosmall process {owner.pid}: {exc.explanation or exc}"
            )
            continue
        reporter.detail(f"removed smoke container {container.name}, left running by gosmall process {owner.pid}, which no longer runs")
