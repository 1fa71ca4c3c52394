"""A declared org.opencontainers.image.source wins over the origin remote: on one machine and in the fan-in index.

A clone from a local path has an origin gosmall never publishes, and a fork's or an ssh origin is not where
the project says its source lives; the label the project declares is what the annotations carry.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.conftest import gosmall, make_project
from tests.registry_fixture import pushed_table

if TYPE_CHECKING:
    from tests.registry_fixture import LocalRegistry

pytestmark = pytest.mark.slow

PLATFORMS = ("linux/amd64", "linux/arm64")
DECLARED = "https://example.com/declared/app"
ENV = {"SOURCE_DATE_EPOCH": ""}


def clone(origin: Path, where: Path, url: str | None = None) -> Path:
    subprocess.run(["git", "clone", "-q", str(origin), str(where)], check=True)
    if url is not None:
        subprocess.run(["git", "remote", "set-url", "origin", url], cwd=where, check=True)
    return where


def annotations(output: Path, digest: str) -> dict[str, str]:
    blob = output / "oci" / "blobs" / "sha256" / digest.removeprefix("sha256:")
    return dict(json.loads(blob.read_text()).get("annotations", {}))


def test_the_declared_source_is_in_every_annotation_and_label_and_the_fan_in_index_is_the_one_machine_build(
    tmp_path: Path, registry: LocalRegistry
) -> None:
    repository = f"{registry.host}/declared/hello"
    table = pushed_table(repository, platforms=PLATFORMS) + f'labels = {{ "org.opencontainers.image.source" = "{DECLARED}" }}\n'
    origin = make_project(tmp_path / "origin", table)

    # An ssh origin of a fork: before, a label that disagreed with it stopped the build.
    whole = clone(origin, tmp_path / "one-machine", "git@github.com:someone/fork.git")
    built = gosmall("build-small", cwd=whole, env=ENV)
    assert built.returncode == 0, built.stderr
    output = whole / "dist" / "hello"
    report = json.loads((output / "report.json").read_text())
    assert annotations(output, report["digest"])["org.opencontainers.image.source"] == DECLARED
    for platform in PLATFORMS:
        facts = report["platforms"][platform]
        assert annotations(output, facts["manifest_digest"])["org.opencontainers.image.source"] == DECLARED
        config = json.loads((output / "oci" / "blobs" / "sha256" / facts["config_digest"].removeprefix("sha256:")).read_text())
        assert config["config"]["Labels"]["org.opencontainers.image.source"] == DECLARED
    audited = gosmall("audit", str(output), cwd=whole)
    assert audited.returncode == 0, audited.stderr
    assert "missing-source-label" not in audited.stdout

    # Each platform in its own job, cloned from a local path (no origin gosmall publishes), then joined.
    reports = []
    for platform in PLATFORMS:
        job = clone(origin, tmp_path / f"job-{platform.replace('/', '-')}")
        done = gosmall("build-small", "--platform", platform, "--push", cwd=job, env=ENV)
        assert done.returncode == 0, done.stderr
        reports += ["--from", str(job / "dist" / "hello" / "report.json")]
    fan_in = clone(origin, tmp_path / "fan-in")
    joined = gosmall("index", "--image", "hello", *reports, cwd=fan_in, env=ENV)
    assert joined.returncode == 0, joined.stderr
    # Checked, not pushed: the index it would push is the one-machine build's.
    assert f"the index is {repository}@{report['digest']}" in joined.stderr
