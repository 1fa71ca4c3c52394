"""A real registry on loopback for the tests: Debian's `docker-registry`.

A pytest plugin (register with `pytest_plugins = ["tests.registry_fixture"]`).
The session-scoped fixture `registry` starts `docker-registry serve` with a
throw-away filesystem store on a free 127.0.0.1 port, waits until `/v2/`
answers, yields a `LocalRegistry`, and stops the process at the end. Without
the binary the tests that use it are skipped, unless GOSMALL_REQUIRE_DOCKER=1
says this run must prove the real thing, which makes it a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from .net import free_loopback_port

BINARY = "docker-registry"


@dataclass(frozen=True)
class LocalRegistry:
    host: str  # "127.0.0.1:<port>", the domain part of references to it
    root: Path  # its storage directory

    @property
    def url(self) -> str:
        return f"http://{self.host}"


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    binary = shutil.which(BINARY) or (f"/usr/bin/{BINARY}" if Path(f"/usr/bin/{BINARY}").exists() else None)
    if binary is None:
        reason = f"'{BINARY}' is not installed (Debian package docker-registry)"
        if os.environ.get("GOSMALL_REQUIRE_DOCKER") == "1":
            pytest.fail(f"{reason}, and GOSMALL_REQUIRE_DOCKER=1 requires the registry tests to run")
        pytest.skip(reason)
    base = tmp_path_factory.mktemp("registry")
    port = free_loopback_port()
    config = base / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {base / 'data'}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n",
        encoding="utf-8",
    )
    log = (base / "registry.log").open("wb")
    process = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    found = LocalRegistry(f"127.0.0.1:{port}", base / "data")
    try:
        deadline = time.monotonic() + 20
        while True:
            if process.poll() is not None:
                pytest.fail(f"{BINARY} exited with {process.returncode}: {(base / 'registry.log').read_text()}")
            try:
                if requests.get(f"{found.url}/v2/", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"{BINARY} did not answer on {found.url}/v2/ within 20s: {(base / 'registry.log').read_text()}")
            time.sleep(0.1)
        yield found
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
