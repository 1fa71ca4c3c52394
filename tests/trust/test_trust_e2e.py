"""Trust end to end: gosmall builds go_app, pushes it to a real registry, pins a project to it."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import BuiltProject, git_commit, gosmall
from tests.registry_fixture import push_layout

pytestmark = pytest.mark.slow


def test_push_verify_pin_check(built_hello: BuiltProject, registry, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    reference = f"{registry.host}/gosmall/hello:latest"
    digest = push_layout(built_hello.output / "oci", reference)
    assert str(digest) == built_hello.report["digest"]  # the registry serves the very bytes we built
    if shutil.which("skopeo"):
        raw = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{reference}"], capture_output=True, check=True)
        assert json.loads(raw.stdout)["mediaType"].endswith("index.v1+json")

    root = tmp_path / "project"
    shutil.copytree(built_hello.root / "go_app", root / "go_app")
    shutil.copy(built_hello.root / "pyproject.toml", root / "pyproject.toml")
    dockerfile = (
        "# syntax=docker/dockerfile:1\n"
        f"ARG BASE={registry.host}/gosmall/hello:latest\n"
        "FROM $BASE AS app\n"
        "\n"
        "FROM scratch\n"
        "COPY --from=app /go_app /go_app   # keep this comment\n"
    )
    (root / "Dockerfile").write_text(dockerfile)
    (root / "compose.yaml").write_text(f"services:\n  web:\n    # the app\n    image: '{registry.host}/gosmall/hello'\n")
    git_commit(root)

    scan = gosmall("verify-pins", cwd=root)
    assert scan.returncode == 1
    assert scan.stdout.splitlines() == [
        f"Dockerfile:3:6: {registry.host}/gosmall/hello:latest: not pinned by digest",
        f"compose.yaml:4:13: {registry.host}/gosmall/hello: not pinned by digest",
    ]
    build = gosmall("build-small", cwd=root)
    assert build.returncode == 1 and 'pinning is "error"' in build.stderr
    assert not (root / "dist").exists()

    check = gosmall("pin", "--check", cwd=root)
    assert check.returncode == 1 and "would pin" in check.stdout
    assert (root / "Dockerfile").read_text() == dockerfile  # --check writes nothing

    pinned = gosmall("pin", cwd=root)
    assert pinned.returncode == 0, pinned.stdout + pinned.stderr
    compose = (root / "compose.yaml").read_text()
    assert compose == f"services:\n  web:\n    # the app\n    image: '{registry.host}/gosmall/hello:latest@{digest}'\n"
    assert f"@{digest}" in (root / "Dockerfile").read_text()
    assert (root / "Dockerfile").read_text().endswith("COPY --from=app /go_app /go_app   # keep this comment\n")

    assert gosmall("verify-pins", cwd=root).returncode == 0
    assert gosmall("pin", "--check", cwd=root).returncode == 0
    again = gosmall("pin", cwd=root)
    assert again.returncode == 0 and again.stdout == ""  # idempotent
    assert gosmall("build-small", cwd=root).returncode == 0
