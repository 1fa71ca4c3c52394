"""The first thing a user sees: `invoke build-small` on a fresh clone of this repository, and advice that earns its line.

The sample's [tool.gosmall] is what we recommend (a declared source, ca_certs, format and a healthcheck),
so building it says nothing to act on. Advice still reaches a project that has not decided.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, gosmall, gosmall_env, make_project

pytestmark = pytest.mark.slow


def test_a_fresh_clone_builds_its_sample_without_a_warning_or_an_audit_finding(tmp_path: Path) -> None:
    if not (REPO / ".git").exists():
        pytest.skip(f"{REPO} is not a git checkout, so there is nothing to clone")
    clone = tmp_path / "gosmall"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True, timeout=300)
    # Its origin is a local path, which is never published: the source URL comes from the sample's label.
    done = subprocess.run(
        [sys.executable, "-m", "invoke", "build-small"],
        cwd=clone,
        env=gosmall_env({"SOURCE_DATE_EPOCH": ""}),
        capture_output=True,
        text=True,
        timeout=900,
    )
    said = done.stdout + done.stderr
    assert done.returncode == 0, said
    assert "WARNING" not in said
    assert [line for line in said.splitlines() if line.strip().startswith("audit:")] == []
    assert "CA roots" not in said  # ca_certs is decided in the sample: not even a detail
    assert (clone / "dist" / "hello" / "report.json").is_file()


TABLE = """[tool.gosmall]
format = "oci"

[tool.gosmall.images.hello]
package = "./go_app"
repository = "example.com/hello"
platforms = ["linux/amd64", "linux/arm64"]
tzdata = "none"
ca_certs = false
healthcheck = ["/go_app", "healthcheck"]
"""


def test_a_decision_silences_its_advice_and_a_warning_is_said_once_for_every_platform(tmp_path: Path) -> None:
    # go_app loads zones: tzdata = "none" is a bug at run time, so it is warned about (once, both platforms named).
    # ca_certs = false and a top-level format = "oci" are decisions: no CA-roots note, no podman warning.
    root = make_project(tmp_path / "project", TABLE)
    done = gosmall("build-small", cwd=root)
    assert done.returncode == 0, done.stderr
    said = done.stdout + done.stderr
    warnings = [line for line in said.splitlines() if "WARNING" in line]
    assert warnings == [
        "WARNING: linux/amd64, linux/arm64: [tool.gosmall.images.hello]: the binary links time.LoadLocation, but the image has "
        'no time zone database (tzdata = "none"), so every zone but UTC will fail to load at run time. Set tzdata = "zip" '
        '(Go\'s database, 400 KiB), tzdata = "embed" (compiled in), or list the zones it uses in zones = [...].'
    ]
    assert "CA roots" not in said and "podman" not in said


def test_without_a_decision_the_ca_roots_note_and_the_podman_warning_still_come(tmp_path: Path) -> None:
    root = make_project(
        tmp_path / "project",
        '[tool.gosmall.images.hello]\npackage = "./go_app"\nplatforms = ["linux/amd64"]\nhealthcheck = ["/go_app", "healthcheck"]\n',
    )
    done = gosmall("build-small", cwd=root)
    assert done.returncode == 0, done.stderr
    said = done.stdout + done.stderr
    assert "linux/amd64: [tool.gosmall.images.hello]: the binary can load system CA roots (crypto/x509)" in said
    assert "WARNING" not in said.split("CA roots")[0].splitlines()[-1]  # a note (a detail), not a warning
    assert "WARNING: [tool.gosmall.images.hello]: the image has a healthcheck, but podman and buildah read Healthcheck" in said
