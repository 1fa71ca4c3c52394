"""--load, --smoke and `run` give the engine the image as soon as its config and uncompressed layer exist (issue 28).

The rest of the build (compression, audit, SBOM, the output directory) finishes beside the load. What a user sees
must not change: the engine's image ID is report.json's config digest, the output directory is byte for byte a build
without --load, and a build that fails after the load (its audit, a SIGTERM) leaves the old output, every tag where
it was, and removes the image it loaded ahead, which no tag ever named.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from gosmall.build.compile import host_platform
from tests.conftest import gosmall, gosmall_command, gosmall_env, make_project

if TYPE_CHECKING:
    import docker

pytestmark = [pytest.mark.slow, pytest.mark.docker]

LOADED_AHEAD = re.compile(r"hello: (sha256:[0-9a-f]{64}) loaded into the engine, untagged until the build is done")


def table(repository: str) -> str:
    return (
        '[tool.gosmall]\npinning = "off"\n'
        f'[tool.gosmall.images.hello]\npackage = "./go_app"\nrepository = "{repository}"\ntags = ["t"]\n'
        f'platforms = ["{host_platform()}"]\nfiles = [{{ src = "config", dst = "/etc/hello" }}]\n'
    )


@pytest.fixture
def repository(docker_client: docker.DockerClient) -> Iterator[str]:
    name = f"gosmall.local/ahead-{uuid.uuid4().hex[:12]}"
    yield name
    for image in docker_client.images.list(name=name):
        docker_client.images.remove(str(image.id), force=True)


def project(tmp_path: Path, repository: str, *files: tuple[str, bytes]) -> Path:
    root = make_project(tmp_path / "p", table(repository), git=False)
    (root / "config").mkdir()
    (root / "config" / "hello.conf").write_text("greeting = hi\n")
    for name, data in files:
        (root / "config" / name).write_bytes(data)
    return root


def env(cache: Path, **more: str) -> dict[str, str]:
    return {"GOSMALL_CACHE": str(cache), "SOURCE_DATE_EPOCH": "1700000000", "CI": "1", **more}


def build(root: Path, cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return gosmall("build-small", *args, cwd=root, env=env(cache))


def contents(root: Path) -> dict[str, bytes]:
    out = root / "dist" / "hello"
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def config_digest(root: Path) -> str:
    report = json.loads((root / "dist" / "hello" / "report.json").read_text())
    return str(report["platforms"][report["docker_platform"]]["config_digest"])


def change_one_line(root: Path) -> None:
    main = root / "go_app" / "main.go"
    main.write_text(main.read_text().replace('var version = "dev"', 'var version = "dev2"'))


def test_load_after_a_change_is_the_built_image_and_the_output_is_a_build_without_load(
    tmp_path: Path, repository: str, docker_client: docker.DockerClient
) -> None:
    root = project(tmp_path, repository)
    assert build(root, tmp_path / "cache").returncode == 0
    change_one_line(root)
    loaded = build(root, tmp_path / "cache", "--load")
    assert loaded.returncode == 0, loaded.stderr
    ahead = LOADED_AHEAD.search(loaded.stderr)
    assert ahead is not None, loaded.stderr  # loaded ahead, then only tagged
    digest = config_digest(root)
    assert ahead.group(1) == digest
    assert docker_client.images.get(f"{repository}:t").id == digest
    with_load = contents(root)
    # The same source again, from scratch (another cache) and without --load: the same bytes, every file.
    again = build(root, tmp_path / "other-cache")
    assert again.returncode == 0 and "(up to date)" not in again.stderr, again.stderr
    assert contents(root) == with_load


def test_an_audit_that_fails_after_the_load_keeps_the_old_output_and_tag(
    tmp_path: Path, repository: str, docker_client: docker.DockerClient
) -> None:
    from docker.errors import ImageNotFound

    root = project(tmp_path, repository)
    first = build(root, tmp_path / "cache", "--load")
    assert first.returncode == 0, first.stderr
    old_output, old_id = contents(root), docker_client.images.get(f"{repository}:t").id
    # A credential file in the layer: the audit fails, after the image went to the engine.
    key = b"-----BEGIN PRIVATE KEY-----\nMIIBVQIBADANBgkqhkiG9w0BAQEFAASCAT8wggE7AgEAAkEAq\n-----END PRIVATE KEY-----\n"
    (root / "config" / "server.key").write_bytes(key)
    failed = build(root, tmp_path / "cache", "--load")
    assert failed.returncode == 1, failed.stderr
    assert "fails its audit" in failed.stderr and "Traceback" not in failed.stderr
    ahead = LOADED_AHEAD.search(failed.stderr)
    assert ahead is not None, failed.stderr  # it was loaded before the audit failed
    assert contents(root) == old_output
    # The choice: the tag never moved, and the image loaded ahead (untagged) is gone again.
    assert docker_client.images.get(f"{repository}:t").id == old_id
    with pytest.raises(ImageNotFound):
        docker_client.images.get(ahead.group(1))


def test_sigterm_while_the_layer_compresses_after_the_load(tmp_path: Path, repository: str, docker_client: docker.DockerClient) -> None:
    from docker.errors import ImageNotFound

    # A large layer: compressing it takes seconds, loading it less (the engine takes it uncompressed).
    root = project(tmp_path, repository, ("big.bin", os.urandom(48_000_000)))
    cache = tmp_path / "cache"
    first = build(root, cache, "--load")
    assert first.returncode == 0, first.stderr
    old_output, old_id = contents(root), docker_client.images.get(f"{repository}:t").id
    (root / "config" / "big.bin").write_bytes(os.urandom(48_000_000))
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    process = subprocess.Popen(
        [*gosmall_command(), "build-small", "--load"],
        cwd=root,
        env=gosmall_env(env(cache, TMPDIR=str(scratch))),
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    said: list[str] = []
    for line in process.stderr:
        said.append(line)
        if LOADED_AHEAD.search(line):
            process.send_signal(signal.SIGTERM)
            break
    rest = process.stderr.read()
    status = process.wait(timeout=120)
    stderr = "".join(said) + rest
    assert LOADED_AHEAD.search(stderr), stderr
    assert "    hello: writing " not in "".join(said), stderr  # still before the output directory: compressing
    assert status == 143, stderr
    assert "Traceback" not in stderr
    assert contents(root) == old_output
    assert sorted(p.name for p in (root / "dist").iterdir()) == ["hello"]  # no staging directory left
    assert list(scratch.iterdir()) == []  # no work directory left
    assert not [p for p in cache.rglob(".scratch-*")]  # nor Go's scratch
    assert docker_client.images.get(f"{repository}:t").id == old_id
    assert not docker_client.containers.list(all=True, filters={"ancestor": repository})
    ahead = LOADED_AHEAD.search(stderr)
    assert ahead is not None
    with pytest.raises(ImageNotFound):  # its load had ended: removed on the way out
        docker_client.images.get(ahead.group(1))


def test_run_after_a_one_line_change_starts_go_early_loads_ahead_and_runs_the_changed_program(
    tmp_path: Path, repository: str, docker_client: docker.DockerClient
) -> None:
    root = project(tmp_path, repository)
    cache = tmp_path / "cache"
    command = ("run", "--network", "none", "--", "healthcheck", "-addr", "bad")
    first = gosmall(*command, cwd=root, env=env(cache))
    assert first.returncode == 1 and "healthcheck: address bad: missing port in address" in first.stderr, first.stderr
    # Remembered although the container exited 1: the next `run` of this command line starts Go before Python.
    (entry,) = (cache / "facts" / "speculation").glob("*.json")
    assert json.loads(entry.read_text())["key"] == [str(root), *command]
    main = root / "go_app" / "main.go"
    main.write_text(main.read_text().replace('"healthcheck:", err', '"healthcheck (changed):", err'))
    second = gosmall(*command, cwd=root, env=env(cache))
    assert second.returncode == 1, second.stderr
    assert "healthcheck (changed): address bad: missing port in address" in second.stderr  # the program as it is now
    ahead = LOADED_AHEAD.search(second.stderr)
    assert ahead is not None and ahead.group(1) == config_digest(root), second.stderr
    assert docker_client.images.get(f"{repository}:t").id == config_digest(root)
    assert not docker_client.containers.list(all=True, filters={"ancestor": repository})
