"""The engine is chosen as the docker CLI chooses it: DOCKER_HOST, else DOCKER_CONTEXT, else config.json's currentContext.

Contexts are made with the real `docker context create` in a throwaway DOCKER_CONFIG, so the
user's own config is never read or changed, and read back by docker_host from the CLI's store.
The end-to-end test points a context at a unix socket in a non-default place, served by a
forwarder thread in this test that passes every byte to the real engine and records the
requests it carried: the test sees `build-small --load` go through the context.
"""

from __future__ import annotations

import json
import re
import select
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import certifi
import pytest

from gosmall.docker_host import Engine, choose_engine, connect, context_dir_name, engine_socket
from gosmall.errors import GosmallError
from tests.conftest import gosmall, make_project, one_image
from tests.docker_fixture import docker_required
from tests.publish.test_engine import dead_socket, remove_image

pytest_plugins = ["tests.docker_fixture"]

REQUEST_LINE = re.compile(rb"^(GET|HEAD|POST|PUT|DELETE) (\S+) HTTP/1\.[01]\r\n")


def docker_cli(config: Path, *args: str) -> str:
    """The docker CLI, on the throwaway config only."""
    if shutil.which("docker") is None:
        if docker_required():
            pytest.fail("GOSMALL_REQUIRE_DOCKER is set, but there is no docker CLI to create contexts with", pytrace=False)
        pytest.skip("no docker CLI to create contexts with")
    done = subprocess.run(
        ["docker", *args], env={"DOCKER_CONFIG": str(config), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def docker_config(tmp_path: Path) -> Path:
    config = tmp_path / "docker-config"
    config.mkdir()
    return config


# -- choosing: the CLI's order -----------------------------------------------------


def test_the_cli_order_docker_host_then_docker_context_then_current_context(docker_config: Path) -> None:
    docker_cli(docker_config, "context", "create", "from-env", "--docker", "host=unix:///run/from-env.sock")
    docker_cli(docker_config, "context", "create", "current", "--docker", "host=unix:///run/current.sock")
    base = {"DOCKER_CONFIG": str(docker_config)}

    # Nothing chosen: the default socket.
    assert choose_engine(base) == Engine("unix:///var/run/docker.sock", "default", "default", docker_config / "config.json")
    docker_cli(docker_config, "context", "use", "current")
    assert json.loads((docker_config / "config.json").read_text())["currentContext"] == "current"

    current = choose_engine(base)
    assert (current.host, current.context, current.chosen_by) == ("unix:///run/current.sock", "current", "currentContext")
    assert f"the currentContext of {docker_config / 'config.json'}" in current.describe()

    chosen = choose_engine({**base, "DOCKER_CONTEXT": "from-env"})
    assert (chosen.host, chosen.context, chosen.chosen_by) == ("unix:///run/from-env.sock", "from-env", "DOCKER_CONTEXT")
    assert chosen.describe() == "unix:///run/from-env.sock (Docker context 'from-env', chosen by DOCKER_CONTEXT)"

    # DOCKER_HOST wins over both, as for the CLI.
    host = choose_engine({**base, "DOCKER_CONTEXT": "from-env", "DOCKER_HOST": "tcp://127.0.0.1:2375"})
    assert (host.host, host.chosen_by, host.describe()) == ("tcp://127.0.0.1:2375", "DOCKER_HOST", "DOCKER_HOST=tcp://127.0.0.1:2375")

    # `default`, by either way of naming it, is the default socket.
    for environ in ({**base, "DOCKER_CONTEXT": "default"},):
        assert choose_engine(environ).host == "unix:///var/run/docker.sock"
    docker_cli(docker_config, "context", "use", "default")
    assert choose_engine(base).host == "unix:///var/run/docker.sock"


def test_the_fast_check_asks_the_socket_the_chooser_picks(docker_config: Path) -> None:
    docker_cli(docker_config, "context", "create", "elsewhere", "--docker", "host=unix:///run/elsewhere.sock")
    docker_cli(docker_config, "context", "create", "remote", "--docker", "host=tcp://127.0.0.1:2375")
    base = {"DOCKER_CONFIG": str(docker_config)}
    assert engine_socket({**base, "DOCKER_CONTEXT": "elsewhere"}) == "/run/elsewhere.sock"
    assert engine_socket({**base, "DOCKER_CONTEXT": "remote"}) is None
    assert engine_socket({**base, "DOCKER_CONTEXT": "nope"}) is None  # connect() says why
    docker_cli(docker_config, "context", "use", "elsewhere")
    assert engine_socket(base) == "/run/elsewhere.sock"
    assert engine_socket({**base, "DOCKER_HOST": "unix:///run/host.sock"}) == "/run/host.sock"


def test_meta_json_and_tls_material_as_the_cli_stores_them(docker_config: Path, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", keys / "key.pem", "-out", keys / "cert.pem", "-days", "1", "-subj", "/CN=gosmall-test"],
        check=True, capture_output=True,
    )  # fmt: skip
    docker_cli(
        docker_config,
        "context",
        "create",
        "with-tls",
        "--docker",
        f"host=tcp://127.0.0.1:2376,ca={keys / 'cert.pem'},cert={keys / 'cert.pem'},key={keys / 'key.pem'}",
    )
    docker_cli(docker_config, "context", "create", "skip-verify", "--docker", "host=tcp://127.0.0.1:2377,skip-tls-verify=true")
    docker_cli(docker_config, "context", "create", "plain", "--docker", "host=tcp://127.0.0.1:2378")

    stored = docker_config / "contexts" / "tls" / context_dir_name("with-tls") / "docker"
    with_tls = choose_engine({"DOCKER_CONFIG": str(docker_config), "DOCKER_CONTEXT": "with-tls"})
    assert with_tls.host == "tcp://127.0.0.1:2376"
    assert with_tls.tls is not None
    assert (with_tls.tls.ca, with_tls.tls.cert, with_tls.tls.key, with_tls.tls.skip_verify) == (
        stored / "ca.pem",
        stored / "cert.pem",
        stored / "key.pem",
        False,
    )
    assert with_tls.tls.cert is not None and with_tls.tls.cert.read_bytes() == (keys / "cert.pem").read_bytes()

    skip = choose_engine({"DOCKER_CONFIG": str(docker_config), "DOCKER_CONTEXT": "skip-verify"})
    assert skip.tls is not None and skip.tls.skip_verify and skip.tls.ca is None
    assert choose_engine({"DOCKER_CONFIG": str(docker_config), "DOCKER_CONTEXT": "plain"}).tls is None


def test_meta_json_keys_match_in_any_case_as_go_reads_them(docker_config: Path) -> None:
    meta = docker_config / "contexts" / "meta" / context_dir_name("hand-made") / "meta.json"
    meta.parent.mkdir(parents=True)
    meta.write_text(json.dumps({"name": "hand-made", "endpoints": {"docker": {"host": "unix:///run/hand.sock"}}}))
    assert choose_engine({"DOCKER_CONFIG": str(docker_config), "DOCKER_CONTEXT": "hand-made"}).host == "unix:///run/hand.sock"


def test_docker_config_defaults_to_home(tmp_path: Path) -> None:
    store = tmp_path / ".docker"
    store.mkdir()
    (store / "config.json").write_text(json.dumps({"currentContext": "at-home"}))
    meta = store / "contexts" / "meta" / context_dir_name("at-home") / "meta.json"
    meta.parent.mkdir(parents=True)
    meta.write_text(json.dumps({"Name": "at-home", "Endpoints": {"docker": {"Host": "unix:///run/home.sock"}}}))
    assert choose_engine({"HOME": str(tmp_path)}).host == "unix:///run/home.sock"


@pytest.mark.parametrize(
    ("write", "message"),
    [
        (None, "Docker context 'nope' (chosen by DOCKER_CONTEXT) does not exist: there is no "),
        ("{not json", "cannot be read (not valid JSON"),
        ('{"Name": "nope", "Endpoints": {}}', "has no Docker endpoint"),
    ],
)
def test_a_context_that_cannot_be_read_is_one_message(docker_config: Path, write: str | None, message: str) -> None:
    if write is not None:
        meta = docker_config / "contexts" / "meta" / context_dir_name("nope") / "meta.json"
        meta.parent.mkdir(parents=True)
        meta.write_text(write)
    with pytest.raises(GosmallError) as caught:
        connect(environ={"DOCKER_CONFIG": str(docker_config), "DOCKER_CONTEXT": "nope"})
    assert message in caught.value.message and "'nope'" in caught.value.message
    assert caught.value.code == 2


def test_a_broken_config_json_names_the_file(docker_config: Path) -> None:
    (docker_config / "config.json").write_text("{")
    with pytest.raises(GosmallError) as caught:
        choose_engine({"DOCKER_CONFIG": str(docker_config)})
    assert str(docker_config / "config.json") in caught.value.message and "currentContext" in caught.value.message


def test_a_context_whose_engine_is_gone_names_the_context_and_its_endpoint(docker_config: Path, tmp_path: Path) -> None:
    host = f"unix://{dead_socket(tmp_path)}"
    docker_cli(docker_config, "context", "create", "stopped", "--docker", f"host={host}")
    docker_cli(docker_config, "context", "use", "stopped")
    with pytest.raises(GosmallError) as caught:
        connect(environ={"DOCKER_CONFIG": str(docker_config), "HOME": str(tmp_path)})
    message = caught.value.message
    assert f"No Docker engine answers at {host} (Docker context 'stopped', chosen by the currentContext of" in message
    assert "DOCKER_HOST=$(docker context inspect" not in message  # the old advice: copy the endpoint by hand
    assert caught.value.code == 2


# -- end to end: build-small --load through a context --------------------------------


class Forwarder:
    """A socket that passes every byte to the real engine and records the requests: a unix socket at a
    non-default path, or a loopback TCP port behind TLS that requires a client certificate."""

    def __init__(self, server: socket.socket, engine: str, tls: ssl.SSLContext | None = None) -> None:
        self.engine, self.tls = engine, tls
        self.requests: list[str] = []
        self.refused: list[str] = []  # TLS handshakes that failed, and why
        self._lock = threading.Lock()
        self._server = server
        self._server.listen(16)
        self._closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    @classmethod
    def unix(cls, path: Path, engine: str) -> Forwarder:
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(path))
        return cls(server, engine)

    @classmethod
    def tcp_tls(cls, engine: str, tls: ssl.SSLContext) -> Forwarder:
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.bind(("127.0.0.1", 0))
        return cls(server, engine, tls)

    @property
    def path(self) -> Path:
        return Path(self._server.getsockname())

    @property
    def port(self) -> int:
        return int(self._server.getsockname()[1])

    def seen(self) -> list[str]:
        with self._lock:
            return list(self.requests)

    def close(self) -> None:
        self._closed.set()
        self._server.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if self.tls is not None:
                threading.Thread(target=self._serve_tls, args=(client,), daemon=True).start()
                continue
            upstream = self._upstream()
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _upstream(self) -> socket.socket:
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        upstream.connect(self.engine)
        return upstream

    def _record(self, chunk: bytes) -> None:
        if line := REQUEST_LINE.match(chunk):
            with self._lock:
                self.requests.append(f"{line[1].decode()} {line[2].decode()}")

    def _pipe(self, source: socket.socket, target: socket.socket, record: bool) -> None:
        try:
            while chunk := source.recv(1 << 16):
                if record:
                    self._record(chunk)
                target.sendall(chunk)
        except OSError:
            pass
        finally:
            for end in (source, target):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _serve_tls(self, client: socket.socket) -> None:
        # One thread per connection: an SSL socket must not be read and written from two threads at once.
        assert self.tls is not None
        try:
            secure = self.tls.wrap_socket(client, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            with self._lock:
                self.refused.append(str(exc))
            client.close()
            return
        with secure, self._upstream() as upstream:
            try:
                while True:
                    readable = [secure] if secure.pending() else select.select([secure, upstream], [], [], 60)[0]
                    if not readable:
                        return
                    if secure in readable:
                        chunk = secure.recv(1 << 16)
                        if not chunk:
                            return
                        self._record(chunk)
                        upstream.sendall(chunk)
                    if upstream in readable:
                        chunk = upstream.recv(1 << 16)
                        if not chunk:
                            return
                        secure.sendall(chunk)
            except (ssl.SSLError, OSError):
                return


@pytest.fixture
def forwarder(docker_client: Any) -> Iterator[Forwarder]:
    engine = choose_engine().socket
    if engine is None:
        pytest.skip("the test engine is not on a unix socket, so there is nothing to forward to")
    # A short directory of its own: unix socket paths are limited to 107 bytes.
    directory = Path(tempfile.mkdtemp(prefix="gosmall-ctx-"))
    (directory / "elsewhere").mkdir()
    forwarder = Forwarder.unix(directory / "elsewhere" / "engine.sock", engine)
    try:
        yield forwarder
    finally:
        forwarder.close()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.docker
@pytest.mark.slow
def test_build_small_load_goes_through_the_context(
    tmp_path: Path, docker_config: Path, forwarder: Forwarder, docker_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.delenv("DOCKER_CONTEXT", raising=False)
    endpoint = f"unix://{forwarder.path}"
    docker_cli(docker_config, "context", "create", "forwarded", "--docker", f"host={endpoint}")
    repository = f"gosmall.local/context-{uuid.uuid4().hex[:8]}"
    root = make_project(tmp_path / "p", one_image(repository))
    env = {"GOSMALL_CACHE": str(tmp_path / "cache"), "CI": "1", "DOCKER_CONFIG": str(docker_config)}
    try:
        # DOCKER_CONTEXT names the context.
        first = gosmall("build-small", "--load", cwd=root, env={**env, "DOCKER_CONTEXT": "forwarded"})
        assert first.returncode == 0, first.stderr
        assert f"Connecting to the Docker engine at {endpoint} (Docker context 'forwarded', chosen by DOCKER_CONTEXT)" in first.stderr
        assert any(request.startswith("POST ") and request.endswith("/images/load") for request in forwarder.seen()), forwarder.seen()
        image_id = docker_client.images.get(f"{repository}:latest").id

        # `docker context use` names it: with the tag gone, the load goes through the socket again.
        remove_image(docker_client, f"{repository}:latest")
        docker_cli(docker_config, "context", "use", "forwarded")
        before = len(forwarder.seen())
        second = gosmall("build-small", "--load", cwd=root, env=env)
        assert second.returncode == 0, second.stderr
        assert "(Docker context 'forwarded', chosen by the currentContext of" in second.stderr
        assert any(request.endswith("/images/load") for request in forwarder.seen()[before:])
        assert docker_client.images.get(f"{repository}:latest").id == image_id

        # The fast "already loaded" check asks the context's socket too.
        before = len(forwarder.seen())
        third = gosmall("build-small", "--load", cwd=root, env=env)
        assert third.returncode == 0, third.stderr
        assert "nothing to load" in third.stderr and "Connecting to the Docker engine" not in third.stderr
        assert f"GET /images/{repository}:latest/json" in forwarder.seen()[before:]

        # Audit of an image by name reads it out of the context's engine.
        before = len(forwarder.seen())
        audited = gosmall("audit", f"{repository}:latest", cwd=root, env=env)
        assert audited.returncode in (0, 1), audited.stderr
        assert any(request.startswith("GET ") and request.endswith(f"/images/{image_id}/get") for request in forwarder.seen()[before:]), (
            forwarder.seen()[before:]
        )
    finally:
        remove_image(docker_client, f"{repository}:latest")


@pytest.mark.slow
def test_build_small_load_through_a_dead_context_fails_naming_it(
    tmp_path: Path, docker_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    host = f"unix://{dead_socket(tmp_path)}"
    docker_cli(docker_config, "context", "create", "gone", "--docker", f"host={host}")
    root = make_project(tmp_path / "p", one_image("gosmall.local/context-gone"))
    done = gosmall(
        "build-small",
        "--load",
        cwd=root,
        env={"DOCKER_CONFIG": str(docker_config), "DOCKER_CONTEXT": "gone", "GOSMALL_CACHE": str(tmp_path / "cache")},
    )
    assert done.returncode == 2, done.stderr
    assert f"gosmall: error: No Docker engine answers at {host} (Docker context 'gone', chosen by DOCKER_CONTEXT)" in done.stderr
    assert "Traceback" not in done.stderr


# -- a context with TLS material ------------------------------------------------------


def openssl(*args: str | Path, cwd: Path) -> None:
    subprocess.run(["openssl", *map(str, args)], cwd=cwd, check=True, capture_output=True, timeout=60)


def certificates(directory: Path) -> Path:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, both signed by the CA."""
    directory.mkdir()
    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca-key.pem",
        "-out",
        "ca.pem",
        "-days",
        "1",
        "-subj",
        "/CN=gosmall test CA",
        cwd=directory,
    )
    for name, extension in (("server", "subjectAltName=IP:127.0.0.1"), ("client", "extendedKeyUsage=clientAuth")):
        (directory / f"{name}.ext").write_text(extension + "\n")
        openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            f"{name}-key.pem",
            "-out",
            f"{name}.csr",
            "-subj",
            f"/CN=gosmall test {name}",
            cwd=directory,
        )
        openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca-key.pem",
            "-CAcreateserial",
            "-days",
            "1",
            "-out",
            f"{name}-cert.pem",
            "-extfile",
            f"{name}.ext",
            cwd=directory,
        )
    return directory


@pytest.fixture
def tls_forwarder(docker_client: Any, tmp_path: Path) -> Iterator[tuple[Forwarder, Path]]:
    engine = choose_engine().socket
    if engine is None:
        pytest.skip("the test engine is not on a unix socket, so there is nothing to forward to")
    keys = certificates(tmp_path / "keys")
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(keys / "server-cert.pem", keys / "server-key.pem")
    tls.verify_mode = ssl.CERT_REQUIRED  # as dockerd --tlsverify: no client certificate, no engine
    tls.load_verify_locations(keys / "ca.pem")
    forwarder = Forwarder.tcp_tls(engine, tls)
    try:
        yield forwarder, keys
    finally:
        forwarder.close()


@pytest.mark.docker
def test_a_contexts_tls_material_is_what_connects(
    tls_forwarder: tuple[Forwarder, Path], docker_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    forwarder, keys = tls_forwarder
    # Set on many machines (this one too): requests would let it replace the engine's own CA.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certifi.where())
    host = f"tcp://127.0.0.1:{forwarder.port}"
    docker_cli(
        docker_config,
        "context",
        "create",
        "tls",
        "--docker",
        f"host={host},ca={keys / 'ca.pem'},cert={keys / 'client-cert.pem'},key={keys / 'client-key.pem'}",
    )
    client = connect(environ={"DOCKER_CONFIG": str(docker_config), "DOCKER_CONTEXT": "tls"})
    try:
        assert client.version()["ApiVersion"]
    finally:
        client.close()
    assert any(request.endswith("/_ping") for request in forwarder.seen()), (forwarder.seen(), forwarder.refused)

    # Without the client certificate the engine refuses the handshake: one message, naming the context.
    docker_cli(docker_config, "context", "create", "no-cert", "--docker", f"host={host},ca={keys / 'ca.pem'}")
    with pytest.raises(GosmallError) as caught:
        connect(environ={"DOCKER_CONFIG": str(docker_config), "DOCKER_CONTEXT": "no-cert"})
    assert f"No Docker engine answers at {host} (Docker context 'no-cert', chosen by DOCKER_CONTEXT)" in caught.value.message
    assert caught.value.code == 2
    # The forwarder's thread notes the refused handshake; the client may give up before that thread has written it.
    deadline = time.monotonic() + 30
    while not forwarder.refused and time.monotonic() < deadline:
        time.sleep(0.05)
    assert forwarder.refused


@pytest.mark.docker
def test_docker_host_with_docker_tls_verify_uses_docker_cert_path(
    tls_forwarder: tuple[Forwarder, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    forwarder, keys = tls_forwarder
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certifi.where())
    cert_path = tmp_path / "cert-path"
    cert_path.mkdir()
    for name, stored in (("ca.pem", "ca.pem"), ("cert.pem", "client-cert.pem"), ("key.pem", "client-key.pem")):
        shutil.copy(keys / stored, cert_path / name)
    environ = {
        "DOCKER_HOST": f"tcp://127.0.0.1:{forwarder.port}",
        "DOCKER_TLS_VERIFY": "1",
        "DOCKER_CERT_PATH": str(cert_path),
        "DOCKER_CONFIG": str(tmp_path),
    }
    client = connect(environ=environ)
    try:
        assert client.version()["ApiVersion"]
    finally:
        client.close()
    assert any(request.endswith("/_ping") for request in forwarder.seen()), (forwarder.seen(), forwarder.refused)
