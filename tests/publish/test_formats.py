"""Every client sees the same image (issue 18): Docker schema 2 for podman's healthcheck, labels in the config.

podman runs with vfs storage and a fresh store per check; it only pulls and inspects, no containers.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import gosmall, make_project
from tests.registry_fixture import LocalRegistry, push_layout

pytestmark = pytest.mark.slow

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
TABLE = """[tool.gosmall.images.hello]
package = "./go_app"
repository = "{repository}"
platforms = {platforms}
tzdata = "zip"
ports = [8080]
healthcheck = ["/go_app", "healthcheck"]
labels = {{ "org.example.team" = "core" }}
{extra}
"""


RUNROOTS: dict[Path, Path] = {}


def podman(store: Path, *args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("podman") is None:
        if os.environ.get("CI"):
            pytest.fail("CI installs podman (Debian) for the client checks")
        pytest.skip("podman is not installed (Debian package podman)")
    # podman refuses a runroot path over 50 characters; pytest's tmp paths are longer. One per store.
    runroot = RUNROOTS.setdefault(store, Path(tempfile.mkdtemp(prefix="gosmall-podman-")))
    base = ["podman", "--storage-driver", "vfs", "--root", str(store / "root"), "--runroot", str(runroot)]
    return subprocess.run([*base, *args], capture_output=True, text=True, timeout=300)


def build(
    tmp_path: Path, *, repository: str = "example.com/hello", platforms: str = '["linux/amd64"]', extra: str = ""
) -> tuple[Path, dict[str, Any]]:
    root = make_project(tmp_path / "project", TABLE.format(repository=repository, platforms=platforms, extra=extra))
    done = gosmall("build-small", cwd=root)
    assert done.returncode == 0, done.stderr
    return root, {"stderr": done.stderr, **json.loads((root / "dist" / "hello" / "report.json").read_text())}


def test_oci_with_a_healthcheck_warns_about_podman(tmp_path: Path) -> None:
    _, report = build(tmp_path)
    assert "podman and buildah read Healthcheck only from Docker-format images" in report["stderr"]
    assert 'set format = "docker"' in report["stderr"]


def test_docker_format_keeps_the_healthcheck_for_podman_through_a_registry(tmp_path: Path, registry: LocalRegistry) -> None:
    repository = f"{registry.host}/gosmall/formats"
    root, report = build(tmp_path, repository=repository, platforms='["linux/amd64", "linux/arm64"]', extra='format = "docker"')
    assert "podman and buildah read Healthcheck" not in report["stderr"]
    # skopeo 1.9 and podman 4.3 cannot read Docker media types from an OCI layout ("no descriptor
    # found"), only from a registry or image.tar: push it.
    push_layout(root / "dist" / "hello" / "oci", f"{repository}:latest")
    raw = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{repository}:latest"], capture_output=True, timeout=120
    ).stdout
    assert json.loads(raw)["mediaType"] == DOCKER_LIST
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == report["digest"]
    store = tmp_path / "podman"
    pulled = podman(store, "pull", "--tls-verify=false", "--arch", "amd64", f"docker://{repository}:latest")
    assert pulled.returncode == 0, pulled.stderr
    inspected = json.loads(podman(store, "image", "inspect", f"{repository}:latest").stdout)[0]
    assert inspected["Healthcheck"]["Test"] == ["CMD", "/go_app", "healthcheck"]
    assert inspected["Labels"]["org.example.team"] == "core" and "org.opencontainers.image.version" in inspected["Labels"]


def test_oci_labels_are_seen_by_podman_from_the_layout(tmp_path: Path) -> None:
    root, report = build(tmp_path)
    store = tmp_path / "podman"
    pulled = podman(store, "pull", f"oci:{root / 'dist' / 'hello' / 'oci'}:latest")
    assert pulled.returncode == 0, pulled.stderr
    image_id = pulled.stdout.strip().splitlines()[-1]
    inspected = json.loads(podman(store, "image", "inspect", image_id).stdout)[0]
    assert not inspected.get("Healthcheck")  # why format = "docker" exists: podman drops it from OCI images
    labels = inspected["Labels"]
    assert labels["org.example.team"] == "core"
    assert labels["org.opencontainers.image.created"] == "2026-01-02T03:04:05Z"


@pytest.mark.docker
@pytest.mark.parametrize("format", ["oci", "docker"])
def test_both_formats_load_into_docker_with_labels_and_the_config_digest(tmp_path: Path, docker_client: Any, format: str) -> None:
    root, report = build(tmp_path, repository=f"test.gosmall.local/formats-{format}", extra=f'format = "{format}"')
    done = gosmall("load", cwd=root)
    assert done.returncode == 0, done.stderr
    image = docker_client.images.get(f"test.gosmall.local/formats-{format}:latest")
    assert image.id == report["platforms"]["linux/amd64"]["config_digest"]
    assert image.labels["org.example.team"] == "core" and image.labels["org.opencontainers.image.version"]
    assert image.attrs["Config"]["Healthcheck"]["Test"] == ["CMD", "/go_app", "healthcheck"]
    docker_client.images.remove(image.id, force=True)


def test_the_formats_give_different_digests_and_the_report_says_which(tmp_path: Path) -> None:
    _, oci = build(tmp_path / "a")
    root, docker = build(tmp_path / "b", extra='format = "docker"')
    assert oci["digest"] != docker["digest"]
    assert oci["platforms"]["linux/amd64"]["diff_id"] == docker["platforms"]["linux/amd64"]["diff_id"]
    assert oci["media_type"] == "application/vnd.oci.image.manifest.v1+json" and docker["media_type"] == DOCKER_MANIFEST


def test_a_conflicting_user_label_is_refused(tmp_path: Path) -> None:
    root = make_project(
        tmp_path / "project",
        TABLE.format(repository="example.com/hello", platforms='["linux/amd64"]', extra="").replace(
            '"org.example.team" = "core"', '"org.opencontainers.image.version" = "v0-mine"'
        ),
    )
    done = gosmall("build-small", cwd=root)
    assert done.returncode == 2 and "labels.org.opencontainers.image.version = 'v0-mine', but gosmall sets" in done.stderr
