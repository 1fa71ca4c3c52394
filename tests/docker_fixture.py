"""A real Docker engine for tests, or a clear skip (or failure in CI).

Registered from conftest.py with `pytest_plugins = ["tests.docker_fixture"]`.

- `@pytest.mark.docker` marks a test that needs an engine. Without one it is
  skipped with the reason gosmall itself would give (no engine where DOCKER_HOST
  or the Docker context points, permission denied); with GOSMALL_REQUIRE_DOCKER=1, as CI sets, it fails, so
  a broken engine in CI cannot pass as a green run of skips.
- `docker_client` (session): a connected `docker.DockerClient`; using it
  implies the marker's skip/fail rule.
- `free_port`: a TCP port nothing listens on at the moment, for a container
  on the host network (the host network is shared by every test run on the
  machine, so no test may assume 8080).

The engine is asked once per session; the answer lives in the pytest config's
stash, not in module state.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

from tests.net import free_loopback_port

if TYPE_CHECKING:  # pragma: no cover
    import docker

REQUIRE_ENV = "GOSMALL_REQUIRE_DOCKER"


@dataclass(frozen=True)
class EngineProbe:
    client: docker.DockerClient | None
    reason: str  # why there is no client; "" when there is one


_PROBE = pytest.StashKey[EngineProbe]()


def docker_required() -> bool:
    return os.environ.get(REQUIRE_ENV, "").strip().lower() in ("1", "true", "yes")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"docker: needs a running Docker engine (skips without one unless {REQUIRE_ENV}=1)")


def _probe(config: pytest.Config) -> EngineProbe:
    if _PROBE not in config.stash:
        from gosmall.docker_host import connect
        from gosmall.errors import GosmallError

        try:
            config.stash[_PROBE] = EngineProbe(connect(), "")
        except GosmallError as exc:
            config.stash[_PROBE] = EngineProbe(None, exc.message)
    return config.stash[_PROBE]


def _require_engine(config: pytest.Config) -> docker.DockerClient:
    probe = _probe(config)
    if probe.client is None:
        if docker_required():
            pytest.fail(f"{REQUIRE_ENV} is set, but: {probe.reason}", pytrace=False)
        pytest.skip(f"no Docker engine: {probe.reason}")
    return probe.client


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("docker") is not None:
        _require_engine(item.config)


def pytest_unconfigure(config: pytest.Config) -> None:
    probe = config.stash.get(_PROBE, None)
    if probe is not None and probe.client is not None:
        probe.client.close()


@pytest.fixture(scope="session")
def docker_client(pytestconfig: pytest.Config) -> Iterator[docker.DockerClient]:
    """The engine gosmall chooses (DOCKER_HOST, else a Docker context, else the default socket), connected and answering."""
    yield _require_engine(pytestconfig)


@pytest.fixture
def free_port() -> int:
    """A loopback TCP port free right now (the kernel picks it; the race is small)."""
    return free_loopback_port()
