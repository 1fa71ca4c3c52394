"""The engine stage, on a real Docker engine: load, hardened smoke run, errors.

Two kinds of image: a hand-made one holding a static C program (`tiny`), quick
to make, for loading and failure paths; and go_app built by the real pipeline
into a throwaway copy of the project, for what a user runs. Each session uses
its own repository names and removes its images at the end, so runs on one
engine do not meet. Containers run with network "none" or "host" only and on
a free port, since the host network is shared.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import tarfile
import tempfile
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import requests

from gosmall.build.assemble import compress_layer
from gosmall.build.built import Build, read_build
from gosmall.build.compile import host_platform as stages_host_platform
from gosmall.config import ImageConfig, SmokeConfig, load_project
from gosmall.docker_host import connect
from gosmall.errors import GosmallError
from gosmall.images.model import MEDIA_CONFIG, MEDIA_MANIFEST, Blob, Image, Layer, Platform, PlatformImage, canonical_json
from gosmall.leftovers import Owner
from gosmall.pipeline import write_outputs
from gosmall.publish.engine import OWNER_LABEL, SMOKE_LABEL, hardened_container, load_image, smoke_test
from gosmall.reporter import RecordingReporter
from tests.conftest import gosmall, gosmall_command, gosmall_env
from tests.docker_fixture import docker_required

# Also registered by conftest.py; naming it here keeps this module whole when run alone.
pytest_plugins = ["tests.docker_fixture"]

REPO = Path(__file__).resolve().parents[2]
# Unique per session: parallel runs on one engine must not retag each other's images.
RUN = uuid.uuid4().hex[:10]
NONROOT = "65532:65532"
VERSION_TAG = "v7.3.1-e2e"
# A zone far from the image's default (Europe/Berlin), so the answer can only
# come from the TZ_NAME the smoke config sets.
ZONE = "America/New_York"


def host_platform() -> str:
    return str(stages_host_platform())


# -- a hand-made image: a static C program in a scratch layer ----------------------

TINY_C = r"""
#include <stdio.h>
#include <string.h>
#include <unistd.h>
int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "fail") == 0) {
        fprintf(stderr, "tiny: failing on purpose\n");
        return 3;
    }
    printf("tiny: up as uid %d\n", (int)getuid());
    fflush(stdout);
    for (;;) pause();
}
"""


@dataclass(frozen=True)
class TinyBuild:
    image: ImageConfig
    output_dir: Path
    config_digest: str


def write_tiny_build(directory: Path, binary: bytes, repository: str, *, label: str = "") -> TinyBuild:
    """A one-file image, written the way build-small writes its output: OCI layout, image.tar, report.json."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("tiny")
        info.size, info.mode = len(binary), 0o555
        tar.addfile(info, io.BytesIO(binary))
    layer_tar = layer.getvalue()
    platform = Platform.parse(host_platform())
    config = canonical_json(
        {
            **platform.to_json(),
            "config": {"Entrypoint": ["/tiny"], "User": NONROOT, "Labels": {"test": label or RUN}},
            "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer_tar).hexdigest()]},
        }
    )
    compressed = compress_layer(layer_tar)
    config_blob = Blob(MEDIA_CONFIG, config)
    manifest = Blob(
        MEDIA_MANIFEST,
        canonical_json(
            {
                "schemaVersion": 2,
                "mediaType": MEDIA_MANIFEST,
                "config": config_blob.descriptor().to_json(),
                "layers": [compressed.descriptor().to_json()],
            }
        ),
    )
    image = Image((PlatformImage(platform, (Layer(compressed, layer_tar),), config_blob, manifest),), None)
    tags = ("latest", "v1")
    config_digest = str(config_blob.digest)
    report = {
        "image": "tiny",
        "repository": repository,
        "tags": list(tags),
        "digest": str(image.digest),
        "docker_platform": host_platform(),
        "source": {"version": "dev", "revision": "", "source_date_epoch": 0},
        "platforms": {host_platform(): {"manifest_digest": str(manifest.digest), "config_digest": config_digest}},
    }
    config_value = ImageConfig(
        name="tiny",
        package=directory,
        repository=repository,
        tags=tags,
        platforms=(platform,),
        smoke=SmokeConfig(timeout=10.0),
    )
    write_outputs(Build(config_value, image, report, directory), RecordingReporter())
    return TinyBuild(config_value, directory, config_digest)


@pytest.fixture(scope="session")
def tiny_binary(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    directory = tmp_path_factory.mktemp("tiny-src")
    (directory / "tiny.c").write_text(TINY_C)
    try:
        done = subprocess.run(["gcc", "-static", "-Os", "-s", "-o", "tiny", "tiny.c"], cwd=directory, capture_output=True, text=True)
        failure = done.stderr if done.returncode else ""
    except FileNotFoundError:
        failure = "gcc is not installed"
    if failure:
        why = f"the hand-made test image needs a static C build (apt-get install gcc libc6-dev): {failure}"
        # Where an engine is required (CI), a missing compiler must not pass as a skip.
        if docker_required():
            pytest.fail(why, pytrace=False)
        pytest.skip(why)
    return (directory / "tiny").read_bytes()


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory, tiny_binary: bytes, docker_client: Any) -> Iterator[TinyBuild]:
    """The hand-made image, built and loaded once; removed from the engine at the end."""
    build = write_tiny_build(tmp_path_factory.mktemp("tiny") / "out", tiny_binary, f"test.gosmall.local/e2e-{RUN}/tiny")
    load_image(docker_client, build.image, build.output_dir, RecordingReporter())
    yield build
    remove_image(docker_client, build.config_digest)


def remove_image(client: Any, image_id: str) -> None:
    from docker.errors import APIError

    try:
        client.images.remove(image_id, force=True)
    except APIError:
        pass  # already gone


def leftover_containers(client: Any, image_id: str) -> list[Any]:
    # Every test image carries this session's RUN in its config (a label), so
    # its ID is this session's alone, though builds are reproducible and other
    # sessions may smoke-test the same program on this engine at the same time.
    return [c for c in client.containers.list(all=True, filters={"label": SMOKE_LABEL}) if c.image.id == image_id]


# -- connecting -------------------------------------------------------------------


def dead_socket(directory: Path) -> Path:
    """A socket file nobody listens on: what a stopped dockerd leaves behind."""
    path = directory / "docker.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(path))
    return path


def test_connect_names_the_dead_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    host = f"unix://{dead_socket(tmp_path)}"
    monkeypatch.setenv("DOCKER_HOST", host)
    with pytest.raises(GosmallError) as caught:
        connect()
    message = caught.value.message
    assert f"No Docker engine answers at DOCKER_HOST={host}" in message
    assert "Start one" in message and "build-small alone does not" in message
    assert caught.value.code == 2


def test_connect_permission_denied(monkeypatch: pytest.MonkeyPatch) -> None:
    # A real socket the caller may not open. Root ignores file modes, so as
    # root the check runs in a forked child that has become nobody.
    import docker  # noqa: F401  (imported before the fork: nobody may not read the venv)

    directory = Path(tempfile.mkdtemp(prefix="gosmall-perm-"))
    try:
        os.chmod(directory, 0o755)
        path = directory / "docker.sock"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
            server.bind(str(path))
            server.listen()
            os.chmod(path, 0o600 if os.getuid() == 0 else 0)
            host = f"unix://{path}"
            monkeypatch.setenv("DOCKER_HOST", host)
            message, code = connect_as_nobody() if os.getuid() == 0 else connect_message()
        assert f"Permission denied talking to the Docker engine at DOCKER_HOST={host}" in message
        assert "docker group" in message
        assert code == 2
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def connect_message() -> tuple[str, int]:
    try:
        connect()
    except GosmallError as exc:
        return exc.message, exc.code
    return "connected", 0


def connect_as_nobody() -> tuple[str, int]:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            message, code = connect_message()
            os.write(write_end, json.dumps([message, code]).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    message, code = json.loads(data or b'["the child failed", -1]')
    return str(message), int(code)


def test_load_without_a_build_says_build_first(tmp_path: Path) -> None:
    image = ImageConfig(name="app", package=tmp_path, repository="example.com/app", tags=("latest",), platforms=())
    with pytest.raises(
        GosmallError, match=r"Image 'app' has not been built: .*report.json does not exist\. Run `gosmall build-small --image app`"
    ):
        # The report is read before the engine is asked, so no client is needed.
        load_image(None, image, tmp_path, RecordingReporter())  # type: ignore[arg-type]


# -- the hand-made image ----------------------------------------------------------


@pytest.mark.docker
def test_load_gives_the_config_digest_and_is_idempotent(docker_client: Any, tiny: TinyBuild) -> None:
    reporter = RecordingReporter()
    first = load_image(docker_client, tiny.image, tiny.output_dir, reporter)
    second = load_image(docker_client, tiny.image, tiny.output_dir, reporter)
    assert first == second
    assert first.image_id == tiny.config_digest == str(read_build(tiny.image, tiny.output_dir).docker_image().config.digest)
    assert first.platform == host_platform()
    assert first.tags == tuple(f"{tiny.image.repository}:{t}" for t in ("latest", "v1"))
    for reference in first.tags:
        assert docker_client.images.get(reference).id == tiny.config_digest


@pytest.mark.docker
def test_an_image_the_engine_already_holds_is_only_retagged(docker_client: Any, tiny: TinyBuild) -> None:
    # Issue 12: do not load what the engine already has; its image ID is the config digest.
    load_image(docker_client, tiny.image, tiny.output_dir, RecordingReporter())
    docker_client.images.remove(f"{tiny.image.repository}:v1")  # the untag of one name; the image stays
    reporter = RecordingReporter()
    again = load_image(docker_client, tiny.image, tiny.output_dir, reporter)
    assert f"the engine already holds {tiny.config_digest}: nothing to load" in reporter.messages("detail")
    assert docker_client.images.get(f"{tiny.image.repository}:v1").id == again.image_id == tiny.config_digest


@pytest.mark.docker
def test_load_refuses_a_report_that_is_not_the_layouts(docker_client: Any, tiny: TinyBuild, tmp_path: Path) -> None:
    shutil.copytree(tiny.output_dir, tmp_path / "out")
    report_path = tmp_path / "out" / "report.json"
    report = json.loads(report_path.read_text())
    other = "sha256:" + "0" * 64
    report["platforms"][host_platform()]["config_digest"] = other
    report_path.write_text(json.dumps(report))
    with pytest.raises(GosmallError) as caught:
        load_image(docker_client, tiny.image, tmp_path / "out", RecordingReporter())
    assert (
        f"says {host_platform()} config_digest {other}, but {tmp_path / 'out' / 'oci'} holds {tiny.config_digest}" in caught.value.message
    )
    assert "Run `gosmall build-small --image tiny` again" in caught.value.message


@pytest.mark.docker
def test_load_of_a_damaged_layout_says_rebuild(docker_client: Any, tiny: TinyBuild, tmp_path: Path) -> None:
    shutil.copytree(tiny.output_dir, tmp_path / "out")
    blobs = tmp_path / "out" / "oci" / "blobs" / "sha256"
    layer = max(blobs.iterdir(), key=lambda p: p.stat().st_size)
    layer.chmod(0o644)
    layer.write_bytes(layer.read_bytes()[: layer.stat().st_size // 2])
    with pytest.raises(GosmallError, match=rf"{layer}: its content does not hash to sha256:{layer.name}; the OCI layout is damaged"):
        load_image(docker_client, tiny.image, tmp_path / "out", RecordingReporter())


@pytest.mark.docker
def test_smoke_runs_a_program_without_ports_hardened(docker_client: Any, tiny: TinyBuild) -> None:
    result = smoke_test(docker_client, tiny.image, tiny.output_dir, RecordingReporter())
    assert result.network_mode == "none"
    assert result.user == NONROOT
    assert result.health is None and result.checks == ()
    assert result.image_id == tiny.config_digest
    assert not leftover_containers(docker_client, tiny.config_digest)


@pytest.mark.docker
def test_smoke_shows_exit_code_and_logs_of_an_early_exit(docker_client: Any, tiny: TinyBuild) -> None:
    reporter = RecordingReporter()
    with pytest.raises(GosmallError) as caught:
        smoke_test(docker_client, tiny.image, tiny.output_dir, reporter, args=["fail"])
    assert "exited early with code 3" in caught.value.message
    assert caught.value.code == 1  # the check ran and found something
    assert "tiny: failing on purpose" in caught.value.message
    assert "tiny: failing on purpose" in reporter.messages("detail")  # the full log, printed
    assert not leftover_containers(docker_client, tiny.config_digest)


@pytest.mark.docker
def test_container_is_removed_when_interrupted(docker_client: Any, tiny: TinyBuild) -> None:
    with pytest.raises(KeyboardInterrupt):
        with hardened_container(docker_client, tiny.image, tiny.output_dir, RecordingReporter()) as running:
            assert running.container.status in ("created", "running")
            raise KeyboardInterrupt  # as Ctrl-C would, while the container runs
    assert not leftover_containers(docker_client, tiny.config_digest)


@pytest.mark.docker
def test_smoke_of_an_image_not_loaded_says_load_first(docker_client: Any, tiny_binary: bytes, tmp_path: Path) -> None:
    build = write_tiny_build(tmp_path / "out", tiny_binary, f"test.gosmall.local/e2e-{RUN}/never-loaded", label="unloaded")
    with pytest.raises(
        GosmallError,
        match=r"has no image test\.gosmall\.local/.*/never-loaded:latest: it has not been loaded\. Run `gosmall load --image tiny`",
    ) as caught:
        smoke_test(docker_client, build.image, build.output_dir, RecordingReporter())
    assert caught.value.code == 2  # could not run


# -- go_app, built by the pipeline --------------------------------------------------


@dataclass(frozen=True)
class GoBuild:
    root: Path
    images: dict[str, ImageConfig]
    output_dirs: dict[str, Path]


def go_app_project(directory: Path, port: int = 8080) -> Path:
    """A copy of go_app with two images, one without time-zone data, as a tagged git repository.

    With a `port` other than 8080 the images listen there (args, ports and
    healthcheck say so), for running the console script's smoke test on the
    shared host network.
    """
    shutil.copytree(REPO / "go_app", directory / "go_app")
    listen = "" if port == 8080 else f'args = ["-addr", "127.0.0.1:{port}"]\n'
    check = "" if port == 8080 else f', "-addr", "127.0.0.1:{port}"'
    common = (
        listen
        + f"""
        package = "./go_app"
        tags = ["latest"]
        ldflags = ["-X main.version={{version}}"]
        env = {{ TZ_NAME = "Europe/Berlin" }}
        user = "nonroot"
        ports = [{port}]
        healthcheck = ["/go_app", "healthcheck"{check}]
        labels = {{ "dev.gosmall.test-run" = "{RUN}" }}
        smoke = {{ path = "/healthz", expect_status = 200, timeout = "30s", env = {{ TZ_NAME = "{ZONE}" }} }}
    """
    )
    (directory / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""
            [project]
            name = "sample"
            version = "0"

            [tool.gosmall]
            output = "dist"
            platforms = ["{host_platform()}"]

            [tool.gosmall.images.hello]
            repository = "test.gosmall.local/e2e-{RUN}/hello{"" if port == 8080 else f"-{port}"}"
            tzdata = "zip"
            """
        )
        + textwrap.dedent(common)
        + textwrap.dedent(
            f"""
            [tool.gosmall.images.hello-notz]
            repository = "test.gosmall.local/e2e-{RUN}/hello-notz{"" if port == 8080 else f"-{port}"}"
            tzdata = "none"
            """
        )
        + textwrap.dedent(common)
    )
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.com", "GIT_AUTHOR_DATE": "2026-01-02T03:04:05+00:00",
           "GIT_COMMITTER_DATE": "2026-01-02T03:04:05+00:00"}  # fmt: skip
    for command in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "sample"], ["tag", VERSION_TAG]):
        subprocess.run(["git", *command], cwd=directory, check=True, env=env)
    return directory


@pytest.fixture(scope="session")
def go_build(tmp_path_factory: pytest.TempPathFactory) -> GoBuild:
    """go_app built once per session by the real pipeline, into a throwaway project."""
    from gosmall.pipeline import build_small

    root = go_app_project(tmp_path_factory.mktemp("go_app") / "project")
    project = load_project(root)
    results = build_small(project, RecordingReporter(), environ={})
    images = {r.config.name: r.config for r in results}
    return GoBuild(root, images, {r.config.name: r.output_dir for r in results})


@pytest.fixture(scope="session")
def go_loaded(go_build: GoBuild, docker_client: Any) -> Iterator[GoBuild]:
    ids = [
        load_image(docker_client, image, go_build.output_dirs[name], RecordingReporter()).image_id
        for name, image in go_build.images.items()
    ]
    yield go_build
    for image_id in ids:
        remove_image(docker_client, image_id)


def on_port(port: int, image: ImageConfig) -> dict[str, Any]:
    """smoke_test keywords that run go_app on `port` of the shared host network."""
    address = f"127.0.0.1:{port}"
    return {"args": ["-addr", address], "ports": [port], "healthcheck": [*image.healthcheck, "-addr", address]}


def tiny_archive() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        info = tarfile.TarInfo("written-at-run-time")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"x\n"))
    return out.getvalue()


def utc_offsets(zone: str) -> set[int]:
    # Both ends of the request: a DST change in between must not fail the test.
    now = datetime.datetime.now(datetime.timezone.utc)
    return {int(t.astimezone(ZoneInfo(zone)).utcoffset().total_seconds()) for t in (now, now + datetime.timedelta(seconds=60))}  # type: ignore[union-attr]


@pytest.mark.docker
@pytest.mark.slow
def test_go_app_serves_its_zone_version_and_health_as_nonroot(docker_client: Any, go_loaded: GoBuild, free_port: int) -> None:
    image = go_loaded.images["hello"]
    reporter = RecordingReporter()
    expected_offsets = utc_offsets(ZONE)
    with hardened_container(docker_client, image, go_loaded.output_dirs["hello"], reporter, **on_port(free_port, image)) as running:
        result = running.result
        assert result.health == "healthy"
        assert [(c.port, c.path, c.status) for c in result.checks] == [(free_port, "/healthz", 200)]

        answer = requests.get(running.url("/"), timeout=5)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["zone"] == ZONE
        assert body["offset_seconds"] in expected_offsets
        sign = "-" if body["offset_seconds"] < 0 else "+"
        hours, minutes = divmod(abs(body["offset_seconds"]) // 60, 60)
        assert body["utc_offset"] == f"{sign}{hours:02d}:{minutes:02d}"
        assert body["abbreviation"] in ("EST", "EDT")
        assert body["uid"] == 65532

        assert requests.get(running.url("/version"), timeout=5).json() == {"version": VERSION_TAG}
        assert requests.get(running.url("/healthz"), timeout=5).status_code == 200

        container = running.container
        container.reload()
        assert container.attrs["Config"]["User"] == NONROOT
        assert container.attrs["State"]["Health"]["Status"] == "healthy"
        # ps on the host, over the container's processes: the kernel's view of who runs.
        top = container.top(ps_args="-o pid,uid,gid,comm")
        ids = [(row[top["Titles"].index("UID")], row[top["Titles"].index("GID")]) for row in top["Processes"]]
        assert ids and set(ids) == {("65532", "65532")}
        host = container.attrs["HostConfig"]
        assert host["ReadonlyRootfs"] is True
        assert host["CapDrop"] == ["ALL"]
        assert host["SecurityOpt"] == ["no-new-privileges"]
        assert host["NetworkMode"] == "host"
        assert host["PidsLimit"] > 0 and host["Memory"] > 0
    assert not leftover_containers(docker_client, result.image_id)


@pytest.mark.docker
@pytest.mark.slow
def test_go_app_root_filesystem_is_read_only_and_it_has_no_shell(docker_client: Any, go_loaded: GoBuild, free_port: int) -> None:
    from docker.errors import APIError

    image = go_loaded.images["hello"]
    with hardened_container(
        docker_client, image, go_loaded.output_dirs["hello"], RecordingReporter(), **on_port(free_port, image)
    ) as running:
        # The app serves from a read-only root; the engine refuses a write into it.
        assert requests.get(running.url("/"), timeout=5).status_code == 200
        with pytest.raises(APIError, match=r"read-only"):
            running.container.put_archive("/", tiny_archive())
        image_id = running.result.image_id

    shell = docker_client.containers.create(image_id, entrypoint=["/bin/sh", "-c", "true"], network_mode="none", user=NONROOT)
    try:
        with pytest.raises(APIError, match=r"/bin/sh.*no such file or directory"):
            shell.start()
    finally:
        shell.remove(force=True)


@pytest.mark.docker
@pytest.mark.slow
def test_go_app_own_healthcheck_turns_healthy_without_network(docker_client: Any, go_loaded: GoBuild) -> None:
    # As built: default :8080 and the image's own HEALTHCHECK, inside a
    # container with no network, where port 8080 is its own.
    image = go_loaded.images["hello"]
    result = smoke_test(docker_client, image, go_loaded.output_dirs["hello"], RecordingReporter(), network_mode="none")
    assert result.health == "healthy"
    assert result.network_mode == "none"


@pytest.mark.docker
@pytest.mark.slow
def test_go_app_without_tzdata_cannot_load_its_zone(docker_client: Any, go_loaded: GoBuild, free_port: int) -> None:
    image = go_loaded.images["hello-notz"]
    with hardened_container(
        docker_client, image, go_loaded.output_dirs["hello-notz"], RecordingReporter(), **on_port(free_port, image)
    ) as running:
        # Healthy and serving: only asking for the time shows the missing zone data.
        assert running.result.health == "healthy"
        answer = requests.get(running.url("/"), timeout=5)
    assert answer.status_code == 500
    assert answer.json()["zone"] == ZONE
    assert f'cannot load time zone "{ZONE}"' in answer.json()["error"]


@pytest.mark.docker
@pytest.mark.slow
def test_smoke_refuses_a_port_already_taken(docker_client: Any, go_loaded: GoBuild, free_port: int) -> None:
    image = go_loaded.images["hello"]
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", free_port))
        squatter.listen()
        with pytest.raises(GosmallError, match=rf"Port {free_port} is already in use on this machine\. .*host network") as caught:
            smoke_test(docker_client, image, go_loaded.output_dirs["hello"], RecordingReporter(), **on_port(free_port, image))
    assert caught.value.code == 2


@pytest.mark.docker
@pytest.mark.slow
def test_smoke_times_out_naming_what_it_waited_for(docker_client: Any, go_loaded: GoBuild, free_port: int) -> None:
    image = dataclasses.replace(go_loaded.images["hello"], smoke=dataclasses.replace(go_loaded.images["hello"].smoke, path="/missing"))
    with pytest.raises(GosmallError) as caught:
        smoke_test(docker_client, image, go_loaded.output_dirs["hello"], RecordingReporter(), timeout=3, **on_port(free_port, image))
    message = caught.value.message
    assert caught.value.code == 1
    assert "was not ready within 3s" in message
    assert f"GET http://127.0.0.1:{free_port}/missing wanted 200, got 404" in message
    assert "listening on 127.0.0.1" in message  # the container's log


@pytest.mark.docker
@pytest.mark.slow
def test_go_app_bad_flag_exits_early_with_its_log(docker_client: Any, go_loaded: GoBuild, free_port: int) -> None:
    image = go_loaded.images["hello"]
    options = {**on_port(free_port, image), "args": ["-addr", "not-an-address"]}
    with pytest.raises(GosmallError) as caught:
        smoke_test(docker_client, image, go_loaded.output_dirs["hello"], RecordingReporter(), **options)
    assert "exited early with code 1" in caught.value.message
    assert "missing port in address" in caught.value.message
    assert caught.value.code == 1


# -- the console script --------------------------------------------------------------


def has_task(name: str) -> bool:
    from gosmall.tasks import namespace

    return name in namespace.task_names


@pytest.mark.slow
def test_build_small_needs_no_engine(tmp_path: Path) -> None:
    root = go_app_project(tmp_path / "project")
    done = gosmall("build-small", "--image", "hello", cwd=root, env={"DOCKER_HOST": f"unix://{dead_socket(tmp_path)}"})
    assert done.returncode == 0, done.stderr
    assert (root / "dist" / "hello" / "image.tar").is_file()


@pytest.mark.slow
def test_gosmall_load_without_an_engine_says_how_to_start_one(go_build: GoBuild, tmp_path: Path) -> None:
    if not has_task("load"):
        pytest.skip("the `load` task is not wired into gosmall.tasks yet")
    host = f"unix://{dead_socket(tmp_path)}"
    done = gosmall("load", "--image", "hello", cwd=go_build.root, env={"DOCKER_HOST": host})
    assert done.returncode == 2, done.stderr
    assert f"gosmall: error: No Docker engine answers at DOCKER_HOST={host}" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.docker
@pytest.mark.slow
def test_gosmall_build_small_smoke_then_ctrl_c_removes_the_container(docker_client: Any, tmp_path: Path, free_port: int) -> None:
    import signal
    import time

    if not has_task("smoke"):
        pytest.skip("the `smoke` task is not wired into gosmall.tasks yet")
    root = go_app_project(tmp_path / "project", port=free_port)
    repository = f"test.gosmall.local/e2e-{RUN}/hello-{free_port}"
    try:
        done = gosmall("build-small", "--image", "hello", "--smoke", cwd=root, env={})
        assert done.returncode == 0, done.stderr
        assert f"GET http://127.0.0.1:{free_port}/healthz -> 200" in done.stderr
        assert "Docker healthcheck: healthy" in done.stderr
        image_id = docker_client.images.get(f"{repository}:latest").id
        assert image_id == json.loads((root / "dist" / "hello" / "report.json").read_text())["platforms"][host_platform()]["config_digest"]

        smoking = subprocess.Popen(
            [*gosmall_command(), "smoke", "--image", "hello"], cwd=root, env=gosmall_env(),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while not [c for c in leftover_containers(docker_client, image_id) if c.status == "running"]:
                assert time.monotonic() < deadline and smoking.poll() is None, "the smoke container never ran"
                time.sleep(0.1)
            smoking.send_signal(signal.SIGINT)  # what Ctrl-C sends
            output, _ = smoking.communicate(timeout=60)
        finally:
            if smoking.poll() is None:
                smoking.kill()
        assert smoking.returncode == 130, output
        assert "gosmall: interrupted" in output
        assert not leftover_containers(docker_client, image_id)
    finally:
        for tag in (f"{repository}:latest",):
            remove_image(docker_client, tag)


@dataclass(frozen=True)
class ConsoleProject:
    """go_app built and loaded by the console script, serving on `port` of the host network."""

    root: Path
    port: int
    image_id: str


@pytest.fixture(scope="module")
def console_project(tmp_path_factory: pytest.TempPathFactory, docker_client: Any) -> Iterator[ConsoleProject]:
    from tests.net import free_loopback_port

    port = free_loopback_port()
    root = go_app_project(tmp_path_factory.mktemp("console") / "project", port=port)
    done = gosmall("build-small", "--image", "hello", "--load", cwd=root, env={})
    assert done.returncode == 0, done.stderr
    image_id = json.loads((root / "dist" / "hello" / "report.json").read_text())["platforms"][host_platform()]["config_digest"]
    yield ConsoleProject(root, port, image_id)
    remove_image(docker_client, image_id)


def start_smoke(project: ConsoleProject, docker_client: Any) -> tuple[subprocess.Popen[str], Any]:
    """`gosmall smoke` started as a user would, once its container runs."""
    import time

    smoking = subprocess.Popen(
        [*gosmall_command(), "smoke", "--image", "hello"], cwd=project.root, env=gosmall_env(),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while True:
        running = [c for c in leftover_containers(docker_client, project.image_id) if c.status == "running"]
        if running:
            return smoking, running[0]
        if smoking.poll() is not None or time.monotonic() > deadline:
            smoking.kill()
            pytest.fail(f"the smoke container never ran: {smoking.communicate()[0]}")
        time.sleep(0.1)


@pytest.mark.docker
@pytest.mark.slow
def test_gosmall_smoke_on_sigterm_removes_the_container(docker_client: Any, console_project: ConsoleProject) -> None:
    import signal

    smoking, _ = start_smoke(console_project, docker_client)
    try:
        smoking.send_signal(signal.SIGTERM)  # what kill, systemd and CI runners send
        output, _ = smoking.communicate(timeout=120)
    finally:
        if smoking.poll() is None:
            smoking.kill()
    assert smoking.returncode == 143, output
    assert "gosmall: interrupted" in output and "Traceback" not in output
    assert not leftover_containers(docker_client, console_project.image_id)


@pytest.mark.docker
@pytest.mark.slow
def test_gosmall_smoke_removes_the_container_a_killed_run_left(docker_client: Any, console_project: ConsoleProject) -> None:
    smoking, container = start_smoke(console_project, docker_client)
    smoking.kill()  # SIGKILL: no cleanup runs
    smoking.communicate(timeout=120)
    container.reload()
    assert container.status == "running"  # still holding the port on the host network
    assert container.labels[SMOKE_LABEL] == "hello"
    owner = Owner.parse(container.labels[OWNER_LABEL])
    assert owner is not None and owner.pid == smoking.pid and owner.is_gone()
    # A smoke container of a run that is alive (this test's process stands in for it) is not touched.
    live = docker_client.containers.create(
        console_project.image_id, network_mode="none", labels={SMOKE_LABEL: "hello", OWNER_LABEL: Owner.current().token}
    )
    try:
        done = gosmall("smoke", "--image", "hello", cwd=console_project.root, env={}, timeout=300)
        assert done.returncode == 0, done.stderr
        assert f"removed smoke container {container.name}, left running by gosmall process {smoking.pid}" in done.stderr
        assert f"GET http://127.0.0.1:{console_project.port}/healthz -> 200" in done.stderr
        assert [c.id for c in leftover_containers(docker_client, console_project.image_id)] == [live.id]
    finally:
        live.remove(force=True)
        for left in leftover_containers(docker_client, console_project.image_id):
            left.remove(force=True)


@pytest.mark.docker
@pytest.mark.slow
def test_gosmall_smoke_that_fails_its_check_exits_1(docker_client: Any, console_project: ConsoleProject, tmp_path: Path) -> None:
    # The same loaded image, asked for a path it does not serve: a finding, not a failure to run.
    root = tmp_path / "project"
    shutil.copytree(console_project.root, root)
    pyproject = root / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text().replace('path = "/healthz"', 'path = "/missing"').replace('timeout = "30s"', 'timeout = "3s"')
    )
    done = gosmall("smoke", "--image", "hello", cwd=root, env={}, timeout=300)
    assert done.returncode == 1, done.stderr
    assert f"GET http://127.0.0.1:{console_project.port}/missing wanted 200, got 404" in done.stderr
    assert not leftover_containers(docker_client, console_project.image_id)
