"""The SLSA provenance statement of a real build: what it says, what it leaves out, and that it is one value.

The build is `built_hello` (go_app for linux/amd64 and linux/arm64, built by the console script); the statement
is made from the Build read back from its output, as `gosmall push` makes it.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

from gosmall.build.built import read_build
from gosmall.config import load_project
from gosmall.trust.provenance import MachineFacts, gather_facts, provenance_statement
from tests.conftest import BuiltProject

GITHUB = {
    "GITHUB_REPOSITORY": "octo/app",
    "GITHUB_RUN_ID": "4242",
    "GITHUB_SHA": "0123456789abcdef0123456789abcdef01234567",
    "GITHUB_WORKFLOW_REF": "octo/app/.github/workflows/release.yml@refs/tags/v1",
}


def _build(built: BuiltProject) -> Any:
    project = load_project(built.root)
    [config] = project.images
    return read_build(config, project.output_dir(config))


def test_one_build_one_statement_and_no_machine_path(built_hello: BuiltProject) -> None:
    build = _build(built_hello)
    first, second = provenance_statement(build), provenance_statement(_build(built_hello))
    assert first == second  # no clock, no randomness: pushing again pushes the same referrer
    statement = json.loads(first)
    assert statement["subject"] == [{"name": built_hello.report["repository"], "digest": {"sha256": built_hello.report["digest"][7:]}}]
    assert str(built_hello.root) not in first.decode()  # paths are the project's, not this machine's
    config = statement["predicate"]["buildDefinition"]["externalParameters"]["config"]
    assert config["package"] == "go_app"
    assert statement["predicate"]["buildDefinition"]["externalParameters"]["platforms"] == ["linux/amd64", "linux/arm64"]
    assert "metadata" not in statement["predicate"]["runDetails"]  # not on CI: no run to name


def test_ci_identity_and_a_remote_without_credentials(built_hello: BuiltProject) -> None:
    build = _build(built_hello)
    facts = gather_facts(build, {**GITHUB, "GITHUB_SERVER_URL": "https://github.com"})
    assert facts.git_remote == "https://github.com/octo/app"
    details = json.loads(provenance_statement(build, facts))["predicate"]["runDetails"]
    assert details["metadata"] == {"invocationId": "https://github.com/octo/app/actions/runs/4242"}
    [ci] = details["builder"]["builderDependencies"]
    assert ci["uri"] == "https://github.com/octo/app/.github/workflows/release.yml@refs/tags/v1"
    assert ci["digest"] == {"gitCommit": GITHUB["GITHUB_SHA"]}
    assert details["builder"]["id"].startswith("pkg:pypi/gosmall@")

    def remote(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(args, 0, "https://ci-bot:ghp_s3cr3tT0ken@git.example.com/team/app.git\n", "")

    local = gather_facts(build, {}, runner=remote)
    assert local.git_remote == "https://git.example.com/team/app.git"
    assert "s3cr3t" not in provenance_statement(build, local).decode()


def test_the_go_binary_digest_is_named_only_when_given(built_hello: BuiltProject, tmp_path: Path) -> None:
    build = _build(built_hello)
    [go] = [d for d in json.loads(provenance_statement(build))["predicate"]["buildDefinition"]["resolvedDependencies"] if d["name"] == "go"]
    assert "digest" not in go
    fake = tmp_path / "go"
    fake.write_bytes(b"not really go")
    facts = gather_facts(build, {}, go_binary=fake, runner=lambda *a, **k: subprocess.CompletedProcess(a, 1, "", ""))
    assert facts == MachineFacts("", hashlib.sha256(b"not really go").hexdigest(), ())
    [go] = [
        d
        for d in json.loads(provenance_statement(build, facts))["predicate"]["buildDefinition"]["resolvedDependencies"]
        if d["name"] == "go"
    ]
    assert go["digest"] == {"sha256": hashlib.sha256(b"not really go").hexdigest()}
