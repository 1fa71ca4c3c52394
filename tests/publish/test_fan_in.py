"""Fan-out, fan-in: each platform built and pushed in its own job, then joined into the one-machine index.

Each job is its own process in its own clone of one commit, with its own output directory, as CI matrix
jobs are; the registry is the only thing they share, and the fan-in job gets the platform jobs' report.json
files the way CI artifacts arrive.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import requests

from gosmall.registry.client import MANIFEST_ACCEPT
from tests.conftest import git_commit, gosmall, make_project
from tests.registry_fixture import pushed_table

if TYPE_CHECKING:
    from tests.registry_fixture import LocalRegistry

pytestmark = pytest.mark.slow

PLATFORMS = ("linux/amd64", "linux/arm64")
ENV = {"SOURCE_DATE_EPOCH": ""}


@dataclass(frozen=True)
class FannedOut:
    origin: Path  # the repository every job clones
    reports: dict[str, Path]  # platform -> that job's report.json, copied out as an artifact
    pushed: dict[str, str]  # platform -> what its job printed
    repository: str
    tags_after_jobs: dict[str, int]  # tag -> the registry's answer to a HEAD once both jobs were done


def _clone(origin: Path, where: Path) -> Path:
    subprocess.run(["git", "clone", "-q", str(origin), str(where)], check=True)
    return where


def _tag_answer(registry: LocalRegistry, tag: str) -> requests.Response:
    return requests.head(f"{registry.url}/v2/fan/hello/manifests/{tag}", headers={"Accept": MANIFEST_ACCEPT}, timeout=10)


@pytest.fixture(scope="module")
def fanned_out(registry: LocalRegistry, tmp_path_factory: pytest.TempPathFactory) -> FannedOut:
    base = tmp_path_factory.mktemp("fan")
    origin = make_project(base / "origin", pushed_table(f"{registry.host}/fan/hello", tags=("1.0", "latest"), platforms=PLATFORMS))
    reports, pushed = {}, {}
    for platform in PLATFORMS:
        job = _clone(origin, base / f"job-{platform.replace('/', '-')}")
        done = gosmall("build-small", "--image", "hello", "--platform", platform, "--push", cwd=job, env=ENV)
        assert done.returncode == 0, done.stderr
        pushed[platform] = done.stdout.splitlines()[-1]
        artifact = base / "artifacts" / platform.replace("/", "-") / "report.json"
        artifact.parent.mkdir(parents=True)
        shutil.copy(job / "dist" / "hello" / "report.json", artifact)
        reports[platform] = artifact
    tags = {tag: _tag_answer(registry, tag).status_code for tag in ("1.0", "latest")}
    return FannedOut(origin, reports, pushed, f"{registry.host}/fan/hello", tags)


def test_platform_jobs_push_untagged_manifests_recorded_in_their_reports(fanned_out: FannedOut, registry: LocalRegistry) -> None:
    for platform, path in fanned_out.reports.items():
        report = json.loads(path.read_text())
        assert list(report["platforms"]) == [platform]  # only that platform was built
        manifest = report["platforms"][platform]["manifest_digest"]
        assert report["digest"] == manifest
        assert fanned_out.pushed[platform] == f"{fanned_out.repository}@{manifest}"
        assert report["pushed"] == {"reference": f"{fanned_out.repository}@{manifest}", "tags": []}
        assert _tag_answer(registry, manifest).headers["Docker-Content-Digest"] == manifest
    assert fanned_out.tags_after_jobs == {"1.0": 404, "latest": 404}  # no tag ever names one platform alone


def test_the_fan_in_index_is_the_one_machine_build(fanned_out: FannedOut, registry: LocalRegistry, tmp_path: Path) -> None:
    fan_in = _clone(fanned_out.origin, tmp_path / "fan-in")
    args = [arg for platform in PLATFORMS for arg in ("--from", str(fanned_out.reports[platform]))]
    done = gosmall("index", "--image", "hello", *args, "--push", cwd=fan_in, env=ENV)
    assert done.returncode == 0, done.stderr
    reference = done.stdout.strip()
    assert reference.startswith(f"{fanned_out.repository}@sha256:")
    digest = reference.split("@", 1)[1]

    # One machine, every platform, the same commit: the same digest, and the index the registry serves is its bytes.
    whole = _clone(fanned_out.origin, tmp_path / "one-machine")
    built = gosmall("build-small", "--image", "hello", cwd=whole, env=ENV)
    assert built.returncode == 0, built.stderr
    report = json.loads((whole / "dist" / "hello" / "report.json").read_text())
    assert report["digest"] == digest
    for platform in PLATFORMS:
        job_report = json.loads(fanned_out.reports[platform].read_text())
        assert job_report["platforms"][platform]["manifest_digest"] == report["platforms"][platform]["manifest_digest"]
    raw = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{fanned_out.repository}:1.0"], capture_output=True, check=True
    ).stdout
    assert raw == (whole / "dist" / "hello" / "oci" / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == digest
    for tag in ("1.0", "latest"):
        assert _tag_answer(registry, tag).headers["Docker-Content-Digest"] == digest


def test_the_fan_in_index_carries_the_platform_jobs_referrers(fanned_out: FannedOut, registry: LocalRegistry, tmp_path: Path) -> None:
    """Each platform job pushed its SBOM and provenance beside its manifest; the joined index carries them too."""
    fan_in = _clone(fanned_out.origin, tmp_path / "fan-in")
    args = [arg for platform in PLATFORMS for arg in ("--from", str(fanned_out.reports[platform]))]
    done = gosmall("index", "--image", "hello", *args, "--push", cwd=fan_in, env=ENV)
    assert done.returncode == 0, done.stderr
    digest = done.stdout.strip().split("@", 1)[1]
    accept = {"Accept": "application/vnd.oci.image.index.v1+json"}
    listed = requests.get(f"{registry.url}/v2/fan/hello/manifests/{digest.replace(':', '-')}", headers=accept, timeout=10).json()[
        "manifests"
    ]
    kinds = sorted(entry["artifactType"] for entry in listed)
    assert kinds == ["application/spdx+json"] * 2 + ["application/vnd.in-toto+json"] * 2  # one of each per platform
    for entry in listed:
        manifest = requests.get(f"{registry.url}/v2/fan/hello/manifests/{entry['digest']}", headers={"Accept": MANIFEST_ACCEPT}, timeout=10)
        assert manifest.json()["subject"]["digest"] == digest
    again = gosmall("index", "--image", "hello", *args, "--push", cwd=fan_in, env=ENV)  # no duplicate the second time
    assert again.returncode == 0, again.stderr
    assert (
        requests.get(f"{registry.url}/v2/fan/hello/manifests/{digest.replace(':', '-')}", headers=accept, timeout=10).json()["manifests"]
        == listed
    )
    sbom = gosmall("sbom", f"{fanned_out.repository}:1.0", cwd=tmp_path)
    assert sbom.returncode == 0, sbom.stderr
    assert json.loads(sbom.stdout)["spdxVersion"] == "SPDX-2.3"


def test_without_push_the_index_is_only_checked(fanned_out: FannedOut, registry: LocalRegistry, tmp_path: Path) -> None:
    fan_in = _clone(fanned_out.origin, tmp_path / "fan-in")
    puts = registry.requests("PUT", "/v2/fan/hello/manifests/")
    args = [arg for platform in PLATFORMS for arg in ("--from", str(fanned_out.reports[platform]))]
    done = gosmall("index", "--image", "hello", *args, cwd=fan_in, env=ENV)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert f"the index is {fanned_out.repository}@sha256:" in done.stderr and "add --push" in done.stderr
    assert registry.requests("PUT", "/v2/fan/hello/manifests/") == puts


def test_a_missing_platform_is_named_with_the_job_to_run(fanned_out: FannedOut, tmp_path: Path) -> None:
    fan_in = _clone(fanned_out.origin, tmp_path / "fan-in")
    done = gosmall("index", "--image", "hello", "--from", str(fanned_out.reports["linux/amd64"]), "--push", cwd=fan_in, env=ENV)
    assert done.returncode == 2
    assert "the image's platforms are linux/amd64, linux/arm64, but the reports lack linux/arm64" in done.stderr
    assert "`gosmall build-small --image hello --platform linux/arm64 --push`" in done.stderr


def test_reports_of_another_commit_are_refused(fanned_out: FannedOut, tmp_path: Path) -> None:
    fan_in = _clone(fanned_out.origin, tmp_path / "fan-in")
    (fan_in / "CHANGES").write_text("later\n")
    git_commit(fan_in, "later")
    args = [arg for platform in PLATFORMS for arg in ("--from", str(fanned_out.reports[platform]))]
    done = gosmall("index", "--image", "hello", *args, "--push", cwd=fan_in, env=ENV)
    assert done.returncode == 2
    assert f"--from {fanned_out.reports['linux/amd64']} was built from" in done.stderr
    assert "Run index in a checkout of the commit the platform jobs built" in done.stderr


def test_an_index_of_attested_platforms_verifies(fanned_out: FannedOut, tmp_path: Path) -> None:
    """Each platform job signs (and so attests) its manifest; the joined index carries the attestations, and
    verify-attestation accepts the index because every platform manifest of it is attested by the key."""
    env = {**ENV, "GOSMALL_SIGNING_PASSWORD": "fan-in"}
    keys = tmp_path / "keys"
    keys.mkdir()
    assert gosmall("keygen", cwd=keys, env=env).returncode == 0
    index = _clone(fanned_out.origin, tmp_path / "fan-in")
    args = [arg for platform in PLATFORMS for arg in ("--from", str(fanned_out.reports[platform]))]
    done = gosmall("index", "--image", "hello", *args, "--push", cwd=index, env=env)
    assert done.returncode == 0, done.stderr
    reference = done.stdout.strip()
    unsigned = gosmall("verify-attestation", "--key", str(keys / "cosign.pub"), reference, cwd=tmp_path, env=env)
    assert unsigned.returncode == 1, unsigned.stderr
    assert "Nor is each platform of the index attested" in unsigned.stderr
    for platform in PLATFORMS:
        job = fanned_out.reports[platform].parents[2] / f"job-{platform.replace('/', '-')}"
        signed = gosmall("sign", "--key", str(keys / "cosign.key"), cwd=job, env=env)
        assert signed.returncode == 0, signed.stderr
    done = gosmall("index", "--image", "hello", *args, "--push", cwd=index, env=env)
    assert done.returncode == 0, done.stderr
    verified = gosmall("verify-attestation", "--key", str(keys / "cosign.pub"), reference, "--format", "json", cwd=tmp_path, env=env)
    assert verified.returncode == 0, verified.stderr
    said = json.loads(verified.stdout)
    assert said["digest"] == reference.split("@", 1)[1] and said["found_in"] == "each of its 2 platform manifests"
    assert said["commit"] == json.loads(fanned_out.reports["linux/amd64"].read_text())["source"]["revision"]
