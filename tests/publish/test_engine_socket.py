"""`build-small --load` with nothing to load asks the engine one question on its socket, and any doubt goes to the SDK path."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from gosmall.docker_host import engine_socket, tags_name
from tests.conftest import gosmall, make_project, one_image
from tests.publish.test_engine import remove_image


@pytest.mark.parametrize(
    ("environ", "socket"),
    [
        ({}, "/var/run/docker.sock"),
        ({"DOCKER_HOST": "unix:///run/user/1000/docker.sock"}, "/run/user/1000/docker.sock"),
        ({"DOCKER_HOST": "tcp://127.0.0.1:2375"}, None),
        ({"DOCKER_HOST": "ssh://me@host"}, None),
        ({"DOCKER_TLS_VERIFY": "1"}, None),
        ({"DOCKER_CONTEXT": "remote"}, None),  # no such context: connect() says so
        ({"DOCKER_CONTEXT": "default"}, "/var/run/docker.sock"),
    ],
)
def test_only_a_unix_socket_is_asked(environ: dict[str, str], socket: str | None, tmp_path: Path) -> None:
    # An empty DOCKER_CONFIG: the user's own contexts must not change the answer (test_docker_context.py has contexts).
    assert engine_socket({**environ, "DOCKER_CONFIG": str(tmp_path)}) == socket


def test_no_engine_there_is_a_no(tmp_path: Path) -> None:
    assert not tags_name(["x/y:z"], ["sha256:" + "0" * 64], {"DOCKER_HOST": f"unix://{tmp_path / 'none.sock'}"})


@pytest.mark.docker
@pytest.mark.slow
def test_a_second_load_loads_nothing_and_a_moved_tag_is_put_back(tmp_path: Path, docker_client: Any) -> None:
    repository = f"gosmall.local/socket-{uuid.uuid4().hex[:8]}"
    root = make_project(tmp_path / "p", one_image(repository))
    env = {"GOSMALL_CACHE": str(tmp_path / "cache"), "CI": "1"}
    other_id = ""
    try:
        first = gosmall("build-small", "--load", cwd=root, env=env)
        assert first.returncode == 0, first.stderr
        image_id = docker_client.images.get(f"{repository}:latest").id
        assert tags_name([f"{repository}:latest"], [image_id])
        assert not tags_name([f"{repository}:latest"], ["sha256:" + "0" * 64])
        assert not tags_name([f"{repository}:nope"], [image_id])

        second = gosmall("build-small", "--load", cwd=root, env=env)
        assert second.returncode == 0, second.stderr
        assert "nothing to load" in second.stderr and "Connecting to the Docker engine" not in second.stderr

        # Someone points the tag at another image: the check says no, and the SDK path tags ours again.
        other = tmp_path / "other"
        other.mkdir()
        (other / "Dockerfile").write_text("FROM scratch\nCOPY x /x\n")
        (other / "x").write_text("x")
        docker_client.images.build(path=str(other), tag=f"{repository}:latest", network_mode="none", rm=True)
        other_id = docker_client.images.get(f"{repository}:latest").id
        assert other_id != image_id
        third = gosmall("build-small", "--load", cwd=root, env=env)
        assert third.returncode == 0, third.stderr
        assert "Connecting to the Docker engine" in third.stderr
        assert docker_client.images.get(f"{repository}:latest").id == image_id
    finally:
        # The tag (the image may be another test's too: builds are reproducible), and the image only this test built.
        for name in (f"{repository}:latest", other_id):
            if name:
                remove_image(docker_client, name)
