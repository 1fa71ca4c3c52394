"""gosmall push against a real registry: what lands there, what is not sent twice, credentials, failures."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import requests

from gosmall.build.built import Build
from gosmall.build.compile import host_platform
from gosmall.config import ImageConfig, ProjectConfig
from gosmall.errors import GosmallError
from gosmall.images.model import Platform
from gosmall.images.source import read_oci_layout
from gosmall.publish.push import RegistryPublisher
from gosmall.publish.report import report_json
from gosmall.registry.client import MANIFEST_ACCEPT, RegistryClient, registry_base
from gosmall.reporter import RecordingReporter
from tests.conftest import gosmall, make_project
from tests.registry.test_registry import make_layout
from tests.registry_fixture import StandIn, http_server, pushed_table, registry_process, served_digest

if TYPE_CHECKING:
    import docker

    from tests.registry_fixture import AuthRegistry, LocalRegistry, RegistryProcess


@dataclass(frozen=True)
class Project:
    root: Path
    host: str

    def report(self, image: str = "hello") -> dict[str, object]:
        return json.loads((self.root / "dist" / image / "report.json").read_text())


def _build(root: Path, table: str) -> Path:
    make_project(root, table)
    done = gosmall("build-small", cwd=root, env={"SOURCE_DATE_EPOCH": ""})
    assert done.returncode == 0, done.stderr
    return root


@pytest.fixture(scope="module")
def project(registry: LocalRegistry, tmp_path_factory: pytest.TempPathFactory) -> Project:
    """go_app built for two platforms (hello) and once more for one (twin), both in repositories of `registry`."""
    hello = pushed_table(f"{registry.host}/push/hello", tags=("v1", "latest"), platforms=("linux/amd64", "linux/arm64"))
    # The same program again in its own repository: its layer is hello's amd64 layer.
    table = hello + "\n" + pushed_table(f"{registry.host}/push/twin", image="twin", platforms=("linux/amd64",), header=False)
    return Project(_build(tmp_path_factory.mktemp("push") / "project", table), registry.host)


def _uploads(registry: LocalRegistry, repository: str) -> list[str]:
    """Every request that sends blob bytes or opens an upload (mounts included) to `repository`."""
    prefix = f"/v2/{repository}/blobs/uploads/"
    return [line for method in ("POST", "PATCH", "PUT") for line in registry.requests(method, prefix)]


@pytest.mark.docker
def test_push_go_app_multi_platform_then_pull_and_run_it(project: Project, docker_client: docker.DockerClient) -> None:
    done = gosmall("push", "--image", "hello", "--format", "json", cwd=project.root)
    assert done.returncode == 0, done.stderr
    report = project.report()
    digest = report["digest"]
    repository = f"{project.host}/push/hello"
    [pushed] = json.loads(done.stdout)
    assert pushed == {"image": "hello", "reference": f"{repository}@{digest}", "repository": repository, "digest": digest, "tags": ["v1", "latest"]}  # fmt: skip
    # The registry serves the very bytes that were built, by digest and under every tag.
    for reference in (f"{repository}@{digest}", f"{repository}:v1", f"{repository}:latest"):
        assert served_digest(reference) == digest
    assert report["pushed"] == {"reference": f"{repository}@{digest}", "tags": ["v1", "latest"]}

    # The engine pulls it by digest (dockerd allows plain HTTP to loopback registries) and runs it.
    reference = f"{repository}@{digest}"
    image = docker_client.images.pull(reference)
    try:
        assert image.id == report["platforms"][str(host_platform())]["config_digest"]  # type: ignore[index]
        output = docker_client.containers.run(reference, ["-h"], network_mode="none", remove=True, stdout=True, stderr=True)
        assert b"Usage of go_app" in output and b"-addr" in output
    finally:
        docker_client.images.remove(reference, force=True)


def test_push_again_uploads_no_blob(project: Project, registry: LocalRegistry) -> None:
    first = gosmall("push", "--image", "hello", cwd=project.root)
    assert first.returncode == 0, first.stderr
    uploads = _uploads(registry, "push/hello")
    heads = registry.requests("HEAD", "/v2/push/hello/blobs/")
    second = gosmall("push", "--image", "hello", cwd=project.root)
    assert second.returncode == 0, second.stderr
    assert second.stdout == first.stdout == f"{project.host}/push/hello@{project.report()['digest']}\n"
    assert _uploads(registry, "push/hello") == uploads  # nothing opened, nothing sent
    assert len(registry.requests("HEAD", "/v2/push/hello/blobs/")) == len(heads) + 4  # each platform's layer and config, asked
    assert "already there" in second.stderr


def test_a_layer_in_another_repository_of_the_project_is_mounted_not_uploaded(project: Project, registry: LocalRegistry) -> None:
    assert gosmall("push", "--image", "hello", cwd=project.root).returncode == 0
    layer = project.report("twin")["platforms"]["linux/amd64"]["layer_digest"]  # type: ignore[index]
    assert layer == project.report("hello")["platforms"]["linux/amd64"]["layer_digest"]  # type: ignore[index]

    done = gosmall("push", "--image", "twin", cwd=project.root)
    assert done.returncode == 0, done.stderr
    opened = _uploads(registry, "push/twin")
    assert f"/v2/push/twin/blobs/uploads/?mount={layer}&from=push%2Fhello 201" in opened
    # Only what hello's repository lacks could be sent; the layer was not.
    assert not [line for line in opened if line.startswith("/v2/push/twin/blobs/uploads/") and f"digest={layer}" in line]
    assert "mounted from push/hello" in done.stderr
    digest = project.report("twin")["digest"]
    assert served_digest(f"{project.host}/push/twin:v1") == digest


# -- in process, on small images: chunks, a registry that stops, one that fails on purpose


def _layout_build(directory: Path, repository: str, *, content: bytes = b"hi\n", platforms: tuple[str, ...] = ("linux/amd64",)) -> tuple[ProjectConfig, Build]:  # fmt: skip
    """An image made by hand (tests/test_registry.make_layout) as the Build a project of one image would push."""
    image = read_oci_layout(make_layout(directory / "oci", content=content, platforms=platforms))
    config = ImageConfig("app", directory, repository, ("1",), tuple(Platform.parse(p) for p in platforms))
    project = ProjectConfig(directory, directory / "pyproject.toml", directory / "dist", config.platforms, "off", (config,))
    output = directory / "dist" / "app"
    output.mkdir(parents=True)
    report = {"digest": str(image.digest)}
    (output / "report.json").write_bytes(report_json(report))
    return project, Build(config, image, report, output)


def _served(host: str, repository: str, where: str) -> requests.Response:
    return requests.head(f"http://{host}/v2/{repository}/manifests/{where}", headers={"Accept": MANIFEST_ACCEPT}, timeout=10)


def test_a_large_blob_goes_in_chunks(registry: LocalRegistry, tmp_path: Path) -> None:
    # Random bytes do not compress: the layer stays about 2.5 MiB, three chunks of 1 MiB.
    project, build = _layout_build(tmp_path, f"{registry.host}/chunk/app", content=os.urandom(5 * 2**19))
    [layer] = build.image.manifests[0].layers
    publisher = RegistryPublisher(project, RegistryClient(), chunk_size=2**20)
    publisher.publish(build, RecordingReporter())
    patches = registry.requests("PATCH", "/v2/chunk/app/blobs/uploads/")
    assert len(patches) == 3 and all(line.endswith(" 202") for line in patches)
    got = requests.get(f"{registry.url}/v2/chunk/app/blobs/{layer.blob.digest}", timeout=30)
    assert hashlib.sha256(got.content).hexdigest() == layer.blob.digest.hex and len(got.content) == layer.blob.size
    assert _served(registry.host, "chunk/app", "1").headers["Docker-Content-Digest"] == str(build.digest)
    assert json.loads((build.output_dir / "report.json").read_text())["pushed"] == {"reference": f"{registry.host}/chunk/app@{build.digest}", "tags": ["1"]}  # fmt: skip


@dataclass
class _StopAfterFirstUpload(RecordingReporter):
    server: RegistryProcess | None = None

    def detail(self, message: str) -> None:
        super().detail(message)
        if self.server is not None and message.endswith("uploaded"):
            self.server.stop()
            self.server = None


def _uploaded_digests(registry: LocalRegistry) -> list[str]:
    return [re.findall(r"digest=(sha256:[0-9a-f]{64})", line)[0] for line in registry.requests("PUT", "/v2/stop/app/blobs/uploads/") if line.endswith(" 201")]  # fmt: skip


def test_a_registry_stopped_mid_push_leaves_no_tag_and_the_rerun_sends_only_what_is_missing(tmp_path: Path) -> None:
    with registry_process(tmp_path / "registry") as server:
        registry = server.registry
        project, build = _layout_build(tmp_path / "image", f"{registry.host}/stop/app", platforms=("linux/amd64", "linux/arm64"))
        blobs = {str(b.digest) for m in build.image.manifests for b in (*(layer.blob for layer in m.layers), m.config)}
        client = RegistryClient(backoff=0.05)
        with pytest.raises(GosmallError) as caught:
            RegistryPublisher(project, client).publish(build, _StopAfterFirstUpload(server=server))
        message = caught.value.message
        assert f"{registry.host}/stop/app: the push stopped, because the registry {registry.host} failed" in message
        assert "Connection refused" in message and "gave up after 4 attempts" in message
        assert "No tag was pushed, so none names a partial image." in message
        assert "run `gosmall push --image app` again once it answers" in message

        server.start()
        assert _served(registry.host, "stop/app", "1").status_code == 404
        before = _uploaded_digests(registry)
        assert len(before) == 1
        RegistryPublisher(project, RegistryClient()).publish(build, RecordingReporter())
        after = _uploaded_digests(registry)[1:]
        assert sorted(after) == sorted(blobs - set(before))  # only what was missing, each once
        assert _served(registry.host, "stop/app", "1").headers["Docker-Content-Digest"] == str(build.digest)


@dataclass
class _Flaky:
    """A proxy in front of the real registry that fails some requests the way networks and registries do."""

    target: str
    plan: Callable[[str, int], str]  # (method and path pattern, how often seen) -> "503", "429", "reset" or "pass"
    seen: dict[str, int] = field(default_factory=dict)
    served: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handler(self) -> type[BaseHTTPRequestHandler]:
        flaky = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def handle_one(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                key = f"{self.command} " + re.sub(r"/uploads/[^/?]+", "/uploads/ID", self.path.split("?", 1)[0])
                with flaky.lock:
                    flaky.seen[key] = flaky.seen.get(key, 0) + 1
                    action = flaky.plan(key, flaky.seen[key])
                    flaky.served.append(action)
                if action == "reset":
                    # SO_LINGER 0: close sends a RST, what a dropped connection looks like to the client.
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.close_connection = True
                    self.connection.close()
                    return
                if action in ("503", "429"):
                    self.send_response(int(action))
                    self.send_header("Retry-After", "0")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length", "connection")}
                answer = requests.request(self.command, f"http://{flaky.target}{self.path}", headers=headers, data=body, allow_redirects=False, timeout=60)  # fmt: skip
                self.send_response(answer.status_code)
                for name, value in answer.headers.items():
                    if name.lower() not in ("content-length", "connection", "transfer-encoding", "date", "server"):
                        self.send_header(name, value.replace(f"http://{flaky.target}", f"http://127.0.0.1:{self.server.server_address[1]}"))
                self.send_header("Content-Length", answer.headers.get("Content-Length", "0") if self.command == "HEAD" else str(len(answer.content)))  # fmt: skip
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(answer.content)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = handle_one

        return Handler


def _fail_each_kind_once(key: str, seen: int) -> str:
    """The first request of each kind fails, in turn with 503, 429 and a reset; every later one passes."""
    if seen > 1:
        return "pass"
    return ("503", "429", "reset")[sum(ord(c) for c in key) % 3]


def test_5xx_429_and_resets_are_retried_and_the_push_completes(registry: LocalRegistry, tmp_path: Path) -> None:
    flaky = _Flaky(registry.host, _fail_each_kind_once)
    with http_server(flaky.handler()) as proxy:
        project, build = _layout_build(tmp_path, f"{proxy}/flaky/app", platforms=("linux/amd64", "linux/arm64"))
        reporter = RecordingReporter()
        RegistryPublisher(project, RegistryClient(backoff=0.01, attempts=6)).publish(build, reporter)
    assert {"503", "429", "reset"} <= set(flaky.served)
    assert any("trying again" in m for m in reporter.messages("detail"))
    # The real registry behind the proxy holds the whole image under its tag.
    assert served_digest(f"{registry.host}/flaky/app:1") == str(build.digest)


@pytest.mark.parametrize(("failure", "said"), [("reset", "Connection reset"), ("503", "HTTP 503")])
def test_retries_are_bounded(registry: LocalRegistry, tmp_path: Path, failure: str, said: str) -> None:
    flaky = _Flaky(registry.host, lambda key, seen: failure)
    with http_server(flaky.handler()) as proxy:
        project, build = _layout_build(tmp_path, f"{proxy}/bounded/app")
        with pytest.raises(GosmallError) as caught:
            RegistryPublisher(project, RegistryClient(backoff=0.01)).publish(build, RecordingReporter())
    assert len(flaky.served) == 4  # the first request, four times in all, then it stops
    assert said in caught.value.message and "gave up after 4 attempts" in caught.value.message
    assert "No tag was pushed" in caught.value.message


# -- credentials: never shown, whatever the registry echoes


def _echoing_registry(scheme: str, token: str) -> type[BaseHTTPRequestHandler]:
    """A registry that challenges (basic, or bearer with its own /token), has no blob, and refuses uploads echoing the request."""

    class Handler(StandIn):
        def do_GET(self) -> None:
            host = f"127.0.0.1:{self.server.server_address[1]}"
            sent = self.headers.get("Authorization")
            if self.path.startswith("/token"):
                self._answer(200, json.dumps({"token": token}).encode())
            elif not sent:
                challenge = 'Basic realm="echo"' if scheme == "basic" else f'Bearer realm="http://{host}/token",service="echo"'
                self._answer(401, b"", {"WWW-Authenticate": challenge})
            elif self.command == "HEAD":
                self._answer(404)
            else:
                echoed = (
                    f'denied: request was {self.command} {self.path}\nAuthorization: {sent}\nHost: {host}\n{{"auth": "{sent.split()[-1]}"}}'
                )
                self._answer(400, echoed.encode())

        do_HEAD = do_POST = do_PUT = do_GET

    return Handler


@pytest.mark.parametrize("scheme", ["basic", "bearer"])
def test_credentials_a_registry_echoes_are_not_shown_or_logged(scheme: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    password, token = "pw-ECHOED-" + os.urandom(6).hex(), "tok-ECHOED-" + os.urandom(6).hex()
    with http_server(_echoing_registry(scheme, token)) as host, caplog.at_level(logging.DEBUG):
        project, build = _layout_build(tmp_path, f"{host}/echo/app")
        reporter = RecordingReporter()
        with pytest.raises(GosmallError) as caught:
            RegistryPublisher(project, RegistryClient({host: ("alice", password)})).publish(build, reporter)
    message = caught.value.message
    assert "HTTP 400 (denied: request was POST /v2/echo/app/blobs/uploads/" in message and "[redacted]" in message
    shown = "\n".join([message, repr(caught.value), caplog.text, *reporter.messages()])
    assert "urllib3" in caplog.text  # debug logging was on
    for secret in (password, base64.b64encode(f"alice:{password}".encode()).decode(), token):
        assert secret not in shown


# -- an htpasswd registry, through the console script with invoke's -d


@pytest.fixture(scope="module")
def auth_project(auth_registry: AuthRegistry, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build(tmp_path_factory.mktemp("auth") / "project", pushed_table(f"{auth_registry.registry.host}/auth/hello"))


HELPER = """#!{python}
# docker-credential-{name}: Docker's credential-helper protocol, `get` only: the server on stdin, JSON on stdout.
import json, os, sys
server = sys.stdin.read().strip()
with open(os.environ["GOSMALL_TEST_HELPER_CALLS"], "a") as calls:
    calls.write(f"{name} {{sys.argv[1:]}} {{server}}\\n")
if {fail!r}:
    sys.exit("error: the keychain is locked")
if server != {server!r}:
    print("credentials not found in native keychain")
    sys.exit(1)
print(json.dumps({{"ServerURL": server, "Username": {user!r}, "Secret": {secret!r}}}))
"""


@dataclass(frozen=True)
class _DockerHome:
    env: dict[str, str]
    calls: Path


def _docker_home(tmp_path: Path, auth_registry: AuthRegistry, config: dict[str, object], *, secret: str | None = None, fail: bool = False) -> _DockerHome:  # fmt: skip
    """$DOCKER_CONFIG with `config`, and on PATH the helpers docker-credential-store and -helper that know the registry."""
    bin_dir, docker_dir = tmp_path / "bin", tmp_path / "docker"
    bin_dir.mkdir()
    docker_dir.mkdir()
    (docker_dir / "config.json").write_text(json.dumps(config))
    for name in ("store", "helper"):
        script = bin_dir / f"docker-credential-{name}"
        script.write_text(
            HELPER.format(
                python=sys.executable,
                name=name,
                server=auth_registry.registry.host,
                user=auth_registry.user,
                secret=auth_registry.password if secret is None else secret,
                fail=fail,
            )  # fmt: skip
        )
        script.chmod(0o755)
    calls = tmp_path / "helper-calls"
    env = {"DOCKER_CONFIG": str(docker_dir), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "GOSMALL_TEST_HELPER_CALLS": str(calls)}
    return _DockerHome(env, calls)


def _auth_entry(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def _assert_no_secret(done: subprocess.CompletedProcess[str], *secrets: str) -> None:
    shown = done.stdout + done.stderr
    # -d was on: invoke's debug log, with every request to the registry, is in what is searched.
    assert "invoke.program" in done.stderr and '"HEAD /v2/auth/hello/' in done.stderr
    for secret in secrets:
        assert secret not in shown


@pytest.mark.parametrize("source", ["auths", "credsStore", "credHelpers"])
def test_push_to_an_htpasswd_registry_with_credentials_from(source: str, auth_registry: AuthRegistry, auth_project: Path, tmp_path: Path) -> None:  # fmt: skip
    host = auth_registry.registry.host
    config: dict[str, object] = {
        "auths": {"auths": {host: {"auth": _auth_entry(auth_registry.user, auth_registry.password)}}},
        "credsStore": {"auths": {host: {}}, "credsStore": "store"},
        "credHelpers": {"credsStore": "nowhere-to-be-found", "credHelpers": {host: "helper"}},
    }[source]
    home = _docker_home(tmp_path, auth_registry, config)
    done = gosmall("-d", "push", cwd=auth_project, env=home.env)
    assert done.returncode == 0, done.stderr
    digest = json.loads((auth_project / "dist" / "hello" / "report.json").read_text())["digest"]
    assert done.stdout == f"{host}/auth/hello@{digest}\n"
    served = requests.head(f"{auth_registry.registry.url}/v2/auth/hello/manifests/v1", headers={"Accept": MANIFEST_ACCEPT},
                           auth=(auth_registry.user, auth_registry.password), timeout=10)  # fmt: skip
    assert served.headers["Docker-Content-Digest"] == digest
    if source == "auths":
        assert not home.calls.exists()
    else:
        helper = {"credsStore": "store", "credHelpers": "helper"}[source]
        assert home.calls.read_text().splitlines()[0] == f"{helper} ['get'] {host}"  # asked once, for this registry
    _assert_no_secret(done, auth_registry.password, _auth_entry(auth_registry.user, auth_registry.password))


@pytest.mark.parametrize("source", ["auths", "credsStore", "none"])
def test_wrong_or_no_credentials_fail_clearly(source: str, auth_registry: AuthRegistry, auth_project: Path, tmp_path: Path) -> None:
    host = auth_registry.registry.host
    wrong = "not-" + auth_registry.password
    config: dict[str, object] = {
        "auths": {"auths": {host: {"auth": _auth_entry(auth_registry.user, wrong)}}},
        "credsStore": {"credsStore": "store"},
        "none": {},
    }[source]
    home = _docker_home(tmp_path, auth_registry, config, secret=wrong)
    done = gosmall("-d", "push", cwd=auth_project, env=home.env)
    assert done.returncode == 2, done.stderr
    used = {
        "auths": f"auths.{host} in {home.env['DOCKER_CONFIG']}/config.json",
        "credsStore": f"credsStore in {home.env['DOCKER_CONFIG']}/config.json (docker-credential-store)",
        "none": "none (anonymous)",
    }[source]
    assert f"{host}/auth/hello: checking for blob sha256:" in done.stderr
    assert "failed with HTTP 401" in done.stderr and f"Credentials used: {used}." in done.stderr
    assert "Traceback" not in done.stderr
    _assert_no_secret(done, wrong, _auth_entry(auth_registry.user, wrong), auth_registry.password)


@pytest.mark.parametrize(("config", "said"), [
    ({"credsStore": "absent"}, "credsStore in {config} names the credential helper docker-credential-absent, but it is not on PATH"),
    ({"credHelpers": {"{host}": "helper"}}, "docker-credential-helper get failed for {host} (credHelpers.{host} in {config}): error: the keychain is locked"),
])  # fmt: skip
def test_a_missing_or_failing_credential_helper_is_named(config: dict[str, object], said: str, auth_registry: AuthRegistry, auth_project: Path, tmp_path: Path) -> None:  # fmt: skip
    host = auth_registry.registry.host
    config = json.loads(json.dumps(config).replace("{host}", host))
    home = _docker_home(tmp_path, auth_registry, config, fail=True)
    done = gosmall("push", cwd=auth_project, env=home.env)
    assert done.returncode == 2
    assert said.format(host=host, config=f"{home.env['DOCKER_CONFIG']}/config.json") in done.stderr
    assert auth_registry.password not in done.stdout + done.stderr


def test_the_made_up_local_repository_is_refused_before_any_request(tmp_path: Path) -> None:
    project, build = _layout_build(tmp_path, "gosmall.local/app")
    # The client would fail to resolve gosmall.local; the refusal must come first and say what to set.
    with pytest.raises(GosmallError) as caught:
        RegistryPublisher(project, RegistryClient(attempts=1)).publish(build, RecordingReporter())
    assert "gosmall.local/app is the local-only name" in caught.value.message and "GOSMALL_REPO" in caught.value.message


def test_plain_http_only_for_loopback_or_a_named_insecure_registry() -> None:
    assert registry_base("registry.lan:5000") == "https://registry.lan:5000"
    assert registry_base("registry.lan:5000", {"registry.lan:5000"}) == "http://registry.lan:5000"
    assert registry_base("registry.lan:5000", {"registry.lan"}) == "http://registry.lan:5000"
    assert registry_base("registry.lan", {"other.lan"}) == "https://registry.lan"
    assert registry_base("127.0.0.1:5000") == "http://127.0.0.1:5000"
