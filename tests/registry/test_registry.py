"""Pushing OCI layouts to, and resolving tags in, a real registry on loopback."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import requests

from gosmall.digest import Digest
from gosmall.errors import GosmallError
from gosmall.images.model import MEDIA_CONFIG, MEDIA_INDEX, MEDIA_LAYER_GZIP, MEDIA_MANIFEST
from gosmall.reference import parse_normalized_named
from gosmall.registry.client import (
    MANIFEST_ACCEPT,
    RegistryClient,
    RegistryResolver,
    load_docker_auths,
    load_docker_config,
    registry_base,
)
from tests.registry_fixture import bearer_registry, drip_headers, http_server, never_answer, push_layout, raw_server

if TYPE_CHECKING:
    from tests.registry_fixture import LocalRegistry

pytest_plugins = ["tests.registry_fixture"]


def _json(document: object) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def _put_blob(layout: Path, data: bytes) -> dict[str, object]:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def make_layout(directory: Path, content: bytes = b"hello\n", platforms: tuple[str, ...] = ("linux/amd64",)) -> Path:
    """A tiny valid OCI layout: per platform one gzip'd tar layer with one file, a config, a manifest."""
    (directory / "blobs" / "sha256").mkdir(parents=True)
    (directory / "oci-layout").write_bytes(_json({"imageLayoutVersion": "1.0.0"}))
    manifests = []
    for platform in platforms:
        os_, arch = platform.split("/")
        tar_buffer = io.BytesIO()
        with tarfile.open(fileobj=tar_buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
            info = tarfile.TarInfo("hello.txt")
            data = content + platform.encode()
            info.size, info.mode, info.mtime = len(data), 0o444, 0
            tar.addfile(info, io.BytesIO(data))
        tar_bytes = tar_buffer.getvalue()
        layer = _put_blob(directory, gzip.compress(tar_bytes, mtime=0))
        config = _put_blob(
            directory,
            _json(
                {
                    "architecture": arch,
                    "os": os_,
                    "config": {},
                    "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(tar_bytes).hexdigest()}"]},
                }
            ),
        )
        manifest = {
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": {"mediaType": MEDIA_CONFIG, **config},
            "layers": [{"mediaType": MEDIA_LAYER_GZIP, **layer}],
        }
        manifests.append(
            {"mediaType": MEDIA_MANIFEST, **_put_blob(directory, _json(manifest)), "platform": {"architecture": arch, "os": os_}}
        )
    if len(manifests) == 1:
        top = manifests[0]
    else:
        top = {
            "mediaType": MEDIA_INDEX,
            **_put_blob(directory, _json({"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": manifests})),
        }
    (directory / "index.json").write_bytes(_json({"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": [top]}))
    return directory


def _head_digest(registry: LocalRegistry, name: str, tag: str) -> str:
    response = requests.head(f"{registry.url}/v2/{name}/manifests/{tag}", headers={"Accept": MANIFEST_ACCEPT}, timeout=10)
    assert response.status_code == 200, response.text
    return response.headers["Docker-Content-Digest"]


def _skopeo_inspect(reference: str, *raw: str) -> dict[str, object]:
    if shutil.which("skopeo") is None:
        pytest.skip("skopeo is not installed")
    result = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", *raw, f"docker://{reference}"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_push_single_manifest_layout(registry: LocalRegistry, tmp_path: Path) -> None:
    layout = make_layout(tmp_path / "oci")
    top = json.loads((layout / "index.json").read_text())["manifests"][0]["digest"]
    digest = push_layout(layout, f"{registry.host}/gosmall/single:v1", client=RegistryClient())
    assert str(digest) == top
    assert _head_digest(registry, "gosmall/single", "v1") == top
    inspected = _skopeo_inspect(f"{registry.host}/gosmall/single:v1")
    assert inspected["Digest"] == top
    assert inspected["Architecture"] == "amd64"


def test_push_index_layout_pushes_children_first(registry: LocalRegistry, tmp_path: Path) -> None:
    layout = make_layout(tmp_path / "oci", platforms=("linux/amd64", "linux/arm64"))
    top = json.loads((layout / "index.json").read_text())["manifests"][0]["digest"]
    digest = push_layout(layout, f"{registry.host}/gosmall/multi:v2", client=RegistryClient())
    assert str(digest) == top
    assert _head_digest(registry, "gosmall/multi", "v2") == top
    raw = _skopeo_inspect(f"{registry.host}/gosmall/multi:v2", "--raw")
    assert raw["mediaType"] == MEDIA_INDEX
    for child in raw["manifests"]:  # type: ignore[union-attr]
        assert _head_digest(registry, "gosmall/multi", child["digest"]) == child["digest"]


def test_push_again_skips_existing_blobs_and_keeps_the_digest(registry: LocalRegistry, tmp_path: Path) -> None:
    layout = make_layout(tmp_path / "oci", content=b"again\n")
    first = push_layout(layout, f"{registry.host}/gosmall/again:1", client=RegistryClient())
    second = push_layout(layout, f"{registry.host}/gosmall/again:2", client=RegistryClient())
    assert first == second


def test_resolver_finds_the_tag_digest(registry: LocalRegistry, tmp_path: Path) -> None:
    layout = make_layout(tmp_path / "oci", content=b"resolve\n")
    pushed = push_layout(layout, f"{registry.host}/gosmall/resolve:1.0", client=RegistryClient())
    resolver = RegistryResolver(RegistryClient())
    assert resolver.resolve(parse_normalized_named(f"{registry.host}/gosmall/resolve:1.0")) == pushed


def test_resolver_reports_a_missing_tag(registry: LocalRegistry) -> None:
    resolver = RegistryResolver(RegistryClient())
    with pytest.raises(GosmallError) as caught:
        resolver.resolve(parse_normalized_named(f"{registry.host}/gosmall/nothing:here"))
    assert "HTTP 404" in str(caught.value)
    assert f"{registry.host}/gosmall/nothing:here" in str(caught.value)


def test_corrupt_layout_blob_is_named(registry: LocalRegistry, tmp_path: Path) -> None:
    layout = make_layout(tmp_path / "oci", content=b"corrupt\n")
    manifest_digest = json.loads((layout / "index.json").read_text())["manifests"][0]["digest"]
    manifest = json.loads((layout / "blobs" / "sha256" / manifest_digest[7:]).read_text())
    (layout / "blobs" / "sha256" / manifest["layers"][0]["digest"][7:]).write_bytes(b"not the layer")
    with pytest.raises(GosmallError, match="does not hash to"):
        push_layout(layout, f"{registry.host}/gosmall/corrupt:1", client=RegistryClient())


def test_endpoints() -> None:
    assert registry_base("docker.io") == "https://registry-1.docker.io"
    assert registry_base("127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert registry_base("localhost:5000") == "http://localhost:5000"
    assert registry_base("localhost") == "http://localhost"
    assert registry_base("ghcr.io") == "https://ghcr.io"


def test_docker_config_auths(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    auth = base64.b64encode(b"alice:s3cret").decode()
    config.write_text(json.dumps({"auths": {"https://index.docker.io/v1/": {"auth": auth}, "127.0.0.1:5000": {"auth": auth}}}))
    auths = load_docker_auths(config)
    assert auths == {"index.docker.io": ("alice", "s3cret"), "127.0.0.1:5000": ("alice", "s3cret")}
    assert RegistryClient(auths).credentials("docker.io") == ("alice", "s3cret")


# -- the token flow, against a stand-in: Debian's registry cannot issue tokens
#    without a separate token server, so this small loopback server plays both.


class _TokenRegistry(BaseHTTPRequestHandler):
    digest = "sha256:" + "d" * 64
    token_requests: list[tuple[str, str | None]] = []

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # the token realm
        type(self).token_requests.append((self.path, self.headers.get("Authorization")))
        body = json.dumps({"token": "tok-123"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_HEAD(self) -> None:  # the registry
        if self.headers.get("Authorization") != "Bearer tok-123":
            host = f"127.0.0.1:{self.server.server_address[1]}"
            self.send_response(401)
            self.send_header(
                "WWW-Authenticate",
                f'Bearer realm="http://{host}/token",service="test-registry",scope="repository:team/app:pull"',
            )
            self.end_headers()
            return
        assert MANIFEST_ACCEPT == self.headers.get("Accept")
        self.send_response(200)
        self.send_header("Docker-Content-Digest", self.digest)
        self.end_headers()


@pytest.fixture()
def token_registry() -> Iterator[str]:
    _TokenRegistry.token_requests = []
    with http_server(_TokenRegistry) as host:
        yield host


def test_bearer_token_flow_with_docker_config_credentials(token_registry: str) -> None:
    client = RegistryClient({token_registry: ("alice", "s3cret")})
    digest = RegistryResolver(client).resolve(parse_normalized_named(f"{token_registry}/team/app:1"))
    assert digest == Digest.parse(_TokenRegistry.digest)
    [(path, authorization)] = _TokenRegistry.token_requests
    assert path.startswith("/token?")
    assert "service=test-registry" in path and "scope=repository%3Ateam%2Fapp%3Apull" in path
    assert authorization == "Basic " + base64.b64encode(b"alice:s3cret").decode()


# -- never hang: every request has a total deadline, not only a per-read timeout


def test_a_registry_dripping_header_lines_is_stopped_at_the_deadline() -> None:
    # One header line a second never trips a per-read timeout of 4 s; the total deadline must.
    with raw_server(drip_headers(every=1.0)) as server:
        started = time.monotonic()
        with pytest.raises(GosmallError) as caught:
            RegistryResolver(RegistryClient(timeout=4)).resolve(parse_normalized_named(f"{server.host}/team/app:1"))
        took = time.monotonic() - started
        assert server.closed_by_client.wait(10), "the client must hang up, not leave the request running"
    message = caught.value.message
    assert f"gosmall stopped waiting for the registry {server.host}" in message
    assert "did not finish answering within 4 s" in message
    assert caught.value.code == 2
    assert took < 30  # generous: it did not hang


def test_a_registry_that_never_answers_costs_one_deadline() -> None:
    with raw_server(never_answer) as server:
        with pytest.raises(GosmallError, match="did not finish answering within 2 s"):
            RegistryClient(timeout=2).request("GET", server.host, "/v2/", "")
        assert server.closed_by_client.wait(10)


@pytest.mark.parametrize("first", ["deadline", "read timeout"])
def test_a_silent_registry_reads_the_same_whichever_timer_fires_first(first: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The deadline's timer and urllib3's read timeout watch one condition; on a loaded machine either may win."""
    import gosmall.registry.client as client_module

    class _Never:  # the deadline's timer, held back so urllib3's read timeout is what fires
        def __init__(self, seconds: float, function: object) -> None:
            self.daemon = True

        def start(self) -> None: ...

        def cancel(self) -> None: ...

    if first == "read timeout":
        monkeypatch.setattr(client_module.threading, "Timer", _Never)
    with raw_server(never_answer) as server:
        with pytest.raises(GosmallError) as caught:
            RegistryClient(timeout=2).request("GET", server.host, "/v2/", "")
    assert "did not finish answering within 2 s" in caught.value.message, caught.value.message
    assert "Read timed out" not in caught.value.message


def test_the_run_deadline_bounds_every_request() -> None:
    with raw_server(drip_headers(every=0.5)) as server:
        client = RegistryClient(timeout=30, deadline=time.monotonic() + 2)
        with pytest.raises(GosmallError, match="the time this run may take ran out"):
            client.request("HEAD", server.host, "/v2/a/manifests/1", "")
        # Once the run's time is out, no request is even sent.
        accepted = server.accepted
        with pytest.raises(GosmallError, match="the time this run may take ran out"):
            client.request("HEAD", server.host, "/v2/b/manifests/1", "")
        assert server.accepted == accepted


class _Flood(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()  # no length: the body goes on until the connection ends
        chunk = b"x" * 65536
        try:
            for _ in range(200):  # 12.5 MiB
                self.wfile.write(chunk)
        except OSError:
            pass


def test_an_endless_body_is_not_read_into_memory() -> None:
    with http_server(_Flood) as host:
        with pytest.raises(GosmallError, match="answered with more than 4 MiB"):
            RegistryClient().request("GET", host, "/v2/team/app/manifests/1", "")


# -- no tracebacks: what the Docker config and token services may hold


@pytest.mark.parametrize(
    ("loader", "text", "expected"),
    [
        (load_docker_auths, '[{"auths": {}}]', "its top level must be a JSON object"),
        (load_docker_auths, '{"auths": ["ghcr.io"]}', "auths: must be an object of registry hosts"),
        (load_docker_auths, '{"auths": {"ghcr.io": {"auth": 5}}}', "auths.ghcr.io.auth is not base64"),
        (load_docker_auths, "[" * 100_000, "cannot be read as JSON"),
        (load_docker_config, '{"credsStore": 5}', "credsStore: must be the name of a credential helper"),
        (load_docker_config, '{"credsStore": "../../bin/sh"}', "credsStore: must be the name of a credential helper"),
        (load_docker_config, '{"credHelpers": ["ghcr.io"]}', "credHelpers: must be an object of registry hosts and helper names"),
        (load_docker_config, '{"credHelpers": {"ghcr.io": "a b"}}', "credHelpers: must be an object of registry hosts and helper names"),
    ],
)
def test_a_docker_config_of_the_wrong_shape_is_named(tmp_path: Path, loader: Any, text: str, expected: str) -> None:
    config = tmp_path / "config.json"
    config.write_text(text)
    with pytest.raises(GosmallError) as caught:
        loader(config)
    assert str(config) in caught.value.message and expected in caught.value.message


def test_docker_config_helpers_are_read_and_keys_normalised(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"credsStore": "pass", "credHelpers": {"https://ghcr.io": "gh", "127.0.0.1:5000": "local"}}))
    read = load_docker_config(config)
    assert (read.path, read.creds_store, dict(read.cred_helpers)) == (config, "pass", {"ghcr.io": "gh", "127.0.0.1:5000": "local"})


def test_no_repr_shows_credentials(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"auths": {"127.0.0.1:5000": {"auth": base64.b64encode(b"alice:s3cret-in-repr").decode()}}}))
    read = load_docker_config(config)
    client = RegistryClient(read.auths, config_path=read.path)
    assert client.credentials("127.0.0.1:5000") == ("alice", "s3cret-in-repr")
    for shown in (repr(read), repr(client)):
        assert "s3cret" not in shown and "czNjcmV0" not in shown


def test_a_docker_config_without_auths_is_no_credentials(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text('{"credsStore": "desktop"}')
    assert load_docker_auths(config) == {}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"<html><body>Sign in to continue</body></html>", "something that is not a JSON object"),
        (b'["tok"]', "something that is not a JSON object"),
        (b'{"expires_in": 60}', "JSON without a token"),
        (b'{"token": 5}', "JSON without a token"),
    ],
)
def test_a_token_service_answering_200_without_a_token_is_named(body: bytes, expected: str) -> None:
    with http_server(bearer_registry(body)) as host:
        with pytest.raises(GosmallError) as caught:
            RegistryClient().request("GET", host, "/v2/team/app/manifests/1", "repository:team/app:pull")
    message = caught.value.message
    assert f"The token service http://{host}/token for {host} answered HTTP 200 with {expected}" in message
    assert "WWW-Authenticate realm" in message  # the fix


def test_a_refused_token_names_the_registry() -> None:
    with http_server(bearer_registry(b'{"details": "no"}', status=401)) as host:
        with pytest.raises(GosmallError, match=f"{host} refused a token for 'repository:team/app:pull'"):
            RegistryClient().request("GET", host, "/v2/team/app/manifests/1", "repository:team/app:pull")


# -- redaction: a server's words are shown, its echo of our credentials is not


def test_an_error_body_echoing_the_token_is_redacted() -> None:
    token = "tok-THIS-IS-SECRET-42"
    with http_server(bearer_registry(json.dumps({"token": token}).encode(), echo=True)) as host:
        client = RegistryClient({host: ("alice", "s3cret-pw")})
        with pytest.raises(GosmallError) as caught:
            RegistryResolver(client).resolve(parse_normalized_named(f"{host}/team/app:1"))
    message = caught.value.message
    assert "HTTP 403 (denied: request was GET /v2/team/app/manifests/1" in message  # the server's words are shown
    assert "[redacted]" in message
    assert token not in message and "THIS-IS-SECRET" not in message
    assert base64.b64encode(b"alice:s3cret-pw").decode() not in message and "s3cret" not in message
