"""Images built without gosmall: Debian's buildah, from scratch, for the audit tests.

A pytest plugin (registered from conftest.py with `pytest_plugins`).

- `buildah` (per test): a `Buildah` with its own vfs storage under tmp_path, chroot
  isolation, nothing shared between tests; `Buildah.image(plant, ...)` builds FROM
  scratch (or a kept image), lets `plant` write into the root file system, sets the
  config and commits to an OCI layout or a docker archive.
- `static_app` (module): a static, stripped program from gcc, what a gosmall image's
  entrypoint is.
- `put(root, path, data, mode, uid)`: a file in a root being planted.
- `missing(why)`: skip for want of a tool, except in CI (.ci/run installs them), where a
  skip would hide a test that never ran.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

REPO = Path(__file__).resolve().parents[1]
ELF_SOURCES = REPO / "tests" / "fixtures" / "elf"
REVISION = "0123456789abcdef0123456789abcdef01234567"
LABELS = {"org.opencontainers.image.source": "https://example.com/app.git", "org.opencontainers.image.revision": REVISION}


def missing(why: str) -> NoReturn:
    """Skip for want of a tool, except in CI (.ci/run installs them), where a skip would hide a test that never ran."""
    if os.environ.get("CI"):
        pytest.fail(f"CI is set, so this test must run, but {why}")
    pytest.skip(why)


def gcc(out: Path, source: str, *flags: str) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["gcc", "-o", str(out), str(ELF_SOURCES / source), *flags], check=True, capture_output=True, text=True)
    return out


@pytest.fixture(scope="module")
def static_app(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A static, stripped program: what a gosmall image's entrypoint is."""
    return gcc(tmp_path_factory.mktemp("static") / "app", "static_main.c", "-static", "-s").read_bytes()


def put(root: Path, path: str, data: bytes, mode: int = 0o755, uid: int = 0) -> None:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    os.chown(target, uid, uid)
    os.chmod(target, mode)  # after chown, which clears setuid and setgid


@dataclass(frozen=True)
class Buildah:
    """buildah with its own storage under tmp_path: vfs, chroot isolation, nothing shared between tests."""

    binary: str
    root: Path

    def __call__(self, *args: str) -> str:
        storage = ["--root", str(self.root / "storage"), "--runroot", str(self.root / "run"), "--storage-driver", "vfs"]
        done = subprocess.run([self.binary, *storage, *args], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"buildah {' '.join(args)}: {done.stderr}"
        return done.stdout.strip()

    def image(
        self,
        plant: Callable[[Path], None],
        *,
        user: str = "65532:65532",
        entrypoint: Sequence[str] = ("/app",),
        labels: dict[str, str] = LABELS,
        env: Sequence[str] = (),
        healthcheck: str = "",
        destination: str = "oci",
        base: str = "scratch",
        keep: str = "",
    ) -> Path:
        """An image built FROM `base` with `plant` writing into its root file system, committed to an OCI layout or an archive.

        `healthcheck` ("CMD /app healthcheck") needs destination "docker-archive": buildah keeps a
        Healthcheck only in Docker-format images. `keep` also commits it under that name in this
        storage, for another image to be built FROM it.
        """
        container = self("from", "--isolation", "chroot", "--name", f"c{uuid.uuid4().hex[:12]}", base)
        plant(Path(self("mount", container)))
        self(
            "config",
            "--user",
            user,
            "--entrypoint",
            json.dumps(list(entrypoint)),
            *(f"--label={k}={v}" for k, v in labels.items()),
            *(f"--env={e}" for e in env),
            *(["--healthcheck", healthcheck] if healthcheck else []),
            container,
        )
        name = uuid.uuid4().hex[:12]
        archive = destination == "docker-archive"
        out = self.root / (f"{name}.tar" if archive else name)
        formats = ["--format", "docker"] if healthcheck else []
        self("commit", "--quiet", *formats, container, f"{destination}:{out}" + (":audit/bad:latest" if archive else ""))
        if keep:
            self("commit", "--quiet", container, keep)
        self("rm", container)
        return out


@pytest.fixture
def buildah(tmp_path: Path) -> Buildah:
    found = shutil.which("buildah")
    why = (
        "buildah is not installed (apt-get install buildah)"
        if found is None
        else ""
        if os.geteuid() == 0
        else "buildah with vfs storage needs root here"
    )
    if why:
        missing(why)
    return Buildah(str(found), tmp_path / "buildah")
