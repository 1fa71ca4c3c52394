"""podman as the engine, through its Docker-compatible socket: what the README promises works, driven here.

The module starts Debian's podman (rootful) as `podman system service` on a unix socket of its
own, with its own --root, --runroot and vfs storage, so nothing is shared with another podman
or with dockerd, and stops it at the end. Root on these machines lacks CAP_SYS_RESOURCE, so
podman's default ulimits (1048576 open files) cannot be applied and every container would fail
to start; the service gets a CONTAINERS_CONF with small ones. gosmall reaches it by DOCKER_HOST,
as a user does.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import gosmall, gosmall_command, gosmall_env, make_project, one_image
from tests.docker_fixture import docker_required
from tests.net import free_loopback_port
from tests.test_first_five_minutes import EXIT3, RUN, SLEEPER, config_digest, go_module, read_line

START_SECONDS = 60
# Cgroups and events without systemd or journald, which a CI container may have in part or not at all.
ENGINE_CONF = '[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n'
CONTAINERS_CONF = '[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]\n' + ENGINE_CONF


@dataclass(frozen=True)
class Podman:
    """A running `podman system service` with storage of its own, and its CLI on the same storage."""

    directory: Path
    socket: Path
    environ: dict[str, str]  # CONTAINERS_CONF

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    def command(self, *args: str) -> list[str]:
        storage = ["--root", str(self.directory / "root"), "--runroot", str(self.directory / "run"), "--storage-driver", "vfs"]
        return ["podman", *storage, *args]

    def __call__(self, *args: str) -> str:
        done = subprocess.run(self.command(*args), env={**os.environ, **self.environ}, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"podman {' '.join(args)}: {done.stderr}"
        return done.stdout

    def env(self, **more: str) -> dict[str, str]:
        """gosmall's environment: this podman by DOCKER_HOST, and nothing of the user's Docker config."""
        return {"DOCKER_HOST": self.host, "DOCKER_CONFIG": str(self.directory / "docker-config"), **more}

    def containers(self) -> list[dict[str, object]]:
        return list(json.loads(self("ps", "-a", "--format", "json") or "[]"))


def _answers(path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(2)
            probe.connect(str(path))
            probe.sendall(b"GET /_ping HTTP/1.1\r\nHost: podman\r\nConnection: close\r\n\r\n")
            return probe.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


@contextmanager
def podman_service(containers_conf: str) -> Iterator[Podman]:
    """`podman system service` on a socket and storage of its own, stopped and removed at the end."""
    if shutil.which("podman") is None:
        why = "podman is not installed (.ci/run installs Debian's podman)"
        if docker_required():
            pytest.fail(f"GOSMALL_REQUIRE_DOCKER is set, but {why}", pytrace=False)
        pytest.skip(why)
    # A short path of its own: unix socket paths are limited to 107 bytes.
    directory = Path(tempfile.mkdtemp(prefix="gosmall-podman-"))
    # CONTAINERS_CONF is the only file podman reads then: the machine's own containers.conf cannot change the test.
    (directory / "containers.conf").write_text(containers_conf)
    running = Podman(directory, directory / "podman.sock", {"CONTAINERS_CONF": str(directory / "containers.conf")})
    log = (directory / "service.log").open("wb")
    service = subprocess.Popen(
        running.command("system", "service", "--time", "0", running.host),
        env={**os.environ, **running.environ}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + START_SECONDS
        while not _answers(running.socket):
            if service.poll() is not None or time.monotonic() > deadline:
                tail = (directory / "service.log").read_text(errors="replace")[-2000:]
                message = f"podman system service did not answer on {running.socket} within {START_SECONDS}s: {tail}"
                if docker_required():
                    pytest.fail(message, pytrace=False)
                pytest.skip(message)
            time.sleep(0.2)
        yield running
    finally:
        subprocess.run(
            running.command("rm", "--all", "--force", "--time", "0"),
            env={**os.environ, **running.environ},
            capture_output=True,
            timeout=120,
        )
        service.terminate()
        try:
            service.wait(timeout=30)
        except subprocess.TimeoutExpired:
            service.kill()
            service.wait()
        log.close()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def podman() -> Iterator[Podman]:
    with podman_service(CONTAINERS_CONF) as running:
        yield running


def served_project(root: Path, repository: str, port: int) -> Path:
    """The sample server on a free port (the host network is shared), with its healthcheck asking that port."""
    return make_project(
        root,
        one_image(
            repository,
            f"ports = [{port}]",
            f'args = ["-addr", ":{port}"]',
            f'healthcheck = ["/go_app", "healthcheck", "-addr", ":{port}"]',
        ),
    )


@pytest.mark.slow
def test_build_small_load_then_smoke_under_podman(podman: Podman, tmp_path: Path) -> None:
    repository = f"gosmall.local/podman-{RUN}"
    root = served_project(tmp_path / "p", repository, free_loopback_port())
    env = podman.env(GOSMALL_CACHE=str(tmp_path / "cache"), CI="1")

    loaded = gosmall("build-small", "--load", cwd=root, env=env)
    assert loaded.returncode == 0, loaded.stderr
    assert f"Connecting to the Docker engine at DOCKER_HOST={podman.host}" in loaded.stderr
    # podman names the image by its config digest, as dockerd does: what runs is what was built.
    digest = config_digest(root, "hello")
    (listed,) = (i for i in json.loads(podman("images", "--no-trunc", "--format", "json")) if f"{repository}:latest" in i.get("Names", []))
    assert "sha256:" + str(listed["Id"]).removeprefix("sha256:") == digest

    # The fast "already loaded" check asks podman's socket.
    again = gosmall("build-small", "--load", cwd=root, env=env)
    assert again.returncode == 0, again.stderr
    assert "nothing to load" in again.stderr and "Connecting to the Docker engine" not in again.stderr

    # The healthcheck runs (podman has no systemd timer here; gosmall asks podman to run it) and the port answers.
    smoked = gosmall("smoke", cwd=root, env=env)
    assert smoked.returncode == 0, smoked.stderr
    assert "Docker healthcheck: healthy" in smoked.stderr and "/healthz -> 200" in smoked.stderr
    assert podman.containers() == []

    # Audit reads the image back out of podman, the same bytes as the built layout.
    from_engine = gosmall("audit", f"{repository}:latest", "--format", "json", cwd=root, env=env)
    from_layout = gosmall("audit", str(root / "dist" / "hello"), "--format", "json", cwd=root, env=env)
    assert from_engine.returncode == from_layout.returncode, from_engine.stderr
    assert json.loads(from_engine.stdout) == json.loads(from_layout.stdout)


@pytest.mark.slow
def test_run_under_podman_passes_the_exit_status_and_leaves_no_container(podman: Podman, tmp_path: Path) -> None:
    root = go_module(tmp_path / "three", {"cmd/exit3/main.go": EXIT3})
    done = gosmall("run", "./cmd/exit3", cwd=root, env=podman.env(GOSMALL_CACHE=str(tmp_path / "cache")))
    assert done.returncode == 3, done.stderr
    assert done.stdout == f"exit3 {RUN}\n"
    assert podman.containers() == []


@pytest.mark.slow
def test_run_under_podman_is_hardened_and_sigterm_removes_the_container(podman: Podman, tmp_path: Path) -> None:
    root = go_module(tmp_path / "sleeper", {"cmd/sleeper/main.go": SLEEPER})
    env = podman.env(GOSMALL_CACHE=str(tmp_path / "cache"))
    with (tmp_path / "stderr").open("w+") as stderr:
        process = subprocess.Popen(
            [*gosmall_command(), "run", "./cmd/sleeper"], cwd=root, env=gosmall_env(env), stdout=subprocess.PIPE, stderr=stderr, text=True
        )
        try:
            assert read_line(process) == f"ready {RUN}\n", (tmp_path / "stderr").read_text()
            (running,) = podman.containers()
            facts = json.loads(podman("inspect", "--type", "container", str(running["Id"])))[0]
            host = facts["HostConfig"]
            assert facts["Config"]["User"] == "65532:65532"
            assert host["ReadonlyRootfs"] is True
            assert "no-new-privileges" in host["SecurityOpt"]
            # podman lists its default capabilities as dropped rather than saying ALL; none is left.
            assert not facts["EffectiveCaps"] and "CAP_NET_RAW" in host["CapDrop"]
            assert host["PidsLimit"] == 128 and host["Memory"] == 256 * 1024 * 1024
            assert host["NetworkMode"] == "host"
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=120) == 128 + signal.SIGTERM
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        assert "gosmall: stopped; the container was removed." in (tmp_path / "stderr").read_text()
    assert podman.containers() == []


def lacks_cap_sys_resource() -> bool:
    status = Path("/proc/self/status").read_text()
    effective = int(status.split("CapEff:")[1].split()[0], 16)
    return not effective & (1 << 24)  # CAP_SYS_RESOURCE


@pytest.mark.slow
@pytest.mark.skipif(not lacks_cap_sys_resource(), reason="root here has CAP_SYS_RESOURCE, so podman's default ulimits apply")
def test_podmans_default_ulimits_without_cap_sys_resource_is_one_message_with_the_fix(tmp_path: Path) -> None:
    root = go_module(tmp_path / "three", {"cmd/exit3/main.go": EXIT3})
    with podman_service(ENGINE_CONF) as bare:
        done = gosmall("run", "./cmd/exit3", cwd=root, env=bare.env(GOSMALL_CACHE=str(tmp_path / "cache")))
        assert done.returncode == 2, done.stderr
        assert "could not apply the container's default ulimits" in done.stderr
        assert 'default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]' in done.stderr
        assert "Traceback" not in done.stderr
        assert bare.containers() == []
